# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import json
import math

import torch

from scripts.data.synthetic import ensure_benchmark
from scripts.experiments.teacher_forced import run
from scripts.inference import Predictor
from scripts.networks import save_trainable_weights


def test_teacher_forced_scores_a_checkpoint_on_a_split(tmp_path):
    datalist = ensure_benchmark(tmp_path / "data", {"training": 0, "validation": 0, "test": 2}, seed=7, progress=False)
    network = Predictor.from_bundle(checkpoint=tmp_path / "none.pt", allow_untrained=True, device="cpu").network
    save_trainable_weights(network, tmp_path / "model.pt")
    scores = run(datalist, section="test", checkpoint=str(tmp_path / "model.pt"), batch_size=3,
                 out=str(tmp_path / "scores.json"))
    assert scores["records"] == 4  # the test split asks each image both ways
    assert 0.0 <= scores["dice"] <= 1.0 and scores["prompt_sensitivity"] >= 0.0
    identical = scores["identical_paired_masks"]
    assert math.isnan(identical) or 0.0 <= identical <= 1.0  # NaN: both masks empty for every image
    assert json.loads((tmp_path / "scores.json").read_text())["records"] == 4


def test_scores_follow_the_checkpoint_given(tmp_path):
    """The weights scored are the checkpoint's, not the config's default ones."""
    datalist = ensure_benchmark(tmp_path / "data", {"training": 0, "validation": 0, "test": 1}, seed=8, progress=False)
    network = Predictor.from_bundle(checkpoint=tmp_path / "none.pt", allow_untrained=True, device="cpu").network
    save_trainable_weights(network, tmp_path / "model.pt")
    first = run(datalist, checkpoint=str(tmp_path / "model.pt"))
    with torch.no_grad():
        network.adapter.proj.weight.mul_(-3.0)
    save_trainable_weights(network, tmp_path / "changed.pt")
    assert run(datalist, checkpoint=str(tmp_path / "changed.pt"))["prompt_sensitivity"] != first["prompt_sensitivity"]
