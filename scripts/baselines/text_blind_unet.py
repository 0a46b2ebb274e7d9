# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Text-blind baseline of the synthetic benchmark: a MONAI U-Net that never reads the question.

It learns image -> mask on the training split. Every training image asks for one of its two findings at random,
so a model that cannot read the question can at best find the lesions of both kinds and guess. On test records
without distractors that costs it little; with distractors it must segment both findings (and lose Dice on the
one not asked) or pick one (and miss the asked one half of the time). Its Dice with and without distractors is
the number the reasoning model has to beat. Command line::

    python -m scripts.baselines.text_blind_unet run --datalist data/synthetic-small/datalist.json \\
        --out_dir runs/text_blind_unet --seeds 0,1,2

Each lesion pixel is in the mask about half of the time (its finding is asked half of the time), so the
question-blind optimum sits near probability 0.5 and a fixed 0.5 threshold flips between "nothing" and "all":
the decision threshold is therefore chosen on the validation split, together with the epoch. Dice is computed
per record at the original image size, with :func:`scripts.metrics.mask_dice` (MONAI's
``DiceMetric(ignore_empty=False)``): an empty prediction on an empty mask is a correct "no lesion" and scores 1,
any prediction on an empty mask 0.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import CacheDataset, DataLoader, Dataset, load_decathlon_datalist
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    Resized,
    ScaleIntensityRanged,
)
from monai.utils import set_determinism
from tqdm import tqdm

from scripts.metrics import mask_dice

__all__ = [
    "DEFAULT_SPATIAL_SIZE",
    "DEFAULT_CHANNELS",
    "EnsureRGBd",
    "build_unet",
    "preprocessing",
    "load_split",
    "THRESHOLDS",
    "predict",
    "score",
    "evaluate",
    "summarize",
    "train",
    "evaluate_checkpoint",
    "run",
    "aggregate",
    "format_summary",
]

#: Side of the square the images are resized to (area interpolation; masks nearest).
DEFAULT_SPATIAL_SIZE = 192
DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
_REQUIRED_FIELDS = ("image", "label", "modality", "num_targets", "num_distractors")


