# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Ignite handlers of the CORE-Seg engines."""

from __future__ import annotations

import heapq
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from scripts.evaluation import EvaluationReport, SampleScore, summarize
from scripts.networks.medsam2 import SAM_PIXEL_MEAN, SAM_PIXEL_STD

__all__ = ["TRAINING_STATS", "EvaluationReportHandler", "FreezeForIterations", "PredictionWriter", "training_stats"]

#: Summary entries copied into ``engine.state.metrics`` (names as logged).
REPORTED_METRICS = ("mDice", "mIoU", "failure_rate", "format_valid_rate", "box_mIoU", "finding_match_rate",
                    "valid_finding_match_rate", "presence_accuracy", "no_lesion_answer_rate")


#: Scalars of a training iteration's output logged by :func:`training_stats`.
TRAINING_STATS = (
    "loss", "text_loss", "mask_loss", "format_valid",
    # GRPO (scripts.engines.grpo)
    "policy_loss", "kl", "clip_fraction", "reward", "reward_std", "reward_format", "reward_bbox", "reward_mask",
    "zero_std_fraction", "completion_length", "truncated_fraction", "grad_norm",
)


def training_stats(output: dict | list[dict]) -> dict[str, float]:
    """``output_transform`` for StatsHandler/TensorBoard: the loss parts of a training iteration as floats.

    Accepts the trainer's output dict or its decollated list of per-sample dicts (MONAI engines replicate
    scalars into every item, so the first one holds them).
    """
    if isinstance(output, list):
        if not output:
            return {}
        output = output[0]
    return {name: float(torch.as_tensor(output[name]).detach()) for name in TRAINING_STATS if name in output}


class FreezeForIterations:
    """Keep parameters frozen for a trainer's first iterations, then train them.

    Fine-tuning a pretrained backbone together with a randomly initialised head lets the head's early, noisy
    gradients distort the backbone's features ("linear probing, then fine-tuning", Kumar et al., ICLR 2022).
    In CoreSeg the ``<seg>`` state is such a feature: frozen at first, it carries the asked finding, while the
    randomly initialised adapter and mask decoder learn to read it (``docs/sft_learning.md``). The switch reads
    ``engine.state.iteration``, so a resumed run picks it up where it was.

    Args:
        parameters: the parameters to hold (e.g. the language model's trainable ones); taken as given, so list
            them before anything else freezes them.
        iterations: iterations during which they stay frozen (0: never frozen; ``None``: the whole run, e.g. to
            train the adapter and mask decoder on a language model trained before).
    """

    def __init__(self, parameters, iterations: int | None) -> None:
        if iterations is not None and iterations < 0:
            raise ValueError(f"iterations must be >= 0 or None (the whole run), got {iterations}.")
        self.parameters = list(parameters)
        self.iterations = None if iterations is None else int(iterations)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        # ignite counts the iteration before ITERATION_STARTED: iterations 1..N stay frozen
        trainable = self.iterations is not None and engine.state.iteration > self.iterations
        for parameter in self.parameters:
            parameter.requires_grad_(trainable)


