# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The synthetic complex-lesion benchmark: phantom images, masks and a MONAI datalist.

Layout written under ``out_dir``::

    datalist.json                     {"training": [...], "validation": [...], "test": [...]}
    generation.json                   size, seed, counts and text hook (what reproduces the set)
    images/<split>/<index>.png        8-bit grey (CT, MRI, X-ray, ultrasound, OCT) or RGB (the others)
    labels/<split>/<index>_<finding>.png   8-bit, 255 on the lesions of the asked finding, 0 elsewhere

Image ``index`` of a split shows ``LESION_TYPE_ORDER[index % 23]`` (the lesion types taken round-robin over the
modalities, so that every prefix of a split is spread over them) and is rendered from its own seed, derived from
(benchmark seed, split, index) alone: any subset of a split regenerates byte for byte, a smaller size is a
prefix of a larger one with the same seed, and the splits never share an image. Training images get one
record, asking for one of the two findings (50/50); validation and test images get one record per finding,
so that the same image appears with both questions and the masks show that the question decides.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..coordinates import boxes_from_mask
from ..vocabulary import LESION_TYPES, MODALITIES, LesionType
from .findings import appearance, style_of
from .phantom import Phantom, render_phantom

__all__ = [
    "SPLITS",
    "SIZES",
    "LESION_TYPE_ORDER",
    "PAIRED_SPLITS",
    "DATALIST_NAME",
    "TextFn",
    "image_seed",
    "lesion_type_at",
    "find_lesion_type",
    "make_records",
    "generate_split",
    "generate_benchmark",
    "ensure_benchmark",
]

SPLITS: tuple[str, ...] = ("training", "validation", "test")

#: Images per split for each size. Training, and the small and large sets throughout, hold multiples of the 23
#: lesion types (each type equally frequent); the demo's validation and test splits show each modality once.
SIZES: dict[str, dict[str, int]] = {
    "demo": {"training": 23, "validation": 8, "test": 8},
    "small": {"training": 1150, "validation": 115, "test": 230},
    "large": {"training": 9200, "validation": 460, "test": 690},
}

#: Splits whose images get one record per finding (both questions of the same image).
PAIRED_SPLITS: tuple[str, ...] = ("validation", "test")

DATALIST_NAME = "datalist.json"

#: The text hook: ``text_fn(record, rng) -> {"question": ..., "reasoning": ..., "answer": ...}``. It receives
#: the finished record (without text) and a generator seeded from the record alone; the keys it returns are
#: added to the record and must not replace any of the generator's own.
TextFn = Callable[[dict[str, Any], np.random.Generator], Mapping[str, Any]]

_SPLIT_STREAMS = {split: number for number, split in enumerate(SPLITS)}
# Sub-streams of an image seed, so that choosing the question or writing the text never shifts the pixels.
_QUESTION_STREAM, _TEXT_STREAM = 1, 2


def image_seed(seed: int, split: str, index: int) -> int:
    """The seed of image ``index`` of ``split`` in the benchmark of ``seed`` (what records store as ``seed``)."""
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}.")
    return int(np.random.SeedSequence([int(seed), _SPLIT_STREAMS[split], int(index)]).generate_state(1)[0])


def _round_robin(lesion_types: Sequence[LesionType]) -> tuple[LesionType, ...]:
    by_modality = [[lesion for lesion in lesion_types if lesion.modality == modality] for modality in MODALITIES]
    rounds = max(len(group) for group in by_modality)
    return tuple(group[turn] for turn in range(rounds) for group in by_modality if turn < len(group))


#: The order in which consecutive images of a split cycle through the lesion types: round-robin over the
#: modalities (CT, MRI, X-ray, ultrasound, endoscopy, dermoscopy, fundus, OCT, CT, MRI, ...).
LESION_TYPE_ORDER: tuple[LesionType, ...] = _round_robin(LESION_TYPES)


def lesion_type_at(index: int) -> LesionType:
    """The lesion type shown by image ``index`` of every split."""
    return LESION_TYPE_ORDER[index % len(LESION_TYPE_ORDER)]


