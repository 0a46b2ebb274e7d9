# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Stage-1 (SFT) trainer: MONAI's ``SupervisedTrainer`` with a CoreSeg iteration."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.transforms import Transform
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer

from scripts.losses import CoreSegSFTLoss

from .batch import split_batch
from .inferers import TeacherForcedInferer

__all__ = ["CoreSegSFTTrainer"]


class CoreSegSFTTrainer(SupervisedTrainer):
    """Supervised fine-tuning of CoreSeg (paper section 4.2): ``l1 * CE(text) + l2 * DiceCE(mask)``.

    The iteration follows ``SupervisedTrainer._iteration`` (same events in the same order: ``FORWARD_COMPLETED``,
    ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``, ``MODEL_COMPLETED``; same gradient accumulation rule), with three
    differences: the network takes the collated batch as keyword arguments, the loss returns its components
    (logged as ``text_loss``, ``mask_loss``), and the gradient norm can be clipped before the optimizer step.
    Mixed precision uses ``torch.autocast`` on the engine's device with ``amp_kwargs`` (e.g.
    ``{"dtype": torch.bfloat16}``); the gradient scaler is used only for float16.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, epoch_length, non_blocking, iteration_update,
        postprocessing, key_train_metric, additional_metrics, metric_cmp_fn, train_handlers, amp, event_names,
        event_to_attr, decollate, optim_set_to_none, amp_kwargs, accumulation_steps: as in
            :class:`monai.engines.SupervisedTrainer`. As there, ``decollate=True`` turns ``state.output`` into a
            list of per-sample dicts after each iteration, with the scalars (``loss``, ``text_loss``...)
            replicated into each: the form MONAI's handler defaults (``from_engine([...], first=True)``,
            ``--tracking mlflow``) expect.
        loss_function: a :class:`scripts.losses.CoreSegSFTLoss` (default: paper weights 1.0 and 1.0).
        grad_clip_norm: clip the global gradient norm of the trainable parameters to this value (None: off).
        inferer: how the network is called on a batch (default: :class:`TeacherForcedInferer`). One with
            ``with_masks=False`` (a text-only stage) leaves ``pred`` and ``mask_loss`` out of ``state.output``,
            so it takes no ``key_train_metric`` or ``postprocessing``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
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
        grad_clip_norm: float | None = None,
        inferer: TeacherForcedInferer | None = None,
    ) -> None:
        if not getattr(inferer, "with_masks", True) and (key_train_metric or postprocessing is not None):
            raise ValueError("The inferer runs without masks (with_masks=False), so there is no 'pred' for a "
                             "key_train_metric or postprocessing: pass neither (a text-only stage has no mask metric).")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function if loss_function is not None else CoreSegSFTLoss(),
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
        if grad_clip_norm is not None and grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be positive or None, got {grad_clip_norm}.")
        self.grad_clip_norm = grad_clip_norm

    def _iteration(self, engine: CoreSegSFTTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs, masks, _ = split_batch(batchdata, engine.state.device, engine.non_blocking)
        if masks is None or "labels" not in inputs:
            raise ValueError("SFT batches need token labels and ground-truth masks: use the collator in train mode.")
        engine.state.output = {Keys.IMAGE: inputs["sam_images"], Keys.LABEL: masks}
        should_zero_grad, should_step = _accumulation_state(engine)

        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with _autocast(engine):
            output = engine.inferer(inputs, engine.network)
            if output.mask_logits is not None:
                engine.state.output[Keys.PRED] = output.mask_logits
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            parts = engine.loss_function(output, masks)
        engine.state.output[Keys.LOSS] = parts["loss"]
        engine.state.output.update({name: float(parts[name]) for name in ("text_loss", "mask_loss") if name in parts})
        engine.state.output["format_valid"] = float(output.seg_valid.float().mean())
        engine.fire_event(IterationEvents.LOSS_COMPLETED)

        loss = parts["loss"] / engine.accumulation_steps
        scaler = engine.scaler if _uses_grad_scaler(engine) else None
        (scaler.scale(loss) if scaler is not None else loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if should_step:
            _optimizer_step(engine, scaler)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _optimizer_step(engine: SupervisedTrainer, scaler) -> None:
    """Unscale (float16), clip the gradient norm when the engine has ``grad_clip_norm`` (logged as ``grad_norm``),
    then step the optimiser, through the gradient scaler when there is one."""
    if scaler is not None:
        scaler.unscale_(engine.optimizer)
    if engine.grad_clip_norm is not None:
        params = [p for group in engine.optimizer.param_groups for p in group["params"]]
        engine.state.output["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, engine.grad_clip_norm))
    if scaler is not None:
        scaler.step(engine.optimizer)
        scaler.update()
    else:
        engine.optimizer.step()


def _accumulation_state(engine: SupervisedTrainer) -> tuple[bool, bool]:
    """``(should_zero_grad, should_step)`` with SupervisedTrainer's rule (the last iteration of an epoch steps)."""
    steps = engine.accumulation_steps
    if steps == 1:
        return True, True
    epoch_length = engine.state.epoch_length
    if epoch_length is not None:
        local = (engine.state.iteration - 1) % epoch_length
        return local % steps == 0, (local + 1) % steps == 0 or (local + 1) == epoch_length
    local = engine.state.iteration - 1
    return local % steps == 0, (local + 1) % steps == 0


def _autocast(engine: SupervisedTrainer):
    if not engine.amp:
        return contextlib.nullcontext()
    return torch.autocast(engine.state.device.type, **engine.amp_kwargs)


def _uses_grad_scaler(engine: SupervisedTrainer) -> bool:
    return bool(engine.amp and engine.scaler is not None and engine.amp_kwargs.get("dtype", torch.float16) == torch.float16)
