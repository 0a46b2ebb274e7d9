# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Training losses of CORE-Seg (paper eq. 7): ``l1 * CE(text) + l2 * DiceCE(mask)``."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

from scripts.networks.coreseg import CoreSegOutput

__all__ = ["CoreSegSFTLoss"]


class CoreSegSFTLoss(nn.Module):
    """Stage-1 loss: weighted next-token cross-entropy plus DiceCE on the ``<seg>`` masks.

    The mask term covers the samples whose answer holds exactly one ``<seg>`` token (``seg_valid``); with
    teacher forcing on well-formed targets that is every sample. A batch with none contributes a zero mask term
    that keeps the graph connected (so distributed training still sees every parameter), and the count is
    reported, never hidden.

    Args:
        text_weight: ``lambda_1`` (paper: 1.0).
        mask_weight: ``lambda_2`` (paper: 1.0).
        dice_ce_kwargs: options of :class:`monai.losses.DiceCELoss` (``sigmoid=True`` is always set: the
            decoder returns one logit map per sample).
    """

    def __init__(self, text_weight: float = 1.0, mask_weight: float = 1.0, dice_ce_kwargs: dict | None = None) -> None:
        super().__init__()
        if text_weight < 0 or mask_weight < 0:
            raise ValueError(f"Loss weights must be >= 0, got text_weight={text_weight}, mask_weight={mask_weight}.")
        self.text_weight = text_weight
        self.mask_weight = mask_weight
        self.dice_ce = DiceCELoss(**{**(dice_ce_kwargs or {}), "sigmoid": True})

    def forward(self, output: CoreSegOutput, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            output: :meth:`CoreSeg.forward` result, computed with labels.
            masks: ``(B, 1, S, S)`` ground-truth masks (0/1) at the SAM resolution.

        Returns:
            ``{"loss", "text_loss", "mask_loss", "mask_samples"}``; ``loss`` is the weighted sum.
        """
        if output.text_loss is None:
            raise ValueError("CoreSegSFTLoss needs the text loss: call the network with labels.")
        if masks.shape != output.mask_logits.shape:
            raise ValueError(f"Mask shape {tuple(masks.shape)} does not match the predicted mask logits "
                             f"{tuple(output.mask_logits.shape)}; resize labels to the SAM resolution.")
        valid = output.seg_valid
        if bool(valid.any()):
            mask_loss = self.dice_ce(output.mask_logits[valid], masks[valid].to(output.mask_logits.dtype))
        else:
            mask_loss = output.mask_logits.sum() * 0.0
        text_loss = output.text_loss.float()
        loss = self.text_weight * text_loss + self.mask_weight * mask_loss
        return {"loss": loss, "text_loss": text_loss.detach(), "mask_loss": mask_loss.detach(),
                "mask_samples": valid.sum().detach()}
