# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Stage-2 (GRPO) trainer: MONAI's ``SupervisedTrainer`` with a rollout-and-reward iteration (paper section 4.3).

One iteration, for a batch of ``B`` prompts (image + question) with their ground truth:

1. **Encode once.** The vision tower runs once per image and its features are shared by every rollout, the
   policy pass and the reference pass; the SAM image encoder runs once per image per optimisation step and its
   embedding is shared by the ``G`` rollouts of the image (``reuse_encodings=False`` re-encodes per rollout and
   per pass, as a trainer that repeats each prompt ``G`` times does: the baseline of the cost benchmark).
2. **Sample** ``G`` completions per prompt with the KV cache (``temperature``, ``top_p``), in eval mode.
3. **Reference pass** (``beta > 0``): log-probabilities of the sampled tokens under the stage-1 policy
   (:class:`scripts.engines.reference.ReferencePolicy`), without gradient.
4. **Policy pass**, with gradient: one teacher-forced forward over prompt + completion gives the tokens'
   log-probabilities *and* the masks (``<seg>`` state -> adapter -> mask decoder), so the masks that are rewarded
   are the ones the DiceCE term trains.
5. **Rewards** (:func:`scripts.rewards.score_rollouts`) and group-normalised **advantages**.
6. **Loss** (:class:`scripts.losses.CoreSegGRPOLoss`): clipped surrogate + ``beta`` k3 KL + ``l4`` DiceCE, divided by
   the accumulation steps as a whole, so the mask term is scaled like the policy term.

With ``num_iterations = mu > 1`` the rollouts are reused for ``mu`` optimiser steps (PPO-style; the first step's
log-probabilities are the "old" ones, so the ratio and the clipping matter); with ``mu = 1`` the ratio is 1 and
nothing is clipped, as in trl's on-policy default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.transforms import Transform
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer

from scripts.losses import CoreSegGRPOLoss, group_advantages, normalized_sum_advantages, token_log_probs
from scripts.networks.coreseg import CoreSegSamples, repeat_mm_encoder_outputs
from scripts.rewards import RewardWeights, score_rollouts

from .batch import split_batch
from .inferers import TeacherForcedInferer
from .reference import ReferencePolicy
from .trainer import _accumulation_state, _autocast, _optimizer_step, _uses_grad_scaler

__all__ = ["ADVANTAGE_MODES", "CoreSegGRPOTrainer", "Rollouts", "repeat_image_pixels"]

#: How rewards become advantages: normalise their weighted sum (trl's default), or normalise each, then sum.
ADVANTAGE_MODES = ("sum_then_normalize", "normalize_then_sum")


@dataclass
class Rollouts:
    """The sampled completions of a batch and the encodings every pass over them shares.

    Attributes:
        samples: the completions (``N = B * G`` rows, grouped per prompt).
        mm_encoder_outputs: vision features, one per rollout (shared tensors when encodings are reused).
        pixel_values: per-rollout pixels instead of features (only when encodings are not reused).
        sam_images: ``(B, 3, S, S)`` SAM inputs of the prompts.
        group_size: ``G``.
    """

    samples: CoreSegSamples
    mm_encoder_outputs: dict | None
    pixel_values: torch.Tensor | None
    sam_images: torch.Tensor
    group_size: int

    def text_inputs(self) -> dict[str, Any]:
        """Keyword arguments of a teacher-forced pass over prompt + completion (without SAM inputs)."""
        inputs = self.samples.forward_inputs()
        if self.mm_encoder_outputs is not None:
            inputs["mm_encoder_outputs"] = self.mm_encoder_outputs
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
        return inputs


