# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Evaluator that generates answers and masks with CoreSeg and scores them against the ground truth."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.transforms import Transform
from monai.utils import CommonKeys as Keys
from monai.utils import ForwardMode

from scripts.evaluation import score_generation

from .batch import split_batch
from .inferers import GenerationInferer

__all__ = ["CoreSegEvaluator"]


class CoreSegEvaluator(SupervisedEvaluator):
    """Runs :meth:`CoreSeg.generate` on each batch (the real inference path, KV cache on).

    ``engine.state.output`` holds ``pred`` (``(B, 1, S, S)`` float 0/1 masks), ``mask_logits``, ``label`` (the ground-truth masks,
    when the batch has them), ``image`` (the SAM images), ``completions``, ``seg_counts``, ``metadata`` and, with
    ground truth, ``scores`` (:class:`scripts.evaluation.SampleScore` per sample), so MONAI metric handlers
    (``MeanDice`` with ``ignore_empty=False``) and :class:`scripts.engines.handlers.EvaluationReportHandler` work
    on it directly.

    Args:
        device, val_data_loader, network, epoch_length, non_blocking, postprocessing, key_val_metric,
        additional_metrics, metric_cmp_fn, val_handlers, amp, mode, event_names, event_to_attr, decollate,
        amp_kwargs: as in :class:`monai.engines.SupervisedEvaluator` (``decollate`` defaults to False).
        inferer: a :class:`scripts.engines.inferers.GenerationInferer` holding the generation settings
            (default: greedy decoding, at most 512 new tokens).
        reasoning: the model reasons before answering (default); False scores a no-CoT model, whose answer
            alone is a valid completion.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        postprocessing: Transform | None = None,
        key_val_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        mode: ForwardMode | str = ForwardMode.EVAL,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        amp_kwargs: dict | None = None,
        inferer: GenerationInferer | None = None,
        reasoning: bool = True,
    ) -> None:
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            network=network,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            postprocessing=postprocessing,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            val_handlers=val_handlers,
            amp=amp,
            mode=mode,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            amp_kwargs=amp_kwargs,
            inferer=inferer if inferer is not None else GenerationInferer(),
        )
        self.reasoning = reasoning

    def _iteration(self, engine: CoreSegEvaluator, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs, masks, rest = split_batch(batchdata, engine.state.device, engine.non_blocking)
        if "labels" in inputs:
            raise ValueError("The evaluator generates from prompts: collate its batches with mode='generate'.")
        autocast = torch.autocast(engine.state.device.type, **engine.amp_kwargs) if engine.amp \
            else contextlib.nullcontext()
        with engine.mode(engine.network), autocast:
            generation = engine.inferer(inputs, engine.network)
        metadata = rest.get("metadata") or [{} for _ in generation.completions]
        engine.state.output = {
            Keys.IMAGE: inputs["sam_images"],
            Keys.PRED: generation.masks.float(),
            "mask_logits": generation.mask_logits,
            "completions": generation.completions,
            "seg_counts": generation.seg_counts,
            "metadata": metadata,
        }
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        if masks is not None:
            engine.state.output[Keys.LABEL] = masks
            engine.state.output["scores"] = score_generation(
                generation.completions, generation.masks.cpu(), masks.cpu(), metadata, engine.reasoning
            )
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
