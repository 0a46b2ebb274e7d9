# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import numpy as np
import pytest
import torch

from scripts.data.prompts import render_answer, render_completion
from scripts.rewards import (
    RewardWeights,
    bbox_reward,
    format_reward,
    mask_bounding_box,
    mask_reward,
    score_rollouts,
)

GOOD = render_completion("A dark irregular region differs from the bright round cysts.",
                         render_answer("thyroid nodule", [[10, 10, 20, 20]]))


@pytest.mark.parametrize("completion, expected", [
    (GOOD, 1.0),
    (render_completion("None seen.", render_answer("thyroid nodule", [])), 1.0),  # a correct "no lesion" format
    (GOOD.replace("<seg>", ""), 0.0),                                             # no <seg>
    (GOOD.replace("<seg>", "<seg> <seg>"), 0.0),                                  # two <seg>
    (GOOD.replace("<think> A dark irregular region differs from the bright round cysts. </think>",
                  "<think> </think>"), 0.0),                                      # empty reasoning
    (GOOD.replace("</answer>", ""), 0.0),                                          # truncated
    ("The thyroid nodule is located at [10,10,20,20]. <seg>", 0.0),               # no tags
    ("", 0.0),
])
def test_format_reward(completion, expected):
    assert format_reward(completion) == expected


def test_bbox_reward_single_and_multi_lesion_matching():
    assert bbox_reward([[0, 0, 10, 10]], [[0, 0, 10, 10]]) == pytest.approx(1.0)
    # order does not matter: Hungarian matching pairs each prediction with its own lesion
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert bbox_reward([[20, 20, 30, 30], [0, 0, 10, 10]], gt) == pytest.approx(1.0)
    # one exact hit, one miss: P = R = 1/2, F1 = 1/2, mIoU over the two pairs = (1 + 0) / 2
    assert bbox_reward([[0, 0, 10, 10], [50, 50, 60, 60]], gt) == pytest.approx(0.5 * 0.5)
    # an extra box lowers precision: P = 2/3, R = 1, F1 = 0.8, both matched pairs exact
    assert bbox_reward([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], gt) == pytest.approx(0.8)
    # matched but below the IoU threshold: no true positive
    assert bbox_reward([[0, 0, 10, 10]], [[5, 5, 15, 15]]) == 0.0
    # IoU 81/119 >= 0.5: one TP, reward = IoU * F1(=1)
    assert bbox_reward([[0, 0, 10, 10]], [[1, 1, 11, 11]]) == pytest.approx(81 / 119)


@pytest.mark.parametrize("pred, gt, expected", [([], [], 1.0), ([[0, 0, 4, 4]], [], 0.0), ([], [[0, 0, 4, 4]], 0.0)])
def test_bbox_reward_empty_rules(pred, gt, expected):
    assert bbox_reward(pred, gt) == expected


def _mask(*boxes, size=32):
    mask = np.zeros((size, size), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = 1
    return mask


def test_mask_reward_pixel_level_above_threshold():
    assert mask_reward(_mask((2, 2, 10, 10)), _mask((2, 2, 10, 10))) == pytest.approx(3.0)
    # half overlap: Dice = 2*32/(64+64) = 0.5 -> 1 + 2*0.5
    assert mask_reward(_mask((0, 0, 8, 8)), _mask((4, 0, 12, 8))) == pytest.approx(2.0)
    assert mask_reward(_mask((0, 0, 8, 8)), _mask((4, 0, 12, 8)), lam=1.0) == pytest.approx(1.5)


def test_mask_reward_falls_back_to_box_giou_without_overlap():
    # disjoint 4x4 squares at (0,0) and (8,8): IoU 0, enclosing box 12x12: GIoU = 0 - (144-32)/144
    reward = mask_reward(_mask((0, 0, 4, 4)), _mask((8, 8, 12, 12)))
    assert reward == pytest.approx(-(144 - 32) / 144)
    # a nearer miss gets a higher reward: the signal points towards the lesion
    assert mask_reward(_mask((4, 4, 8, 8)), _mask((8, 8, 12, 12))) > reward
    # overlap too small for Dice >= 0.05 still uses GIoU of the boxes (here > 0)
    tiny_overlap = mask_reward(_mask((0, 0, 20, 20)), _mask((19, 19, 21, 21)))
    assert -1.0 < tiny_overlap < 1.0


def test_mask_reward_empty_rules():
    assert mask_reward(_mask(), _mask()) == pytest.approx(3.0)
    assert mask_reward(_mask((0, 0, 4, 4)), _mask()) == -1.0
    assert mask_reward(_mask(), _mask((0, 0, 4, 4))) == -1.0
    assert mask_reward(torch.zeros(8, 8), torch.zeros(8, 8), lam=1.0) == pytest.approx(2.0)


def test_mask_inputs_are_checked():
    with pytest.raises(ValueError, match="same shape"):
        mask_reward(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2D mask"):
        mask_bounding_box(np.zeros((1, 4, 4)))
    np.testing.assert_array_equal(mask_bounding_box(_mask((3, 5, 7, 9))), [3, 5, 7, 9])
    with pytest.raises(ValueError, match=">= 0"):
        RewardWeights(bbox=-1)


def test_score_rollouts_weights_rewards_and_scores_malformed_answers_as_failures():
    gt = np.zeros((3, 1, 8, 8), dtype=bool)
    gt[:2, 0, 2:6, 2:6] = True  # two rollouts of a lesion image, one of an image without lesion
    pred = gt.copy()
    completions = [
        "<think> round and bright </think><answer> The nodule is located at [2,2,6,6]. <seg> </answer>",
        "no tags at all [2,2,6,6] <seg>",
        "<think> nothing there </think><answer> There is no nodule in this image. </answer>",  # no <seg>
    ]
    boxes = [[[2, 2, 6, 6]], [[2, 2, 6, 6]], []]
    rewards = score_rollouts(completions, [True, True, False], pred, gt, boxes,
                             weights=RewardWeights(format=1.0, bbox=0.5, mask=2.0))
    assert rewards.format_valid.tolist() == [True, False, False]
    assert rewards.per_reward[0].tolist() == pytest.approx([1.0, 1.0, 3.0])
    # unparsable: no box reward although its box is right; the mask still counts
    assert rewards.per_reward[1].tolist() == pytest.approx([0.0, 0.0, 3.0])
    # no <seg>: the lowest mask reward, even though the image is empty (never a reward hack)
    assert rewards.per_reward[2].tolist() == pytest.approx([0.0, 0.0, -1.0])
    assert rewards.total.tolist() == pytest.approx([1.0 + 0.5 + 6.0, 6.0, -2.0])
    assert rewards.means()["reward"] == pytest.approx((7.5 + 6.0 - 2.0) / 3)


def test_score_rollouts_checks_that_the_parts_pair_up():
    masks = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match="disagree in length"):
        score_rollouts(["a"], [True, True], masks, masks, [[], []])
    with pytest.raises(ValueError, match="differ in shape"):
        score_rollouts(["a", "b"], [True, True], masks, np.zeros((2, 1, 4, 5)), [[], []])


def test_format_reward_without_cot_accepts_the_answer_alone():
    answer_only = "<answer> The nodule is located at [2,2,6,6]. <seg> </answer>"
    assert format_reward(answer_only) == 0.0
    assert format_reward(answer_only, require_reasoning=False) == 1.0
    masks = np.zeros((1, 1, 8, 8), dtype=bool)
    rewards = score_rollouts([answer_only], [True], masks, masks, [[]], require_reasoning=False)
    assert rewards.format_valid.tolist() == [True]
