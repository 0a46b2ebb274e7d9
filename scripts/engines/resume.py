# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Finding the training state to resume from."""

from __future__ import annotations

from pathlib import Path

__all__ = ["latest_checkpoint"]


def latest_checkpoint(directory: str | Path, pattern: str = "*.pt") -> str | None:
    """The most recently written checkpoint in ``directory``, or None when there is none.

    MONAI's ``CheckpointSaver`` writes interval checkpoints during training and, with ``save_final``, one more
    when training ends or is interrupted by an exception; the newest of them is the state to resume from.
    """
    directory = Path(directory)
    candidates = [path for path in directory.glob(pattern) if path.is_file()] if directory.is_dir() else []
    return str(max(candidates, key=lambda path: path.stat().st_mtime_ns)) if candidates else None
