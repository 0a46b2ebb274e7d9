# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""CORE-Seg's adaptive dual-granularity rewards (paper section 4.3.1), as pure functions.

* :func:`format_reward`: 1.0 for ``<think>`` non-empty reasoning ``</think>`` then ``<answer> ... </answer>`` with
  exactly one ``<seg>`` inside the answer (the strict parser of :mod:`scripts.data.prompts`), else 0.0.
* :func:`bbox_reward`: Hungarian matching of predicted to ground-truth boxes on the cost ``1 - IoU``; matched mIoU
  times F1, where TP are matched pairs with IoU >= 0.5. Both empty: 1.0; exactly one empty: 0.0.
* :func:`mask_reward`: Dice of the binary masks; below ``threshold`` the GIoU of the masks' bounding boxes (a
  signal even without overlap), else ``1 + lam * Dice``. Both empty: ``1 + lam``; exactly one empty: -1.0.

:func:`score_rollouts` scores a batch of GRPO completions with all three and their weighted total.

No reward swallows errors: malformed *model output* is scored (it is what the reward is for), malformed *inputs
from the pipeline* (wrong shapes) raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data.box_utils import box_giou
from monai.utils import convert_to_numpy

from scripts.data.prompts import parse_completion
from scripts.metrics import mask_dice, match_boxes

__all__ = [
    "REWARD_NAMES", "RewardWeights", "RolloutRewards", "bbox_reward", "format_reward", "mask_bounding_box",
    "mask_reward", "score_rollouts",
]

#: The rewards of :func:`score_rollouts`, in the column order of ``RolloutRewards.per_reward``.
REWARD_NAMES = ("format", "bbox", "mask")


def format_reward(completion: str, require_reasoning: bool = True) -> float:
    """1.0 when the completion follows the CORE-Seg format with exactly one ``<seg>`` in the answer, else 0.0.

    ``require_reasoning=False`` (the no-CoT ablation) also accepts the answer alone, without ``<think>`` block.
    """
    return 1.0 if parse_completion(completion, require_reasoning=require_reasoning).valid else 0.0


def bbox_reward(pred_boxes, gt_boxes, iou_threshold: float = 0.5) -> float:
    """Bipartite-matching box reward ``mIoU_matched * F1`` (paper eq. 8).

    Args:
        pred_boxes: ``(N, 4)`` predicted ``[x1, y1, x2, y2]`` boxes (any sequence or array; empty allowed).
        gt_boxes: ``(M, 4)`` ground-truth boxes, in the same coordinate space.
        iou_threshold: IoU from which a matched pair is a true positive.

    Returns:
        ``mIoU_matched * F1`` with ``P = TP / N``, ``R = TP / M``; 0 when no pair reaches the threshold. Both
        empty: 1.0 (a correct "no lesion"); exactly one empty: 0.0.
    """
    match = match_boxes(pred_boxes, gt_boxes)
    if match.num_pred == 0 and match.num_gt == 0:
        return 1.0
    if match.num_pred == 0 or match.num_gt == 0:
        return 0.0
    true_positives = int((match.ious >= iou_threshold).sum())
    if true_positives == 0:
        return 0.0
    precision, recall = true_positives / match.num_pred, true_positives / match.num_gt
    f1 = 2 * precision * recall / (precision + recall)
    return float(match.ious.mean() * f1)  # mean IoU over all min(N, M) Hungarian pairs


def mask_bounding_box(mask: np.ndarray | torch.Tensor) -> np.ndarray | None:
    """``[x1, y1, x2, y2]`` (pixel edges) of all foreground pixels of a 2D mask, or None when it is empty."""
    mask = convert_to_numpy(mask, wrap_sequence=True)
    if mask.ndim != 2:
        raise ValueError(f"Expected a 2D mask, got shape {mask.shape}.")
    rows, cols = np.nonzero(mask > 0)
    if rows.size == 0:
        return None
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)


def mask_reward(pred_mask, gt_mask, threshold: float = 0.05, lam: float = 2.0) -> float:
    """Dual-granularity mask reward (paper eq. 9-11).

    Args:
        pred_mask: ``(H, W)`` predicted mask (bool or 0/1).
        gt_mask: ``(H, W)`` ground-truth mask of the same shape.
        threshold: Dice below which the box-level GIoU replaces the pixel-level reward.
        lam: weight of the Dice in ``1 + lam * Dice``.

    Returns:
        ``GIoU(box(pred), box(gt))`` in (-1, 1] when ``Dice < threshold``, else ``1 + lam * Dice``. Both empty:
        ``1 + lam``; exactly one empty: -1.0 (the lowest GIoU).
    """
    pred = torch.as_tensor(convert_to_numpy(pred_mask, wrap_sequence=True))
    gt = torch.as_tensor(convert_to_numpy(gt_mask, wrap_sequence=True))
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"Expected two 2D masks of the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}.")
    pred_box, gt_box = mask_bounding_box(pred), mask_bounding_box(gt)
    if pred_box is None and gt_box is None:
        return 1.0 + lam
    if pred_box is None or gt_box is None:
        return -1.0
    dice = float(mask_dice(pred[None, None], gt[None, None])[0])
    if dice < threshold:
        return float(np.asarray(box_giou(pred_box[None], gt_box[None]))[0, 0])
    return 1.0 + lam * dice


