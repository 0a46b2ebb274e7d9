# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Validate a datalist before training: every problem named by section, row, image and field.

Usage::

    python -m scripts.data.validate --datalist data/datalist.json [--base_dir data] [--sections training,test] \\
        [--deep] [--max_issues 50]

Checks (errors unless marked *warning*):

* structure: known sections, records are objects with an ``image`` path;
* fields: ``modality`` and ``anatomy`` from the vocabulary (with a "did you mean"), ``disease`` present,
  text fields are strings without control tags (*warning* for questions and reasoning, which are cleaned),
  answers without literal coordinates, well-formed ``boxes``, ``window``, ``slice_index``/``slice_axis``;
  training and validation rows need a ``label``;
* files (headers only, fast): image and mask exist and are readable, the mask is single-channel and of the
  image's size, boxes lie inside the image, volumes have a valid slice;
* ``--deep``: decode every image and mask through the loading transforms (catches corrupt pixel data) and
  compare given boxes with the mask's connected components (*warning*).

The exit status is 1 when any error is found, so the command can gate a training job.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .coordinates import box_problems, boxes_from_mask
from .datalist import INDEX_KEY, SECTION_KEY, SECTIONS, DatalistError, prepare_record
from .prompts import BOXES_PLACEHOLDER, has_box_literal, has_control_token
from .readers import plane_size, read_header
from .transforms import BoxesFromLabeld, LoadImageAndLabeld
from .vocabulary import ANATOMIES, MODALITIES

__all__ = ["Issue", "ValidationReport", "check_record", "check_record_pixels", "main", "validate_cli",
           "validate_datalist"]

_TEXT_FIELDS = ("question", "reasoning", "answer", "disease")
_LABELLED_SECTIONS = ("training", "validation")


@dataclass(frozen=True)
class Issue:
    """One problem of one datalist row.

    Attributes:
        severity: ``"error"`` (the row cannot be used as it is) or ``"warning"`` (it can, but look at it).
        section: datalist section.
        index: row index in the section (``None`` for problems of the whole file).
        image: the row's image path, if known.
        field: the record field at fault (``""`` for the whole row).
        message: what is wrong and what is expected.
    """

    severity: str
    section: str
    index: int | None
    image: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.section if self.index is None else f"{self.section}[{self.index}]"
        image = f" ({self.image})" if self.image else ""
        field_name = f" {self.field}:" if self.field else ""
        return f"{self.severity.upper()} {where}{image}{field_name} {self.message}"


