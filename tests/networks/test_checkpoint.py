# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import pytest
import torch

from scripts.networks import (
    TrainableWeights,
    build_coreseg,
    format_parameter_report,
    load_trainable_weights,
    parameter_report,
    save_trainable_weights,
)
from tests.conftest import ANSWER, make_batch


def _perturb_trainable(model, seed: int = 0) -> None:
    """Stand-in for training: move every trainable tensor (LoRA B starts at zero, so this matters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


def test_round_trip_reproduces_outputs_exactly(tmp_path):
    trained = build_coreseg("tiny", seed=0).eval()
    _perturb_trainable(trained)
    path = save_trainable_weights(trained, tmp_path / "models" / "model.pt")

    state = torch.load(path, weights_only=True)  # a plain state dict of tensors
    trainable = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert set(state) == trainable and all(isinstance(v, torch.Tensor) for v in state.values())

    restored = build_coreseg("tiny", seed=0).eval()
    batch = make_batch(trained, [ANSWER, ANSWER])
    with torch.no_grad():
        before = restored(**batch).mask_logits
    load_trainable_weights(restored, path)
    with torch.no_grad():
        expected, actual = trained(**batch), restored(**batch)
    assert not torch.equal(before, expected.mask_logits)  # loading changed something
    assert torch.equal(actual.mask_logits, expected.mask_logits)
    assert torch.equal(actual.logits, expected.logits)
    assert torch.equal(actual.seg_hidden_states, expected.seg_hidden_states)


def test_checkpoint_holds_no_frozen_weights(tmp_path):
    model = build_coreseg("tiny", seed=0)
    state = torch.load(save_trainable_weights(model, tmp_path / "model.pt"), weights_only=True)
    assert not any(name.startswith(("segmenter.image_encoder.", "segmenter.prompt_encoder.")) for name in state)
    assert not any(".visual." in name for name in state)
    assert not any(name.endswith("embed_tokens.weight") or ".base_layer." in name for name in state)
    assert sum(v.numel() for v in state.values()) == sum(r.trainable for r in parameter_report(model))


def test_handler_style_checkpoints_load_too(tmp_path):
    """MONAI's CheckpointSaver writes {"model": state_dict, ...}; the loader accepts that layout."""
    trained = build_coreseg("tiny", seed=0)
    _perturb_trainable(trained, seed=1)
    path = tmp_path / "checkpoint_epoch=1.pt"
    torch.save({"model": TrainableWeights(trained).state_dict(), "optimizer": {}}, path)
    restored = build_coreseg("tiny", seed=0)
    load_trainable_weights(restored, path)
    for (name, a), b in zip(trained.named_parameters(), restored.parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), name


def test_loading_chosen_components_leaves_the_others_as_built(tmp_path):
    """Stage B of the tiny demo recipe: a text-trained language model, the adapter and SAM as built."""
    trained = build_coreseg("tiny", seed=0)
    _perturb_trainable(trained, seed=2)
    path = save_trainable_weights(trained, tmp_path / "model.pt")
    restored = build_coreseg("tiny", seed=0)
    built = {n: p.detach().clone() for n, p in restored.named_parameters()}
    load_trainable_weights(restored, path, components=["mllm"])
    for (name, a), b in zip(trained.named_parameters(), restored.parameters()):
        if not a.requires_grad:
            continue
        if name.startswith("mllm."):
            assert torch.equal(a, b), name
        else:
            assert torch.equal(b, built[name]), name
    with pytest.raises(ValueError, match="Unknown components"):
        load_trainable_weights(restored, path, components=["language_model"])


def test_a_temporary_freeze_does_not_change_what_the_view_saves_and_loads(tmp_path):
    """FreezeForIterations holds the language model for a while; checkpoints taken then must still load."""
    trained = build_coreseg("tiny", seed=0)
    _perturb_trainable(trained, seed=2)
    view = TrainableWeights(trained)
    names = list(view.state_dict())
    held = [p for p in trained.mllm.parameters() if p.requires_grad]
    for param in held:
        param.requires_grad_(False)
    state = view.state_dict()
    assert list(state) == names and any(".lora_" in name for name in state)
    torch.save(state, tmp_path / "held.pt")
    for param in held:
        param.requires_grad_(True)
    restored = build_coreseg("tiny", seed=0)
    load_trainable_weights(restored, tmp_path / "held.pt")  # strict: nothing missing
    for (name, a), b in zip(trained.named_parameters(), restored.parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), name


