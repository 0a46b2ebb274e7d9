# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Per-sample scoring of CoreSeg generations and the evaluation report (CSV, JSON, markdown, plots, overlays).

The metric conventions are those of :mod:`scripts.metrics`: Dice/IoU with empty/empty = 1, failure = Dice 0 or
an invalid answer format, box mIoU by Hungarian matching. Masks are scored at the SAM resolution (512x512),
where the model predicts them and where the labels are resized with nearest-neighbour interpolation.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from scripts.data.coordinates import mllm_to_original_boxes
from scripts.data.prompts import parse_completion
from scripts.data.vocabulary import ANATOMIES, MODALITIES
from scripts.metrics import box_miou, mask_dice_iou

__all__ = ["SampleScore", "score_generation", "summarize", "EvaluationReport", "TABLE1_ANATOMY_LABELS"]

#: Column labels of the paper's Table 1 for the anatomies, in its order.
TABLE1_ANATOMY_LABELS = {"head": "Head", "abdomen": "Abd.", "lung": "Lung", "eye": "Eye", "neck": "Neck",
                         "skin": "Skin", "foot": "Foot", "breast": "Breast", "heart": "Heart"}


@dataclass
class SampleScore:
    """Scores and context of one evaluated sample (one row of the per-sample CSV).

    ``names_asked_finding`` says whether the answer names the finding the question asked about (``disease``),
    whatever its format; ``None`` when the record does not say which finding was asked.
    """

    image: str
    question: str
    modality: str
    anatomy: str
    disease: str
    dice: float
    iou: float
    box_miou: float
    failure: bool
    format_valid: bool
    format_error: str
    seg_count: int
    says_no_lesion: bool
    names_asked_finding: bool | None
    gt_pixels: int
    pred_pixels: int
    num_gt_boxes: int
    num_pred_boxes: int
    num_distractors: int | None
    completion: str


def score_generation(
    completions: Sequence[str],
    pred_masks: torch.Tensor,
    gt_masks: torch.Tensor,
    metadata: Sequence[Mapping[str, object]],
    require_reasoning: bool = True,
) -> list[SampleScore]:
    """Score a batch of generations against their ground truth.

    Args:
        completions: decoded completions (``CoreSegGeneration.completions``).
        pred_masks: ``(B, 1, S, S)`` predicted masks (bool or 0/1).
        gt_masks: ``(B, 1, S, S)`` ground-truth masks.
        metadata: per-sample metadata of the collator (``original_size``, ``mllm_input_size``, ``boxes``, ...).
        require_reasoning: False scores a model trained without chain-of-thought (the answer alone is valid).
    """
    if not len(completions) == len(pred_masks) == len(gt_masks) == len(metadata):
        raise ValueError(f"Batch parts disagree in length: {len(completions)} completions, {len(pred_masks)} "
                         f"predictions, {len(gt_masks)} masks, {len(metadata)} metadata entries.")
    dice, iou = mask_dice_iou(pred_masks, gt_masks)
    scores = []
    for index, (completion, meta) in enumerate(zip(completions, metadata)):
        parsed = parse_completion(completion, require_reasoning=require_reasoning)
        gt_boxes = [list(map(float, box)) for box in meta.get("boxes") or []]
        pred_boxes = parsed.boxes
        if pred_boxes and meta.get("mllm_input_size") and meta.get("original_size"):
            pred_boxes = mllm_to_original_boxes(pred_boxes, meta["mllm_input_size"], meta["original_size"])
        sample_dice = float(dice[index])
        scores.append(SampleScore(
            image=str(meta.get("image_path", "")),
            question=str(meta.get("question", "")),
            modality=str(meta.get("modality", "")),
            anatomy=str(meta.get("anatomy", "")),
            disease=str(meta.get("disease", "")),
            dice=sample_dice,
            iou=float(iou[index]),
            box_miou=box_miou(pred_boxes, gt_boxes),
            failure=sample_dice == 0.0 or not parsed.valid,
            format_valid=parsed.valid,
            format_error=parsed.error,
            seg_count=parsed.seg_count,
            says_no_lesion=parsed.no_lesion,
            names_asked_finding=_names_finding(parsed.lesion, meta.get("disease")),
            gt_pixels=int((gt_masks[index] > 0).sum()),
            pred_pixels=int((pred_masks[index] > 0).sum()),
            num_gt_boxes=len(gt_boxes),
            num_pred_boxes=len(pred_boxes),
            num_distractors=None if meta.get("num_distractors") is None else int(meta["num_distractors"]),
            completion=completion,
        ))
    return scores


