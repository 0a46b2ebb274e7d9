# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Training losses of CORE-Seg.

* Stage 1 (paper eq. 7): ``l1 * CE(text) + l2 * DiceCE(mask)`` (:class:`CoreSegSFTLoss`).
* Stage 2 (paper eq. 12): ``l3 * L_GRPO + l4 * DiceCE(mask)`` (:class:`CoreSegGRPOLoss`), built from the pieces
  below, each a pure function: :func:`token_log_probs`, :func:`group_advantages`,
  :func:`normalized_sum_advantages`, :func:`k3_kl`, :func:`clipped_surrogate` and :func:`aggregate_token_loss`.
  They follow trl's ``GRPOTrainer`` (same k3 estimator, same two-sided clipping, same ``grpo``/``bnpo``/
  ``dr_grpo`` normalisers) so results can be compared with it.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

from scripts.networks.coreseg import CoreSegOutput

__all__ = [
    "ADVANTAGE_SCALES",
    "LOSS_TYPES",
    "CoreSegGRPOLoss",
    "CoreSegSFTLoss",
    "aggregate_token_loss",
    "clipped_surrogate",
    "group_advantages",
    "k3_kl",
    "normalized_sum_advantages",
    "token_log_probs",
]

#: How :func:`group_advantages` scales the centred rewards: by the group's std, the batch's std, or not at all.
ADVANTAGE_SCALES = ("group", "batch", "none")
#: Token-loss normalisers of :func:`aggregate_token_loss` (the names of trl's ``loss_type``).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")


