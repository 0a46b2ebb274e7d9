# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Optimiser parameter groups for CoreSeg.

The SAM part (mask decoder and, when trained, image encoder) and the language model (LoRA, ``<seg>`` rows) can
each get their own learning rate. A randomly initialised SAM2 decoder trained at 1e-3 learns, within a few hundred
steps, to draw masks from the image alone and to ignore every sparse prompt; at 2e-4 it keeps following a clean
prompt (``docs/sft_learning.md``). The groups come from MONAI's :func:`monai.optimizers.generate_param_groups`.
"""

from __future__ import annotations

from monai.optimizers import generate_param_groups
from torch import nn

__all__ = ["coreseg_parameter_groups"]


def coreseg_parameter_groups(
    network: nn.Module,
    learning_rate: float,
    segmenter_learning_rate: float | None = None,
    mllm_learning_rate: float | None = None,
) -> list[dict]:
    """Trainable parameters of a CoreSeg in optimiser groups.

    Args:
        network: a :class:`~scripts.networks.coreseg.CoreSeg` (``network.segmenter`` is SAM, ``network.mllm`` the
            peft-wrapped language model).
        learning_rate: learning rate of the prompt adapter, and of the other parts unless set below.
        segmenter_learning_rate: learning rate of the trainable SAM parameters (``None``: ``learning_rate``).
        mllm_learning_rate: learning rate of the language model's LoRA and ``<seg>`` rows (``None``:
            ``learning_rate``).

    Returns:
        One group per distinct rate, in the order segmenter, language model, the rest, each
        ``{"params": [...], "lr": ...}``; frozen parameters and empty groups are left out.

    Raises:
        ValueError: nothing in ``network`` is trainable.
    """
    if not any(p.requires_grad for p in network.parameters()):
        raise ValueError("The network has no trainable parameters.")
    rates = {"segmenter.": segmenter_learning_rate, "mllm.": mllm_learning_rate}
    own = [prefix for prefix, rate in rates.items() if rate is not None and rate != learning_rate]

    def in_part(prefix: str):
        return lambda item: item[1].requires_grad and item[0].startswith(prefix)

    def rest(item) -> bool:
        return item[1].requires_grad and not item[0].startswith(tuple(own))

    groups = generate_param_groups(
        network,
        layer_matches=[in_part(prefix) for prefix in own] + [rest],
        match_types=["filter"] * (len(own) + 1),
        lr_values=[rates[prefix] for prefix in own] + [learning_rate],
        include_others=False,
    )
    # generate_param_groups returns generators; lists can be counted, logged and iterated more than once.
    groups = [{"params": list(group["params"]), "lr": group["lr"]} for group in groups]
    return [group for group in groups if group["params"]]