def _names_finding(lesion: str | None, disease: object) -> bool | None:
    if not disease:
        return None
    return bool(lesion) and " ".join(str(lesion).lower().split()) == " ".join(str(disease).lower().split())


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def summarize(scores: Sequence[SampleScore]) -> dict:
    """Aggregate scores: overall means, failure rate, and Dice per anatomy, modality and distractor presence.

    Groups with no sample are reported as ``None`` (not 0).
    """
    if not scores:
        raise ValueError("Nothing to summarize: no sample was evaluated.")
    summary = {
        "samples": len(scores),
        "mDice": _mean(s.dice for s in scores),
        "mIoU": _mean(s.iou for s in scores),
        "failure_rate": _mean(float(s.failure) for s in scores),
        "format_valid_rate": _mean(float(s.format_valid) for s in scores),
        "box_mIoU": _mean(s.box_miou for s in scores),
        # how often the answer names the finding asked about (a model must copy it from the question)
        "finding_match_rate": _mean(float(s.names_asked_finding) for s in scores if s.names_asked_finding is not None),
        # ... in an answer of the required format: the answers a mask can be read from and trusted
        "valid_finding_match_rate": _mean(float(s.names_asked_finding and s.format_valid) for s in scores
                                          if s.names_asked_finding is not None),
        # how often a well-formed answer says rightly whether the finding is there (boxes) or not ("There is no"):
        # the part of the answer that a language model can only get right by looking at the image
        "presence_accuracy": _mean(float(s.format_valid and s.says_no_lesion == (s.gt_pixels == 0)) for s in scores),
        "no_lesion_answer_rate": _mean(float(s.says_no_lesion) for s in scores),
        "dice_by_anatomy": {a: _mean(s.dice for s in scores if s.anatomy == a) for a in ANATOMIES},
        "dice_by_modality": {m: _mean(s.dice for s in scores if s.modality == m) for m in MODALITIES},
        "samples_by_anatomy": {a: sum(s.anatomy == a for s in scores) for a in ANATOMIES},
        "samples_by_modality": {m: sum(s.modality == m for s in scores) for m in MODALITIES},
    }
    if any(s.num_distractors is not None for s in scores):
        summary["dice_with_distractors"] = _mean(s.dice for s in scores if s.num_distractors)
        summary["dice_without_distractors"] = _mean(s.dice for s in scores if s.num_distractors == 0)
    return summary


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"


