# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import math

import pytest
import torch
from monai.losses import DiceCELoss

from scripts.losses import (
    CoreSegGRPOLoss,
    CoreSegSFTLoss,
    aggregate_token_loss,
    clipped_surrogate,
    group_advantages,
    k3_kl,
    normalized_sum_advantages,
    token_log_probs,
)
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


def test_a_pass_without_masks_trains_the_text_alone_and_only_with_mask_weight_zero():
    output = _output(torch.randn(2, 1, 8, 8), torch.tensor([True, True]), text_loss=1.5)
    output.mask_logits = output.iou_predictions = output.object_score_logits = None
    parts = CoreSegSFTLoss(text_weight=2.0, mask_weight=0.0)(output, torch.zeros(2, 1, 8, 8))
    assert parts["loss"].item() == pytest.approx(3.0) and parts["mask_samples"].item() == 0
    assert "mask_loss" not in parts
    with pytest.raises(ValueError, match="with_masks=True"):
        CoreSegSFTLoss(mask_weight=1.0)(output, torch.zeros(2, 1, 8, 8))


# ------------------------------------------------------------------------------------------------ GRPO pieces
def test_token_log_probs_pick_the_sampled_tokens_under_temperature():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [9.0, 9.0, 9.0]]])  # (1, L + 1 = 3, V = 3)
    ids = torch.tensor([[0, 2]])
    expected = torch.log_softmax(logits[:, :2] / 2.0, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_log_probs(logits, ids, temperature=2.0), expected)
    # by hand for the first token at temperature 1: 2 - log(e^2 + 2)
    assert token_log_probs(logits, ids)[0, 0].item() == pytest.approx(2 - math.log(math.exp(2) + 2))
    with pytest.raises(ValueError, match="L \\+ 1"):
        token_log_probs(logits[:, :2], ids)


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])  # two groups of 4
    std = math.sqrt(((1.5 ** 2) * 2 + (0.5 ** 2) * 2) / 3)  # unbiased std of 1..4
    advantages = group_advantages(rewards, 4, eps=0.0 + 1e-12)
    assert advantages[:4].tolist() == pytest.approx([-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std], rel=1e-5)
    assert advantages[4:].tolist() == [0.0] * 4  # equal rewards: no signal, not NaN
    assert group_advantages(rewards, 4, scale="none")[:4].tolist() == [-1.5, -0.5, 0.5, 1.5]
    batch_std = rewards.std().item()
    assert group_advantages(rewards, 4, scale="batch", eps=0.0)[0].item() == pytest.approx(-1.5 / batch_std)
    with pytest.raises(ValueError, match="multiple of the group size"):
        group_advantages(rewards, 3)
    with pytest.raises(ValueError, match="Unknown advantage scale"):
        group_advantages(rewards, 4, scale="global")


def test_normalized_sum_gives_each_reward_the_same_say():
    # reward 0 spreads over 0..3, reward 1 over 0..0.3 (same order): after normalising both weigh the same
    rewards = torch.tensor([[0.0, 0.0], [1.0, 0.1], [2.0, 0.2], [3.0, 0.3]])
    both = normalized_sum_advantages(rewards, torch.tensor([1.0, 1.0]), 4, eps=0.0)
    single = group_advantages(rewards[:, 0], 4, eps=0.0)
    assert torch.allclose(both, 2 * single, atol=1e-5)
    # with the plain sum, the large reward dominates the ordering even when the small one disagrees
    rewards[:, 1] = torch.tensor([0.3, 0.2, 0.1, 0.0])
    assert torch.allclose(normalized_sum_advantages(rewards, torch.tensor([1.0, 1.0]), 4, eps=0.0), torch.zeros(4),
                          atol=1e-5)
    assert group_advantages(rewards.sum(dim=1), 4)[3] > 0


def test_k3_kl_by_hand_and_zero_at_the_reference():
    log_probs, ref = torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.2]))
    # delta = log(0.25 / 0.5): e^delta - delta - 1 = 0.5 + log 2 - 1
    assert k3_kl(log_probs, ref).tolist() == pytest.approx([0.5 + math.log(2) - 1, 0.0], abs=1e-6)


def test_clipped_surrogate_by_hand():
    old = torch.zeros(1, 4)
    log_probs = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.5]]))
    per_token, clipped = clipped_surrogate(log_probs, old, torch.tensor([1.0]), 0.2)
    # A > 0: ratio 1.5 clipped to 1.2; ratio 0.5 kept (min takes it); 1.1 inside the range
    assert per_token[0, :3].tolist() == pytest.approx([-1.2, -0.5, -1.1])
    assert clipped[0].tolist() == [True, False, False, False]
    per_token, clipped = clipped_surrogate(log_probs, old, torch.tensor([-1.0]), 0.2, epsilon_high=0.6)
    # A < 0: ratio 0.5 clipped to 0.8 (loss 0.8); ratio 1.5 inside the asymmetric range [0.8, 1.6]
    assert per_token[0].tolist() == pytest.approx([1.5, 0.8, 1.1, 0.8])
    assert clipped[0].tolist() == [False, True, False, True]


