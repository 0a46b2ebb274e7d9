# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import numpy as np
import pytest
import torch

from scripts.metrics import box_miou, mask_dice_iou, match_boxes


def _mask(*boxes, size=16):
    mask = torch.zeros(1, 1, size, size)
    for x1, y1, x2, y2 in boxes:
        mask[0, 0, y1:y2, x1:x2] = 1
    return mask


@pytest.mark.parametrize(
    "pred, target, dice, iou",
    [
        (_mask((2, 2, 6, 6)), _mask((2, 2, 6, 6)), 1.0, 1.0),            # perfect
        (_mask(), _mask(), 1.0, 1.0),                                    # correct "no lesion"
        (_mask((2, 2, 6, 6)), _mask(), 0.0, 0.0),                        # hallucinated lesion
        (_mask(), _mask((2, 2, 6, 6)), 0.0, 0.0),                        # missed lesion
        (_mask((0, 0, 4, 4)), _mask((8, 8, 12, 12)), 0.0, 0.0),          # disjoint
        (_mask((0, 0, 4, 4)), _mask((0, 0, 4, 8)), 2 * 16 / 48, 16 / 32),  # half overlap
    ],
)
def test_mask_scores_on_hand_made_cases(pred, target, dice, iou):
    d, i = mask_dice_iou(pred, target)
    assert d.item() == pytest.approx(dice) and i.item() == pytest.approx(iou)


def test_mask_scores_are_per_sample_and_reject_bad_shapes():
    pred = torch.cat([_mask((2, 2, 6, 6)), _mask()])
    target = torch.cat([_mask((2, 2, 6, 6)), _mask((1, 1, 3, 3))])
    dice, iou = mask_dice_iou(pred, target)
    assert dice.tolist() == [1.0, 0.0] and iou.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        mask_dice_iou(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16))


def test_box_matching_is_one_to_one_and_optimal():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    pred = [[21, 21, 31, 31], [0, 0, 10, 10], [50, 50, 60, 60]]
    match = match_boxes(pred, gt)
    pairs = sorted(zip(match.pred_index.tolist(), match.gt_index.tolist()))
    assert pairs == [(0, 1), (1, 0)]
    assert match.num_pred == 3 and match.num_gt == 2
    overlap = 81 / (100 + 100 - 81)
    assert box_miou(pred, gt) == pytest.approx((1.0 + overlap) / 3)  # the extra box counts as 0


@pytest.mark.parametrize("pred, gt, expected", [([], [], 1.0), ([[0, 0, 4, 4]], [], 0.0), ([], [[0, 0, 4, 4]], 0.0),
                                                ([[0, 0, 4, 4]], [[8, 8, 9, 9]], 0.0)])
def test_box_miou_empty_rules(pred, gt, expected):
    assert box_miou(pred, gt) == expected


def test_boxes_must_have_four_coordinates():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_miou([[0, 0, 4]], [[0, 0, 4, 4]])
    assert box_miou(np.zeros((0, 4)), torch.zeros(0, 4)) == 1.0
