# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""MONAI inferers for CoreSeg: how an engine calls the network on a collated batch.

CoreSeg takes a dict of keyword arguments (the collator's output) rather than one image tensor, so the engines'
``inferer`` slot (required by MONAI's bundle properties ``train#inferer`` and ``inferer``) holds these two.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

from scripts.networks.coreseg import CoreSegGeneration, CoreSegOutput

__all__ = ["TeacherForcedInferer", "GenerationInferer"]


class TeacherForcedInferer(Inferer):
    """``network(**inputs)``: the teacher-forced pass of training (text loss, ``<seg>`` probes, masks).

    Args:
        with_masks: run the segmenter. False (a text-only stage, whose mask loss weight is 0) skips the SAM
            encoder, the adapter and the mask decoder, and the output's mask fields are ``None``.
    """

    def __init__(self, with_masks: bool = True) -> None:
        super().__init__()
        self.with_masks = bool(with_masks)

    def __call__(self, inputs: dict[str, torch.Tensor], network: torch.nn.Module, *args: Any, **kwargs: Any
                 ) -> CoreSegOutput:
        return network(**inputs, **{"with_masks": self.with_masks, **kwargs})


class GenerationInferer(Inferer):
    """``network.generate(**inputs, **generation_kwargs)``: sampling with the KV cache, then segmentation.

    Args:
        max_new_tokens: longest completion.
        do_sample: sample instead of greedy decoding.
        generation_kwargs: any other argument of ``CoreSeg.generate`` (``temperature``, ``top_p``,
            ``num_return_sequences``, ``repetition_penalty``, ...).
    """

    def __init__(self, max_new_tokens: int = 512, do_sample: bool = False, **generation_kwargs: Any) -> None:
        super().__init__()
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        self.generation_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, **generation_kwargs}

    def __call__(self, inputs: dict[str, torch.Tensor], network: torch.nn.Module, *args: Any, **kwargs: Any
                 ) -> CoreSegGeneration:
        return network.generate(**inputs, **{**self.generation_kwargs, **kwargs})
