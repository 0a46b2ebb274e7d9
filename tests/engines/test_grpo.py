# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The GRPO trainer on the tiny CoreSeg: events and logs, encoder reuse, the reference, the update's direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.engines.utils import IterationEvents

import scripts.engines.grpo as grpo
from scripts.engines import CoreSegGRPOTrainer
from scripts.losses import CoreSegGRPOLoss, token_log_probs
from scripts.rewards import RolloutRewards
from tests.conftest import make_batch

GROUP = 4


def _batch(model, seed=0):
    batch = make_batch(model, [None, None], padding_side="left", seed=seed)
    masks = torch.zeros(2, 1, 512, 512)
    masks[:, :, 100:200, 150:260] = 1
    batch["label"] = masks
    batch["metadata"] = [{"boxes_mllm": [[10, 20, 60, 70]]}, {"boxes_mllm": []}]
    return batch


def _trainer(model, batches, lr=1e-3, **kwargs):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    kwargs.setdefault("max_new_tokens", 6)
    return CoreSegGRPOTrainer(device=torch.device("cpu"), max_epochs=kwargs.pop("max_epochs", 1),
                              train_data_loader=batches, network=model, optimizer=optimizer,
                              num_generations=GROUP, **kwargs)


def _first_wins(completions, seg_valid, pred_masks, gt_masks, gt_boxes, *args, **kwargs):
    """A reward for tests: 1 for the first completion of each group, 0 for the others."""
    total = np.array([1.0 if row % GROUP == 0 else 0.0 for row in range(len(completions))])
    return RolloutRewards(per_reward=np.stack([total, total * 0, total * 0], axis=1), total=total,
                          format_valid=np.zeros(len(completions), dtype=bool))


def test_iteration_fires_monai_events_and_logs_rewards_kl_and_clipping(fresh_tiny_model):
    trainer = _trainer(fresh_tiny_model, [_batch(fresh_tiny_model)])
    fired = []
    for event in IterationEvents:
        trainer.add_event_handler(event, lambda engine, name=event.name: fired.append(name))
    trainer.run()
    assert fired == ["FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED"]
    output = trainer.state.output
    assert isinstance(output, list) and len(output) == 2 * GROUP  # decollated: one item per rollout
    stats = output[0]
    expected = {"loss", "policy_loss", "mask_loss", "kl", "clip_fraction", "reward", "reward_std", "reward_format",
                "reward_bbox", "reward_mask", "zero_std_fraction", "completion_length", "truncated_fraction",
                "format_valid", "pred", "label", "completions"}
    assert expected <= set(stats)
    # An untrained model writes no valid answer: every rollout is a format failure with the lowest mask reward.
    assert stats["reward_format"] == 0.0 and stats["reward_mask"] == -1.0 and stats["zero_std_fraction"] == 1.0
    assert stats["clip_fraction"] == 0.0  # on-policy: the ratio is 1
    assert 0.0 <= stats["kl"] < 0.5
    assert stats["pred"].shape == (1, 512, 512)


def test_encoders_run_once_per_image_with_reuse_and_per_rollout_and_pass_without(fresh_tiny_model):
    model = fresh_tiny_model
    counts = {"vision_images": 0, "sam_images": 0}

    def count(key, images):
        counts[key] += images

    model.base_mllm.model.visual.register_forward_hook(
        lambda module, args, kwargs, out: count("vision_images", len(kwargs["grid_thw"])), with_kwargs=True)
    model.segmenter.image_encoder.register_forward_hook(lambda module, args, out: count("sam_images", len(args[0])))
    _trainer(model, [_batch(model)], reuse_encodings=True).run()
    assert counts == {"vision_images": 2, "sam_images": 2}
    counts.update(vision_images=0, sam_images=0)
    _trainer(model, [_batch(model)], reuse_encodings=False).run()
    # sampling, the reference pass and the policy pass each encode all 8 rollouts' images; SAM once per rollout
    assert counts == {"vision_images": 3 * 2 * GROUP, "sam_images": 2 * GROUP}


