# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The datalist: MONAI's ``{"training": [...], "validation": [...], "test": [...]}`` JSON, one record per image.

Record fields (see ``docs/data.md`` for an example):

=========================  ========  ==========================================================================
field                      needed    meaning
=========================  ========  ==========================================================================
``image``                  yes       image path, relative to the datalist's folder (or ``base_dir``) or absolute
``modality``               yes       one of :data:`scripts.data.vocabulary.MODALITIES`
``anatomy``                yes       one of :data:`scripts.data.vocabulary.ANATOMIES`
``disease``                yes [1]_  lesion name, used in questions and answers
``label``                  no        mask path (single channel, any value > 0 is lesion); absent at inference
``question``               no        clinical question; rendered from templates when absent
``reasoning``              no        reasoning text; rendered from templates when absent; coordinates removed
``answer``                 no        answer sentence; rendered when absent; may hold ``{bboxes}`` (and
                                     ``{disease}``) placeholders but never literal coordinates
``boxes``                  no        ``[[x1, y1, x2, y2], ...]`` in original-image pixel edges; from the mask
                                     when absent
``slice_index``            volumes   slice to use from a 3D image
``slice_axis``             no        axis of ``slice_index`` in the file's voxel order (default 2)
``window``                 no        ``[center, width]`` intensity window (CT)
``source``                 no        where the record comes from (dataset name)
=========================  ========  ==========================================================================

.. [1] optional only for inference rows that have a ``question`` and no ``label``.

Other keys are kept as they are (the synthetic generator writes ``distractor``, ``num_targets``,
``target_appearance``, ...). :func:`load_datalist` adds :data:`SECTION_KEY` and :data:`INDEX_KEY` so that every
error further down the pipeline can name the row at fault (:func:`describe_record`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "INDEX_KEY",
    "PATH_KEYS",
    "SECTIONS",
    "SECTION_KEY",
    "DatalistError",
    "describe_record",
    "load_datalist",
    "prepare_record",
    "read_datalist",
    "read_datalist_json",
    "resolve_path",
]

SECTIONS: tuple[str, ...] = ("training", "validation", "test")
SECTION_KEY = "datalist_section"
INDEX_KEY = "datalist_index"
#: Record fields holding file paths (resolved against the base folder).
PATH_KEYS: tuple[str, ...] = ("image", "label")


class DatalistError(ValueError):
    """A datalist file or record that cannot be used as it is."""


def describe_record(record: Mapping[str, object]) -> str:
    """``"row 3 of 'training' (image: /data/a.png)"``: how errors name a record."""
    where = []
    if INDEX_KEY in record:
        section = record.get(SECTION_KEY)
        where.append(f"row {record[INDEX_KEY]}" + (f" of {section!r}" if section else ""))
    image = record.get("image_path", record.get("image"))
    if isinstance(image, (str, os.PathLike)):
        where.append(f"(image: {os.fspath(image)})")
    return " ".join(where) if where else "record"


def resolve_path(value: str | os.PathLike, base_dir: str | os.PathLike) -> str:
    """An absolute path stays; a relative one is taken relative to ``base_dir``."""
    path = Path(os.path.expanduser(os.fspath(value)))
    return str(path if path.is_absolute() else Path(base_dir) / path)


def read_datalist(
    path: str | os.PathLike, base_dir: str | os.PathLike | None = None, sections: Sequence[str] | None = None
) -> dict[str, list[dict]]:
    """Read a datalist JSON file: resolve paths and tag every record with its section and row index.

    Only the structure is checked here (sections are lists of records, records are objects with an
    ``image`` string); :func:`scripts.data.validate.validate_datalist` checks the content.

    Args:
        path: the JSON file.
        base_dir: folder that relative paths start from; default: the folder of ``path`` (MONAI's
            ``load_decathlon_datalist`` convention).
        sections: sections to return (default: those of :data:`SECTIONS` present in the file).

    Raises:
        FileNotFoundError: no such file.
        DatalistError: invalid JSON, no known section, a section that is not a list, or a malformed record.
    """
    content = read_datalist_json(path, sections)
    base = Path(base_dir) if base_dir is not None else Path(path).parent
    return {section: [prepare_record(row, index, section, base) for index, row in enumerate(rows)]
            for section, rows in content.items()}


def read_datalist_json(path: str | os.PathLike, sections: Sequence[str] | None = None) -> dict[str, list]:
    """The raw rows of a datalist's sections, with the file's structure checked (rows are not prepared).

    Args:
        path: the JSON file.
        sections: sections to return (default: those of :data:`SECTIONS` present in the file).

    Raises:
        FileNotFoundError: no such file.
        DatalistError: invalid JSON, no known section, a missing requested section, or a section that is not a
            list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Datalist not found: {str(path)!r}.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatalistError(f"Datalist {str(path)!r} is not valid JSON: {error}.") from error
    if not isinstance(content, dict):
        raise DatalistError(f"Datalist {str(path)!r} must be a JSON object with sections {list(SECTIONS)}, "
                            f"got a {type(content).__name__}.")
    wanted = list(sections) if sections is not None else [s for s in SECTIONS if s in content]
    if not wanted:
        raise DatalistError(f"Datalist {str(path)!r} has none of the sections {list(SECTIONS)} "
                            f"(found keys: {sorted(content)}).")
    result = {}
    for section in wanted:
        if section not in content:
            raise DatalistError(f"Datalist {str(path)!r} has no section {section!r} (found: {sorted(content)}).")
        rows = content[section]
        if not isinstance(rows, list):
            raise DatalistError(f"Section {section!r} of {str(path)!r} must be a list of records, "
                                f"got a {type(rows).__name__}.")
        result[section] = rows
    return result


def load_datalist(
    path: str | os.PathLike, section: str = "training", base_dir: str | os.PathLike | None = None
) -> list[dict]:
    """One section of a datalist, ready for a MONAI ``Dataset`` (as ``load_decathlon_datalist`` returns it)."""
    return read_datalist(path, base_dir=base_dir, sections=[section])[section]


def prepare_record(row: object, index: int, section: str, base_dir: str | os.PathLike) -> dict:
    """A datalist row as a record: copied, paths resolved, tagged with its section and index.

    Raises:
        DatalistError: the row is not an object (or an image path), or a path field is not a string.
    """
    if isinstance(row, str):  # MONAI datalists allow bare image paths (usually in "test")
        row = {"image": row}
    if not isinstance(row, dict):
        raise DatalistError(f"Row {index} of {section!r} must be an object with at least 'image', "
                            f"got a {type(row).__name__}: {row!r:.80}.")
    record = dict(row)
    record[SECTION_KEY], record[INDEX_KEY] = section, index
    for key in PATH_KEYS:
        if key not in record or record[key] is None:
            continue
        if not isinstance(record[key], str) or not record[key].strip():
            raise DatalistError(f"{describe_record(record)}: {key!r} must be a non-empty path string, "
                                f"got {record[key]!r}.")
        record[key] = resolve_path(record[key], base_dir)
    if "image" not in record:
        raise DatalistError(f"{describe_record(record)}: missing 'image' (the image path).")
    return record
