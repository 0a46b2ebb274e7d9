# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""configs/train_sft.json and configs/evaluate.json end to end through MONAI's bundle API (tiny preset)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from scripts.data.own_answers import OwnAnswers, answer_key, usable_completion
from scripts.engines.own_answers import weights_fingerprint
from scripts.engines.resume import KeyMetricState
from scripts.networks import TrainableWeights, build_coreseg

ROOT = Path(__file__).resolve().parents[1]
# A benchmark small enough for seconds: 4 training records (2 steps of 2), 2 validation and 2 test records.
SIZE = {"training": 4, "validation": 1, "test": 1}


def _workflow(config: str, workflow_type: str, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=str(ROOT / "configs" / config), meta_file=str(ROOT / "configs" / "metadata.json"),
                              logging_file=str(ROOT / "configs" / "logging.conf"), workflow_type=workflow_type,
                              bundle_root=str(ROOT), **overrides)
    workflow.initialize()
    return workflow


def _train_overrides(tmp_path: Path, max_epochs: int) -> dict:
    return {"dataset_dir": str(tmp_path / "data"), "synthetic_size": SIZE, "output_dir": str(tmp_path / "run"),
            "ckpt_dir": str(tmp_path / "models"), "max_epochs": max_epochs, "batch_size": 2, "num_workers": 0,
            "max_new_tokens": 8, "val_batch_size": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of SFT through train_sft.json (the benchmark is generated on the way)."""
    tmp_path = tmp_path_factory.mktemp("sft")
    workflow = _workflow("train_sft.json", "train", **_train_overrides(tmp_path, max_epochs=1))
    assert workflow.check_properties() == []
    workflow.run()
    trainer = workflow.trainer
    workflow.finalize()
    return tmp_path, trainer


def test_training_runs_generates_the_benchmark_and_logs(trained):
    tmp_path, trainer = trained
    assert (tmp_path / "data" / "datalist.json").is_file()
    assert trainer.state.epoch == 1 and trainer.state.iteration == 2
    assert {"loss", "text_loss", "mask_loss"} <= set(trainer.state.output[0])
    # Teacher-forced Dice of the epoch's training masks (thresholded post-processing, empty-on-empty = 1).
    assert 0.0 <= trainer.state.metrics["train_mean_dice"] <= 1.0
    assert set(trainer.state.output[0]["pred"].unique().tolist()) <= {0.0, 1.0}
    assert list((tmp_path / "run").glob("events.out.tfevents.*")), "TensorBoard events were not written"
    assert (tmp_path / "run" / "checkpoints" / "checkpoint_final.pt").is_file()


def test_best_model_is_a_plain_state_dict_of_the_trainable_tensors(trained):
    tmp_path, _ = trained
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    expected = TrainableWeights(build_coreseg("tiny", seed=0)).state_dict()
    assert set(state) == set(expected)
    assert all(isinstance(value, torch.Tensor) for value in state.values())


def test_training_resumes_from_its_checkpoint(trained, tmp_path):
    first_dir, _ = trained
    # Continue the one-epoch run in a copy of its folders: the second run starts at epoch 2.
    for name in ("data", "run", "models"):
        shutil.copytree(first_dir / name, tmp_path / name)
    best_before = (tmp_path / "models" / "model.pt").stat().st_mtime_ns
    workflow = _workflow("train_sft.json", "train", **_train_overrides(tmp_path, max_epochs=2))
    iterations = []
    workflow.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: iterations.append(
        (engine.state.epoch, engine.state.iteration)))
    workflow.run()
    assert iterations == [(2, 3), (2, 4)]
    # The restored optimiser continued with its moments: its step count covers both runs.
    steps = {int(state["step"]) for state in workflow.parser.get_parsed_content("optimizer").state.values()}
    assert steps == {4}
    # The best-model record came back too: model.pt is replaced only by a better validation Dice than the
    # first run's best (without the record, the first validation after resuming always overwrote it).
    rewritten = (tmp_path / "models" / "model.pt").stat().st_mtime_ns != best_before
    assert rewritten == (workflow.evaluator.state.metrics["val_mean_dice"] > _first_best(first_dir))
    workflow.finalize()


def _first_best(run_dir: Path) -> float:
    state = torch.load(run_dir / "run" / "checkpoints" / "checkpoint_final.pt", map_location="cpu",
                       weights_only=True)
    return max(priority for priority, _ in state["best_model_record"]["_saved"])


def test_evaluation_reads_the_trained_model_and_writes_the_report(trained, tmp_path):
    train_dir, _ = trained
    # train_sft.json trains the tiny preset; evaluate.json describes the bundled demo model unless told otherwise.
    workflow = _workflow("evaluate.json", "infer", dataset_dir=str(train_dir / "data"), synthetic_size=SIZE,
                         preset="tiny", sam_checkpoint=None,
                         checkpoint=str(train_dir / "models" / "model.pt"), output_dir=str(tmp_path / "eval"),
                         batch_size=2, num_workers=0, max_new_tokens=8)
    assert workflow.check_properties() == []
    workflow.run()
    metrics = dict(workflow.evaluator.state.metrics)
    workflow.finalize()
    report = tmp_path / "eval"
    for name in ("metrics.csv", "summary.json", "table.md", "dice_by_group.png"):
        assert (report / name).is_file(), name
    with open(report / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2  # the test split's two records
    summary = json.loads((report / "summary.json").read_text())
    # The key metric (MONAI DiceMetric, empty-on-empty = 1) and the report's mDice are the same number.
    assert metrics["mean_dice"] == pytest.approx(summary["mDice"], abs=1e-6)
    assert "CORE-Seg" in (report / "table.md").read_text()


def test_tracking_mlflow_logs_training_and_validation_metrics(trained, tmp_path):
    import mlflow  # in the dev extra; the bundle itself runs without it
    from monai.bundle import run

    overrides = _train_overrides(tmp_path, max_epochs=1)
    overrides["dataset_dir"] = str(trained[0] / "data")
    run(config_file=str(ROOT / "configs" / "train_sft.json"), meta_file=str(ROOT / "configs" / "metadata.json"),
        logging_file=str(ROOT / "configs" / "logging.conf"), bundle_root=str(ROOT), tracking="mlflow", **overrides)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'run' / 'mlruns.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1
    for name in ("train_loss", "val_mean_dice", "mDice", "failure_rate"):
        assert f"metrics.{name}" in runs.columns, name


def test_sam_size_encoder_training_and_loss_options_flow_from_the_config(trained, tmp_path):
    overrides = _train_overrides(tmp_path, max_epochs=1)
    overrides.update(dataset_dir=str(trained[0] / "data"), sam_image_size=256, train_sam_encoder=True,
                     dice_ce_kwargs={"batch": True}, segmenter_learning_rate=2e-4,
                     mllm_learning_rate=5e-4, mllm_freeze_iterations=1)
    workflow = _workflow("train_sft.json", "train", **overrides)
    assert workflow.parser.get_parsed_content("train#loss").dice_ce.dice.batch is True
    optimizer = workflow.parser.get_parsed_content("optimizer")
    assert [group["lr"] for group in optimizer.param_groups] == [2e-4, 5e-4, 1e-3]
    llm = [p for p in workflow.parser.get_parsed_content("network").mllm.parameters() if p.requires_grad]
    llm_before = [p.detach().clone() for p in llm]
    frozen_during = []
    workflow.trainer.add_event_handler(Events.ITERATION_COMPLETED,
                                       lambda e: frozen_during.append(not any(p.requires_grad for p in llm)))
    workflow.run()
    assert workflow.trainer.state.output[0]["label"].shape == (1, 256, 256)
    assert frozen_during == [True, False]  # 2 iterations: the language model waits one, then trains
    assert any(not torch.equal(a, b) for a, b in zip(llm_before, llm))
    workflow.finalize()
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(name.startswith("segmenter.image_encoder.") for name in state)  # the encoder was trained too


def test_demo_recipe_text_stage_then_mask_stage_on_a_held_language_model(tmp_path):
    """configs/train_sft_demo_text.json then configs/train_sft_demo.json, as `make demo-model` runs them."""
    common = {"dataset_dir": str(tmp_path / "data"), "synthetic_size": SIZE, "batch_size": 2, "num_workers": 0,
              "max_epochs": 1, "max_new_tokens": 8, "val_batch_size": 2, "val_max_records": 2}
    text = ConfigWorkflow(config_file=[str(ROOT / "configs" / f) for f in ("train_sft.json", "train_sft_demo_text.json")],
                          meta_file=str(ROOT / "configs" / "metadata.json"), workflow_type="train", bundle_root=str(ROOT),
                          output_dir=str(tmp_path / "text"), **{**common, "max_epochs": 2, "val_interval": 1})
    text.initialize()
    assert text.check_properties() == []
    text_network = text.parser.get_parsed_content("network")
    segmenter_before = {n: p.detach().clone() for n, p in text_network.segmenter.named_parameters()}
    text.run()
    # A text-only stage (mask weight 0) runs no segmenter: no masks, no mask loss, the SAM part untouched.
    assert text.parser.get_parsed_content("train#inferer").with_masks is False
    assert "pred" not in text.trainer.state.output[0] and "mask_loss" not in text.trainer.state.output[0]
    assert all(torch.equal(p, segmenter_before[n]) for n, p in text_network.segmenter.named_parameters())
    # Its best model is the one whose answers most often name the asked finding in the required format, the
    # latest of equals: 8-token answers are never well formed, so both epochs score 0 and the second is kept.
    saved = KeyMetricState(text.parser.get_parsed_content("validate#best_model_saver")).state_dict()["_saved"]
    assert [priority for priority, _ in saved] == [text.evaluator.state.metrics["valid_finding_match_rate"]] == [0.0]
    best = torch.load(tmp_path / "text" / "best" / "model.pt", map_location="cpu", weights_only=True)
    final = TrainableWeights(text_network).state_dict()
    assert set(best) == set(final) and all(torch.equal(best[name], final[name]) for name in final)
    # Both questions of every training image, side by side in each batch (two epochs).
    assert text.trainer.state.iteration == 2 * 2 * SIZE["training"] // 2
    sampler = text.parser.get_parsed_content("train#sampler")
    records = text.parser.get_parsed_content("train#dataset").data
    assert text.parser.get_parsed_content("train#dataloader").batch_sampler is sampler
    assert all(len({records[i]["image"] for i in batch}) == 1 for batch in sampler)
    assert text_network.semantic_probe == "answer_text" and text_network.segmenter.image_size == 256
    text_state = {n: p.detach().clone() for n, p in text_network.named_parameters() if p.requires_grad}
    text.finalize()
    assert not (tmp_path / "models").exists()  # the text stage keeps its best model to itself

    mask = ConfigWorkflow(config_file=[str(ROOT / "configs" / f) for f in ("train_sft.json", "train_sft_demo.json")],
                          meta_file=str(ROOT / "configs" / "metadata.json"), workflow_type="train", bundle_root=str(ROOT),
                          output_dir=str(tmp_path / "mask"), ckpt_dir=str(tmp_path / "models"),
                          init_checkpoint=str(tmp_path / "text" / "best" / "model.pt"), **common)
    mask.initialize()
    assert mask.check_properties() == []
    network = mask.parser.get_parsed_content("network")
    built = {n: p.detach().clone() for n, p in network.named_parameters()}
    mask.run()
    mask.finalize()
    for name, value in text_state.items():
        if name.startswith("mllm."):  # the text stage's language model, held through the mask stage
            assert torch.equal(built[name], value) and torch.equal(network.get_parameter(name), value), name
    assert not torch.equal(built["adapter.proj.weight"], network.adapter.proj.weight)
    # The SAM part started from the bundled box-pretrained tiny SAM, not from the text stage's random one.
    decoder_name = next(n for n in text_state if n.startswith("segmenter.mask_decoder."))
    assert not torch.equal(built[decoder_name], text_state[decoder_name])
    assert (tmp_path / "models" / "model.pt").is_file()

    # The mask stage trained on the held language model's own answers, cached beside the run.
    cache = tmp_path / "mask" / "own_answers.json"
    own = OwnAnswers.load(cache)
    assert own.source["weights"] == weights_fingerprint(network.mllm)
    training = mask.parser.get_parsed_content("train#records")
    assert set(own.answers) == {answer_key(record) for record in training}
    # A usable answer replaces the rendered text (a 1-epoch language model seldom writes one: put one in).
    key = answer_key(training[0])
    own.answers[key] = {"question": "Where is it?", "completion": "<answer> It is at [9,9,3,3]. <seg> </answer>"}
    own.save(cache)
    again = ConfigWorkflow(config_file=[str(ROOT / "configs" / f) for f in ("train_sft.json", "train_sft_demo.json")],
                           meta_file=str(ROOT / "configs" / "metadata.json"), workflow_type="train",
                           bundle_root=str(ROOT), output_dir=str(tmp_path / "mask"), ckpt_dir=str(tmp_path / "models"),
                           init_checkpoint=str(tmp_path / "text" / "best" / "model.pt"), **common)
    again.initialize()
    samples = again.parser.get_parsed_content("train#dataset")
    sample = samples[0]
    assert (sample["question"], sample["text_source"]) == ("Where is it?", "own")
    assert sample["completion"] == own.answers[key]["completion"]
    assert all(samples[i]["text_source"] == ("own" if usable_completion(own.answers[answer_key(training[i])]
                                                                         ["completion"]) else "reference")
               for i in range(len(training)))


def test_sft_without_cot_trains_on_the_answer_alone(tmp_path, trained):
    overrides = _train_overrides(tmp_path, max_epochs=1)
    overrides.update(dataset_dir=str(trained[0] / "data"), use_cot=False)
    workflow = _workflow("train_sft.json", "train", **overrides)
    sample = workflow.parser.get_parsed_content("train#dataset")[0]
    assert sample["completion"].startswith("<answer>") and "<think>" not in sample["completion"]
    assert workflow.parser.get_parsed_content("train#collate").reasoning is False
