# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Box-prompt training of a preset's SAM2 on a datalist's lesion masks: the tiny preset's MedSAM2.

The full preset starts from MedSAM2, a SAM2 already trained to segment what a box prompt points at; its mask
decoder reads sparse prompts, and SFT teaches the adapter to write such prompts from the ``<seg>`` state. The
tiny preset's SAM2 is randomly initialised. Trained from scratch inside SFT, its decoder learns within a few
hundred steps to draw masks from the image alone and never reads its prompt again (``docs/sft_learning.md``).
This script gives it what MedSAM2 has: it trains the SAM2 image encoder and mask decoder with SAM's own box
prompts, one lesion per sample (:mod:`scripts.data.box_prompts`), and writes a sam2-format checkpoint for
``build_coreseg(sam_checkpoint=...)`` / ``configs/train_sft.json``'s ``sam_checkpoint``. It uses only the
training split's images and masks (no question, no text).

After training it measures on the validation split how well the decoder follows the box: Dice with each
lesion's own box, and with the box of another image's lesion (a decoder that ignores its prompt scores the
same with both).

Example::

    python -m scripts.pretrain_sam --datalist data/synthetic_small/datalist.json \\
        --out runs/tiny_sam2_256.pt --sam_image_size 256 --iters 1500
"""

from __future__ import annotations

import json
import math
import time

import fire
import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from torch import nn
from tqdm import tqdm

from scripts.data.box_prompts import build_box_prompt_transforms, has_lesion
from scripts.data.datalist import load_datalist
from scripts.metrics import mask_dice, prompt_sensitivity_of
from scripts.networks.medsam2 import MedSAM2Segmenter, save_sam2_checkpoint
from scripts.networks.presets import build_segmenter

__all__ = ["BoxPromptedSegmenter", "box_prompt_scores", "run"]


class BoxPromptedSegmenter(nn.Module):
    """A :class:`~scripts.networks.medsam2.MedSAM2Segmenter` driven by SAM's box prompts.

    Args:
        segmenter: the segmenter; its prompt encoder (frozen, as in CoreSeg) embeds the boxes.
    """

    def __init__(self, segmenter: MedSAM2Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Mask logits ``(B, 1, S, S)`` for ``(B, 3, S, S)`` SAM images and ``(B, 4)`` boxes in their pixels."""
        if boxes.ndim != 2 or boxes.shape != (images.shape[0], 4):
            raise ValueError(f"Expected boxes of shape ({images.shape[0]}, 4), got {tuple(boxes.shape)}.")
        features = self.segmenter.encode_image(images)
        sparse, _ = self.segmenter.prompt_encoder(points=None, boxes=boxes, masks=None)
        return self.segmenter.decode(features, sparse).mask_logits