@dataclass
class ValidationReport:
    """The outcome of :func:`validate_datalist`."""

    datalist: str
    rows: dict[str, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def summary(self, max_issues: int = 50) -> str:
        """A readable report: counts per section, then the first ``max_issues`` issues (errors first)."""
        counts = ", ".join(f"{section}: {count} rows" for section, count in self.rows.items()) or "no rows"
        lines = [f"Datalist {self.datalist}: {counts}; {len(self.errors)} errors, {len(self.warnings)} warnings."]
        ordered = self.errors + self.warnings
        lines += [f"  {issue}" for issue in ordered[:max_issues]]
        if len(ordered) > max_issues:
            lines.append(f"  ... and {len(ordered) - max_issues} more.")
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        """Raise a :class:`~scripts.data.datalist.DatalistError` with the summary when there is an error."""
        if not self.ok:
            raise DatalistError(self.summary())


def _vocabulary_problem(value: object, known: Sequence[str], name: str) -> str | None:
    if value in known:
        return None
    if not isinstance(value, str) or not value.strip():
        return f"missing or not a string ({value!r}); expected one of {', '.join(known)}"
    lowered = {k.lower(): k for k in known}
    guess = lowered.get(value.strip().lower()) or next(iter(difflib.get_close_matches(value, known, n=1)), None)
    hint = f" (did you mean {guess!r}?)" if guess else ""
    return f"unknown {name} {value!r}{hint}; expected one of {', '.join(known)}"


def check_record(record: Mapping[str, object], check_files: bool = True) -> list[Issue]:
    """All problems of one prepared record (see :func:`scripts.data.datalist.prepare_record`).

    Args:
        record: a record with its section and index tags and resolved paths.
        check_files: also read the image and mask headers (existence, size, channels, boxes inside, slice).
    """
    section, index = str(record.get(SECTION_KEY, "")), record.get(INDEX_KEY)
    image = record.get("image") if isinstance(record.get("image"), str) else None
    issues: list[Issue] = []

    def add(field_name: str, message: str, severity: str = "error") -> None:
        issues.append(Issue(severity, section, index, image, field_name, message))

    for name, known in (("modality", MODALITIES), ("anatomy", ANATOMIES)):
        problem = _vocabulary_problem(record.get(name), known, name)
        if problem:
            add(name, problem)
    has_label = record.get("label") is not None
    for name in _TEXT_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            add(name, f"must be a string, got {type(value).__name__}")
    disease, question = record.get("disease"), record.get("question")
    if not (isinstance(disease, str) and disease.strip()):
        if has_label or not (isinstance(question, str) and question.strip()):
            add("disease", "missing: the lesion name is needed for the question and the answer")
    for name, severity in (("disease", "error"), ("answer", "error"), ("question", "warning"),
                           ("reasoning", "warning")):
        value = record.get(name)
        if isinstance(value, str) and has_control_token(value):
            cleaned = "" if severity == "error" else " (they are removed)"
            add(name, f"holds control tags or tokens such as <seg>{cleaned}: {value!r:.80}", severity)
    answer = record.get("answer")
    if isinstance(answer, str) and has_box_literal(answer):
        add("answer", f"holds literal coordinates; write {BOXES_PLACEHOLDER} instead (boxes are rendered in the "
                      "MLLM processor's pixel space)")
    reasoning = record.get("reasoning")
    if isinstance(reasoning, str) and has_box_literal(reasoning):
        add("reasoning", "holds coordinates (they are stripped, as in the paper)", "warning")
    if section in _LABELLED_SECTIONS and not has_label:
        add("label", f"missing: {section} rows need a mask")
    boxes = record.get("boxes")
    if boxes is not None:
        for problem in box_problems(boxes):
            add("boxes", problem)
        if isinstance(answer, str) and answer.strip() and BOXES_PLACEHOLDER not in answer and boxes:
            add("answer", f"has no {BOXES_PLACEHOLDER} placeholder but the row has {len(boxes)} box(es)")
    window = record.get("window")
    if window is not None and not (isinstance(window, (list, tuple)) and len(window) == 2
                                   and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)
                                   and window[1] > 0):
        add("window", f"must be [center, width] with width > 0, got {window!r}")
    slice_axis = record.get("slice_axis")
    if slice_axis is not None and (isinstance(slice_axis, bool) or slice_axis not in (0, 1, 2)):
        add("slice_axis", f"must be 0, 1 or 2, got {slice_axis!r}")
    slice_index = record.get("slice_index")
    if slice_index is not None and (not isinstance(slice_index, int) or isinstance(slice_index, bool)
                                    or slice_index < 0):
        add("slice_index", f"must be a non-negative integer, got {slice_index!r}")
    if check_files and image is not None:
        issues += _check_files(record, section, index, image)
    return issues


def _check_files(record: Mapping[str, object], section: str, index, image: str) -> list[Issue]:
    issues: list[Issue] = []

    def add(field_name: str, message: str, severity: str = "error") -> None:
        issues.append(Issue(severity, section, index, image, field_name, message))

    try:
        header = read_header(image)
    except FileNotFoundError:
        add("image", "file not found")
        return issues
    except ValueError as error:
        add("image", str(error))
        return issues
    if header.channels not in (1, 3):
        add("image", f"has {header.channels} channels; expected 1 (grey) or 3 (RGB)")
    slice_axis = record.get("slice_axis", 2)
    slice_index = record.get("slice_index")
    axis = slice_axis if slice_axis in (0, 1, 2) and not isinstance(slice_axis, bool) else 2
    if header.is_volume:
        depth = header.spatial_shape[axis]
        if slice_index is None:
            add("slice_index", f"missing: the image is a volume of shape {header.spatial_shape}; choose a slice")
        elif isinstance(slice_index, int) and not isinstance(slice_index, bool) and not 0 <= slice_index < depth:
            add("slice_index", f"{slice_index} is outside [0, {depth - 1}] along axis {axis} of the volume of "
                               f"shape {header.spatial_shape}")
    elif slice_index is not None:
        add("slice_index", "given for a 2D image; it is ignored", "warning")
    size = plane_size(header.spatial_shape, axis if header.is_volume else None)
    label = record.get("label")
    if isinstance(label, str):
        try:
            label_header = read_header(label, mask=True)
        except FileNotFoundError:
            add("label", f"mask file not found: {label}")
            label_header = None
        except ValueError as error:
            add("label", str(error))
            label_header = None
        if label_header is not None:
            if label_header.channels != 1:
                add("label", f"the mask has {label_header.channels} channels; masks must be single-channel")
            if label_header.is_volume:
                same = label_header.spatial_shape == header.spatial_shape
                label_size = plane_size(label_header.spatial_shape, axis) if same else None
                if not same:
                    add("label", f"the mask volume has shape {label_header.spatial_shape} but the image "
                                 f"volume has shape {header.spatial_shape}")
            else:
                label_size = plane_size(label_header.spatial_shape)
            if label_size is not None and label_size != size:
                add("label", f"the mask has size {label_size} (height, width) but the image has size {size}")
    boxes = record.get("boxes")
    if boxes is not None and not box_problems(boxes):
        for problem in box_problems(boxes, size):
            add("boxes", problem)
    return issues