class CoreSegSFTLoss(nn.Module):
    """Stage-1 loss: weighted next-token cross-entropy plus DiceCE on the ``<seg>`` masks.

    The mask term covers the samples whose answer holds exactly one ``<seg>`` token (``seg_valid``); with
    teacher forcing on well-formed targets that is every sample. A batch with none contributes a zero mask term
    that keeps the graph connected (so distributed training still sees every parameter), and the count is
    reported, never hidden.

    Args:
        text_weight: ``lambda_1`` (paper: 1.0).
        mask_weight: ``lambda_2`` (paper: 1.0).
        dice_ce_kwargs: options of :class:`monai.losses.DiceCELoss` (``sigmoid=True`` is always set: the
            decoder returns one logit map per sample).
    """

    def __init__(self, text_weight: float = 1.0, mask_weight: float = 1.0, dice_ce_kwargs: dict | None = None) -> None:
        super().__init__()
        if text_weight < 0 or mask_weight < 0:
            raise ValueError(f"Loss weights must be >= 0, got text_weight={text_weight}, mask_weight={mask_weight}.")
        self.text_weight = text_weight
        self.mask_weight = mask_weight
        self.dice_ce = DiceCELoss(**{**(dice_ce_kwargs or {}), "sigmoid": True})

    def forward(self, output: CoreSegOutput, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            output: :meth:`CoreSeg.forward` result, computed with labels.
            masks: ``(B, 1, S, S)`` ground-truth masks (0/1) at the SAM resolution.

        Returns:
            ``{"loss", "text_loss", "mask_loss", "mask_samples"}``; ``loss`` is the weighted sum. Without mask
            logits (a pass with ``with_masks=False``, allowed only when ``mask_weight`` is 0) there is no
            ``mask_loss`` and ``mask_samples`` is 0.
        """
        if output.text_loss is None:
            raise ValueError("CoreSegSFTLoss needs the text loss: call the network with labels.")
        text_loss = output.text_loss.float()
        if output.mask_logits is None:
            if self.mask_weight > 0:
                raise ValueError(f"mask_weight={self.mask_weight} needs mask logits, but the network ran without "
                                 "masks: run it with with_masks=True (TeacherForcedInferer(with_masks=True)).")
            return {"loss": self.text_weight * text_loss, "text_loss": text_loss.detach(),
                    "mask_samples": output.seg_valid.new_zeros(())}
        if masks.shape != output.mask_logits.shape:
            raise ValueError(f"Mask shape {tuple(masks.shape)} does not match the predicted mask logits "
                             f"{tuple(output.mask_logits.shape)}; resize labels to the SAM resolution.")
        valid = output.seg_valid
        if bool(valid.any()):
            mask_loss = self.dice_ce(output.mask_logits[valid], masks[valid].to(output.mask_logits.dtype))
        else:
            mask_loss = output.mask_logits.sum() * 0.0
        loss = self.text_weight * text_loss + self.mask_weight * mask_loss
        return {"loss": loss, "text_loss": text_loss.detach(), "mask_loss": mask_loss.detach(),
                "mask_samples": valid.sum().detach()}


# ------------------------------------------------------------------------------------------------ GRPO pieces
def token_log_probs(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each completion token under the logits that predict it.

    Args:
        logits: ``(N, L + 1, V)`` logits of the last ``L + 1`` positions (``logits_to_keep=L + 1``): position
            ``i`` predicts completion token ``i``; the last position predicts nothing and is dropped.
        token_ids: ``(N, L)`` completion ids.
        temperature: the sampling temperature; the logits are divided by it, as the sampler did.

    Returns:
        ``(N, L)`` float32 log-probabilities (padding positions included: mask them with the completion mask).
    """
    if logits.ndim != 3 or token_ids.ndim != 2 or logits.shape[:2] != (token_ids.shape[0], token_ids.shape[1] + 1):
        raise ValueError(f"Expected logits (N, L + 1, V) for token ids (N, L); got {tuple(logits.shape)} and "
                         f"{tuple(token_ids.shape)}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    scaled = logits[:, :-1].float() / temperature
    # logsumexp over the vocabulary instead of a full log_softmax keeps one (N, L, V) tensor, not two.
    picked = scaled.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1)


def _grouped(values: torch.Tensor, group_size: int, name: str) -> torch.Tensor:
    if group_size < 1 or values.shape[0] % group_size:
        raise ValueError(f"{name} has {values.shape[0]} rows, not a multiple of the group size {group_size}.")
    return values.view(-1, group_size, *values.shape[1:])


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's (or batch's) std.

    Args:
        rewards: ``(N,)`` total reward per completion, the ``group_size`` completions of a prompt adjacent.
        group_size: ``G``, completions per prompt.
        scale: ``"group"`` (DeepSeekMath's GRPO), ``"batch"`` (one std over all rewards) or ``"none"``
            (Dr. GRPO: centred only).
        eps: added to the std, so a group whose rewards are all equal gets advantage 0, not NaN.

    Returns:
        ``(N,)`` advantages. Standard deviations are the unbiased ones (as ``torch.std`` and trl); a group of one
        completion has std NaN, which is treated as 0 (its advantage is 0).
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"Unknown advantage scale {scale!r}; expected one of {ADVANTAGE_SCALES}.")
    grouped = _grouped(rewards.float(), group_size, "rewards")
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1) if group_size > 1 \
            else torch.zeros_like(centred)
    else:
        std = rewards.float().std().expand_as(centred) if rewards.numel() > 1 else torch.zeros_like(centred)
    return centred / (torch.nan_to_num(std, nan=0.0) + eps)


def normalized_sum_advantages(
    rewards: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float = 1e-4
) -> torch.Tensor:
    """Advantages that normalise each reward within its group first, then take their weighted sum.

    With the plain sum, the reward with the largest spread (CORE-Seg's mask reward, in [-1, 3]) dominates the
    advantage; normalising each first gives every reward the same say (weights then set it).

    Args:
        rewards: ``(N, K)`` the ``K`` rewards of each completion.
        weights: ``(K,)`` their weights.
        group_size: completions per prompt.
        eps: as in :func:`group_advantages`.

    Returns:
        ``(N,)`` ``sum_k w_k * (r_k - mean_group(r_k)) / (std_group(r_k) + eps)``.
    """
    if rewards.ndim != 2 or weights.shape != (rewards.shape[1],):
        raise ValueError(f"Expected rewards (N, K) and weights (K,), got {tuple(rewards.shape)} and "
                         f"{tuple(weights.shape)}.")
    per_reward = torch.stack(
        [group_advantages(rewards[:, k], group_size, "group", eps) for k in range(rewards.shape[1])], dim=1
    )
    return (per_reward * weights.to(per_reward)).sum(dim=1)