def find_lesion_type(modality: str, finding: str, other: str) -> LesionType:
    """The lesion type whose two findings are ``finding`` and ``other`` (in either role) in ``modality``.

    With a record's ``seed`` this regenerates its image: ``render_phantom(find_lesion_type(r["modality"],
    r["disease"], r["distractor"]), r["seed"])``.
    """
    for lesion in LESION_TYPES:
        if lesion.modality == modality and {lesion.disease, lesion.distractor} == {finding, other}:
            return lesion
    raise ValueError(f"No lesion type pairs {finding!r} with {other!r} in {modality!r} images.")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def make_records(
    phantom: Phantom,
    asked: Sequence[str],
    image_path: str,
    label_paths: Sequence[str],
    text_fn: TextFn | None = None,
) -> list[dict[str, Any]]:
    """The datalist records of one phantom, one per asked finding.

    Args:
        phantom: the rendered image.
        asked: the findings asked for, each one of ``phantom.findings``.
        image_path: the image's path as the datalist stores it.
        label_paths: the mask path of each asked finding, in the same order.
        text_fn: optional text hook (see :data:`TextFn`).
    """
    lesion_type = phantom.lesion_type
    records = []
    for finding, label_path in zip(asked, label_paths, strict=True):
        other = lesion_type.distractor if finding == lesion_type.disease else lesion_type.disease
        boxes = boxes_from_mask(phantom.mask(finding))
        record: dict[str, Any] = {
            "image": image_path,
            "label": label_path,
            "modality": lesion_type.modality,
            "anatomy": lesion_type.anatomy,
            "disease": finding,
            "distractor": other,
            "boxes": boxes,
            "num_targets": len(boxes),
            "num_distractors": phantom.count(other),
            "noise_level": phantom.noise_level,
            "target_appearance": appearance(style_of(lesion_type.modality, finding)),
            "distractor_appearance": appearance(style_of(lesion_type.modality, other)),
            "seed": phantom.seed,
            "source": "synthetic",
        }
        if text_fn is not None:
            rng = np.random.default_rng([phantom.seed, _TEXT_STREAM, phantom.findings.index(finding)])
            text = text_fn(dict(record), rng)
            if not isinstance(text, Mapping):
                raise TypeError(f"text_fn must return a mapping of text fields, got {type(text).__name__}.")
            clashes = sorted(set(text) & set(record))
            if clashes:
                raise ValueError(f"text_fn returned fields {clashes} that the generator already sets; "
                                 "it may only add new fields such as question, reasoning and answer.")
            record.update(text)
        records.append(record)
    return records


def _asked_findings(phantom: Phantom, split: str, paired_splits: Sequence[str] = PAIRED_SPLITS) -> tuple[str, ...]:
    if split in paired_splits:
        return phantom.findings
    rng = np.random.default_rng([phantom.seed, _QUESTION_STREAM])
    return (phantom.findings[int(rng.integers(2))],)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # PIL writes no timestamps into PNGs, so equal pixels give equal bytes.
    Image.fromarray(pixels).save(path, format="PNG")


def _generate_image(task: tuple[str, str, int, int, TextFn | None, tuple[str, ...]]) -> list[dict[str, Any]]:
    out_dir, split, index, seed, text_fn, paired_splits = task
    phantom = render_phantom(lesion_type_at(index), image_seed(seed, split, index))
    asked = _asked_findings(phantom, split, paired_splits)
    image_path = f"images/{split}/{index:05d}.png"
    label_paths = [f"labels/{split}/{index:05d}_{_slug(finding)}.png" for finding in asked]
    _write_png(Path(out_dir) / image_path, phantom.image)
    for finding, label_path in zip(asked, label_paths):
        _write_png(Path(out_dir) / label_path, phantom.mask(finding))
    return make_records(phantom, asked, image_path, label_paths, text_fn)


