# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Evaluation metrics of CORE-Seg (paper section 5.1.3) and their per-sample / aggregate report.

Conventions (stated once, used everywhere):

* Dice and IoU come from MONAI's ``DiceMetric``/``MeanIoU`` with ``ignore_empty=False``: an empty prediction on an
  empty mask scores 1 (a correct "no lesion"), a non-empty prediction on an empty mask scores 0. No sample is
  dropped (MONAI's default ``ignore_empty=True`` would turn empty masks into NaN and silently skip them).
* A sample is a **failure** when its Dice is 0 or the model's answer has an invalid format (paper 5.1.3).
* Box mIoU of a sample: predicted and ground-truth boxes are matched one-to-one by the Hungarian algorithm on
  ``1 - IoU``; the matched IoUs are summed and divided by ``max(#pred, #gt)``, so missed and extra boxes both
  count as 0. Both empty: 1; exactly one empty: 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data.box_utils import box_iou
from monai.metrics import DiceMetric, MeanIoU
from scipy.optimize import linear_sum_assignment

__all__ = ["mask_dice", "mask_dice_iou", "prompt_sensitivity_of", "BoxMatch", "match_boxes", "box_miou"]


def _binary_masks(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"Expected two (B, 1, H, W) masks of the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}.")
    return (pred > 0).float(), (target > 0).float()


def mask_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample Dice of binary masks (empty/empty = 1), as in :func:`mask_dice_iou`, without the IoU.

    Args:
        pred: ``(B, 1, H, W)`` predicted masks (bool or 0/1).
        target: ``(B, 1, H, W)`` ground-truth masks (bool or 0/1), same shape.

    Returns:
        ``(B,)`` float Dice in [0, 1], on the CPU.
    """
    pred, target = _binary_masks(pred, target)
    return DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, target)[:, 0].cpu()


def mask_dice_iou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Dice and IoU of binary masks.

    Args:
        pred: ``(B, 1, H, W)`` predicted masks (bool or 0/1).
        target: ``(B, 1, H, W)`` ground-truth masks (bool or 0/1), same shape.

    Returns:
        ``(dice, iou)``, each ``(B,)`` float in [0, 1] (empty/empty = 1).
    """
    dice = mask_dice(pred, target)
    pred, target = _binary_masks(pred, target)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(pred, target)
    return dice, iou[:, 0].cpu()


@dataclass(frozen=True)
class BoxMatch:
    """One-to-one matching of predicted to ground-truth boxes.

    Attributes:
        pred_index: indices of matched predicted boxes.
        gt_index: indices of the ground-truth boxes they match.
        ious: IoU of each matched pair.
        num_pred: number of predicted boxes.
        num_gt: number of ground-truth boxes.
    """

    pred_index: np.ndarray
    gt_index: np.ndarray
    ious: np.ndarray
    num_pred: int
    num_gt: int


def prompt_sensitivity_of(logits: torch.Tensor, logits_other_prompts: torch.Tensor) -> float:
    """Relative prompt sensitivity of a mask decoder: mean absolute change of the mask logits when the prompts are
    swapped between samples, over the logits' standard deviation (0: the decoder ignores its prompt).

    Args:
        logits: mask logits with each sample's own prompt.
        logits_other_prompts: the same images decoded with other samples' prompts.
    """
    return float((logits - logits_other_prompts).abs().mean() / logits.std().clamp_min(1e-6))


def _as_boxes(boxes: Sequence[Sequence[float]] | np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    array = np.asarray(boxes.cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must be an (N, 4) array of [x1, y1, x2, y2] boxes, got shape {array.shape}.")
    return array


def match_boxes(pred_boxes, gt_boxes) -> BoxMatch:
    """Hungarian matching of ``[x1, y1, x2, y2]`` boxes on the cost ``1 - IoU`` (MONAI ``box_iou``).

    Every box of the smaller set is matched (``min(N, M)`` pairs), possibly with IoU 0.
    """
    pred, gt = _as_boxes(pred_boxes, "pred_boxes"), _as_boxes(gt_boxes, "gt_boxes")
    if len(pred) == 0 or len(gt) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return BoxMatch(empty, empty, np.zeros(0), len(pred), len(gt))
    ious = np.asarray(box_iou(pred, gt), dtype=np.float64)
    rows, cols = linear_sum_assignment(1.0 - ious)
    return BoxMatch(rows, cols, ious[rows, cols], len(pred), len(gt))


def box_miou(pred_boxes, gt_boxes) -> float:
    """Matched IoU summed over pairs and divided by ``max(#pred, #gt)``; both empty: 1, one empty: 0."""
    match = match_boxes(pred_boxes, gt_boxes)
    if match.num_pred == 0 and match.num_gt == 0:
        return 1.0
    return float(match.ious.sum() / max(match.num_pred, match.num_gt))
