# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Dense finding-detection training of a preset's vision tower: the demo's pretrained vision encoder.

The full preset's language model looks at the image through Qwen2.5-VL's pretrained vision tower, which already
tells a bright round spot from a hazy irregular one. The demo preset's vision tower is randomly initialised and,
frozen, it gives the language model nothing to read: the demo model's answers said that the asked finding was
absent from nearly every image and wrote no boxes (``docs/sft_learning.md``). This script gives the demo what
Qwen2.5-VL has, the way :mod:`scripts.pretrain_sam` gives it what MedSAM2 has: it trains the vision tower (patch
embedding, blocks and patch merger) with a linear head on its output tokens, the tokens the language model reads,
to say for every token which findings lie under it. The targets come from the training split's masks only (no
question, no text); the head is thrown away and the vision tower's weights are written as a plain state dict
for ``build_coreseg(vision_checkpoint=...)`` / the configs' ``vision_checkpoint``.

Each record supervises every finding of the vocabulary on every token of its image: the record's own finding
with its mask (a token is positive when a lesion pixel lies in the image region it covers), the findings that
cannot be in the image as negatives, and the record's distractor not at all (its mask belongs to another
record). After training it measures on the validation split how well the tokens tell whether the asked finding
is in the image (the most confident token decides) and where (token-level Dice).

Example::

    python -m scripts.pretrain_vision --datalist data/synthetic_small_paired/datalist.json \\
        --out models/demo_vision.pt --iters 3000
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence

import fire
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset
from monai.metrics import compute_roc_auc
from monai.utils import set_determinism
from torch import nn
from tqdm import tqdm

from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import describe_record, load_datalist
from scripts.data.transforms import build_transforms
from scripts.data.vocabulary import LESION_TYPES
from scripts.networks.mllm import find_vision_tower
from scripts.networks.presets import PRESETS, build_base_mllm, resolve_dtype

__all__ = ["FINDINGS", "VisionFindingDetector", "token_targets", "finding_detection_scores", "run"]

#: Every finding of the vocabulary (diseases and their paired findings), in a fixed order: the head's classes.
FINDINGS: tuple[str, ...] = tuple(sorted({t.disease for t in LESION_TYPES} | {t.distractor for t in LESION_TYPES}))


class VisionFindingDetector(nn.Module):
    """An MLLM's vision tower with a linear head that scores every finding on every output token.

    Args:
        mllm: the image-text-to-text model whose vision tower trains (its language model is not used).
        num_findings: classes of the head.
    """

    def __init__(self, mllm: nn.Module, num_findings: int = len(FINDINGS)) -> None:
        super().__init__()
        self.mllm = mllm
        _, self.vision_tower = find_vision_tower(mllm)
        hidden = mllm.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, num_findings)

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """One ``(tokens, num_findings)`` logit map per image, tokens in the order the language model reads them."""
        features = self.mllm.get_image_features(pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                                                return_dict=True).pooler_output
        return [self.head(tokens.float()) for tokens in features]


