# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import os

import pytest
import torch
from monai.handlers import CheckpointSaver

from scripts.engines.resume import KeyMetricState, latest_checkpoint


def test_latest_checkpoint_is_the_newest_file_or_none(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for index, name in enumerate(("checkpoint_key_metric=0.5.pt", "checkpoint_final.pt", "checkpoint_200.pt")):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(10**18 + index, 10**18 + [3, 1, 2][index]))
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_key_metric=0.5.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert latest_checkpoint(tmp_path).endswith(".pt")


def test_key_metric_state_round_trips_the_best_model_record(tmp_path):
    weights = torch.nn.Linear(2, 2)
    saver = CheckpointSaver(str(tmp_path), {"model": weights}, save_key_metric=True, key_metric_name="dice",
                            key_metric_filename="model.pt")
    record = KeyMetricState(saver)
    assert record.state_dict() == {"_saved": []}
    restored = CheckpointSaver(str(tmp_path), {"model": weights}, save_key_metric=True, key_metric_name="dice",
                               key_metric_filename="model.pt")
    KeyMetricState(restored).load_state_dict({"_saved": [(0.7, "model.pt")]})
    assert KeyMetricState(restored).state_dict() == {"_saved": [(0.7, "model.pt")]}


def test_key_metric_state_needs_a_key_metric_saver(tmp_path):
    saver = CheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(2, 2)}, save_final=True)
    with pytest.raises(ValueError, match="save_key_metric=True"):
        KeyMetricState(saver)