def check_record_pixels(record: Mapping[str, object], loader: LoadImageAndLabeld | None = None) -> list[Issue]:
    """Decode a record's image and mask as training will (catches corrupt pixel data), and compare any given
    boxes with the mask's connected components."""
    section, index = str(record.get(SECTION_KEY, "")), record.get(INDEX_KEY)
    image = record.get("image") if isinstance(record.get("image"), str) else None
    loader = loader or LoadImageAndLabeld()
    try:
        sample = BoxesFromLabeld()(loader(record))
    except ValueError as error:
        return [Issue("error", section, index, image, "", str(error))]
    if "label" in sample and record.get("boxes") is not None:
        from_mask = boxes_from_mask(sample["label"])
        given = [[float(v) for v in box] for box in record["boxes"]]
        if given and not from_mask:
            return [Issue("error", section, index, image, "boxes", f"{len(given)} box(es) given but the mask is empty")]
        if sorted(given) != sorted([float(v) for v in box] for box in from_mask):
            return [Issue("warning", section, index, image, "boxes",
                          f"the given boxes differ from the mask's {len(from_mask)} connected component(s): "
                          f"given {given[:3]}{'...' if len(given) > 3 else ''}, from the mask {from_mask[:3]}"
                          f"{'...' if len(from_mask) > 3 else ''}")]
    return []


def validate_datalist(
    datalist: str | Path,
    base_dir: str | Path | None = None,
    sections: Sequence[str] | None = None,
    deep: bool = False,
    progress: bool = True,
) -> ValidationReport:
    """Check every row of a datalist and report all problems (nothing is raised for bad rows).

    Args:
        datalist: the JSON file.
        base_dir: folder of relative paths (default: the datalist's folder).
        sections: sections to check (default: all of :data:`~scripts.data.datalist.SECTIONS` present).
        deep: also decode the pixels of every image and mask (slower; see :func:`check_record_pixels`).
        progress: show a tqdm progress bar.

    Raises:
        FileNotFoundError: the datalist does not exist.
        DatalistError: the file is not JSON or has none of the sections.
    """
    path = Path(datalist)
    if not path.is_file():
        raise FileNotFoundError(f"Datalist not found: {str(path)!r}.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatalistError(f"Datalist {str(path)!r} is not valid JSON: {error}.") from error
    if not isinstance(content, dict):
        raise DatalistError(f"Datalist {str(path)!r} must be a JSON object with sections {list(SECTIONS)}.")
    report = ValidationReport(str(path))
    wanted = list(sections) if sections is not None else [s for s in SECTIONS if s in content]
    if not wanted:
        raise DatalistError(f"Datalist {str(path)!r} has none of the sections {list(SECTIONS)} "
                            f"(found keys: {sorted(content)}).")
    for key in sorted(set(content) - set(SECTIONS)):
        report.issues.append(Issue("warning", key, None, None, "", f"unknown section {key!r} is ignored; "
                                                                   f"sections are {list(SECTIONS)}"))
    base = Path(base_dir) if base_dir is not None else path.parent
    loader = LoadImageAndLabeld() if deep else None
    for section in wanted:
        rows = content.get(section)
        if not isinstance(rows, list):
            report.issues.append(Issue("error", section, None, None, "",
                                       "missing section" if rows is None else "the section must be a list of records"))
            continue
        report.rows[section] = len(rows)
        for index, row in enumerate(tqdm(rows, desc=f"Validating {section}", unit="row", disable=not progress)):
            try:
                record = prepare_record(row, index, section, base)
            except DatalistError as error:
                report.issues.append(Issue("error", section, index, None, "", str(error)))
                continue
            row_issues = check_record(record)
            report.issues += row_issues
            if deep and not any(issue.severity == "error" for issue in row_issues):
                report.issues += check_record_pixels(record, loader)
    return report


def validate_cli(
    datalist: str,
    base_dir: str | None = None,
    sections: str | Sequence[str] | None = None,
    deep: bool = False,
    max_issues: int = 50,
    progress: bool = True,
) -> int:
    """Validate, print the report, and return the exit status (1 when there is an error)."""
    if isinstance(sections, str):
        sections = [s.strip() for s in sections.split(",") if s.strip()]
    report = validate_datalist(datalist, base_dir=base_dir, sections=sections, deep=deep, progress=progress)
    print(report.summary(max_issues=max_issues))
    return 0 if report.ok else 1


def main(
    datalist: str,
    base_dir: str | None = None,
    sections: str | Sequence[str] | None = None,
    deep: bool = False,
    max_issues: int = 50,
    progress: bool = True,
) -> None:
    """Command line: validate a datalist and exit with status 1 on errors (see the module docstring)."""
    sys.exit(validate_cli(datalist, base_dir, sections, deep, max_issues, progress))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