class EnsureRGBd(MapTransform):
    """Give channel-first images 3 channels: grey ones repeated, colour ones kept (any other count is an error).

    The benchmark mixes grey (CT, MRI, X-ray, ultrasound, OCT) and RGB (endoscopy, dermoscopy, fundus) images; the
    network takes 3 channels, as the MLLM and SAM views of the full model do.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            channels = d[key].shape[0]
            if channels == 1:
                d[key] = d[key].repeat(3, *([1] * (d[key].ndim - 1)))
            elif channels != 3:
                source = getattr(d[key], "meta", {}).get("filename_or_obj", key)
                raise ValueError(f"{source}: expected a grey (1-channel) or RGB (3-channel) image, got {channels} "
                                 "channels.")
        return d


def build_unet(channels: Sequence[int] = DEFAULT_CHANNELS) -> UNet:
    """The 2-D MONAI U-Net of the baseline: 3 input channels, 1 output logit per pixel."""
    channels = tuple(int(c) for c in channels)
    return UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=channels, strides=(2,) * (len(channels) - 1),
                num_res_units=2)


def preprocessing(spatial_size: int = DEFAULT_SPATIAL_SIZE, keys: Sequence[str] = ("image", "label")) -> Compose:
    """Deterministic loading: 8-bit PNG -> channel-first RGB float in [0, 1] at ``spatial_size`` squared (0: the
    original size); mask -> {0, 1}."""
    keys = tuple(keys)
    transforms = [LoadImaged(keys=keys, reader="PILReader", image_only=True), EnsureChannelFirstd(keys=keys)]
    if "image" in keys:
        transforms += [
            EnsureRGBd(keys="image"),
            ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        ]
    if "label" in keys:
        transforms.append(AsDiscreted(keys="label", threshold=0.5))
    if spatial_size:
        modes = tuple("area" if key == "image" else "nearest" for key in keys)
        transforms.append(Resized(keys=keys, spatial_size=(spatial_size, spatial_size), mode=modes))
    transforms.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False))
    return Compose(transforms)


def _augmentation(crop_size: int = 0, crops_per_image: int = 2) -> Compose:
    transforms = []
    if crop_size:
        # Lesions cover 0.05-5 % of an image: half of the crops are centred on one, as in MONAI's tutorials for
        # small structures. Images without the asked finding give background crops only.
        transforms.append(RandCropByPosNegLabeld(keys=("image", "label"), label_key="label",
                                                 spatial_size=(crop_size, crop_size), pos=1, neg=1,
                                                 num_samples=crops_per_image, allow_smaller=True))
    return Compose([
        *transforms,
        RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
        RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
        RandRotate90d(keys=("image", "label"), prob=0.5),
    ])


def load_split(datalist: str | Path, split: str) -> list[dict[str, Any]]:
    """Records of ``split`` with absolute image and label paths (MONAI ``load_decathlon_datalist``).

    Raises:
        ValueError: if a record misses a field the baseline needs (names the row and its image).
    """
    records = load_decathlon_datalist(str(datalist), is_segmentation=True, data_list_key=split)
    for row, record in enumerate(records):
        missing = [field for field in _REQUIRED_FIELDS if field not in record]
        if missing:
            raise ValueError(f"{datalist}: {split}[{row}] ({record.get('image', 'no image')}) lacks {missing}; "
                             f"the baseline needs {list(_REQUIRED_FIELDS)}.")
    return records


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#: Probability thresholds tried on the validation split; the best one is kept with the model.
THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05, 0.10, ..., 0.95


@torch.no_grad()
def predict(
    network: torch.nn.Module,
    images: Sequence[str],
    spatial_size: int = DEFAULT_SPATIAL_SIZE,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Logits ``(1, spatial_size, spatial_size)`` of each image path (each image once)."""
    device = torch.device(device) if device is not None else _default_device()
    network = network.to(device).eval()
    images = list(dict.fromkeys(images))
    loader = DataLoader(Dataset([{"image": image} for image in images], preprocessing(spatial_size, ("image",))),
                        batch_size=8, num_workers=0)
    logits: dict[str, torch.Tensor] = {}
    paths = iter(images)
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress):
        for item in network(batch["image"].to(device)).float().cpu():
            logits[next(paths)] = item
    return logits


def score(
    records: Sequence[Mapping[str, Any]],
    logits: Mapping[str, torch.Tensor],
    thresholds: Sequence[float] = (0.5,),
) -> dict[float, list[dict[str, Any]]]:
    """Dice of every record at the original image size, for each probability threshold.

    The logits of an image are resized back to it (bilinear) and its probability thresholded; the paired test
    records of an image share that prediction, which is the point: the network never sees the question.

    Returns:
        For each threshold, one dict per record: ``image``, ``label``, ``modality``, ``disease``,
        ``num_targets``, ``num_distractors``, ``dice``, plus the reference scores ``dice_all_lesions`` (a perfect
        segmentation of both findings, where the image's records cover both) and ``dice_empty`` (predicting
        nothing).
    """
    load_label = preprocessing(0, ("label",))
    labels = {record["label"]: load_label({"label": record["label"]})["label"] > 0 for record in records}
    union: dict[str, torch.Tensor] = {}
    findings: dict[str, set[str]] = defaultdict(set)
    for record in records:
        label = labels[record["label"]]
        union[record["image"]] = union[record["image"]] | label if record["image"] in union else label
        findings[record["image"]].add(record.get("disease"))
    results: dict[float, list[dict[str, Any]]] = {float(t): [] for t in thresholds}
    for record in records:
        label = labels[record["label"]][None]
        probability = torch.sigmoid(F.interpolate(logits[record["image"]][None], size=label.shape[-2:],
                                                  mode="bilinear", align_corners=False))
        common = {
            "image": record["image"],
            "label": record["label"],
            "modality": record["modality"],
            "disease": record.get("disease"),
            "num_targets": int(record["num_targets"]),
            "num_distractors": int(record["num_distractors"]),
            "dice_empty": float(mask_dice(torch.zeros_like(label), label)[0]),
        }
        # Both findings' masks together are what a perfect question-blind segmenter of every lesion outputs.
        if len(findings[record["image"]]) == 2:
            common["dice_all_lesions"] = float(mask_dice(union[record["image"]][None], label)[0])
        for threshold in results:
            dice = float(mask_dice(probability > threshold, label)[0])
            results[threshold].append({**common, "dice": dice, "threshold": threshold})
    return results