def k3_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): ``exp(r - p) - (r - p) - 1`` (>= 0, unbiased).

    Args:
        log_probs: policy log-probabilities of the sampled tokens.
        ref_log_probs: the reference policy's log-probabilities of the same tokens.
    """
    delta = ref_log_probs - log_probs
    return torch.exp(delta) - delta - 1.0


def clipped_surrogate(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token, as a loss: ``-min(rho * A, clip(rho, 1 - e_low, 1 + e_high) * A)``.

    Args:
        log_probs: ``(N, L)`` policy log-probabilities (with gradient).
        old_log_probs: ``(N, L)`` log-probabilities under the policy that sampled the tokens (no gradient).
        advantages: ``(N,)`` one advantage per completion.
        epsilon_low: lower clip range.
        epsilon_high: upper clip range (None: ``epsilon_low``; DAPO's "clip-higher" uses a larger one).

    Returns:
        ``(per_token_loss, clipped)``: ``(N, L)`` losses and a bool ``(N, L)`` map of the tokens where the
        clipped term was the one taken (the gradient is zero there).
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    if epsilon_low < 0 or epsilon_high < 0:
        raise ValueError(f"Clip ranges must be >= 0, got {epsilon_low} and {epsilon_high}.")
    ratio = torch.exp(log_probs - old_log_probs.detach())
    advantage = advantages.unsqueeze(1).to(ratio.dtype)
    unclipped = ratio * advantage
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    clipped = clipped_ratio * advantage
    is_clipped = (clipped < unclipped).detach()
    return -torch.minimum(unclipped, clipped), is_clipped


def aggregate_token_loss(
    per_token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str = "grpo", max_completion_length: int | None = None
) -> torch.Tensor:
    """Reduce ``(N, L)`` token losses to a scalar over the completion tokens (``mask``).

    Args:
        per_token_loss: ``(N, L)``.
        mask: ``(N, L)`` 1 on completion tokens, 0 on padding (and on anything else to leave out).
        loss_type: ``"grpo"`` (mean over each completion's tokens, then over completions: DeepSeekMath),
            ``"bnpo"`` (mean over all tokens of the batch) or ``"dr_grpo"`` (sum over tokens divided by
            ``N * max_completion_length``: no length bias).
        max_completion_length: the ``max_new_tokens`` of sampling (needed by ``"dr_grpo"``).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}.")
    mask = mask.to(per_token_loss.dtype)
    masked = per_token_loss * mask
    if loss_type == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if max_completion_length is None or max_completion_length < 1:
        raise ValueError("loss_type 'dr_grpo' needs max_completion_length >= 1.")
    return masked.sum() / (per_token_loss.shape[0] * max_completion_length)