class EvaluationReport:
    """Writes an evaluation's results: ``metrics.csv`` (per sample), ``summary.json``, ``table.md`` (paper Table 1
    format plus a per-modality table), bar charts of Dice per anatomy and modality, and overlays.

    Args:
        output_dir: where the files go (created).
        method_name: row label of the markdown tables.
    """

    def __init__(self, output_dir: str | Path, method_name: str = "CORE-Seg") -> None:
        self.output_dir = Path(output_dir)
        self.method_name = method_name

    def write(self, scores: Sequence[SampleScore], overlays: Sequence[dict] = ()) -> dict:
        """Write every file and return the summary."""
        summary = summarize(scores)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._write_csv(scores)
        (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        (self.output_dir / "table.md").write_text(self.markdown(summary))
        self._plot_groups(summary)
        if overlays:
            self._plot_overlays(overlays)
        return summary

    def _write_csv(self, scores: Sequence[SampleScore]) -> None:
        with open(self.output_dir / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(SampleScore)])
            writer.writeheader()
            writer.writerows(asdict(score) for score in scores)

    def markdown(self, summary: Mapping) -> str:
        """The paper's Table 1 layout (percentages) and the same for modalities."""
        anatomy_labels = [TABLE1_ANATOMY_LABELS[a] for a in ANATOMIES]
        head = ["Method", "mDice ↑", "mIoU ↑", "Fail ↓", *anatomy_labels]
        row = [self.method_name, _pct(summary["mDice"]), _pct(summary["mIoU"]), _pct(summary["failure_rate"]),
               *(_pct(summary["dice_by_anatomy"][a]) for a in ANATOMIES)]
        lines = [
            f"Overall performance and anatomy-specific Dice (%), {summary['samples']} samples.",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            "| " + " | ".join(row) + " |",
            "",
            "Modality-specific Dice (%).",
            "",
            "| Method | " + " | ".join(MODALITIES) + " |",
            "|" + "---|" * (len(MODALITIES) + 1),
            f"| {self.method_name} | " + " | ".join(_pct(summary["dice_by_modality"][m]) for m in MODALITIES) + " |",
            "",
            f"Box mIoU: {_pct(summary['box_mIoU'])} %. Valid answer format: {_pct(summary['format_valid_rate'])} %. "
            f"Answers naming the asked finding: {_pct(summary['finding_match_rate'])} % "
            f"({_pct(summary['valid_finding_match_rate'])} % in the valid format).",
        ]
        if "dice_with_distractors" in summary:
            lines.append(f"Dice with distractors: {_pct(summary['dice_with_distractors'])} %; without: "
                         f"{_pct(summary['dice_without_distractors'])} %.")
        return "\n".join(lines) + "\n"

    def _plot_groups(self, summary: Mapping) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(12, 3.8))
        for axis, (key, names, title) in zip(axes, (
            ("dice_by_anatomy", ANATOMIES, "Dice by anatomy"),
            ("dice_by_modality", MODALITIES, "Dice by modality"),
        )):
            values = [summary[key][n] for n in names]
            heights = [0.0 if v is None else 100 * v for v in values]
            bars = axis.bar(range(len(names)), heights, color=["#3b7dd8" if v is not None else "#cccccc" for v in values])
            axis.set_xticks(range(len(names)), names, rotation=35, ha="right")
            axis.set_ylim(0, 100)
            axis.set_ylabel("Dice (%)")
            axis.set_title(title)
            for bar, value in zip(bars, values):
                axis.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1,
                          "n/a" if value is None else f"{100 * value:.1f}", ha="center", fontsize=7)
        figure.tight_layout()
        figure.savefig(self.output_dir / "dice_by_group.png", dpi=120)
        plt.close(figure)

    def _plot_overlays(self, overlays: Sequence[dict]) -> None:
        """``overlays``: dicts with ``image`` (H,W,3 float in [0,1]), ``pred`` and ``gt`` (H,W bool), ``title``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        columns = min(4, len(overlays))
        rows = math.ceil(len(overlays) / columns)
        figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows), squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for axis, item in zip(axes.flat, overlays):
            axis.imshow(item["image"])
            if item["gt"].any():
                axis.contour(item["gt"], levels=[0.5], colors=["#00ff66"], linewidths=1.2)
            if item["pred"].any():
                axis.contour(item["pred"], levels=[0.5], colors=["#ff3355"], linewidths=1.2)
            axis.set_title(item["title"], fontsize=7)
        figure.suptitle("green: ground truth, red: prediction", fontsize=9)
        figure.tight_layout()
        figure.savefig(self.output_dir / "overlays_best_worst.png", dpi=110)
        plt.close(figure)
