# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest
import torch
from monai.engines.utils import IterationEvents

from scripts.engines import CoreSegSFTTrainer
from scripts.losses import CoreSegSFTLoss
from tests.conftest import ANSWER, make_batch


def _batches(model, count):
    batches = []
    for index in range(count):
        batch = make_batch(model, [ANSWER, ANSWER], seed=index)
        masks = torch.zeros(2, 1, 512, 512)
        masks[:, :, 100:200, 150:260] = 1
        batch["label"] = masks
        batches.append(batch)
    return batches


def _trainer(model, batches, **kwargs):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=kwargs.pop("lr", 1e-3))
    return CoreSegSFTTrainer(device=torch.device("cpu"), max_epochs=kwargs.pop("max_epochs", 1),
                             train_data_loader=batches, network=model, optimizer=optimizer, **kwargs)


def test_iteration_fires_monai_events_in_order_and_logs_loss_parts(fresh_tiny_model):
    trainer = _trainer(fresh_tiny_model, _batches(fresh_tiny_model, 1))
    fired = []
    for event in IterationEvents:
        trainer.add_event_handler(event, lambda engine, name=event.name: fired.append(name))
    trainer.run()
    assert fired[:4] == ["FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED"]
    # Decollated as in MONAI's engines: one dict per sample, the scalars replicated into each.
    assert isinstance(trainer.state.output, list) and len(trainer.state.output) == 2
    output = trainer.state.output[0]
    assert {"loss", "text_loss", "mask_loss", "format_valid", "pred", "label"} <= set(output)
    assert output["pred"].shape == (1, 512, 512)
    assert float(output["loss"]) == pytest.approx(output["text_loss"] + output["mask_loss"], rel=1e-5)
    assert output["format_valid"] == 1.0


def test_training_reduces_the_loss_on_a_fixed_batch(fresh_tiny_model):
    batches = _batches(fresh_tiny_model, 1)
    trainer = _trainer(fresh_tiny_model, batches, max_epochs=12, lr=3e-3)
    parts = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED,
                              lambda e: parts.append((e.state.output["text_loss"], e.state.output["mask_loss"])))
    trainer.run()
    (text_first, mask_first), (text_last, mask_last) = parts[0], parts[-1]
    assert text_last < 0.95 * text_first and mask_last < 0.9 * mask_first


def test_gradient_accumulation_steps_once_per_group_and_at_epoch_end(fresh_tiny_model):
    trainer = _trainer(fresh_tiny_model, _batches(fresh_tiny_model, 5), accumulation_steps=2, grad_clip_norm=1.0)
    steps = []
    original = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (steps.append(trainer.state.iteration), original(*a, **k))[1]
    trainer.run()
    assert steps == [2, 4, 5]
    assert 0 < trainer.state.output[0]["grad_norm"]


def test_batches_without_labels_are_rejected(fresh_tiny_model):
    batch = _batches(fresh_tiny_model, 1)[0]
    batch.pop("labels")
    with pytest.raises(ValueError, match="train mode"):
        _trainer(fresh_tiny_model, [batch]).run()
    with pytest.raises(ValueError, match="grad_clip_norm"):
        _trainer(fresh_tiny_model, [batch], grad_clip_norm=0.0)


def test_text_only_stage_trains_the_language_model_and_leaves_the_segmenter_alone(fresh_tiny_model):
    from scripts.engines import TeacherForcedInferer

    model = fresh_tiny_model
    segmenter = {n: p.detach().clone() for n, p in model.segmenter.named_parameters()}
    lora = {n: p.detach().clone() for n, p in model.mllm.named_parameters() if p.requires_grad}
    trainer = _trainer(model, _batches(model, 2), loss_function=CoreSegSFTLoss(mask_weight=0.0),
                       inferer=TeacherForcedInferer(with_masks=False))
    trainer.run()
    output = trainer.state.output[0]
    assert "pred" not in output and "mask_loss" not in output
    assert float(output["loss"]) == pytest.approx(output["text_loss"], rel=1e-6)
    assert all(torch.equal(p, segmenter[n]) and p.grad is None for n, p in model.segmenter.named_parameters())
    assert any(not torch.equal(p, lora[n]) for n, p in model.mllm.named_parameters() if p.requires_grad)
    # Without masks there is nothing for a mask metric or mask post-processing to read.
    with pytest.raises(ValueError, match="with_masks=False"):
        _trainer(model, _batches(model, 1), inferer=TeacherForcedInferer(with_masks=False),
                 key_train_metric={"dice": object()})


def test_language_model_stays_frozen_for_its_warm_up_iterations_then_trains(fresh_tiny_model):
    from scripts.engines import FreezeForIterations

    model = fresh_tiny_model
    llm = [p for p in model.mllm.parameters() if p.requires_grad]
    trainer = _trainer(model, _batches(model, 4), lr=1e-2)
    FreezeForIterations(llm, iterations=2).attach(trainer)
    snapshots = []
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED,
        lambda e: snapshots.append(([p.detach().clone() for p in llm], model.adapter.proj.weight.detach().clone())),
    )
    before = [p.detach().clone() for p in llm], model.adapter.proj.weight.detach().clone()
    trainer.run()
    changed = [any(not torch.equal(a, b) for a, b in zip(now[0], prev[0]))
               for prev, now in zip([before] + snapshots[:-1], snapshots)]
    assert changed == [False, False, True, True]  # iterations 1-2 frozen, 3-4 trained
    assert not torch.equal(snapshots[0][1], before[1])  # the adapter trains from the first iteration
    assert all(p.requires_grad for p in llm)
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        FreezeForIterations(llm, iterations=-1)


def test_language_model_held_for_the_whole_run(fresh_tiny_model):
    from scripts.engines import FreezeForIterations

    model = fresh_tiny_model
    llm = [p for p in model.mllm.parameters() if p.requires_grad]
    trainer = _trainer(model, _batches(model, 3), lr=1e-2)
    FreezeForIterations(llm, iterations=None).attach(trainer)
    before = [p.detach().clone() for p in llm], model.adapter.proj.weight.detach().clone()
    trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before[0], llm))
    assert not torch.equal(before[1], model.adapter.proj.weight)
