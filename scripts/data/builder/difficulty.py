# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Difficulty-aware filtering (CORE-Seg paper, section 3.1).

Per source dataset:

1. Several small MONAI U-Nets are trained k-fold (:func:`cross_validated_errors`): the images are split into
   ``folds`` groups (slices of one volume stay in one group, so no model sees a neighbour of a case it
   predicts), and for every fold ``models`` U-Nets (different seeds) train on the other folds and predict
   it. Every case thus gets ``models`` errors ``x = 1 - Dice`` from models that never saw it.
2. A power law ``p(x) ~ x^-alpha, x >= x_min`` is fitted to the pooled positive errors with Clauset's method
   (the ``powerlaw`` package: ``x_min`` by the Kolmogorov-Smirnov criterion, ``alpha`` by maximum likelihood),
   and the threshold separating hard cases is the knee of the fitted CCDF found by Kneedle (the ``kneed``
   package) (:func:`fit_error_tail`).
3. Each model votes "hard" for the cases whose error is at or above the knee; a case is kept when at least
   ``min_votes`` models agree (:func:`vote_hard_cases`).

Trained models and per-fold errors are cached under a folder named by a fingerprint of the source's records
and the settings, so an interrupted run resumes where it stopped and a changed setting never reuses stale
models. One plot per source shows the empirical CCDF with the fit and the knee (:func:`plot_tail_fit`).

Dice is measured at the networks' input size (``spatial_size`` squared): enough to rank difficulty.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.utils import set_determinism
from tqdm import tqdm

from ...baselines.text_blind_unet import build_unet
from ...metrics import mask_dice

# the pipeline's own grey-to-RGB step (one rule for every consumer of the loaded images)
from ..transforms import LoadImageAndLabeld, ScaleIntensityByModalityd
from ..transforms import _as_rgb as as_rgb
from .files import write_json

__all__ = [
    "DifficultySettings",
    "TailFit",
    "TooFewCasesError",
    "SourceDifficulty",
    "load_cases",
    "fold_assignment",
    "cross_validated_errors",
    "fit_error_tail",
    "vote_hard_cases",
    "plot_tail_fit",
    "filter_source",
]


class TooFewCasesError(ValueError):
    """A source has too few cases with a positive error for a power-law fit."""