def test_the_update_favours_the_completions_with_higher_reward(fresh_tiny_model, monkeypatch):
    monkeypatch.setattr(grpo, "score_rollouts", _first_wins)
    torch.manual_seed(0)
    model = fresh_tiny_model
    # a high temperature, so that the untrained model's completions differ within a group
    trainer = _trainer(model, [_batch(model)], lr=5e-3, loss_function=CoreSegGRPOLoss(mask_weight=0.0, beta=0.0),
                       max_new_tokens=8, temperature=5.0)
    captured = {}
    sample = trainer.sample_rollouts
    trainer.sample_rollouts = lambda inputs: captured.setdefault("rollouts", sample(inputs))

    def mean_log_probs():
        rollouts = captured["rollouts"]
        model.eval()
        with torch.no_grad():
            output = model(**rollouts.text_inputs(), sam_images=None,
                           sam_features=model.encode_sam(rollouts.sam_images).repeat_interleave(GROUP),
                           logits_to_keep=rollouts.samples.completion_ids.shape[1] + 1)
        log_probs = token_log_probs(output.logits, rollouts.samples.completion_ids, temperature=5.0)
        mask = rollouts.samples.completion_mask
        return (log_probs * mask).sum(1) / mask.sum(1)

    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED,
                              lambda engine: captured.setdefault("before", mean_log_probs()))
    trainer.run()
    change = (mean_log_probs() - captured["before"]).view(-1, GROUP)
    # the rewarded first completion of each group became more likely, the others less
    assert bool((change[:, 0] > 0).all()) and bool((change[:, 1:] < change[:, :1]).all())


def test_rollouts_are_reused_for_several_steps_which_then_clip(fresh_tiny_model, monkeypatch):
    monkeypatch.setattr(grpo, "score_rollouts", _first_wins)
    trainer = _trainer(fresh_tiny_model, [_batch(fresh_tiny_model)], lr=3e-2, num_iterations=4,
                       loss_function=CoreSegGRPOLoss(mask_weight=0.0, beta=0.04, epsilon_low=0.05))
    calls = {"sample": 0, "step": 0}
    sample, step = trainer.sample_rollouts, trainer.optimizer.step
    trainer.sample_rollouts = lambda inputs: (calls.__setitem__("sample", calls["sample"] + 1), sample(inputs))[1]
    trainer.optimizer.step = lambda *a, **k: (calls.__setitem__("step", calls["step"] + 1), step(*a, **k))[1]
    trainer.run()
    assert calls == {"sample": 1, "step": 4}
    assert trainer.state.output[0]["clip_fraction"] > 0  # the last step's ratios left the trust region


def test_reference_stays_the_starting_policy_while_the_policy_moves(fresh_tiny_model, monkeypatch):
    monkeypatch.setattr(grpo, "score_rollouts", _first_wins)
    model = fresh_tiny_model
    start = {name: p.detach().clone() for name, p in model.mllm.named_parameters() if p.requires_grad}
    trainer = _trainer(model, [_batch(model), _batch(model, seed=5)], lr=1e-2,
                       loss_function=CoreSegGRPOLoss(mask_weight=0.0, beta=0.1))
    kls = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda engine: kls.append(engine.state.output["kl"]))
    trainer.run()
    params = dict(model.mllm.named_parameters())
    assert any(not torch.equal(params[name], value) for name, value in start.items())
    with trainer.reference.applied():
        assert all(torch.equal(params[name], value) for name, value in start.items())
    assert kls[1] > kls[0]  # the policy drifted from the reference after the first update


def test_bad_batches_and_settings_are_reported(fresh_tiny_model):
    model = fresh_tiny_model
    train_batch = make_batch(model, ["<think> a </think><answer> b <seg> </answer>"] * 2)
    train_batch["label"] = torch.zeros(2, 1, 512, 512)
    with pytest.raises(ValueError, match="mode='generate'"):
        _trainer(model, [train_batch]).run()
    no_masks = _batch(model)
    del no_masks["label"]
    with pytest.raises(ValueError, match="ground-truth masks"):
        _trainer(model, [no_masks]).run()
    with pytest.raises(ValueError, match="num_generations"):
        CoreSegGRPOTrainer(device="cpu", max_epochs=1, train_data_loader=[], network=model,
                           optimizer=torch.optim.SGD(model.adapter.parameters(), lr=0.1), num_generations=1)
    with pytest.raises(ValueError, match="accumulation"):
        _trainer(model, [], num_iterations=2, accumulation_steps=2)


def test_log_probs_are_those_of_the_completion_tokens_only(fresh_tiny_model):
    """The policy pass scores exactly the sampled tokens, each by the logits of the position before it."""
    torch.manual_seed(0)
    model = fresh_tiny_model
    trainer = _trainer(model, [], max_new_tokens=5, temperature=2.0)
    batch = _batch(model)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                                          "mm_token_type_ids", "sam_images") if key in batch}
    rollouts = trainer.sample_rollouts(inputs)
    model.eval()
    with torch.no_grad():
        _, log_probs = trainer.policy_pass(rollouts)
        text = rollouts.text_inputs()
        text.pop("answer_mask")
        full = model.language_logits(**text)  # every position's logits
    samples = rollouts.samples
    prompt, length = samples.prompt_length, samples.completion_ids.shape[1]
    expected = torch.log_softmax(full[:, prompt - 1:prompt - 1 + length].float() / 2.0, dim=-1)
    expected = expected.gather(-1, samples.completion_ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(log_probs, expected, atol=1e-5)
    assert torch.equal(samples.input_ids[:, prompt:], samples.completion_ids)