class CoreSegGRPOLoss(nn.Module):
    """Stage-2 loss (paper eq. 12): ``l3 * L_GRPO + l4 * DiceCE(mask)``.

    ``L_GRPO`` is the clipped surrogate plus ``beta`` times the k3 KL to the reference, per token, reduced over
    the completion tokens by ``loss_type``. The DiceCE term covers the completions whose answer holds exactly
    one ``<seg>`` (their masks come from the same pass as the log-probabilities) and is a mean over them, as
    the surrogate is a mean over completions, so dividing the sum by the accumulation steps scales both alike.

    Args:
        policy_weight: ``lambda_3``.
        mask_weight: ``lambda_4`` (0 switches DiceCE off: Table 3's ablation).
        beta: KL coefficient (> 0 by default: GRPO without it collapses, SAM-R1).
        epsilon_low, epsilon_high: clip ranges of :func:`clipped_surrogate`.
        loss_type: normaliser of :func:`aggregate_token_loss`.
        max_completion_length: for ``"dr_grpo"``.
        dice_ce_kwargs: options of :class:`monai.losses.DiceCELoss` (``sigmoid=True`` is always set).
    """

    def __init__(
        self,
        policy_weight: float = 1.0,
        mask_weight: float = 1.0,
        beta: float = 0.04,
        epsilon_low: float = 0.2,
        epsilon_high: float | None = None,
        loss_type: str = "grpo",
        max_completion_length: int | None = None,
        dice_ce_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if policy_weight < 0 or mask_weight < 0 or beta < 0:
            raise ValueError(f"Loss weights must be >= 0, got policy_weight={policy_weight}, "
                             f"mask_weight={mask_weight}, beta={beta}.")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"Unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}.")
        self.policy_weight = policy_weight
        self.mask_weight = mask_weight
        self.beta = beta
        self.epsilon_low = epsilon_low
        self.epsilon_high = epsilon_high
        self.loss_type = loss_type
        self.max_completion_length = max_completion_length
        self.dice_ce = DiceCELoss(**{**(dice_ce_kwargs or {}), "sigmoid": True})

    def forward(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        completion_mask: torch.Tensor,
        ref_log_probs: torch.Tensor | None = None,
        mask_logits: torch.Tensor | None = None,
        gt_masks: torch.Tensor | None = None,
        seg_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            log_probs: ``(N, L)`` policy log-probabilities of the completion tokens (with gradient).
            old_log_probs: ``(N, L)`` the sampling policy's (``log_probs.detach()`` when fully on-policy).
            advantages: ``(N,)``.
            completion_mask: ``(N, L)`` 1 on completion tokens.
            ref_log_probs: ``(N, L)`` reference log-probabilities (needed when ``beta > 0``).
            mask_logits: ``(N, 1, S, S)`` predicted mask logits (needed when ``mask_weight > 0``).
            gt_masks: ``(N, 1, S, S)`` ground truth, repeated per completion.
            seg_valid: ``(N,)`` completions with exactly one ``<seg>``.

        Returns:
            ``{"loss", "policy_loss", "mask_loss", "kl", "clip_fraction"}``; all but ``loss`` detached.
        """
        if log_probs.shape != old_log_probs.shape or log_probs.shape != completion_mask.shape:
            raise ValueError(f"log_probs {tuple(log_probs.shape)}, old_log_probs {tuple(old_log_probs.shape)} and "
                             f"completion_mask {tuple(completion_mask.shape)} must have the same shape.")
        per_token, is_clipped = clipped_surrogate(log_probs, old_log_probs, advantages, self.epsilon_low,
                                                  self.epsilon_high)
        mask = completion_mask.to(per_token.dtype)
        kl = torch.zeros_like(per_token)
        if self.beta > 0:
            if ref_log_probs is None:
                raise ValueError("beta > 0 needs the reference policy's log-probabilities.")
            kl = k3_kl(log_probs, ref_log_probs.detach())
            per_token = per_token + self.beta * kl
        policy_loss = aggregate_token_loss(per_token, mask, self.loss_type, self.max_completion_length)
        tokens = mask.sum().clamp(min=1.0)

        mask_loss = policy_loss.new_zeros(())
        if self.mask_weight > 0:
            if mask_logits is None or gt_masks is None or seg_valid is None:
                raise ValueError("mask_weight > 0 needs mask_logits, gt_masks and seg_valid.")
            if gt_masks.shape != mask_logits.shape:
                raise ValueError(f"Ground-truth masks {tuple(gt_masks.shape)} do not match the mask logits "
                                 f"{tuple(mask_logits.shape)}; repeat them per completion at the SAM resolution.")
            if bool(seg_valid.any()):
                mask_loss = self.dice_ce(mask_logits[seg_valid], gt_masks[seg_valid].to(mask_logits.dtype))
            else:
                mask_loss = mask_logits.sum() * 0.0  # keeps the graph connected; nothing to supervise
        loss = self.policy_weight * policy_loss + self.mask_weight * mask_loss
        return {
            "loss": loss,
            "policy_loss": policy_loss.detach(),
            "mask_loss": mask_loss.detach(),
            "kl": ((kl * mask).sum() / tokens).detach(),
            "clip_fraction": ((is_clipped.to(mask.dtype) * mask).sum() / tokens).detach(),
        }