@dataclass
class DifficultySettings:
    """Settings of the difficulty filter (one set for every source).

    Attributes:
        folds: cross-validation folds (every case is predicted by models trained on the other folds).
        models: U-Nets per fold (seeds ``seed``, ``seed + 1``, ...); they vote on hard cases.
        min_votes: votes needed to call a case hard (default: a majority of ``models``).
        channels: U-Net channels per level (strides 2).
        spatial_size: side of the square the images are resized to.
        epochs: training passes over the other folds.
        batch_size: images per step.
        learning_rate: Adam's initial learning rate (cosine decay).
        min_cases: minimum number of positive errors for a fit; smaller sources follow ``small_sources``.
        small_sources: ``"keep"`` (all cases kept, unfiltered) or ``"drop"`` for sources below ``min_cases``.
        seed: seed of the fold split and the first model.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
    """

    folds: int = 5
    models: int = 3
    min_votes: int | None = None
    channels: Sequence[int] = (16, 32, 64, 128)
    spatial_size: int = 128
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 2e-3
    min_cases: int = 20
    small_sources: str = "keep"
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.folds < 2 or self.models < 1:
            raise ValueError(f"Need folds >= 2 and models >= 1, got folds={self.folds}, models={self.models}.")
        votes = self.votes_needed
        if not 1 <= votes <= self.models:
            raise ValueError(f"min_votes must be in [1, models={self.models}], got {self.min_votes}.")
        if self.small_sources not in ("keep", "drop"):
            raise ValueError(f"small_sources must be 'keep' or 'drop', got {self.small_sources!r}.")
        if len(self.channels) < 2 or self.spatial_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"spatial_size {self.spatial_size} must be divisible by 2^(levels - 1) for channels "
                             f"{self.channels} (at least two levels).")

    @property
    def votes_needed(self) -> int:
        """``min_votes``, or a majority of the models."""
        return self.models // 2 + 1 if self.min_votes is None else int(self.min_votes)

    def training_fingerprint(self) -> dict[str, Any]:
        """The settings that change trained models or their errors (not the vote or the fit)."""
        return {"folds": self.folds, "channels": list(self.channels), "spatial_size": self.spatial_size,
                "epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "seed": self.seed}


@dataclass
class TailFit:
    """A power law fitted to an error distribution, and the knee of the fitted curve.

    Attributes:
        alpha: scaling exponent (maximum likelihood, Clauset et al. 2009).
        sigma: standard error of ``alpha``.
        clauset_xmin: lower bound of power-law behaviour chosen by the KS criterion.
        ks_distance: Kolmogorov-Smirnov distance of the fit above ``clauset_xmin``.
        knee: Kneedle's knee of the fitted CCDF: the hard-case threshold.
        knee_found: False when Kneedle found no knee and ``clauset_xmin`` serves as threshold.
        valid: False when ``powerlaw`` found no ``x_min`` with parameters in range (the threshold is unreliable).
        n_errors: positive errors fitted.
        n_above_knee: errors at or above the knee.
        lognormal_ratio, lognormal_p: log-likelihood ratio against a lognormal and its p-value (R > 0 favours
            the power law; Clauset's test of the alternative).
        exponential_ratio, exponential_p: the same against an exponential.
    """

    alpha: float
    sigma: float
    clauset_xmin: float
    ks_distance: float
    knee: float
    knee_found: bool
    valid: bool
    n_errors: int
    n_above_knee: int
    lognormal_ratio: float
    lognormal_p: float
    exponential_ratio: float
    exponential_p: float

    def fitted_ccdf(self, x: np.ndarray) -> np.ndarray:
        """The fitted CCDF ``P(X >= x | X >= x_min) = (x / x_min)^(1 - alpha)`` (1 below ``x_min``)."""
        x = np.asarray(x, dtype=float)
        return np.where(x < self.clauset_xmin, 1.0, (np.maximum(x, self.clauset_xmin) / self.clauset_xmin)
                        ** (1.0 - self.alpha))


def _powerlaw():
    # powerlaw prints progress and warns about values it drops; imported lazily (it pulls mpmath).
    import powerlaw

    return powerlaw


def fitted_curve(fit: TailFit, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted CCDF sampled at the distinct observed errors from ``clauset_xmin`` up (Kneedle's input)."""
    errors = np.asarray(errors, dtype=float)
    xs = np.unique(errors[errors >= fit.clauset_xmin])
    return xs, fit.fitted_ccdf(xs)


def fit_error_tail(errors: Sequence[float] | np.ndarray, min_cases: int = 20) -> TailFit:
    """Fit a power law to the positive errors (Clauset) and find the knee of the fitted CCDF (Kneedle).

    Args:
        errors: errors ``1 - Dice`` in [0, 1]; zeros (perfect predictions) carry no tail information and are
            left out, as the power law is defined for ``x > 0``.
        min_cases: fewer positive errors than this raise :class:`TooFewCasesError`.

    Returns:
        The fit; hard cases are those with error ``>= knee``.
    """
    from kneed import KneeLocator

    errors = np.asarray(errors, dtype=float).ravel()
    if errors.size and (not np.isfinite(errors).all() or errors.min() < 0):
        raise ValueError("Errors must be finite and non-negative (1 - Dice lies in [0, 1]).")
    positive = errors[errors > 0]
    if positive.size < max(min_cases, 3) or np.unique(positive).size < 3:
        raise TooFewCasesError(f"{positive.size} positive errors ({np.unique(positive).size} distinct); a power-law "
                               f"fit needs at least {max(min_cases, 3)} (and 3 distinct values).")
    powerlaw = _powerlaw()
    # powerlaw warns about every unsuitable x_min candidate; its verdict is read from noise_flag instead.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(positive, discrete=False, verbose=False)
        lognormal = fit.distribution_compare("power_law", "lognormal", normalized_ratio=True)
        exponential = fit.distribution_compare("power_law", "exponential", normalized_ratio=True)
    result = TailFit(
        alpha=float(fit.power_law.alpha), sigma=float(fit.power_law.standard_err), clauset_xmin=float(fit.power_law.xmin),
        ks_distance=float(fit.power_law.D), knee=float(fit.power_law.xmin), knee_found=False,
        valid=not bool(getattr(fit, "noise_flag", False)), n_errors=int(positive.size), n_above_knee=0,
        lognormal_ratio=float(lognormal[0]), lognormal_p=float(lognormal[1]),
        exponential_ratio=float(exponential[0]), exponential_p=float(exponential[1]),
    )
    xs, ys = fitted_curve(result, positive)
    if xs.size >= 3:
        knee = KneeLocator(xs, ys, curve="convex", direction="decreasing").knee
        if knee is not None:
            result.knee, result.knee_found = float(knee), True
    result.n_above_knee = int((positive >= result.knee).sum())
    return result


def vote_hard_cases(errors: np.ndarray, threshold: float, min_votes: int) -> tuple[np.ndarray, np.ndarray]:
    """Votes and decisions: each model (row of ``errors``, shape ``(models, cases)``) votes "hard" for the cases
    whose error is ``>= threshold``; returns ``(votes per case, hard mask)``."""
    errors = np.atleast_2d(np.asarray(errors, dtype=float))
    votes = (errors >= threshold).sum(axis=0)
    return votes, votes >= min_votes


def plot_tail_fit(errors: np.ndarray, fit: TailFit, path: str | Path, title: str = "") -> Path:
    """Save the CCDF-with-fit (log-log) and the knee of the fitted curve (linear) side by side.

    Args:
        errors: the errors the fit was made on (zeros are left out, as in the fit).
        fit: the result of :func:`fit_error_tail`.
        path: PNG file.
        title: figure title (e.g. the source name).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from kneed import KneeLocator

    errors = np.asarray(errors, dtype=float).ravel()
    positive = np.sort(errors[errors > 0])
    ccdf = 1.0 - np.arange(positive.size) / positive.size  # P(X >= x) at each sorted value
    tail_share = float((positive >= fit.clauset_xmin).mean())
    xs, ys = fitted_curve(fit, positive)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.loglog(positive, ccdf, ".", markersize=3, color="0.4", label=f"empirical CCDF ({positive.size} errors)")
    left.loglog(xs, tail_share * ys, "-", color="tab:blue",
                label=f"power law, alpha = {fit.alpha:.2f} +/- {fit.sigma:.2f}")
    left.axvline(fit.clauset_xmin, color="tab:blue", linestyle=":", label=f"Clauset x_min = {fit.clauset_xmin:.3f}")
    left.axvline(fit.knee, color="tab:red", linestyle="--", label=f"knee = {fit.knee:.3f} ({fit.n_above_knee} above)")
    left.set_xlabel("error x = 1 - Dice")
    left.set_ylabel("P(X >= x)")
    left.legend(fontsize=8, loc="lower left")
    left.set_title("CCDF and power-law fit")
    right.plot(xs, ys, "-", color="tab:blue", label="fitted CCDF above x_min")
    if xs.size >= 3:
        locator = KneeLocator(xs, ys, curve="convex", direction="decreasing")
        span = xs[-1] - xs[0] or 1.0
        right.plot(xs[0] + locator.x_difference * span, locator.y_difference, color="tab:green",
                   label="Kneedle difference curve")
    right.axvline(fit.knee, color="tab:red", linestyle="--", label="knee (hard-case threshold)")
    right.set_xlabel("error x = 1 - Dice")
    right.set_ylabel("fitted P(X >= x | X >= x_min)")
    right.legend(fontsize=8)
    right.set_title("Knee of the fitted curve" + ("" if fit.knee_found else " (none found: x_min used)"))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def load_cases(
    records: Sequence[Mapping[str, Any]], spatial_size: int, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """Load every record as the U-Nets see it: ``uint8`` images ``(N, 3, S, S)`` and masks ``(N, 1, S, S)``.

    Images go through the training pipeline's loading and intensity scaling (slices, CT windows, MRI
    percentiles), then area resizing; masks nearest. Records that cannot be read are returned as
    ``(index, reason)`` failures instead of stopping the run; their rows in the arrays stay zero.
    """
    load_pair, scale = LoadImageAndLabeld(), ScaleIntensityByModalityd()
    images = torch.zeros((len(records), 3, spatial_size, spatial_size), dtype=torch.uint8)
    masks = torch.zeros((len(records), 1, spatial_size, spatial_size), dtype=torch.uint8)
    failures: list[tuple[int, str]] = []
    for index, record in enumerate(tqdm(records, desc="load cases", unit="img", disable=not progress)):
        try:
            sample = scale(load_pair(dict(record)))
        except (ValueError, RuntimeError, OSError) as error:
            failures.append((index, f"unreadable pixels: {error}"))
            continue
        image = as_rgb(torch.as_tensor(sample["image"]).float(), str(record.get("image")))
        image = F.interpolate(image[None], size=(spatial_size, spatial_size), mode="area")[0]
        label = torch.as_tensor(sample["label"]).float()[None]
        label = F.interpolate(label, size=(spatial_size, spatial_size), mode="nearest-exact")[0]
        images[index] = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        masks[index] = (label > 0).to(torch.uint8)
    return images, masks, failures


def fold_assignment(groups: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Fold of each case: whole groups (e.g. all slices of one volume) go to one fold, groups shuffled by
    ``seed`` and dealt out so that fold sizes differ by at most one group."""
    unique = sorted(set(groups))
    if len(unique) < folds:
        raise TooFewCasesError(f"{len(unique)} distinct images cannot fill {folds} folds.")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = {unique[g]: rank % folds for rank, g in enumerate(order)}
    return np.array([fold_of_group[g] for g in groups], dtype=int)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _train_model(images: torch.Tensor, masks: torch.Tensor, settings: DifficultySettings, seed: int,
                 device: torch.device, description: str, progress: bool) -> UNet:
    set_determinism(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    network = build_unet(settings.channels).to(device)
    # Batch Dice: a per-image Dice term is undefined on the (legal) empty masks.
    loss_function = DiceCELoss(sigmoid=True, batch=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    steps_per_epoch = max(1, math.ceil(len(images) / settings.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=settings.epochs * steps_per_epoch)
    network.train()
    for _ in tqdm(range(settings.epochs), desc=description, unit="epoch", leave=False, disable=not progress):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            x = images[batch].float().div(255).to(device)
            y = masks[batch].float().to(device)
            flips = [d for d, flip in zip((-1, -2), torch.rand(2, generator=generator) < 0.5) if flip]
            if flips:  # the same random flip for the batch: cheap augmentation for small sources
                x, y = x.flip(flips), y.flip(flips)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_function(network(x), y)
            loss.backward()
            optimiser.step()
            scheduler.step()
    set_determinism(seed=None)
    return network.eval()


@torch.no_grad()
def _errors(network: UNet, images: torch.Tensor, masks: torch.Tensor, device: torch.device,
            batch_size: int) -> np.ndarray:
    errors = []
    for start in range(0, len(images), batch_size):
        logits = network(images[start:start + batch_size].float().div(255).to(device))
        dice = mask_dice((logits > 0).cpu(), masks[start:start + batch_size] > 0)
        errors.append(1.0 - dice.numpy())
    return np.concatenate(errors) if errors else np.zeros(0)


def _case_key(record: Mapping[str, Any]) -> str:
    return f"{record['image']}#{record.get('slice_index', '')}"


def cross_validated_errors(
    records: Sequence[Mapping[str, Any]],
    settings: DifficultySettings,
    cache_dir: str | Path,
    progress: bool = True,
) -> tuple[np.ndarray, list[tuple[int, str]], Path]:
    """Errors ``1 - Dice`` of every case from ``settings.models`` U-Nets that never saw it.

    Args:
        records: one source's records (image, label, slice fields, modality for intensity scaling).
        settings: folds, models and training settings.
        cache_dir: root of the cache; this source's models and errors go to a sub-folder named by a
            fingerprint of the records and the training settings, so reruns resume and changes retrain.
        progress: show tqdm bars.

    Returns:
        ``(errors of shape (models, cases), unreadable cases as (index, reason), the cache folder)``;
        unreadable cases have NaN errors and take no part in training.
    """
    fingerprint = {"cases": [_case_key(r) for r in records], **settings.training_fingerprint()}
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / digest
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "fingerprint.json", fingerprint)
    device = torch.device(settings.device) if settings.device else _default_device()
    errors = np.full((settings.models, len(records)), np.nan)
    pending = [(fold, model) for fold in range(settings.folds) for model in range(settings.models)
               if not (folder / f"fold{fold}-model{model}.json").is_file()]
    images = masks = None
    failures: list[tuple[int, str]] = []
    failures_path = folder / "unreadable.json"
    if pending or not failures_path.is_file():
        images, masks, failures = load_cases(records, settings.spatial_size, progress)
        write_json(failures_path, failures)
    else:
        failures = [tuple(item) for item in json.loads(failures_path.read_text())]
    readable = np.ones(len(records), dtype=bool)
    readable[[index for index, _ in failures]] = False
    folds = fold_assignment([str(r["image"]) for r in records], settings.folds, settings.seed)
    bar = tqdm(total=settings.folds * settings.models, desc="k-fold U-Nets", unit="model", disable=not progress)
    for fold in range(settings.folds):
        held_out = np.flatnonzero((folds == fold) & readable)
        training = np.flatnonzero((folds != fold) & readable)
        for model in range(settings.models):
            result_path = folder / f"fold{fold}-model{model}.json"
            if result_path.is_file():
                fold_errors = json.loads(result_path.read_text())["errors"]
            else:
                weights_path = folder / f"fold{fold}-model{model}.pt"
                seed = settings.seed + 1000 * model + fold
                if weights_path.is_file():
                    network = build_unet(settings.channels).to(device)
                    network.load_state_dict(torch.load(weights_path, map_location=device, weights_only=True))
                    network.eval()
                else:
                    network = _train_model(images[training], masks[training], settings, seed, device,
                                           f"fold {fold} model {model}", progress)
                    torch.save(network.state_dict(), weights_path.with_suffix(".pt.tmp"))
                    os.replace(weights_path.with_suffix(".pt.tmp"), weights_path)
                fold_errors = _errors(network, images[held_out], masks[held_out], device,
                                      settings.batch_size).tolist()
                write_json(result_path, {"cases": held_out.tolist(), "errors": fold_errors})
            errors[model, held_out] = fold_errors
            bar.update()
    bar.close()
    return errors, failures, folder


@dataclass
class SourceDifficulty:
    """The filter's outcome for one source."""

    source: str
    cases: int
    errors: np.ndarray
    votes: np.ndarray
    hard: np.ndarray
    fit: TailFit | None
    note: str = ""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    plot: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no per-case arrays)."""
        return {"source": self.source, "cases": self.cases, "hard": int(self.hard.sum()),
                "unreadable": [{"image": image, "reason": reason} for image, reason in self.unreadable],
                "fit": None if self.fit is None else asdict(self.fit),
                "note": self.note, "plot": self.plot}


def filter_source(
    records: Sequence[Mapping[str, Any]],
    source: str,
    settings: DifficultySettings,
    out_dir: str | Path,
    progress: bool = True,
) -> SourceDifficulty:
    """Run the difficulty filter on one source and write its plot, per-case CSV and summary JSON.

    Args:
        records: the source's records.
        source: its name (file names and titles).
        settings: filter settings.
        out_dir: where ``<source>/`` (cache, ``ccdf_knee.png``, ``cases.csv``, ``summary.json``) goes.
        progress: show tqdm bars.
    """
    folder = Path(out_dir) / source
    errors, unreadable, _ = cross_validated_errors(records, settings, folder / "cache", progress)
    readable = ~np.isnan(errors).all(axis=0)
    pooled = errors[:, readable].ravel()
    fit, note = None, ""
    try:
        fit = fit_error_tail(pooled, settings.min_cases)
        votes, hard = vote_hard_cases(np.nan_to_num(errors, nan=-1.0), fit.knee, settings.votes_needed)
    except TooFewCasesError as error:
        keep = settings.small_sources == "keep"
        note = f"not filtered: {error}; all readable cases {'kept' if keep else 'dropped'} (small_sources)"
        votes = np.zeros(len(records), dtype=int)
        hard = readable.copy() if keep else np.zeros(len(records), dtype=bool)
    hard &= readable
    if fit is not None and not fit.valid:
        note = "the power-law fit is not valid (no x_min with parameters in range): check the plot"
    if readable.any() and np.nanmedian(errors[:, readable]) > 0.9:
        note += ("; " if note else "") + ("the U-Nets fail on most cases (median error > 0.9): train them longer "
                                          "(difficulty.epochs) before trusting the tail")
    unreadable = [(str(records[index]["image"]), reason) for index, reason in unreadable]
    result = SourceDifficulty(source, len(records), errors, votes, hard, fit, note, unreadable)
    if fit is not None:
        result.plot = str(plot_tail_fit(pooled, fit, folder / "ccdf_knee.png", title=f"{source}: error tail"))
    with (folder / "cases.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "slice_index", "mean_error", *[f"error_model{m}" for m in range(settings.models)],
                         "votes", "hard"])
        for index, record in enumerate(records):
            column = errors[:, index]
            mean = "" if np.isnan(column).all() else f"{np.nanmean(column):.4f}"
            writer.writerow([record["image"], record.get("slice_index", ""), mean,
                             *["" if np.isnan(e) else f"{e:.4f}" for e in column], int(votes[index]),
                             int(hard[index])])
    write_json(folder / "summary.json", result.summary())
    return result
