# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The GRPO reference policy: a frozen copy of the stage-1 language model's trainable tensors.

How the reference is held
    GRPO's KL term compares the policy with the stage-1 (SFT) policy. CoreSeg's language model is a frozen base
    plus trainable tensors: the LoRA matrices and the ``<seg>`` rows of the embedding and output layers (or the
    whole embedding, with ``train_embeddings``). :class:`ReferencePolicy` keeps a detached copy of exactly those
    tensors, taken when the GRPO run starts from its stage-1 checkpoint, and swaps them into the model for the
    reference pass (:meth:`ReferencePolicy.applied`), swapping the policy's back afterwards. The base weights are
    shared, so the reference costs the size of the trainable tensors, not a second model.

    trl's alternatives do not fit CoreSeg: ``disable_adapter()`` (the reference of a *fresh* LoRA) would compare
    with the base model, not the SFT policy, and would keep the trained ``<seg>`` rows; a cloned "ref" LoRA
    adapter (trl#4723) leaves out the token rows, which are not LoRA parameters.

    The copy is part of the trainer's checkpoints (:meth:`state_dict`), so a resumed run keeps comparing with the
    stage-1 policy rather than with whatever the policy was when it was interrupted.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping

import torch
from torch import nn

__all__ = ["ReferencePolicy"]


class ReferencePolicy:
    """A frozen snapshot of ``module``'s trainable parameters, swapped in on demand.

    Args:
        module: the language model (``CoreSeg.mllm``); its parameters that require grad now are snapshotted.

    Raises:
        ValueError: ``module`` has no trainable parameter (a reference of a frozen model is the model itself,
            and a GRPO run that trains nothing is a configuration error: trl#6700).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._parameters = OrderedDict(
            (name, param) for name, param in module.named_parameters() if param.requires_grad
        )
        if not self._parameters:
            raise ValueError("The language model has no trainable parameter: GRPO would train nothing. Build the "
                             "network with LoRA (and the <seg> rows) trainable before making the reference.")
        self._reference = OrderedDict((name, param.detach().clone()) for name, param in self._parameters.items())

    @property
    def names(self) -> list[str]:
        """Qualified names of the snapshotted parameters."""
        return list(self._parameters)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the module computes the reference policy (use it under ``torch.no_grad()``)."""
        saved = {}
        with torch.no_grad():
            for name, param in self._parameters.items():
                saved[name] = param.data
                param.data = self._reference[name]
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self._parameters.items():
                    param.data = saved[name]

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((name, tensor.cpu().clone()) for name, tensor in self._reference.items())

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Restore a snapshot saved by :meth:`state_dict` (from a checkpoint of the same run).

        Raises:
            KeyError: the names differ from this reference's.
            ValueError: a tensor's shape differs.
        """
        if set(state_dict) != set(self._reference):
            raise KeyError(f"Reference snapshot does not fit: {len(set(state_dict) - set(self._reference))} "
                           f"unexpected and {len(set(self._reference) - set(state_dict))} missing tensors.")
        for name, value in state_dict.items():
            if value.shape != self._reference[name].shape:
                raise ValueError(f"Reference tensor {name} has shape {tuple(value.shape)}, expected "
                                 f"{tuple(self._reference[name].shape)}.")
        for name, value in state_dict.items():
            self._reference[name] = value.to(self._reference[name].device, self._reference[name].dtype).clone()
