# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Splitting a batch of :class:`scripts.data.collate.CoreSegCollator` into network inputs, masks and metadata."""

from __future__ import annotations

from typing import Any

import torch

from scripts.data.collate import FORWARD_KEYS

__all__ = ["MODEL_INPUT_KEYS", "MASK_KEY", "split_batch"]

#: Keys of a collated batch that are arguments of ``CoreSeg.forward`` / ``CoreSeg.generate``.
MODEL_INPUT_KEYS = FORWARD_KEYS
#: Key of the ground-truth masks, ``(B, 1, S, S)`` at the SAM resolution.
MASK_KEY = "label"


def split_batch(
    batch: dict[str, Any], device: torch.device | str | None = None, non_blocking: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, dict[str, Any]]:
    """Split a collated batch into ``(network_inputs, masks, rest)`` and move tensors to ``device``.

    Raises:
        ValueError: the batch lacks the inputs every CoreSeg call needs.
    """
    if not isinstance(batch, dict):
        raise ValueError(f"Expected a collated dict batch, got {type(batch).__name__}.")
    missing = [key for key in ("input_ids", "attention_mask", "sam_images") if key not in batch]
    if missing:
        raise ValueError(f"Batch lacks {missing}; it must come from the CoreSeg collator (keys: {sorted(batch)}).")

    def move(value):
        return value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) and device else value

    inputs = {key: move(batch[key]) for key in MODEL_INPUT_KEYS if batch.get(key) is not None}
    masks = move(batch[MASK_KEY]) if batch.get(MASK_KEY) is not None else None
    rest = {key: value for key, value in batch.items() if key not in MODEL_INPUT_KEYS and key != MASK_KEY}
    return inputs, masks, rest