def token_grid(image_grid_thw: torch.Tensor, merge_size: int) -> list[tuple[int, int]]:
    """``(rows, columns)`` of each image's output tokens: the patch grid over the spatial merge."""
    grids = []
    for frames, rows, columns in image_grid_thw.tolist():
        if frames != 1 or rows % merge_size or columns % merge_size:
            raise ValueError(f"Expected one frame and a patch grid divisible by {merge_size}, got "
                             f"{(frames, rows, columns)}.")
        grids.append((rows // merge_size, columns // merge_size))
    return grids


def token_targets(label: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(rows * columns,)`` 0/1 targets: 1 where a lesion pixel of ``label`` lies in the token's image region.

    Args:
        label: ``(1, H, W)`` mask of the whole image (any size: tokens and mask both cover the whole image).
        grid: the image's token grid.
    """
    if label.ndim != 3 or label.shape[0] != 1:
        raise ValueError(f"Expected a (1, H, W) label, got {tuple(label.shape)}.")
    pooled = F.adaptive_max_pool2d((label > 0).float()[None], grid)
    return pooled.flatten()


def _finding_index(name: object, where: str) -> int:
    try:
        return FINDINGS.index(" ".join(str(name).split()))
    except ValueError:
        raise ValueError(f"{where}: finding {name!r} is not in the vocabulary ({len(FINDINGS)} findings of "
                         "scripts.data.vocabulary.LESION_TYPES).") from None


def _batch_targets(batch: Mapping, grids: Sequence[tuple[int, int]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image: ``(tokens, K)`` targets and ``(K,)`` weights (0 on the distractor, whose mask is not known)."""
    targets, weights = [], []
    for index, grid in enumerate(grids):
        where = describe_record({key: batch[key][index] for key in ("image_path", "datalist_index")
                                 if key in batch})
        asked = _finding_index(batch["disease"][index], where)
        target = torch.zeros(grid[0] * grid[1], len(FINDINGS))
        target[:, asked] = token_targets(batch["label"][index], grid)
        weight = torch.ones(len(FINDINGS))
        distractor = batch.get("distractor")
        if distractor is not None and distractor[index]:
            other = _finding_index(distractor[index], where)
            if other != asked:
                weight[other] = 0.0
        targets.append(target)
        weights.append(weight)
    return targets, weights


def _collate(processor):
    image_processor = processor.image_processor

    def collate(samples: Sequence[Mapping]) -> dict:
        encoded = image_processor(images=[s["mllm_image"] for s in samples], return_tensors="pt")
        batch = {"pixel_values": encoded["pixel_values"], "image_grid_thw": encoded["image_grid_thw"]}
        for key in ("label", "disease", "distractor", "image_path", "datalist_index"):
            batch[key] = [s.get(key) for s in samples]
        return batch

    return collate


@torch.no_grad()
def finding_detection_scores(model: VisionFindingDetector, loader: DataLoader, merge_size: int,
                             device: torch.device) -> dict[str, float]:
    """How well the tokens find the asked finding: image-level presence accuracy (the most confident token
    above 0.5 says "present") and its ROC AUC (the most confident token's score against presence), token-level
    Dice of the asked finding over the records that hold it, and the accuracy of a detector that always says
    "present" (the share of records holding their finding)."""
    model.eval()
    presence, dice, holds, top_scores = [], [], [], []
    for batch in loader:
        logits = model(batch["pixel_values"].to(device), batch["image_grid_thw"].to(device))
        grids = token_grid(batch["image_grid_thw"], merge_size)
        targets, _ = _batch_targets(batch, grids)
        for index, (scores, target) in enumerate(zip(logits, targets)):
            asked = _finding_index(batch["disease"][index], "validation")
            predicted = scores[:, asked].cpu() > 0
            truth = target[:, asked] > 0
            present = bool(truth.any())
            holds.append(present)
            top_scores.append(float(scores[:, asked].max()))
            presence.append(bool(predicted.any()) == present)
            if present:
                overlap = float((predicted & truth).sum())
                dice.append(2 * overlap / float(predicted.sum() + truth.sum()))
    model.train()
    if not presence:
        raise ValueError("finding_detection_scores got no validation record.")
    auc = compute_roc_auc(torch.tensor(top_scores), torch.tensor(holds, dtype=torch.float32)) \
        if 0 < sum(holds) < len(holds) else None
    return {"presence_accuracy": float(np.mean(presence)), "presence_auc": auc, "token_dice": float(np.mean(dice)) if dice else None,
            "always_present_accuracy": float(np.mean(holds)), "records": len(presence)}


def run(
    datalist: str,
    out: str,
    preset: str = "demo",
    max_pixels: int | None = None,
    iters: int = 3000,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    val_max_records: int = 230,
    num_workers: int = 1,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Train and write ``out`` (the vision tower's state dict) and ``out`` with suffix ``.json`` (settings, loss
    curve, scores before and after).

    Args:
        datalist: a datalist with ``training`` and ``validation`` sections, lesion masks (``label``) and the
            asked finding (``disease``, and ``distractor`` when the image holds a second finding).
        out: path of the vision tower's state dict.
        preset: the preset whose (randomly initialised) MLLM architecture is trained; its vision tower must be
            the one ``build_coreseg`` builds with the same ``seed``.
        iters: optimiser steps.
        batch_size: records per step.
        learning_rate: peak AdamW learning rate (one-cycle schedule, 5 % warm-up, gradient norm clipped at 1).
        val_max_records: validation records scored before and after training.
        num_workers: data loader workers.
        seed: seed of the weights (as in ``build_coreseg(seed=...)``) and of the order.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        progress: show a tqdm bar.

    Returns:
        The report written next to the checkpoint.
    """
    settings = dict(locals())
    start = time.perf_counter()
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; expected one of {sorted(PRESETS)}.")
    options = PRESETS[preset]
    if options["architecture"] not in ("tiny", "small"):
        raise ValueError(f"Preset {preset!r} loads a pretrained vision tower; this script trains random-init ones "
                         "(the 'tiny' and 'demo' presets).")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mllm, processor = build_base_mllm(options["architecture"], resolve_dtype(options["dtype"]),
                                      min_pixels=options["min_pixels"], max_pixels=max_pixels or options["max_pixels"],
                                      seed=seed)
    set_determinism(seed=seed)
    model = VisionFindingDetector(mllm).to(device)
    model.requires_grad_(False)
    model.vision_tower.requires_grad_(True)
    model.head.requires_grad_(True)
    geometry = ProcessorGeometry.from_processor(processor)
    transform = build_transforms(geometry, mask_size=256)
    records = {section: load_datalist(datalist, section) for section in ("training", "validation")}
    for section, rows in records.items():
        if not rows:
            raise ValueError(f"{datalist}: its '{section}' section is empty.")
    collate = _collate(processor)
    train_loader = DataLoader(
        Dataset(records["training"], transform), batch_size=batch_size, shuffle=True, collate_fn=collate,
        drop_last=len(records["training"]) > batch_size, num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0,
    )
    val_loader = DataLoader(Dataset(records["validation"][:val_max_records], transform), batch_size=16,
                            collate_fn=collate, num_workers=0)
    merge_size = geometry.merge_size
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=iters,
                                                   pct_start=0.05)
    untrained = finding_detection_scores(model, val_loader, merge_size, device)
    model.train()
    curve, losses, step = [], [], 0
    bar = tqdm(total=iters, desc="vision tower training", unit="step", disable=not progress)
    for _ in range(math.ceil(iters / max(len(train_loader), 1))):
        for batch in train_loader:
            logits = model(batch["pixel_values"].to(device), batch["image_grid_thw"].to(device))
            targets, weights = _batch_targets(batch, token_grid(batch["image_grid_thw"], merge_size))
            logits = torch.cat(logits)
            target = torch.cat(targets).to(device)
            weight = torch.cat([w.expand(len(t), -1) for w, t in zip(weights, targets)]).to(device)
            # Lesion tokens are a few percent of the asked finding's column: weigh positives up so that the
            # head does not settle on "nothing anywhere" (the weight is the negatives-to-positives ratio, capped).
            positives = float((target * weight).sum())
            pos_weight = torch.tensor(min(max((float(weight.sum()) - positives) / max(positives, 1.0), 1.0), 100.0))
            loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight,
                                                      pos_weight=pos_weight.to(device), reduction="sum")
            loss = loss / weight.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if step % 100 == 0 or step == iters:
                curve.append({"step": step, "loss": float(np.mean(losses[-100:]))})
            if step >= iters:
                break
        if step >= iters:
            break
    bar.close()
    path = _save_vision_tower(model.vision_tower, out)
    report = {
        "settings": settings,
        "loss_curve": curve,
        "validation_untrained": untrained,
        "validation": finding_detection_scores(model, val_loader, merge_size, device),
        "seconds": time.perf_counter() - start,
        "checkpoint": str(path),
    }
    path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    if progress:
        scores = report["validation"]
        tqdm.write(f"validation: presence accuracy {scores['presence_accuracy']:.3f} (always 'present': "
                   f"{scores['always_present_accuracy']:.3f}), token Dice {scores['token_dice']:.3f}; wrote {path}")
    return report


def _save_vision_tower(vision_tower: nn.Module, out: str):
    from pathlib import Path

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: tensor.detach().cpu().clone() for name, tensor in vision_tower.state_dict().items()}, path)
    return path


if __name__ == "__main__":
    fire.Fire(run)
