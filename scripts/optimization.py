# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Optimiser parameter groups for CoreSeg.

The SAM mask decoder (and, when trained, the SAM image encoder) can get their own learning rate. A randomly
initialised SAM2 decoder trained at the language model's rate learns, within a few hundred steps, to draw masks
from the image alone and to ignore every sparse prompt (``docs/sft_learning.md``); a lower rate keeps its prompt
pathway working. The groups come from MONAI's :func:`monai.optimizers.generate_param_groups`.
"""

from __future__ import annotations

from torch import nn
from monai.optimizers import generate_param_groups

__all__ = ["coreseg_parameter_groups"]


def coreseg_parameter_groups(
    network: nn.Module, learning_rate: float, segmenter_learning_rate: float | None = None
) -> list[dict]:
    """Trainable parameters of a CoreSeg in optimiser groups.

    Args:
        network: a :class:`~scripts.networks.coreseg.CoreSeg` (its SAM part is ``network.segmenter``).
        learning_rate: learning rate of the language model's LoRA, the ``<seg>`` rows and the prompt adapter.
        segmenter_learning_rate: learning rate of the trainable SAM parameters (``None``: ``learning_rate``).

    Returns:
        ``[{"params": [...], "lr": segmenter_learning_rate}, {"params": [...], "lr": learning_rate}]``, or one group
        when both rates are the same; frozen parameters and empty groups are left out.

    Raises:
        ValueError: nothing in ``network`` is trainable.
    """
    if not any(p.requires_grad for p in network.parameters()):
        raise ValueError("The network has no trainable parameters.")
    if segmenter_learning_rate is None or segmenter_learning_rate == learning_rate:
        return [{"params": [p for p in network.parameters() if p.requires_grad], "lr": learning_rate}]
    groups = generate_param_groups(
        network,
        layer_matches=[
            lambda item: item[1].requires_grad and item[0].startswith("segmenter."),
            lambda item: item[1].requires_grad and not item[0].startswith("segmenter."),
        ],
        match_types=["filter", "filter"],
        lr_values=[segmenter_learning_rate, learning_rate],
        include_others=False,
    )
    # generate_param_groups returns generators; lists can be counted, logged and iterated more than once.
    groups = [{"params": list(group["params"]), "lr": group["lr"]} for group in groups]
    return [group for group in groups if group["params"]]