def generate_split(
    out_dir: str | Path,
    split: str,
    indices: Sequence[int] | int,
    seed: int = 0,
    text_fn: TextFn | None = None,
    num_workers: int = 0,
    progress: bool = True,
    paired_splits: Sequence[str] = PAIRED_SPLITS,
) -> list[dict[str, Any]]:
    """Render and write images ``indices`` of ``split``; returns their records in index order.

    Args:
        out_dir: benchmark root; paths in the records are relative to it.
        split: one of :data:`SPLITS`.
        indices: image indices, or a count ``n`` for ``range(n)``.
        seed: benchmark seed.
        text_fn: optional text hook; with ``num_workers > 0`` it must be picklable (a module-level function).
        num_workers: worker processes (0: render in this process). The output does not depend on it.
        progress: show a tqdm bar.
        paired_splits: splits whose images are asked for both findings (one record and mask each); the other
            splits ask for one finding per image, chosen by the image's seed.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    indices = range(indices) if isinstance(indices, int) else list(indices)
    paired = tuple(_check_splits(paired_splits))
    tasks = [(str(out_dir), split, int(index), int(seed), text_fn, paired) for index in indices]
    bar = dict(total=len(tasks), desc=f"{split} images", unit="img", disable=not progress)
    if num_workers > 0 and len(tasks) > 1:
        # spawn: no fork of a parent that may hold threads (torch, BLAS); imap keeps the index order.
        with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
            results = list(tqdm(pool.imap(_generate_image, tasks, chunksize=4), **bar))
    else:
        results = [_generate_image(task) for task in tqdm(tasks, **bar)]
    return [record for records in results for record in records]


def generate_benchmark(
    out_dir: str | Path,
    size: str | Mapping[str, int] = "demo",
    seed: int = 0,
    text_fn: TextFn | None = None,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    paired_splits: Sequence[str] = PAIRED_SPLITS,
) -> Path:
    """Generate the benchmark and write ``<out_dir>/datalist.json``.

    Args:
        out_dir: where to write images, labels and the datalist.
        size: ``"demo"``, ``"small"``, ``"large"`` (see :data:`SIZES`) or a mapping of images per split.
        seed: benchmark seed; the same seed gives byte-identical files.
        text_fn: optional text hook adding question/reasoning/answer fields (see :data:`TextFn`).
        num_workers: worker processes for rendering.
        overwrite: allow writing into a directory that already holds a datalist.
        progress: show tqdm bars.
        paired_splits: splits asked both ways (default validation and test; adding ``"training"`` gives
            contrastive training pairs, both questions of every training image).

    Returns:
        The datalist path.
    """
    counts = _split_counts(size)
    out_dir = Path(out_dir)
    datalist_path = out_dir / DATALIST_NAME
    if datalist_path.exists() and not overwrite:
        raise FileExistsError(f"{datalist_path} exists; pass overwrite=True to write over it, or choose another "
                              "out_dir.")
    out_dir.mkdir(parents=True, exist_ok=True)
    datalist = {
        split: generate_split(out_dir, split, counts[split], seed, text_fn, num_workers, progress, paired_splits)
        for split in SPLITS
    }
    info = {
        "generator": "scripts.data.synthetic",
        "size": size if isinstance(size, str) else None,
        "seed": int(seed),
        "images": counts,
        "records": {split: len(records) for split, records in datalist.items()},
        "paired_splits": list(_check_splits(paired_splits)),
        "text_fn": None if text_fn is None else f"{text_fn.__module__}.{text_fn.__qualname__}",
    }
    (out_dir / "generation.json").write_text(json.dumps(info, indent=2) + "\n")
    datalist_path.write_text(json.dumps(datalist, indent=2) + "\n")
    return datalist_path


def ensure_benchmark(out_dir: str | Path, size: str | Mapping[str, int] = "demo", seed: int = 0,
                     num_workers: int = 0, progress: bool = True,
                     paired_splits: Sequence[str] = PAIRED_SPLITS) -> str:
    """The benchmark's datalist path, generating the benchmark first if ``out_dir`` holds none.

    Meant for bundle configs (``"$scripts.data.synthetic.ensure_benchmark(@dataset_dir, 'small')"``): the first
    run generates the data, later runs reuse it. An existing benchmark is reused only if its
    ``generation.json`` records the same image counts and seed, so a config never trains on other data than
    it names.

    Args:
        out_dir: the benchmark's folder.
        size: as in :func:`generate_benchmark`.
        seed: as in :func:`generate_benchmark`.
        num_workers: worker processes for rendering, when generating.
        progress: show tqdm bars when generating.
        paired_splits: as in :func:`generate_benchmark`.

    Returns:
        The path of ``<out_dir>/datalist.json`` as a string.

    Raises:
        ValueError: ``out_dir`` holds a benchmark of another size or seed, or a datalist without the generator's
            ``generation.json``.
    """
    out_dir = Path(out_dir)
    datalist_path = out_dir / DATALIST_NAME
    if not datalist_path.exists():
        return str(generate_benchmark(out_dir, size, seed, num_workers=num_workers, progress=progress,
                                      paired_splits=paired_splits))
    info_path = out_dir / "generation.json"
    if not info_path.is_file():
        raise ValueError(f"{datalist_path} exists but {info_path} does not, so it cannot be checked to be the synthetic "
                         f"benchmark of size {size!r} and seed {seed}; remove {out_dir} or use another folder.")
    info = json.loads(info_path.read_text())
    expected = _split_counts(size)
    paired = list(_check_splits(paired_splits))
    if info.get("images") != expected or info.get("seed") != int(seed) or info.get("paired_splits") != paired:
        raise ValueError(f"{out_dir} holds a synthetic benchmark with images {info.get('images')}, seed "
                         f"{info.get('seed')} and paired splits {info.get('paired_splits')}, not the requested "
                         f"{expected}, seed {seed} and paired splits {paired}; remove it or use another folder.")
    return str(datalist_path)


def _check_splits(splits: Sequence[str] | str) -> tuple[str, ...]:
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"Unknown splits {unknown}; expected names among {', '.join(SPLITS)}.")
    return tuple(split for split in SPLITS if split in splits)


def _split_counts(size: str | Mapping[str, int]) -> dict[str, int]:
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"Unknown size {size!r}; expected one of {', '.join(SIZES)} or a mapping of images "
                             "per split.")
        return dict(SIZES[size])
    unknown = set(size) - set(SPLITS)
    if unknown:
        raise ValueError(f"size names unknown splits {sorted(unknown)}; expected keys among {', '.join(SPLITS)}.")
    counts = {split: int(size.get(split, 0)) for split in SPLITS}
    if any(count < 0 for count in counts.values()):
        raise ValueError(f"Image counts must be non-negative, got {counts}.")
    return counts