class RewardWeights:
    """Weights of the three rewards in the total (all 1.0 by default; 0 switches one off, as in Table 3).

    Args:
        format: weight of :func:`format_reward`.
        bbox: weight of :func:`bbox_reward`.
        mask: weight of :func:`mask_reward`.
    """

    def __init__(self, format: float = 1.0, bbox: float = 1.0, mask: float = 1.0) -> None:  # noqa: A002
        for name, value in (("format", format), ("bbox", bbox), ("mask", mask)):
            if value < 0:
                raise ValueError(f"Reward weight {name} must be >= 0, got {value}.")
        self.format, self.bbox, self.mask = float(format), float(bbox), float(mask)

    def as_dict(self) -> dict[str, float]:
        return {"format": self.format, "bbox": self.bbox, "mask": self.mask}


@dataclass
class RolloutRewards:
    """Rewards of a batch of completions.

    Attributes:
        per_reward: ``(N, 3)`` float64, the columns of :data:`REWARD_NAMES` (unweighted).
        total: ``(N,)`` the weighted sum.
        format_valid: ``(N,)`` bool, the completions that parse.
    """

    per_reward: np.ndarray
    total: np.ndarray
    format_valid: np.ndarray

    def means(self) -> dict[str, float]:
        """Mean of each reward and of the total, keyed ``reward_<name>`` and ``reward``."""
        means = {f"reward_{name}": float(self.per_reward[:, k].mean()) for k, name in enumerate(REWARD_NAMES)}
        return {**means, "reward": float(self.total.mean())}


def score_rollouts(
    completions: Sequence[str],
    seg_valid: Sequence[bool] | np.ndarray | torch.Tensor,
    pred_masks: torch.Tensor | np.ndarray,
    gt_masks: torch.Tensor | np.ndarray,
    gt_boxes: Sequence[Sequence[Sequence[float]]],
    weights: RewardWeights | Mapping[str, float] | None = None,
    mask_threshold: float = 0.05,
    mask_lam: float = 2.0,
    require_reasoning: bool = True,
) -> RolloutRewards:
    """Score GRPO completions with :func:`format_reward`, :func:`bbox_reward` and :func:`mask_reward`.

    Two rules keep a malformed answer from scoring well (it is a failure, never a reward hack):

    * the box reward of a completion that does not parse is 0, even when the image has no lesion;
    * a completion without exactly one ``<seg>`` has no mask: its mask reward is -1 (the lowest), even when the
      ground truth is empty.

    Args:
        completions: decoded completions (``N``).
        seg_valid: ``(N,)`` completions whose answer holds exactly one ``<seg>`` (``CoreSegOutput.seg_valid``).
        pred_masks: ``(N, 1, S, S)`` or ``(N, S, S)`` predicted binary masks.
        gt_masks: ground-truth masks of the same shape, repeated per completion.
        gt_boxes: ``N`` lists of ground-truth boxes in the space the model writes boxes in (the MLLM input).
        weights: the reward weights (default: all 1).
        mask_threshold, mask_lam: :func:`mask_reward`'s ``threshold`` and ``lam``.
        require_reasoning: as in :func:`format_reward` (False for a model trained without chain-of-thought).
    """
    weights = weights if isinstance(weights, RewardWeights) else RewardWeights(**dict(weights or {}))
    pred = convert_to_numpy(pred_masks, wrap_sequence=True)
    gt = convert_to_numpy(gt_masks, wrap_sequence=True)
    valid_seg = convert_to_numpy(seg_valid, dtype=bool, wrap_sequence=True)
    count = len(completions)
    if not count == len(pred) == len(gt) == len(valid_seg) == len(gt_boxes):
        raise ValueError(f"Rollout parts disagree in length: {count} completions, {len(pred)} predicted masks, "
                         f"{len(gt)} ground-truth masks, {len(valid_seg)} seg flags, {len(gt_boxes)} box lists.")
    if pred.shape != gt.shape:
        raise ValueError(f"Predicted masks {pred.shape} and ground-truth masks {gt.shape} differ in shape.")
    per_reward = np.zeros((count, len(REWARD_NAMES)), dtype=np.float64)
    format_valid = np.zeros(count, dtype=bool)
    for row, completion in enumerate(completions):
        parsed = parse_completion(completion, require_reasoning=require_reasoning)
        format_valid[row] = parsed.valid
        per_reward[row, 0] = 1.0 if parsed.valid else 0.0
        per_reward[row, 1] = bbox_reward(parsed.boxes, gt_boxes[row]) if parsed.valid else 0.0
        if valid_seg[row]:
            per_reward[row, 2] = mask_reward(pred[row].reshape(pred.shape[-2:]), gt[row].reshape(gt.shape[-2:]),
                                             mask_threshold, mask_lam)
        else:
            per_reward[row, 2] = -1.0
    weight_vector = np.array([weights.format, weights.bbox, weights.mask])
    return RolloutRewards(per_reward=per_reward, total=per_reward @ weight_vector, format_valid=format_valid)
