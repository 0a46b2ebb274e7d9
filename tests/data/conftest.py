# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tiny image files written in the test's tmp_path: PNG, NIfTI, DICOM (with pydicom) and MetaImage."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from scripts.data.coordinates import ProcessorGeometry
from scripts.data.dicom_files import save_dicom

# A non-square picture (rows = 20, columns = 30) with one bright rectangle at rows 2..4, columns 10..19:
# its box is [10, 2, 20, 5]. Every reader must give back exactly this picture in (H, W).
HEIGHT, WIDTH = 20, 30
BOX = [10, 2, 20, 5]
TINY_GEOMETRY = ProcessorGeometry(patch_size=14, merge_size=2, min_pixels=4 * 28 * 28, max_pixels=224 * 224)


def picture(low: int = 10, high: int = 200, dtype=np.uint8) -> np.ndarray:
    array = np.full((HEIGHT, WIDTH), low, dtype=dtype)
    array[BOX[1]:BOX[3], BOX[0]:BOX[2]] = high
    return array


def mask_picture() -> np.ndarray:
    return (picture(0, 255)).astype(np.uint8)


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return str(path)


def write_nifti(path: Path, picture_or_volume: np.ndarray) -> str:
    """Write a (H, W) picture or a (H, W, D) stack as NIfTI with voxel axes (x, y[, z]) = (column, row[, slice])."""
    array = np.swapaxes(picture_or_volume, 0, 1)  # NIfTI's first axis runs along a row (x)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array), np.eye(4)), path)
    return str(path)


def write_dicom(
    path: Path,
    stored: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    photometric: str = "MONOCHROME2",
    modality: str = "CT",
    **attributes: object,
) -> str:
    """Write a (rows, columns) or (frames, rows, columns) uint16 array as a DICOM file with pydicom.

    ``attributes``: further DICOM keywords to set, e.g. ``ImagePositionPatient`` for the slices of a series.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, modality
    ds.Rows, ds.Columns = stored.shape[-2:]
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.astype(np.uint16).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    save_dicom(ds, path)
    return str(path)


def write_datalist(path: Path, content: dict) -> str:
    path.write_text(json.dumps(content))
    return str(path)


@pytest.fixture()
def png_pair(tmp_path):
    """An 8-bit grey PNG and its mask, with the record of a training row."""
    image = write_png(tmp_path / "image.png", picture())
    label = write_png(tmp_path / "mask.png", mask_picture())
    return {"image": image, "label": label, "modality": "CT", "anatomy": "lung", "disease": "lung nodule",
            "datalist_section": "training", "datalist_index": 0}