class CoreSegGRPOTrainer(SupervisedTrainer):
    """GRPO fine-tuning of CoreSeg with the paper's rewards (see the module docstring for one iteration).

    ``engine.state.output`` holds the loss and its parts (``policy_loss``, ``mask_loss``, ``kl``,
    ``clip_fraction``), every reward's mean (``reward_format``, ``reward_bbox``, ``reward_mask``, ``reward``) and
    ``reward_std``, ``zero_std_fraction`` (share of groups whose rewards are all equal: no learning signal),
    ``format_valid``, ``completion_length`` and ``truncated_fraction``, plus ``pred``/``label``/``image`` for the
    rollouts (for MONAI metric handlers) and ``completions``.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, epoch_length, non_blocking, iteration_update,
        postprocessing, key_train_metric, additional_metrics, metric_cmp_fn, train_handlers, amp, event_names,
        event_to_attr, decollate, optim_set_to_none, amp_kwargs, accumulation_steps: as in
            :class:`monai.engines.SupervisedTrainer`. ``train_data_loader`` yields batches of the collator in
            ``"generate"`` mode (left-padded prompts) with ground-truth masks and metadata.
        loss_function: a :class:`scripts.losses.CoreSegGRPOLoss` (default: its defaults).
        reference: the stage-1 policy (default: a :class:`ReferencePolicy` of ``network.mllm`` made now, when
            the loss has ``beta > 0``). Put it in the checkpoints so a resumed run keeps it.
        num_generations: ``G``, completions sampled per prompt (>= 2: a group of one has no baseline).
        temperature, top_p: sampling settings (the log-probabilities use the same temperature).
        max_new_tokens: longest completion.
        reward_weights: weights of the format, box and mask rewards (0 switches one off; Table 3).
        mask_reward_threshold, mask_reward_lam: ``threshold`` and ``lam`` of :func:`scripts.rewards.mask_reward`.
        advantage_mode: one of :data:`ADVANTAGE_MODES`.
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"`` (see :func:`scripts.losses.group_advantages`).
        num_iterations: optimiser steps per batch of rollouts (``mu``); > 1 needs ``accumulation_steps == 1``.
        reuse_encodings: encode each image once (True) or once per rollout and pass (False, for benchmarks).
        grad_clip_norm: clip the global gradient norm to this value (None: off).
        generation_kwargs: further settings of :meth:`CoreSeg.sample` (``top_k``, ``repetition_penalty``,
            ``min_new_tokens``...).
        reasoning: completions reason before answering (default); False is Table 3's no-CoT setting, where the
            format reward accepts the answer alone (prompts and targets come from ``reasoning=False`` data).
        inferer: how the policy pass calls the network (default: :class:`TeacherForcedInferer`).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: CoreSegGRPOLoss | None = None,
        reference: ReferencePolicy | None = None,
        num_generations: int = 4,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 512,
        reward_weights: RewardWeights | Mapping[str, float] | None = None,
        mask_reward_threshold: float = 0.05,
        mask_reward_lam: float = 2.0,
        advantage_mode: str = "sum_then_normalize",
        scale_rewards: str = "group",
        num_iterations: int = 1,
        reuse_encodings: bool = True,
        grad_clip_norm: float | None = None,
        generation_kwargs: Mapping[str, Any] | None = None,
        reasoning: bool = True,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        iteration_update: Callable | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        amp_kwargs: dict | None = None,
        accumulation_steps: int = 1,
        inferer: TeacherForcedInferer | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function if loss_function is not None else CoreSegGRPOLoss(),
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            train_handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            amp_kwargs=amp_kwargs,
            accumulation_steps=accumulation_steps,
            inferer=inferer if inferer is not None else TeacherForcedInferer(),
        )
        if num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (a group of one has no baseline), got {num_generations}.")
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"Need temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}.")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        if advantage_mode not in ADVANTAGE_MODES:
            raise ValueError(f"Unknown advantage_mode {advantage_mode!r}; expected one of {ADVANTAGE_MODES}.")
        if num_iterations < 1 or (num_iterations > 1 and accumulation_steps > 1):
            raise ValueError(f"num_iterations must be >= 1, and 1 with gradient accumulation; got {num_iterations} "
                             f"with accumulation_steps={accumulation_steps}.")
        if grad_clip_norm is not None and grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be positive or None, got {grad_clip_norm}.")
        if reference is None and self.loss_function.beta > 0:
            reference = ReferencePolicy(network.mllm)
        self.reference = reference
        self.num_generations = num_generations
        self.generation_kwargs = {"do_sample": True, "temperature": temperature, "top_p": top_p,
                                  "max_new_tokens": max_new_tokens, **dict(generation_kwargs or {})}
        self.temperature = temperature
        self.reward_weights = reward_weights if isinstance(reward_weights, RewardWeights) \
            else RewardWeights(**dict(reward_weights or {}))
        self.mask_reward_threshold = mask_reward_threshold
        self.mask_reward_lam = mask_reward_lam
        self.advantage_mode = advantage_mode
        self.scale_rewards = scale_rewards
        self.num_iterations = num_iterations
        self.reuse_encodings = reuse_encodings
        self.grad_clip_norm = grad_clip_norm
        self.reasoning = reasoning

    # ------------------------------------------------------------------ the pieces of an iteration
    def sample_rollouts(self, inputs: Mapping[str, torch.Tensor]) -> Rollouts:
        """Sample ``G`` completions per prompt (eval mode, no gradient)."""
        network, group = self.network, self.num_generations
        pixel_values, grid = inputs.get("pixel_values"), inputs.get("image_grid_thw")
        network.eval()
        with torch.no_grad(), _autocast(self):
            if self.reuse_encodings:
                vision = network.encode_vision(pixel_values, grid) if pixel_values is not None else None
                samples = network.sample(
                    inputs["input_ids"], inputs["attention_mask"], image_grid_thw=grid,
                    mm_token_type_ids=inputs.get("mm_token_type_ids"), mm_encoder_outputs=vision,
                    num_return_sequences=group, **self.generation_kwargs,
                )
                vision = repeat_mm_encoder_outputs(vision, group, inputs["input_ids"].shape[0])
                return Rollouts(samples, vision, None, inputs["sam_images"], group)
            # Baseline: every prompt repeated G times, each copy encoding its image again in every pass.
            repeated_pixels = None if pixel_values is None else repeat_image_pixels(pixel_values, grid, group)
            types = inputs.get("mm_token_type_ids")
            samples = network.sample(
                inputs["input_ids"].repeat_interleave(group, 0), inputs["attention_mask"].repeat_interleave(group, 0),
                pixel_values=repeated_pixels, image_grid_thw=None if grid is None else grid.repeat_interleave(group, 0),
                mm_token_type_ids=None if types is None else types.repeat_interleave(group, 0),
                num_return_sequences=1, **self.generation_kwargs,
            )
            samples.num_return_sequences = group
            return Rollouts(samples, None, repeated_pixels, inputs["sam_images"], group)

    def reference_log_probs(self, rollouts: Rollouts) -> torch.Tensor:
        """``(N, L)`` log-probabilities of the sampled tokens under the reference policy (no gradient)."""
        if self.reference is None:
            raise ValueError("No reference policy: pass one, or use beta > 0 so that the trainer makes it.")
        inputs = rollouts.text_inputs()
        inputs.pop("answer_mask")
        length = rollouts.samples.completion_ids.shape[1]
        self.network.train()  # the mode of the policy pass, so that the two compare like with like (as trl does)
        with torch.no_grad(), self.reference.applied(), _autocast(self):
            logits = self.network.language_logits(**inputs, logits_to_keep=length + 1)
            return token_log_probs(logits, rollouts.samples.completion_ids, self.temperature)

    def policy_pass(self, rollouts: Rollouts):
        """Teacher-forced pass with gradient: ``(CoreSegOutput, (N, L) log-probabilities)``."""
        samples = rollouts.samples
        if self.reuse_encodings:
            sam_features = self.network.encode_sam(rollouts.sam_images).repeat_interleave(rollouts.group_size)
        else:
            sam_features = self.network.encode_sam(rollouts.sam_images.repeat_interleave(rollouts.group_size, 0))
        length = samples.completion_ids.shape[1]
        inputs = {**rollouts.text_inputs(), "sam_features": sam_features, "logits_to_keep": length + 1}
        output = self.inferer(inputs, self.network)
        return output, token_log_probs(output.logits, samples.completion_ids, self.temperature)

    def advantages(self, per_reward: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """``(N,)`` advantages from ``(N, K)`` rewards and their ``(N,)`` weighted total."""
        if self.advantage_mode == "normalize_then_sum":
            weights = torch.tensor(list(self.reward_weights.as_dict().values()), dtype=per_reward.dtype)
            return normalized_sum_advantages(per_reward, weights, self.num_generations)
        return group_advantages(total, self.num_generations, self.scale_rewards)

    # ------------------------------------------------------------------ the iteration
    def _iteration(self, engine: CoreSegGRPOTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs, masks, rest = split_batch(batchdata, engine.state.device, engine.non_blocking)
        if "labels" in inputs:
            raise ValueError("GRPO samples its own completions: collate its batches with mode='generate'.")
        metadata = rest.get("metadata")
        if masks is None or metadata is None:
            raise ValueError("GRPO batches need ground-truth masks ('label') and metadata (the ground-truth boxes) "
                             "for the rewards: use a datalist with labels and the CoreSeg collator.")
        group = engine.num_generations
        rollouts = engine.sample_rollouts(inputs)
        samples = rollouts.samples
        gt_masks = masks.repeat_interleave(group, 0)
        gt_boxes = [list(meta.get("boxes_mllm") or []) for meta in metadata for _ in range(group)]
        ref_log_probs = engine.reference_log_probs(rollouts) if engine.loss_function.beta > 0 else None

        should_zero_grad, should_step = _accumulation_state(engine)
        scaler = engine.scaler if _uses_grad_scaler(engine) else None
        old_log_probs = advantages = None
        for step in range(engine.num_iterations):
            engine.network.train()
            if should_zero_grad or step > 0:
                engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with _autocast(engine):
                output, log_probs = engine.policy_pass(rollouts)
            if step == 0:
                old_log_probs = log_probs.detach()
                rewards = score_rollouts(
                    samples.completions, output.seg_valid, (output.mask_logits.detach() > 0).cpu(), gt_masks.cpu(),
                    gt_boxes, engine.reward_weights, engine.mask_reward_threshold, engine.mask_reward_lam,
                    require_reasoning=engine.reasoning,
                )
                total = torch.as_tensor(rewards.total, dtype=torch.float32)
                advantages = engine.advantages(torch.as_tensor(rewards.per_reward, dtype=torch.float32), total)
                advantages = advantages.to(log_probs.device)
                engine.state.output = {
                    Keys.IMAGE: rollouts.sam_images.repeat_interleave(group, 0),
                    Keys.LABEL: gt_masks,
                    Keys.PRED: output.mask_logits,
                    "completions": samples.completions,
                    **rewards.means(),
                    **_rollout_stats(total, group, samples),
                    "format_valid": float(rewards.format_valid.mean()),
                }
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            parts = engine.loss_function(
                log_probs, old_log_probs, advantages, samples.completion_mask, ref_log_probs,
                output.mask_logits, gt_masks, output.seg_valid,
            )
            if step == 0:
                engine.state.output[Keys.LOSS] = parts["loss"]
                engine.state.output.update(
                    {name: float(parts[name]) for name in ("policy_loss", "mask_loss", "kl", "clip_fraction")}
                )
                engine.fire_event(IterationEvents.LOSS_COMPLETED)
            else:  # later steps of the same rollouts: report their clipping (what mu > 1 is about)
                engine.state.output["clip_fraction"] = float(parts["clip_fraction"])
            loss = parts["loss"] / engine.accumulation_steps
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if step == 0:
                engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                _optimizer_step(engine, scaler)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _rollout_stats(total: torch.Tensor, group: int, samples: CoreSegSamples) -> dict[str, float]:
    grouped = total.view(-1, group)
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values
    lengths = samples.completion_mask.sum(dim=1).float()
    return {
        "reward_std": float(total.std()) if total.numel() > 1 else 0.0,
        "zero_std_fraction": float((spread <= 1e-8).float().mean()),
        "completion_length": float(lengths.mean()),
        "truncated_fraction": float(samples.truncated.float().mean()),
    }


def repeat_image_pixels(pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, repeats: int) -> torch.Tensor:
    """Repeat each image's patch rows of a Qwen2.5-VL ``pixel_values`` (images concatenated) ``repeats`` times.

    Args:
        pixel_values: ``(sum_i t_i * h_i * w_i, C)`` patches of the batch's images, image after image.
        image_grid_thw: ``(B, 3)`` the images' patch grids.
        repeats: copies of each image, adjacent.
    """
    sizes = image_grid_thw.prod(dim=-1).tolist()
    if sum(sizes) != pixel_values.shape[0]:
        raise ValueError(f"pixel_values has {pixel_values.shape[0]} patch rows, the grids add up to {sum(sizes)}.")
    chunks = pixel_values.split(sizes)
    return torch.cat([chunk for chunk in chunks for _ in range(repeats)])