def test_token_loss_normalisers_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])  # padding after the second completion's only token
    assert aggregate_token_loss(per_token, mask, "grpo").item() == pytest.approx((2.0 + 4.0) / 2)
    assert aggregate_token_loss(per_token, mask, "bnpo").item() == pytest.approx(10.0 / 4)
    assert aggregate_token_loss(per_token, mask, "dr_grpo", max_completion_length=5).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_token_loss(per_token, mask, "dr_grpo")


def test_grpo_loss_combines_surrogate_kl_and_dice_ce_over_valid_rollouts():
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.randn(4, 5, generator=generator).clamp(max=0).requires_grad_()
    old = log_probs.detach() + 0.3 * torch.randn(4, 5, generator=generator)
    ref = log_probs.detach() - 0.2
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    mask = torch.ones(4, 5)
    mask[1, 3:] = 0
    logits = torch.randn(4, 1, 8, 8, generator=generator)
    gt = (torch.rand(4, 1, 8, 8, generator=generator) > 0.5).float()
    valid = torch.tensor([True, False, True, True])
    loss_fn = CoreSegGRPOLoss(policy_weight=0.5, mask_weight=2.0, beta=0.1, epsilon_low=0.2)
    parts = loss_fn(log_probs, old, advantages, mask, ref, logits, gt, valid)

    per_token, clipped = clipped_surrogate(log_probs, old, advantages, 0.2)
    kl = k3_kl(log_probs, ref)
    policy = ((per_token + 0.1 * kl) * mask).sum(1).div(mask.sum(1)).mean()
    dice_ce = DiceCELoss(sigmoid=True)(logits[valid], gt[valid])
    assert parts["loss"].item() == pytest.approx(0.5 * policy.item() + 2.0 * dice_ce.item(), rel=1e-5)
    assert parts["kl"].item() == pytest.approx(((kl * mask).sum() / mask.sum()).item(), rel=1e-5)
    assert parts["clip_fraction"].item() == pytest.approx(((clipped * mask).sum() / mask.sum()).item())
    parts["loss"].backward()
    assert log_probs.grad[1, 3:].abs().sum() == 0  # padding tokens get no gradient


def test_grpo_loss_is_zero_on_policy_with_zero_mean_advantages_and_no_kl():
    # On-policy (ratio 1) with group-centred advantages and equal lengths, the surrogate's value is 0; its gradient is not.
    log_probs = torch.log(torch.full((4, 3), 0.5)).requires_grad_()
    advantages = group_advantages(torch.tensor([0.0, 1.0, 2.0, 3.0]), 4)
    parts = CoreSegGRPOLoss(mask_weight=0.0, beta=0.0)(log_probs, log_probs.detach(), advantages, torch.ones(4, 3))
    assert parts["loss"].item() == pytest.approx(0.0, abs=1e-6)
    parts["loss"].backward()
    assert torch.allclose(log_probs.grad[:, 0], -advantages / 3 / 4)


def test_grpo_loss_reports_missing_inputs():
    log_probs = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="reference"):
        CoreSegGRPOLoss(mask_weight=0.0, beta=0.1)(log_probs, log_probs, torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask_logits"):
        CoreSegGRPOLoss(beta=0.0)(log_probs, log_probs, torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="Unknown loss_type"):
        CoreSegGRPOLoss(loss_type="dapo")


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_grpo_loss_matches_trl_on_identical_tensors(loss_type):
    """trl's GRPOTrainer._compute_loss, fed the same log-probabilities, gives the same loss and gradient."""
    from collections import defaultdict
    from types import SimpleNamespace

    from trl import GRPOTrainer

    generator = torch.Generator().manual_seed(1)
    log_probs = (torch.randn(6, 7, generator=generator) - 1.0).requires_grad_()
    old = log_probs.detach() + 0.3 * torch.randn(6, 7, generator=generator)
    ref = log_probs.detach() + 0.2 * torch.randn(6, 7, generator=generator)
    advantages = torch.randn(6, generator=generator)
    mask = torch.ones(6, 7, dtype=torch.long)
    mask[0, 4:] = 0
    mask[3, 2:] = 0

    trl_log_probs = log_probs.detach().clone().requires_grad_()
    trainer = SimpleNamespace(  # the attributes _compute_loss reads, as GRPOConfig sets them
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (trl_log_probs, torch.zeros(6, 7), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=0.04, epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None), use_vllm=False,
        vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=7, _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list)},
        accelerator=SimpleNamespace(reduce=lambda x, reduction: x, gather=lambda x: x),
    )
    inputs = {"prompt_ids": torch.zeros(6, 2, dtype=torch.long), "prompt_mask": torch.ones(6, 2, dtype=torch.long),
              "completion_ids": torch.zeros(6, 7, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref}
    expected = GRPOTrainer._compute_loss(trainer, None, inputs)
    expected.backward()

    ours = CoreSegGRPOLoss(mask_weight=0.0, beta=0.04, epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type,
                           max_completion_length=7)(log_probs, old, advantages, mask, ref)
    ours["loss"].backward()
    assert ours["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(log_probs.grad, trl_log_probs.grad, atol=1e-7)
    assert ours["kl"].item() == pytest.approx(trainer._metrics["train"]["kl"][0], rel=1e-6)
    assert ours["clip_fraction"].item() == pytest.approx(trainer._metrics["train"]["clip_ratio/region_mean"][0])