def evaluate(
    network: torch.nn.Module,
    records: Sequence[Mapping[str, Any]],
    spatial_size: int = DEFAULT_SPATIAL_SIZE,
    threshold: float = 0.5,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Dice of every record at one probability threshold (see :func:`score`)."""
    logits = predict(network, [record["image"] for record in records], spatial_size, device, progress)
    return score(records, logits, (threshold,))[float(threshold)]


_GROUPS = {
    "all": lambda r: True,
    "with_distractors": lambda r: r["num_distractors"] > 0,
    "without_distractors": lambda r: r["num_distractors"] == 0,
    "with_targets": lambda r: r["num_targets"] > 0,
    "no_targets": lambda r: r["num_targets"] == 0,
}


def summarize(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean Dice (and its references) per group of records: all, with/without distractors, with/without
    targets, and per modality; plus the share of records with Dice 0 (failures)."""

    def stats(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
        entry: dict[str, Any] = {"records": len(rows)}
        if rows:
            entry["dice"] = float(np.mean([r["dice"] for r in rows]))
            entry["failure_rate"] = float(np.mean([r["dice"] == 0.0 for r in rows]))
            for reference in ("dice_all_lesions", "dice_empty"):
                values = [r[reference] for r in rows if reference in r]
                if len(values) == len(rows):
                    entry[reference] = float(np.mean(values))
        return entry

    summary = {name: stats([r for r in results if keep(r)]) for name, keep in _GROUPS.items()}
    modalities = sorted({r["modality"] for r in results})
    summary["per_modality"] = {m: stats([r for r in results if r["modality"] == m]) for m in modalities}
    return summary


def train(
    datalist: str,
    out_dir: str,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 8,
    learning_rate: float = 2e-3,
    spatial_size: int = DEFAULT_SPATIAL_SIZE,
    crop_size: int = 96,
    crops_per_image: int = 2,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    val_interval: int = 5,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the U-Net on the training split, keep the best validation epoch, evaluate the test split.

    Writes ``model.pt`` (state dict), ``test_records.csv`` (Dice per record) and ``metrics.json`` (settings,
    validation curve, test summary, times) to ``out_dir``.

    Args:
        datalist: the benchmark's ``datalist.json`` (paths relative to its folder).
        out_dir: output folder.
        seed: seed of weights, shuffling and augmentation (``monai.utils.set_determinism``).
        epochs: passes over the training split.
        batch_size: images per step (each gives ``crops_per_image`` crops).
        learning_rate: Adam's initial learning rate (cosine decay to 0 over the run).
        spatial_size: the images' side at the network's input (the whole resized image at inference).
        crop_size: side of the training crops (0: whole images); half of them centred on a lesion.
        crops_per_image: crops drawn from each training image per step.
        channels: U-Net channels per level.
        val_interval: validate every this many epochs (and after the last).
        max_steps: stop after this many optimiser steps (smoke tests).
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        progress: show tqdm bars.

    Returns:
        The metrics dict.
    """
    start = time.perf_counter()
    device = torch.device(device) if device else _default_device()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed=seed)
    training = load_split(datalist, "training")
    validation = load_split(datalist, "validation")
    test = load_split(datalist, "test")
    # Only the pixels go in: the question, its finding and the counts stay out of the network's reach.
    pairs = [{"image": record["image"], "label": record["label"]} for record in training]
    transform = Compose([preprocessing(spatial_size), _augmentation(crop_size, crops_per_image)])
    transform.set_random_state(seed=seed)
    dataset = CacheDataset(pairs, transform, cache_rate=1.0, num_workers=0, progress=progress)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                        drop_last=len(pairs) > batch_size, generator=torch.Generator().manual_seed(seed))
    network = build_unet(channels).to(device)
    # Batch Dice: many masks are empty, and a per-image Dice term is undefined (or all smoothing) on them.
    loss_function = DiceCELoss(sigmoid=True, batch=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
    total_steps = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(total_steps, 1))
    curve, best_dice, best_threshold, best_state, step = [], -math.inf, 0.5, None, 0
    for epoch in range(1, epochs + 1):
        network.train()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress)
        for batch in bar:
            optimiser.zero_grad(set_to_none=True)
            loss = loss_function(network(batch["image"].to(device)), batch["label"].to(device))
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            step += 1
            if step >= total_steps:
                break
        last = step >= total_steps or epoch == epochs
        if epoch % val_interval == 0 or last:
            # The question-blind optimum puts lesion pixels near probability 0.5 (each is asked half the time),
            # so the decision threshold is tuned on the validation split, like the epoch.
            logits = predict(network, [record["image"] for record in validation], spatial_size, device, False)
            by_threshold = {t: summarize(rows)["all"].get("dice", float("nan"))
                            for t, rows in score(validation, logits, THRESHOLDS).items()}
            threshold = max(by_threshold, key=by_threshold.get)
            curve.append({"epoch": epoch, "step": step, "loss": float(np.mean(losses)),
                          "val_dice": by_threshold[threshold], "threshold": threshold,
                          "val_dice_by_threshold": by_threshold})
            if progress:
                tqdm.write(f"epoch {epoch}: loss {curve[-1]['loss']:.4f}, validation Dice "
                           f"{by_threshold[threshold]:.4f} at threshold {threshold}")
            if by_threshold[threshold] > best_dice or best_state is None:
                best_dice, best_threshold = by_threshold[threshold], threshold
                best_state = copy.deepcopy(network.state_dict())
        if last:
            break
    network.load_state_dict(best_state)
    torch.save(network.state_dict(), out / "model.pt")
    train_seconds = time.perf_counter() - start
    results = evaluate(network, test, spatial_size, best_threshold, device, progress=progress)
    _write_records(out / "test_records.csv", results)
    metrics = {
        "settings": {"datalist": str(datalist), "seed": seed, "epochs": epochs, "batch_size": batch_size,
                     "learning_rate": learning_rate, "spatial_size": spatial_size, "crop_size": crop_size,
                     "crops_per_image": crops_per_image, "channels": list(channels),
                     "steps": step, "device": str(device), "training_records": len(training)},
        "validation_curve": curve,
        "best_validation_dice": best_dice,
        "threshold": best_threshold,
        "test": summarize(results),
        "seconds": {"training": train_seconds, "total": time.perf_counter() - start},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate_checkpoint(
    datalist: str,
    checkpoint: str,
    split: str = "test",
    threshold: float | None = None,
    spatial_size: int = DEFAULT_SPATIAL_SIZE,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    device: str | None = None,
) -> dict[str, Any]:
    """Summary of a saved model's Dice on ``split``.

    ``threshold`` defaults to the one chosen in training, read from ``metrics.json`` next to the checkpoint
    (0.5 if there is none).
    """
    if threshold is None:
        metrics = Path(checkpoint).with_name("metrics.json")
        threshold = json.loads(metrics.read_text())["threshold"] if metrics.is_file() else 0.5
    network = build_unet(channels)
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return summarize(evaluate(network, load_split(datalist, split), spatial_size, threshold, device))


def _write_records(path: Path, results: Sequence[Mapping[str, Any]]) -> None:
    fields = list(dict.fromkeys(key for result in results for key in result))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(results)


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over runs of each test group's Dice (and reference scores)."""
    table: dict[str, Any] = {}
    for group in _GROUPS:
        values = [run["test"][group]["dice"] for run in runs if "dice" in run["test"][group]]
        if not values:
            continue
        entry = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                 "values": values, "records": runs[0]["test"][group]["records"]}
        for reference in ("dice_all_lesions", "dice_empty"):
            if reference in runs[0]["test"][group]:
                entry[reference] = runs[0]["test"][group][reference]
        table[group] = entry
    modalities = runs[0]["test"]["per_modality"]
    table["per_modality"] = {
        m: {"mean": float(np.mean([run["test"]["per_modality"][m]["dice"] for run in runs])),
            "std": float(np.std([run["test"]["per_modality"][m]["dice"] for run in runs], ddof=1))
            if len(runs) > 1 else 0.0}
        for m in modalities
    }
    return table


def run(datalist: str, out_dir: str, seeds: Sequence[int] = (0, 1, 2), **train_kwargs: Any) -> dict[str, Any]:
    """Train and evaluate one model per seed, one after another, and write ``summary.json``.

    Args:
        datalist: the benchmark's ``datalist.json``.
        out_dir: one sub-folder ``seed<k>`` per seed, and the summary.
        seeds: training seeds.
        **train_kwargs: passed on to :func:`train`.
    """
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    runs = [train(datalist, str(Path(out_dir) / f"seed{seed}"), seed=seed, **train_kwargs) for seed in seeds]
    summary = {"seeds": seeds, "settings": runs[0]["settings"] | {"seed": None}, "test": aggregate(runs),
               "seconds_per_run": [r["seconds"]["total"] for r in runs]}
    Path(out_dir, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


_LABELS = {"all": "all records", "with_distractors": "with distractors", "without_distractors": "without distractors",
           "with_targets": "asked finding present", "no_targets": "asked finding absent (empty mask)"}


def format_summary(test: Mapping[str, Any]) -> str:
    """A markdown table of a test summary: one run's (:func:`summarize`) or several seeds' (:func:`aggregate`)."""
    lines = ["| test records | n | U-Net Dice | all lesions, perfectly | nothing |", "|---|---:|---:|---:|---:|"]
    for group, label in _LABELS.items():
        if group not in test:
            continue
        entry = test[group]
        dice = (f"{entry['mean']:.3f} ± {entry['std']:.3f}" if "mean" in entry else f"{entry['dice']:.3f}")
        union = f"{entry['dice_all_lesions']:.3f}" if "dice_all_lesions" in entry else "–"
        empty = f"{entry['dice_empty']:.3f}" if "dice_empty" in entry else "–"
        lines.append(f"| {label} | {entry['records']} | {dice} | {union} | {empty} |")
    return "\n".join(lines)


def _train_command(datalist: str, out_dir: str, **kwargs: Any) -> str:
    metrics = train(datalist, out_dir, **kwargs)
    return f"{format_summary(metrics['test'])}\n\nwrote {Path(out_dir) / 'metrics.json'}"


def _evaluate_command(datalist: str, checkpoint: str, **kwargs: Any) -> str:
    return format_summary(evaluate_checkpoint(datalist, checkpoint, **kwargs))


def _run_command(datalist: str, out_dir: str, seeds: Sequence[int] = (0, 1, 2), **kwargs: Any) -> str:
    summary = run(datalist, out_dir, seeds, **kwargs)
    return f"{format_summary(summary['test'])}\n\nseeds {summary['seeds']}; wrote {Path(out_dir) / 'summary.json'}"


def main(argv: list[str] | None = None) -> None:
    """Command line: ``train`` (one seed), ``evaluate`` (a checkpoint) and ``run`` (several seeds)."""
    fire.Fire({"train": _train_command, "evaluate": _evaluate_command, "run": _run_command}, command=argv)


if __name__ == "__main__":
    main()
