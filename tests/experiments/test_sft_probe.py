# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import json
import math

import torch

from scripts.data.synthetic import ensure_benchmark
from scripts.experiments.sft_probe import prompt_sensitivity, run


def test_probe_trains_logs_both_validations_and_saves_weights(tmp_path):
    datalist = ensure_benchmark(tmp_path / "data", {"training": 4, "validation": 1}, seed=5, progress=False)
    log = run(datalist, iters=4, batch_size=2, eval_every=2, gen_every=4, max_new_tokens=4, lora_r=8,
              out=str(tmp_path / "log.json"), save=str(tmp_path / "weights.pt"), num_workers=0)
    assert [entry["step"] for entry in log["curve"]] == [2, 4]
    assert "generated" not in log["curve"][0] and "generated" in log["curve"][1]
    for entry in log["curve"]:
        assert 0.0 <= entry["teacher_forced"]["dice"] <= 1.0 and entry["text_loss"] > 0
        assert entry["teacher_forced"]["prompt_sensitivity"] >= 0.0
    assert json.loads((tmp_path / "log.json").read_text())["settings"]["lora_r"] == 8
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert any(name.startswith("segmenter.image_encoder.") for name in state)  # encoder trained by default
    # Training can continue from the saved weights.
    again = run(datalist, iters=2, batch_size=2, eval_every=2, gen_every=0, lora_r=8, init=str(tmp_path / "weights.pt"),
                out=str(tmp_path / "log2.json"), num_workers=0)
    assert again["settings"]["init"] == str(tmp_path / "weights.pt")


def test_prompt_sensitivity_is_zero_only_for_a_decoder_that_ignores_its_prompt(tiny_model):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 512, 512)
    states = torch.randn(2, tiny_model.adapter.input_dim) * 5
    with torch.no_grad():
        features = tiny_model.encode_sam(images)
        assert prompt_sensitivity(tiny_model, features, states) > 0
        assert prompt_sensitivity(tiny_model, features, states[:1].expand(2, -1)) == 0.0
        assert math.isnan(prompt_sensitivity(tiny_model, features, states[:1]))


def test_probe_pairs_the_questions_of_an_image_and_holds_the_language_model(tmp_path, monkeypatch):
    datalist = ensure_benchmark(tmp_path / "data", {"training": 2, "validation": 1}, seed=6, progress=False,
                                paired_splits=("training", "validation"))
    batches = []
    original = __import__("scripts.experiments.sft_probe", fromlist=["model_inputs"]).model_inputs

    def spy(batch):
        batches.append([meta["image_path"] for meta in batch["metadata"]])
        return original(batch)

    monkeypatch.setattr("scripts.experiments.sft_probe.model_inputs", spy)
    log = run(datalist, iters=2, batch_size=2, eval_every=2, gen_every=0, lora_r=8, paired_batches=True,
              mllm_freeze_steps=2, mllm_learning_rate=5e-4, out=str(tmp_path / "log.json"),
              save=str(tmp_path / "weights.pt"), num_workers=0)
    training = batches[:2]  # the two training steps come before the validation batches
    assert all(len(paths) == 2 and paths[0] == paths[1] for paths in training)
    assert log["settings"]["paired_batches"] is True and log["curve"][-1]["step"] == 2
    # Saved while the language model was held, the weights still hold it and load into a fresh model.
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert any(".lora_" in name for name in state)
    again = run(datalist, iters=2, batch_size=2, eval_every=2, gen_every=0, lora_r=8, init=str(tmp_path / "weights.pt"),
                out=str(tmp_path / "log2.json"), num_workers=0)
    assert again["curve"][-1]["step"] == 2
