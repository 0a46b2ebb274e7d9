# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Writing DICOM files with any supported pydicom (2.4 and 3.x)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

__all__ = ["save_dicom"]

_PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def save_dicom(dataset: Dataset, path: str | Path) -> Path:
    """Write ``dataset`` (with its ``file_meta``) as a standard DICOM file: preamble, ``DICM`` prefix, group 2.

    pydicom 3 asks for this with ``enforce_file_format=True``; pydicom 2.4 (which the MONAI Label server needs:
    pydicom-seg imports a module pydicom 3 removed) with ``write_like_original=False``.
    """
    if _PYDICOM_MAJOR >= 3:
        pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    else:
        pydicom.dcmwrite(str(path), dataset, write_like_original=False)
    return Path(path)
