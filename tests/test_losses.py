# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest
import torch
from monai.losses import DiceCELoss

from scripts.losses import CoreSegSFTLoss
from scripts.networks.coreseg import CoreSegOutput


def _output(mask_logits, valid, text_loss=2.0):
    batch = mask_logits.shape[0]
    zeros = torch.zeros(batch, 1)
    return CoreSegOutput(
        text_loss=torch.tensor(text_loss), logits=torch.zeros(batch, 3, 5), seg_hidden_states=torch.zeros(batch, 4),
        seg_counts=valid.long(), seg_positions=torch.zeros(batch, dtype=torch.long), seg_valid=valid,
        mask_logits=mask_logits, iou_predictions=zeros, object_score_logits=zeros,
    )


def test_loss_is_weighted_sum_of_text_ce_and_dice_ce():
    logits = torch.randn(3, 1, 8, 8, requires_grad=True)
    masks = (torch.rand(3, 1, 8, 8) > 0.5).float()
    loss = CoreSegSFTLoss(text_weight=0.5, mask_weight=2.0)
    parts = loss(_output(logits, torch.tensor([True, True, True])), masks)
    expected_mask = DiceCELoss(sigmoid=True)(logits, masks)
    torch.testing.assert_close(parts["mask_loss"], expected_mask.detach())
    torch.testing.assert_close(parts["loss"], 0.5 * 2.0 + 2.0 * expected_mask)
    parts["loss"].backward()
    assert logits.grad.abs().sum() > 0


def test_invalid_samples_are_left_out_of_the_mask_term():
    logits = torch.randn(3, 1, 8, 8, requires_grad=True)
    masks = (torch.rand(3, 1, 8, 8) > 0.5).float()
    parts = CoreSegSFTLoss()(_output(logits, torch.tensor([True, False, True])), masks)
    expected = DiceCELoss(sigmoid=True)(logits[[0, 2]], masks[[0, 2]])
    torch.testing.assert_close(parts["mask_loss"], expected.detach())
    assert parts["mask_samples"].item() == 2
    parts["loss"].backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_a_batch_without_valid_samples_has_a_zero_connected_mask_term():
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    parts = CoreSegSFTLoss()(_output(logits, torch.tensor([False, False])), torch.zeros(2, 1, 8, 8))
    assert parts["mask_loss"].item() == 0.0 and parts["mask_samples"].item() == 0
    parts["loss"].backward()
    assert logits.grad is not None


def test_bad_inputs_are_reported():
    output = _output(torch.randn(1, 1, 8, 8), torch.tensor([True]))
    with pytest.raises(ValueError, match="SAM resolution"):
        CoreSegSFTLoss()(output, torch.zeros(1, 1, 4, 4))
    output.text_loss = None
    with pytest.raises(ValueError, match="labels"):
        CoreSegSFTLoss()(output, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=">= 0"):
        CoreSegSFTLoss(text_weight=-1)