def test_mismatched_checkpoints_are_rejected_with_the_reason(tmp_path):
    semantic = build_coreseg("tiny", seed=0)
    linear = build_coreseg("tiny", seed=0, adapter="linear")
    path = save_trainable_weights(semantic, tmp_path / "semantic.pt")
    with pytest.raises(KeyError, match="same preset, adapter, adapter_kwargs and LoRA settings"):
        load_trainable_weights(linear, path)
    wider = build_coreseg("tiny", seed=0, lora_r=4, lora_alpha=8)
    before = {n: p.detach().clone() for n, p in wider.named_parameters()}
    with pytest.raises(ValueError, match="Shape of"):
        load_trainable_weights(wider, path)
    assert all(torch.equal(before[n], p) for n, p in wider.named_parameters())  # nothing half-loaded
    with pytest.raises(FileNotFoundError):
        load_trainable_weights(semantic, tmp_path / "missing.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_trainable_weights(semantic, tmp_path / "list.pt")


def test_parameter_report_per_component():
    model = build_coreseg("tiny", seed=0)
    rows = {row.component: row for row in parameter_report(model)}
    assert rows["mllm: LoRA"].trainable > 0 and rows["mllm: LoRA"].frozen == 0
    hidden = model.base_mllm.config.text_config.hidden_size
    assert rows["mllm: <seg> token rows"].trainable == hidden
    assert rows["mllm: vision tower"].trainable == 0 and rows["mllm: vision tower"].frozen > 0
    assert rows["mllm: language model (base)"].trainable == 0
    assert rows["segmenter: image encoder"].trainable == 0 and rows["segmenter: prompt encoder"].trainable == 0
    assert rows["segmenter: mask decoder"].frozen == 0
    assert "other" not in rows
    total = sum(p.numel() for p in model.parameters())
    assert sum(r.total for r in rows.values()) == total
    table = format_parameter_report(list(rows.values()))
    assert f"**{total:,}**" in table and "| adapter |" in table


def test_batch_norm_running_statistics_travel_with_the_trainable_weights(tmp_path):
    trained = build_coreseg("tiny", seed=0, adapter_kwargs={"probe_norm": "batch"})
    batch = make_batch(trained, [ANSWER, ANSWER, ANSWER])
    with torch.no_grad():
        trained(**batch)  # a training-mode pass moves the running statistics
    trained.eval()
    path = save_trainable_weights(trained, tmp_path / "model.pt")
    state = torch.load(path, weights_only=True)
    statistics = {"adapter.probe_norm.norm.running_mean", "adapter.probe_norm.norm.running_var",
                  "adapter.probe_norm.norm.num_batches_tracked"}
    assert statistics <= set(state) and int(state["adapter.probe_norm.norm.num_batches_tracked"]) == 1
    restored = build_coreseg("tiny", seed=0, adapter_kwargs={"probe_norm": "batch"}).eval()
    load_trainable_weights(restored, path)
    with torch.no_grad():
        assert torch.equal(restored(**batch).mask_logits, trained(**batch).mask_logits)
    # a model without batch norm saves exactly its trainable parameters, as before
    plain = build_coreseg("tiny", seed=0)
    assert set(TrainableWeights(plain).names) == {n for n, p in plain.named_parameters() if p.requires_grad}


def test_checkpoint_with_batch_norm_statistics_refuses_a_model_without_probe_norm(tmp_path):
    """A probe_norm model's checkpoint carries running statistics that a plain adapter has no place for, and back."""
    normed = build_coreseg("tiny", seed=0, adapter_kwargs={"probe_norm": "batch"})
    plain = build_coreseg("tiny", seed=0)
    normed_path = save_trainable_weights(normed, tmp_path / "normed.pt")
    plain_path = save_trainable_weights(plain, tmp_path / "plain.pt")
    with pytest.raises(KeyError, match=r"3 unexpected keys \['adapter.probe_norm.*adapter_kwargs"):
        load_trainable_weights(plain, normed_path)
    with pytest.raises(KeyError, match=r"3 missing keys \['adapter.probe_norm.*adapter_kwargs"):
        load_trainable_weights(normed, plain_path)
