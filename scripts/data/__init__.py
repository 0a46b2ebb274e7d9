# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Data pipeline: datalist schema and validation, readers and transforms, prompts, synthetic benchmark.

The public names below are imported on first use (PEP 562), so that ``import scripts.data.vocabulary`` (or
the synthetic generator) does not pay for torch, MONAI and transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "datalist": ("DatalistError", "describe_record", "load_datalist", "read_datalist"),
    "coordinates": (
        "MASK_SIZE", "ProcessorGeometry", "boxes_from_mask", "mask_to_original_boxes", "mllm_input_size",
        "mllm_to_original_boxes", "mllm_view_size", "original_to_mask_boxes", "original_to_mllm_boxes", "round_boxes",
    ),
    "prompts": ("ParsedCompletion", "parse_completion", "render_answer", "render_completion"),
    "transforms": ("build_transforms",),
    "collate": ("CoreSegCollator", "model_inputs"),
    "validate": ("ValidationReport", "validate_datalist"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
