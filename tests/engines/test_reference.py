# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import copy

import pytest
import torch

from scripts.engines import ReferencePolicy


def _language_model():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # a frozen "base" weight stays out of the snapshot
    return model


def test_reference_swaps_in_the_snapshot_and_restores_the_policy():
    model = _language_model()
    reference = ReferencePolicy(model)
    assert reference.names == ["0.bias", "1.weight", "1.bias"]  # the frozen base weight is not copied
    snapshot = {name: param.detach().clone() for name, param in model.named_parameters()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)  # "training" (the frozen weight moves too, to show it is shared, not copied)
    x = torch.randn(5, 3)
    trained = model(x).detach()
    expected = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in expected.named_parameters():
            if name in reference.names:
                param.copy_(snapshot[name])
    with torch.no_grad(), reference.applied():
        assert torch.allclose(model(x), expected(x))
    assert torch.equal(model(x), trained)  # the policy's tensors are back


def test_reference_is_restored_when_the_block_raises():
    model = _language_model()
    reference = ReferencePolicy(model)
    with torch.no_grad():
        model[1].bias.add_(5.0)
    moved = model[1].bias.detach().clone()
    with pytest.raises(RuntimeError), reference.applied():
        raise RuntimeError("boom")
    assert torch.equal(model[1].bias, moved)


def test_reference_state_round_trips_and_checks_fit():
    model = _language_model()
    reference = ReferencePolicy(model)
    state = reference.state_dict()
    with torch.no_grad():
        model[1].bias.add_(1.0)
    other = ReferencePolicy(model)  # a snapshot of the moved model, as after an interrupted run
    other.load_state_dict(state)
    with torch.no_grad(), other.applied():
        assert torch.equal(model[1].bias, state["1.bias"])
    with pytest.raises(KeyError):
        other.load_state_dict({"1.bias": state["1.bias"]})
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict({**state, "1.bias": torch.zeros(3)})


def test_a_model_without_trainable_parameters_is_refused():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="train nothing"):
        ReferencePolicy(model)