class EvaluationReportHandler:
    """Collects the per-sample scores of :class:`scripts.engines.evaluator.CoreSegEvaluator` over an epoch.

    At the end of the epoch it puts ``mDice``, ``mIoU``, ``failure_rate``, ``format_valid_rate``, ``box_mIoU`` and
    ``finding_match_rate`` and ``valid_finding_match_rate`` (when the records name their finding),
    ``presence_accuracy`` and ``no_lesion_answer_rate`` into ``engine.state.metrics`` (so StatsHandler, TensorBoard and MLflow log them) and, with ``output_dir``,
    writes the report of :class:`scripts.evaluation.EvaluationReport` with overlays of the best and worst cases.

    Args:
        output_dir: where to write the report; None computes the metrics only (e.g. during training).
        method_name: row label of the report's tables.
        num_overlays: how many best and how many worst cases (by Dice) to draw.
        overlay_size: side of the overlay thumbnails kept in memory.
    """

    def __init__(self, output_dir: str | Path | None = None, method_name: str = "CORE-Seg", num_overlays: int = 4,
                 overlay_size: int = 256) -> None:
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.method_name = method_name
        self.num_overlays = num_overlays
        self.overlay_size = overlay_size
        self.logger = logging.getLogger(__name__)
        self.scores: list[SampleScore] = []
        self._best: list = []
        self._worst: list = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._finish)

    def _reset(self, engine: Engine) -> None:
        self.scores, self._best, self._worst = [], [], []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        scores = output.get("scores")
        if scores is None:
            raise ValueError("EvaluationReportHandler needs ground-truth masks: evaluate a labelled datalist.")
        self.scores.extend(scores)
        if self.output_dir is None or self.num_overlays <= 0:
            return
        first = len(self.scores) - len(scores)
        for index, score in enumerate(scores):
            order = first + index  # unique, so priorities never tie and items are never compared
            cache: list[dict] = []

            def item(index=index, score=score, cache=cache) -> dict:
                if not cache:
                    cache.append(self._thumbnail(output, index, score))
                return cache[0]

            _offer(self._best, (score.dice, -order), item, self.num_overlays)
            _offer(self._worst, (-score.dice, -order), item, self.num_overlays)

    def _thumbnail(self, output: dict, index: int, score: SampleScore) -> dict:
        size = self.overlay_size
        mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
        image = (output["image"][index].detach().float().cpu() * std + mean).clamp(0, 1)

        def small(tensor, mode):
            return F.interpolate(tensor[None].float(), size=(size, size), mode=mode)[0]

        return {
            "image": small(image, "bilinear").permute(1, 2, 0).numpy(),
            "pred": small(output["pred"][index].detach().cpu(), "nearest")[0].numpy() > 0,
            "gt": small(output["label"][index].detach().cpu(), "nearest")[0].numpy() > 0,
            "title": f"{score.disease} ({score.modality}) Dice {100 * score.dice:.1f}"
                     + ("" if score.format_valid else " [invalid format]"),
        }

    def _finish(self, engine: Engine) -> None:
        if not self.scores:
            raise ValueError("No sample was evaluated: the evaluation data loader is empty.")
        if self.output_dir is not None:
            ranked = sorted(self._best, reverse=True) + sorted(self._worst, reverse=True)
            summary = EvaluationReport(self.output_dir, self.method_name).write(
                self.scores, overlays=[item for _, item in ranked])
            self.logger.info(f"Evaluation report written to {self.output_dir}")
        else:
            summary = summarize(self.scores)
        reported = [name for name in REPORTED_METRICS if summary.get(name) is not None]  # None: nothing to count
        for name in reported:
            engine.state.metrics[name] = summary[name]
        parts = ", ".join(f"{name}: {summary[name]:.4f}" for name in reported)
        self.logger.info(f"{summary['samples']} samples, {parts}")
        engine.state.metric_details["evaluation_summary"] = summary
        engine.state.metric_details["evaluation_scores"] = list(self.scores)


def _offer(heap: list, priority: tuple, make_item, capacity: int) -> None:
    """Keep the ``capacity`` entries of highest priority in a min-heap, building items only when they enter."""
    if capacity <= 0:
        return
    if len(heap) < capacity:
        heapq.heappush(heap, (priority, make_item()))
    elif priority > heap[0][0]:
        heapq.heapreplace(heap, (priority, make_item()))


class PredictionWriter:
    """Writes the predictions of an evaluator run through a :class:`scripts.inference.Predictor`.

    For each sample: the mask in the input's geometry and a JSON with the reasoning, answer and boxes (see
    :meth:`Predictor.save`); at the end of the run, ``predictions.json`` indexing them all.

    Args:
        predictor: the Predictor whose post-processing and writer are used.
        output_dir: where to write.
    """

    def __init__(self, predictor, output_dir: str | Path) -> None:
        self.predictor = predictor
        self.output_dir = Path(output_dir)
        self.index: list[dict] = []
        self._taken: set[str] = set()  # file stems written in this run (two questions about an image: two files)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: (self.index.clear(), self._taken.clear()))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write_index)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        predictions = self.predictor.postprocess(output["completions"], output["mask_logits"], output["metadata"])
        self.index.extend(self.predictor.save(prediction, self.output_dir, taken=self._taken)
                          for prediction in predictions)

    def _write_index(self, engine: Engine) -> None:
        path = self.predictor.write_index(self.index, self.output_dir)
        self.logger.info(f"{len(self.index)} predictions written to {self.output_dir} (index: {path})")
