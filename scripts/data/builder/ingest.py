# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Ingest raw collections into datalist records (the first step of the ComLesion-style builder).

A *source* is one dataset of a lab's collection, described by a :class:`SourceSpec`: either a folder of images
with a folder of masks (matched by file name), or a MONAI datalist. Every source carries the metadata the
datalist needs (modality, anatomy, disease); a metadata CSV may override it per image. 2D images give one
record each; 3D volumes give one record per lesion-bearing slice (``slice_index``/``slice_axis``).

Nothing is dropped silently: every image that does not become a record is listed in the
:class:`IngestReport` with the reason (no mask, unreadable file, size mismatch, empty mask, unknown
modality, ...), and the report counts reasons per source.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..coordinates import boxes_from_mask
from ..datalist import INDEX_KEY, SECTION_KEY, DatalistError, prepare_record, read_datalist_json, resolve_path
from ..readers import SUPPORTED_SUFFIXES, ImageLoader, read_header, reader_kind
from ..validate import check_record
from .files import settings_from_mapping, write_json

__all__ = ["SourceSpec", "SkippedItem", "IngestReport", "ingest_source", "ingest_sources", "lesion_slices"]

#: Record fields a source (or its metadata CSV) may set for every image.
METADATA_FIELDS: tuple[str, ...] = ("modality", "anatomy", "disease", "window")


@dataclass
class SourceSpec:
    """One raw dataset to ingest.

    Give either ``images`` (a folder; masks in ``masks``) or ``datalist`` (a MONAI datalist JSON).

    Attributes:
        name: the source's name, written to each record's ``source`` (difficulty is fitted per source).
        images: folder of images (searched recursively).
        masks: folder of masks; a mask is matched to the image with the same relative path, where the
            image's file name ``<stem><suffix>`` becomes ``<stem><mask_suffix><suffix>`` (any supported suffix).
        mask_suffix: text between the stem and the suffix in mask names (e.g. ``"_mask"``, ``"_seg"``).
        datalist: a MONAI datalist JSON; its rows keep their own fields, the source's metadata fills gaps.
        sections: datalist sections to read (default: all present).
        metadata_csv: optional CSV with an ``image`` column (path relative to ``images`` or the datalist's
            folder, or absolute) and any of the columns in :data:`METADATA_FIELDS` overriding the defaults.
        modality: default modality of the source's images.
        anatomy: default anatomy.
        disease: default lesion name.
        window: default ``[center, width]`` intensity window (CT in HU).
        slice_axis: axis across which volumes are sliced (the file's voxel order).
        min_lesion_pixels: a slice (or 2D mask) needs at least this many lesion pixels to count as lesion-bearing.
        max_slices_per_volume: keep at most this many lesion-bearing slices per volume, evenly spaced
            (0 keeps all); neighbouring slices are near-duplicates.
        keep_empty: keep 2D images whose mask is empty (no lesion); by default they are skipped, since the
            builder selects complex lesions.
    """

    name: str
    images: str | None = None
    masks: str | None = None
    mask_suffix: str = ""
    datalist: str | None = None
    sections: Sequence[str] | None = None
    metadata_csv: str | None = None
    modality: str | None = None
    anatomy: str | None = None
    disease: str | None = None
    window: Sequence[float] | None = None
    slice_axis: int = 2
    min_lesion_pixels: int = 1
    max_slices_per_volume: int = 0
    keep_empty: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"A source needs a non-empty 'name', got {self.name!r}.")
        if (self.images is None) == (self.datalist is None):
            raise ValueError(f"Source {self.name!r}: give exactly one of 'images' (a folder, with 'masks') or "
                             "'datalist' (a MONAI datalist JSON).")
        if self.images is not None and self.masks is None:
            raise ValueError(f"Source {self.name!r}: 'images' needs a 'masks' folder (masks matched by file name).")
        if self.slice_axis not in (0, 1, 2) or isinstance(self.slice_axis, bool):
            raise ValueError(f"Source {self.name!r}: slice_axis must be 0, 1 or 2, got {self.slice_axis!r}.")
        if int(self.min_lesion_pixels) < 1 or int(self.max_slices_per_volume) < 0:
            raise ValueError(f"Source {self.name!r}: min_lesion_pixels must be >= 1 and max_slices_per_volume "
                             f">= 0, got {self.min_lesion_pixels!r} and {self.max_slices_per_volume!r}.")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SourceSpec:
        """A spec from a config mapping; unknown keys are an error that lists the known ones."""
        return settings_from_mapping(cls, values, "source settings")


@dataclass(frozen=True)
class SkippedItem:
    """An image (or datalist row) that did not become a record, and why."""

    source: str
    image: str
    reason: str
    label: str | None = None


