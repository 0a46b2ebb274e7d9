# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""configs/train_grpo.json end to end through MONAI's bundle API, from the bundled stage-1 (demo) model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from scripts.networks import TrainableWeights

ROOT = Path(__file__).resolve().parents[1]
SIZE = {"training": 2, "validation": 1, "test": 1}  # paired: 4 training prompts, 2 steps of 2


def _workflow(config: str | list[str], workflow_type: str, **overrides) -> ConfigWorkflow:
    files = [config] if isinstance(config, str) else config
    workflow = ConfigWorkflow(config_file=[str(ROOT / "configs" / f) for f in files],
                              meta_file=str(ROOT / "configs" / "metadata.json"),
                              logging_file=str(ROOT / "configs" / "logging.conf"), workflow_type=workflow_type,
                              bundle_root=str(ROOT), **overrides)
    workflow.initialize()
    return workflow


def _overrides(tmp_path: Path, max_epochs: int = 1, **extra) -> dict:
    return {"dataset_dir": str(tmp_path / "data"), "synthetic_size": SIZE, "output_dir": str(tmp_path / "run"),
            "max_epochs": max_epochs, "batch_size": 2, "num_generations": 2, "num_workers": 0,
            "max_new_tokens": 12, "val_batch_size": 2, "val_max_records": 2, **extra}


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("grpo")
    workflow = _workflow("train_grpo.json", "train", **_overrides(tmp_path))
    assert workflow.check_properties() == []
    stage1 = torch.load(ROOT / "models" / "model.pt", map_location="cpu", weights_only=True)
    workflow.run()
    trainer = workflow.trainer
    network = workflow.parser.get_parsed_content("network")
    workflow.finalize()
    return tmp_path, trainer, network, stage1


def test_grpo_starts_from_the_stage1_model_and_logs_every_reward(grpo_run):
    tmp_path, trainer, network, stage1 = grpo_run
    assert trainer.state.iteration == 2 and trainer.num_generations == 2
    stats = trainer.state.output[0]
    for name in ("reward", "reward_format", "reward_bbox", "reward_mask", "kl", "clip_fraction", "zero_std_fraction",
                 "policy_loss", "mask_loss"):
        assert name in stats, name
    # the reference is the stage-1 model the run started from, the policy has moved away from it
    params = dict(network.named_parameters())
    reference = trainer.reference
    with reference.applied():
        assert all(torch.equal(params["mllm." + name].cpu(), stage1["mllm." + name]) for name in reference.names)
    assert any(not torch.equal(params[name].cpu(), value) for name, value in stage1.items())
    final = torch.load(tmp_path / "run" / "checkpoints" / "checkpoint_final.pt", map_location="cpu",
                       weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "reference"} <= set(final)
    assert set(final["model"]) == set(TrainableWeights(network).names)


def test_grpo_resumes_with_the_same_reference(grpo_run, tmp_path):
    first_dir, first_trainer, _, stage1 = grpo_run
    shutil.copytree(first_dir / "data", tmp_path / "data")
    shutil.copytree(first_dir / "run", tmp_path / "run")
    workflow = _workflow("train_grpo.json", "train", **_overrides(tmp_path, max_epochs=2))
    epochs = []
    workflow.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: epochs.append(engine.state.epoch))
    workflow.run()
    assert epochs == [2, 2]  # resumed at epoch 2
    reference = workflow.trainer.reference
    restored = reference.state_dict()
    assert all(torch.equal(restored[name], stage1["mllm." + name]) for name in reference.names)
    workflow.finalize()


def test_evaluation_reads_the_grpo_checkpoint(grpo_run, tmp_path):
    run_dir, _, network, _ = grpo_run
    workflow = _workflow("evaluate.json", "infer", dataset_dir=str(run_dir / "data"), generate_synthetic=False,
                         checkpoint=str(run_dir / "run" / "checkpoints" / "checkpoint_final.pt"),
                         output_dir=str(tmp_path / "eval"), batch_size=2, num_workers=0, max_new_tokens=12)
    evaluated = workflow.parser.get_parsed_content("network")
    workflow.run()
    workflow.finalize()
    trained = dict(network.named_parameters())
    assert all(torch.equal(p.cpu(), trained[n].cpu()) for n, p in evaluated.named_parameters() if p.requires_grad)
    assert (tmp_path / "eval" / "summary.json").is_file()


def test_table3_ablation_switches_reach_the_trainer(tmp_path):
    workflow = _workflow("train_grpo.json", "train", **_overrides(
        tmp_path, reward_format=False, reward_bbox=True, reward_mask=False, dice_ce=False, beta=0.1,
        advantage_mode="normalize_then_sum", num_iterations=2, epsilon_high=0.28, use_cot=False))
    trainer = workflow.trainer
    # no CoT: prompts ask for the answer alone, the format reward and the validation accept it
    assert trainer.reasoning is False and workflow.parser.get_parsed_content("train#collate").reasoning is False
    assert workflow.parser.get_parsed_content("validate#evaluator").reasoning is False
    sample = workflow.parser.get_parsed_content("train#dataset")[0]
    assert sample["completion"].startswith("<answer>")
    assert trainer.reward_weights.as_dict() == {"format": 0.0, "bbox": 1.0, "mask": 0.0}
    assert trainer.loss_function.mask_weight == 0.0 and trainer.loss_function.beta == 0.1
    assert trainer.loss_function.epsilon_high == 0.28 and trainer.num_iterations == 2
    assert trainer.advantage_mode == "normalize_then_sum"
