# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Optimiser parameter groups: the SAM part can train at its own learning rate."""

from __future__ import annotations

import pytest
import torch

from scripts.optimization import coreseg_parameter_groups


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_segmenter_gets_its_own_rate_and_frozen_parameters_are_left_out(tiny_model):
    groups = coreseg_parameter_groups(tiny_model, learning_rate=1e-3, segmenter_learning_rate=1e-4)
    assert [group["lr"] for group in groups] == [1e-4, 1e-3]
    segmenter = {id(p) for p in tiny_model.segmenter.parameters() if p.requires_grad}
    others = {id(p) for name, p in tiny_model.named_parameters() if p.requires_grad and not name.startswith("segmenter.")}
    assert _ids(groups[0]["params"]) == segmenter and segmenter
    assert _ids(groups[1]["params"]) == others
    assert _ids(tiny_model.adapter.parameters()) <= others  # the adapter follows the language model's rate
    frozen = {id(p) for p in tiny_model.parameters() if not p.requires_grad}
    assert frozen and not frozen & (segmenter | others)


@pytest.mark.parametrize("segmenter_learning_rate", [None, 1e-3])
def test_one_group_when_the_rates_agree(tiny_model, segmenter_learning_rate):
    groups = coreseg_parameter_groups(tiny_model, 1e-3, segmenter_learning_rate)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    assert _ids(groups[0]["params"]) == {id(p) for p in tiny_model.parameters() if p.requires_grad}


def test_groups_drive_adamw_at_their_rates(fresh_tiny_model):
    optimizer = torch.optim.AdamW(coreseg_parameter_groups(fresh_tiny_model, 1e-3, 2e-4))
    assert [group["lr"] for group in optimizer.param_groups] == [2e-4, 1e-3]


def test_a_network_without_trainable_parameters_is_an_error():
    with pytest.raises(ValueError, match="no trainable parameters"):
        coreseg_parameter_groups(torch.nn.Linear(2, 2).requires_grad_(False), 1e-3, 1e-4)


def test_language_model_segmenter_and_adapter_can_each_have_a_rate(tiny_model):
    groups = coreseg_parameter_groups(tiny_model, 1e-3, segmenter_learning_rate=2e-4, mllm_learning_rate=5e-4)
    assert [group["lr"] for group in groups] == [2e-4, 5e-4, 1e-3]
    assert _ids(groups[1]["params"]) == {id(p) for p in tiny_model.mllm.parameters() if p.requires_grad}
    assert _ids(groups[2]["params"]) == {id(p) for p in tiny_model.adapter.parameters()}
    only_mllm = coreseg_parameter_groups(tiny_model, 1e-3, mllm_learning_rate=5e-4)
    assert [group["lr"] for group in only_mllm] == [5e-4, 1e-3]