@dataclass
class IngestReport:
    """What ingestion produced and what it skipped."""

    records: int = 0
    images: Counter = field(default_factory=Counter)
    skipped: list[SkippedItem] = field(default_factory=list)

    def skip(self, source: str, image: str, reason: str, label: str | None = None) -> None:
        """Record that ``image`` of ``source`` was skipped for ``reason``."""
        self.skipped.append(SkippedItem(source, str(image), reason, None if label is None else str(label)))

    def reasons(self) -> dict[str, dict[str, int]]:
        """Skip counts per source and reason category (the text before the first colon)."""
        counts: dict[str, Counter] = {}
        for item in self.skipped:
            counts.setdefault(item.source, Counter())[item.reason.split(":")[0]] += 1
        return {source: dict(counter) for source, counter in counts.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with every skipped item."""
        return {"records": self.records, "images_per_source": dict(self.images), "skipped_per_source": self.reasons(),
                "skipped": [asdict(item) for item in self.skipped]}

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON."""
        return write_json(path, self.to_dict())


def lesion_slices(mask_volume: np.ndarray, axis: int, min_pixels: int = 1, max_slices: int = 0) -> list[int]:
    """Indices of the slices across ``axis`` with at least ``min_pixels`` lesion pixels.

    Args:
        mask_volume: ``(x, y, z)`` mask (any value > 0 is lesion).
        axis: the slicing axis.
        min_pixels: minimum lesion pixels of a kept slice.
        max_slices: keep at most this many, evenly spaced over the lesion-bearing ones (0: all).
    """
    other_axes = tuple(a for a in range(3) if a != axis)
    counts = (np.asarray(mask_volume) > 0).sum(axis=other_axes)
    indices = [int(i) for i in np.flatnonzero(counts >= min_pixels)]
    if max_slices and len(indices) > max_slices:
        picks = np.linspace(0, len(indices) - 1, max_slices).round().astype(int)
        indices = [indices[i] for i in sorted(set(picks.tolist()))]
    return indices


def _metadata_overrides(spec: SourceSpec, base_dir: Path) -> dict[str, dict[str, Any]]:
    if spec.metadata_csv is None:
        return {}
    path = Path(spec.metadata_csv)
    if not path.is_file():
        raise FileNotFoundError(f"Source {spec.name!r}: metadata_csv {str(path)!r} does not exist.")
    overrides: dict[str, dict[str, Any]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "image" not in reader.fieldnames:
            raise ValueError(f"Source {spec.name!r}: metadata_csv {str(path)!r} needs an 'image' column; it has "
                             f"{reader.fieldnames}. Other columns among {list(METADATA_FIELDS)} override the "
                             "source's defaults per image.")
        for line, row in enumerate(reader, start=2):
            values: dict[str, Any] = {}
            for key in METADATA_FIELDS:
                text = (row.get(key) or "").strip()
                if not text:
                    continue
                if key == "window":
                    try:
                        values[key] = [float(v) for v in json.loads(text)]
                    except (json.JSONDecodeError, TypeError, ValueError) as error:
                        raise ValueError(f"{path}:{line}: window must be a JSON list [center, width], got "
                                         f"{text!r}.") from error
                else:
                    values[key] = text
            overrides[resolve_path(row["image"].strip(), base_dir)] = values
    return overrides


def _source_defaults(spec: SourceSpec) -> dict[str, Any]:
    defaults = {key: getattr(spec, key) for key in METADATA_FIELDS if getattr(spec, key) is not None}
    if "window" in defaults:
        defaults["window"] = [float(v) for v in defaults["window"]]
    return defaults


def _mask_for(image: Path, images_dir: Path, masks_dir: Path, mask_suffix: str) -> Path | None:
    relative = image.relative_to(images_dir)
    name = image.name
    suffix = next(s for s in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True) if name.lower().endswith(s))
    stem = name[: len(name) - len(suffix)]
    folder = masks_dir / relative.parent
    candidates = [folder / f"{stem}{mask_suffix}{suffix}"]
    candidates += [folder / f"{stem}{mask_suffix}{other}" for other in SUPPORTED_SUFFIXES if other != suffix]
    return next((path for path in candidates if path.is_file()), None)


def _folder_rows(spec: SourceSpec, report: IngestReport) -> list[dict[str, Any]]:
    images_dir, masks_dir = Path(spec.images), Path(spec.masks)
    for folder, role in ((images_dir, "images"), (masks_dir, "masks")):
        if not folder.is_dir():
            raise FileNotFoundError(f"Source {spec.name!r}: the {role} folder {str(folder)!r} does not exist.")
    rows = []
    for path in sorted(p for p in images_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            reader_kind(path)
        except ValueError:
            report.skip(spec.name, str(path), f"unsupported format: expected one of {', '.join(SUPPORTED_SUFFIXES)}")
            continue
        mask = _mask_for(path, images_dir, masks_dir, spec.mask_suffix)
        if mask is None:
            report.skip(spec.name, str(path), f"no mask: nothing named {path.stem}{spec.mask_suffix}.* under "
                                              f"{masks_dir / path.relative_to(images_dir).parent}")
            continue
        rows.append({"image": str(path), "label": str(mask)})
    return rows


def _datalist_rows(spec: SourceSpec, report: IngestReport) -> list[dict[str, Any]]:
    path = Path(spec.datalist)
    sections = list(spec.sections) if spec.sections else None
    # The file's structure (JSON, sections) must be right; a bad row is reported and the others go on.
    content = read_datalist_json(path, sections)
    rows = []
    for section, section_rows in content.items():
        for index, row in enumerate(section_rows):
            try:
                record = prepare_record(row, index, section, path.parent)
            except DatalistError as error:
                report.skip(spec.name, f"{path}[{section}][{index}]", f"malformed row: {error}")
                continue
            if not isinstance(record.get("label"), str):
                report.skip(spec.name, record["image"], "no mask: the row has no 'label' path")
                continue
            rows.append({k: v for k, v in record.items() if k not in (SECTION_KEY, INDEX_KEY)})
    return rows


def _check(record: dict[str, Any]) -> str | None:
    errors = [issue for issue in check_record(record) if issue.severity == "error"]
    return None if not errors else "; ".join(f"{issue.field}: {issue.message}" for issue in errors)


def ingest_source(spec: SourceSpec, report: IngestReport | None = None, progress: bool = True) -> list[dict]:
    """The datalist records of one source (one per 2D image or lesion-bearing slice).

    Args:
        spec: the source.
        report: collects skipped items (a new one when omitted).
        progress: show a tqdm bar.

    Returns:
        Records with absolute ``image``/``label`` paths, ``modality``, ``anatomy``, ``disease``, ``source``,
        ``boxes`` (original pixels of the image or slice) and, for volumes, ``slice_index``/``slice_axis``.
    """
    report = report if report is not None else IngestReport()
    rows = _folder_rows(spec, report) if spec.images is not None else _datalist_rows(spec, report)
    base_dir = Path(spec.images) if spec.images is not None else Path(spec.datalist).parent
    overrides = _metadata_overrides(spec, base_dir)
    defaults = _source_defaults(spec)
    loader = ImageLoader()
    records = []
    for row in tqdm(rows, desc=f"ingest {spec.name}", unit="img", disable=not progress):
        record = {**defaults, **row, **overrides.get(row["image"], {}), "source": spec.name}
        report.images[spec.name] += 1
        try:
            header = read_header(record["image"])
        except (FileNotFoundError, ValueError) as error:
            report.skip(spec.name, record["image"], f"unreadable image: {error}", record["label"])
            continue
        if header.is_volume:
            record.setdefault("slice_axis", spec.slice_axis)
            probe = {**record, "slice_index": 0}
        else:
            probe = record
        problem = _check(probe)
        if problem:
            report.skip(spec.name, record["image"], f"invalid record: {problem}", record["label"])
            continue
        try:
            mask = np.asarray(loader(record["label"], mask=True))[0]
        except (OSError, ValueError, RuntimeError, IndexError, KeyError) as error:
            report.skip(spec.name, record["image"], f"unreadable mask: {type(error).__name__}: {error}",
                        record["label"])
            continue
        if header.is_volume and mask.ndim == 3:
            slices = lesion_slices(mask, record["slice_axis"], spec.min_lesion_pixels, spec.max_slices_per_volume)
            if not slices:
                report.skip(spec.name, record["image"], f"empty mask: no slice across axis {record['slice_axis']} has "
                                                        f"{spec.min_lesion_pixels} lesion pixel(s)", record["label"])
            for index in slices:
                plane = np.take(mask, index, axis=record["slice_axis"]).T  # (x, y) -> (H, W)
                records.append({**record, "slice_index": index, "boxes": boxes_from_mask(plane > 0)})
            continue
        if header.is_volume:
            report.skip(spec.name, record["image"], "invalid record: a 2D mask for a volume; give the mask volume",
                        record["label"])
            continue
        plane = mask.T
        lesion_pixels = int((plane > 0).sum())
        if lesion_pixels < spec.min_lesion_pixels and not spec.keep_empty:
            report.skip(spec.name, record["image"], f"empty mask: {lesion_pixels} lesion pixel(s), fewer than "
                                                    f"{spec.min_lesion_pixels}", record["label"])
            continue
        records.append({**record, "boxes": boxes_from_mask(plane > 0)})
    report.records += len(records)
    return records


def ingest_sources(specs: Sequence[SourceSpec], progress: bool = True) -> tuple[list[dict], IngestReport]:
    """Ingest every source; returns all records and one report. Source names must be unique."""
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"Source names must be unique (difficulty is fitted per source); repeated: {repeated}.")
    report = IngestReport()
    records = [record for spec in specs for record in ingest_source(spec, report, progress)]
    return records, report
