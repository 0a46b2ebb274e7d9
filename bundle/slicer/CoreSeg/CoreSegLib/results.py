# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""How a CORE-Seg answer is shown and stored in Slicer: the segment's name and the reasoning text."""

from __future__ import annotations

from typing import Any

__all__ = ["answer_entries", "reasoning_report", "segment_name"]

_MAX_NAME = 60


def segment_name(question: str, params: dict[str, Any]) -> str:
    """A short segment name: the question (what was asked for), marked when no answer was usable."""
    name = " ".join(question.split())
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 3].rstrip() + "..."
    entries = answer_entries(params)
    if entries and not any(entry.get("format_valid") for entry in entries):
        name += " (invalid answer)"
    elif entries and all(entry.get("no_lesion") for entry in entries):
        name += " (none found)"
    return name or "CORE-Seg"


def reasoning_report(params: dict[str, Any]) -> str:
    """Readable text of the answer(s): per slice, the reasoning, the answer, the boxes and any format problem."""
    lines = [f"Question: {params.get('question', '')}"]
    for entry in answer_entries(params):
        lines.append("")
        if entry.get("slice_index") is not None:
            lines.append(f"Slice {entry['slice_index']} (axis {entry.get('slice_axis', 2)})")
        if entry.get("reasoning"):
            lines.append(f"Reasoning: {entry['reasoning']}")
        lines.append(f"Answer: {entry.get('answer') or '(none)'}")
        boxes = entry.get("boxes") or []
        if boxes:
            lines.append("Boxes (x1, y1, x2, y2 in pixels): " + "; ".join(
                "[" + ", ".join(f"{value:g}" for value in box) + "]" for box in boxes))
        if not entry.get("format_valid", True):
            lines.append(f"Invalid answer format: {entry.get('format_error', '')} (counted as a failed prediction)")
    return "\n".join(lines)


def answer_entries(params: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per answer: the ``slices`` of an every-slice answer, else the answer itself."""
    return list(params.get("slices") or [params])