@torch.no_grad()
def box_prompt_scores(model: BoxPromptedSegmenter, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Mean Dice with each lesion's own box, with the next sample's box (prompts rotated by one in the batch),
    and the prompt sensitivity (mean absolute change of the logits under that rotation over their standard
    deviation; 0 when the decoder ignores its prompt)."""
    model.eval()
    own, other, sensitivity = [], [], []
    for batch in loader:
        images, labels, boxes = (batch[key].to(device) for key in ("sam_image", "label", "box"))
        if len(images) < 2:
            continue
        logits = model(images, boxes)
        rotated = model(images, boxes.roll(1, dims=0))
        own += mask_dice(logits > 0, labels > 0).tolist()
        other += mask_dice(rotated > 0, labels > 0).tolist()
        sensitivity.append(prompt_sensitivity_of(logits, rotated))
    if not own:
        raise ValueError("box_prompt_scores needs batches of at least 2 samples.")
    return {"dice_own_box": float(np.mean(own)), "dice_other_box": float(np.mean(other)),
            "prompt_sensitivity": float(np.mean(sensitivity)), "samples": len(own)}


def run(
    datalist: str,
    out: str,
    preset: str = "tiny",
    sam_image_size: int | None = 256,
    sam_checkpoint: str | None = None,
    train_sam_encoder: bool = True,
    iters: int = 1500,
    batch_size: int = 8,
    learning_rate: float = 2e-4,
    jitter: float = 0.1,
    val_max_records: int = 96,
    num_workers: int = 1,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Train and write ``out`` (sam2 checkpoint) and ``out`` with suffix ``.json`` (settings, loss curve, scores).

    Args:
        datalist: a datalist with ``training`` and ``validation`` sections and lesion masks (``label``).
        out: path of the sam2-format checkpoint to write.
        preset: the preset whose SAM2 architecture is trained.
        sam_image_size: SAM input side (256 for the tiny demo, ``None``: the preset's 512).
        sam_checkpoint: start from this sam2 checkpoint instead of random weights.
        train_sam_encoder: train the image encoder too (needed from random weights).
        iters: optimiser steps.
        batch_size: lesions per step (one per image).
        learning_rate: peak AdamW learning rate (one-cycle schedule, 5 % warm-up, gradient norm clipped at 1).
            At 1e-3 the tiny decoder stops reading its prompt within a few hundred steps; 2e-4 keeps it.
        jitter: box jitter as a fraction of the box's side (SAM and MedSAM train with noisy boxes).
        val_max_records: validation records scored at the end (the first ones holding a lesion).
        num_workers: data loader workers.
        seed: seed of the weights, the lesion choice, the jitter and the order.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        progress: show a tqdm bar.

    Returns:
        The report written next to the checkpoint.

    Raises:
        ValueError: a section has no record with a lesion.
    """
    settings = dict(locals())
    start = time.perf_counter()
    set_determinism(seed=seed)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sections = {}
    for section in ("training", "validation"):
        records = [record for record in load_datalist(datalist, section) if has_lesion(record)]
        if not records:
            raise ValueError(f"{datalist}: its '{section}' section has no record with a lesion to prompt.")
        sections[section] = records
    segmenter = build_segmenter(preset, sam_checkpoint, train_sam_encoder, sam_image_size)
    model = BoxPromptedSegmenter(segmenter).to(device)
    size = segmenter.image_size
    train_transform = build_box_prompt_transforms(size, random_lesion=True, jitter=jitter)
    train_transform.set_random_state(seed=seed)
    train_loader = DataLoader(
        Dataset(sections["training"], train_transform), batch_size=batch_size, shuffle=True,
        drop_last=len(sections["training"]) > batch_size, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0,
    )
    val_loader = DataLoader(
        Dataset(sections["validation"][:val_max_records], build_box_prompt_transforms(size, random_lesion=False)),
        batch_size=8, num_workers=0,
    )
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=iters,
                                                   pct_start=0.05)
    # Batch Dice, as in SFT: small lesions would otherwise give a noisy per-image Dice term.
    loss_function = DiceCELoss(sigmoid=True, batch=True)
    untrained = box_prompt_scores(model, val_loader, device)
    model.train()
    curve, losses, step = [], [], 0
    bar = tqdm(total=iters, desc="box-prompt SAM2 training", unit="step", disable=not progress)
    for _ in range(math.ceil(iters / max(len(train_loader), 1))):
        for batch in train_loader:
            images, labels, boxes = (batch[key].to(device) for key in ("sam_image", "label", "box"))
            loss = loss_function(model(images, boxes), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            if step % 100 == 0 or step == iters:
                curve.append({"step": step, "loss": float(np.mean(losses[-100:]))})
            if step >= iters:
                break
        if step >= iters:
            break
    bar.close()
    checkpoint = save_sam2_checkpoint(segmenter, out)
    report = {
        "settings": settings,
        "loss_curve": curve,
        "validation_untrained": untrained,
        "validation": box_prompt_scores(model, val_loader, device),
        "seconds": time.perf_counter() - start,
        "checkpoint": str(checkpoint),
    }
    checkpoint.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    if progress:
        tqdm.write(f"validation: Dice {report['validation']['dice_own_box']:.3f} with the lesion's own box, "
                   f"{report['validation']['dice_other_box']:.3f} with another lesion's box; wrote {checkpoint}")
    return report


if __name__ == "__main__":
    fire.Fire(run)
