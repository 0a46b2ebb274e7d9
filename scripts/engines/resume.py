# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Resuming training: the checkpoint to resume from, and the best-model record to carry over."""

from __future__ import annotations

from pathlib import Path

from monai.handlers import CheckpointSaver

__all__ = ["KeyMetricState", "latest_checkpoint"]


def latest_checkpoint(directory: str | Path, pattern: str = "*.pt") -> str | None:
    """The most recently written checkpoint in ``directory``, or None when there is none.

    MONAI's ``CheckpointSaver`` writes interval checkpoints during training and, with ``save_final``, one more
    when training ends or is interrupted by an exception; the newest of them is the state to resume from.
    """
    directory = Path(directory)
    candidates = [path for path in directory.glob(pattern) if path.is_file()] if directory.is_dir() else []
    return str(max(candidates, key=lambda path: path.stat().st_mtime_ns)) if candidates else None


class KeyMetricState:
    """The best-metric record of a ``CheckpointSaver`` as a checkpointable object, for resuming.

    A ``CheckpointSaver(save_key_metric=True)`` remembers the best key metric so far only in memory; a resumed
    run would otherwise overwrite the best model with its first validation, better or not. Put this object
    in the training checkpoint's ``save_dict``/``load_dict`` to carry the record over. (MONAI's own
    ``key_metric_save_state`` stores it inside the best-model file instead, which would make ``model.pt``
    more than the plain state dict of trainable tensors that this bundle ships.)

    Args:
        saver: the ``CheckpointSaver`` that keeps the best model.
    """

    def __init__(self, saver: CheckpointSaver) -> None:
        if getattr(saver, "_key_metric_checkpoint", None) is None:
            raise ValueError("KeyMetricState needs a CheckpointSaver created with save_key_metric=True.")
        self.saver = saver

    def state_dict(self) -> dict:
        # ignite's Checkpoint.state_dict(): {"_saved": [(priority, filename), ...]}
        return self.saver._key_metric_checkpoint.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.saver.load_state_dict(state_dict)
