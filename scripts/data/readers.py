# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Image files: which MONAI reader reads which file, header probing without decoding, and loading.

Readers (all MONAI's, through :class:`monai.transforms.LoadImage`):

=====================================  ===============================================================
``.png .jpg .jpeg .bmp``               ``PILReader`` (8- and 16-bit grey, RGB; palette and alpha images
                                       are converted to RGB / grey; Pillow reads 16-bit RGB as 8-bit)
``.nii .nii.gz``                       ``NibabelReader`` (2D images and volumes)
``.dcm .dicom`` (single frame)         ``PydicomReader`` (applies RescaleSlope / RescaleIntercept)
``.dcm .dicom`` (multi-frame)          ``ITKReader`` (MONAI's PydicomReader mixes up the frame axis of
                                       multi-frame files; ITK keeps ``(x, y, frame)`` and rescales too)
``.nrrd .nhdr .mha .mhd .tif .tiff``   ``ITKReader``
=====================================  ===============================================================

Axes: every MONAI reader returns spatial axes in the ITK/NIfTI order ``(x, y[, z])`` (the first axis runs
along an image row: PNG width, DICOM columns, NIfTI ``i``). :func:`load_image` keeps that order; the dataset
transforms then move to the ``(C, H, W)`` image convention of :mod:`scripts.data.coordinates`. Sizes in
:class:`ImageHeader` are reported in both orders to avoid any doubt.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.errors
from monai.data import ITKReader, NibabelReader, PILReader, PydicomReader
from monai.transforms import LoadImage
from nibabel.filebasedimages import ImageFileError
from PIL import Image

from .coordinates import Size

__all__ = [
    "ImageHeader",
    "ImageLoader",
    "SUPPORTED_SUFFIXES",
    "dicom_display_settings",
    "plane_size",
    "read_header",
    "reader_kind",
]

_SUFFIX_KINDS = {
    ".png": "pil", ".jpg": "pil", ".jpeg": "pil", ".bmp": "pil",
    ".nii": "nibabel", ".nii.gz": "nibabel",
    ".dcm": "dicom", ".dicom": "dicom",
    ".nrrd": "itk", ".nhdr": "itk", ".mha": "itk", ".mhd": "itk", ".tif": "itk", ".tiff": "itk",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_SUFFIX_KINDS)

# PIL modes whose pixels are not plain intensities: converted before use (images) or refused (masks).
_PIL_IMAGE_CONVERSIONS = {"P": "RGB", "PA": "RGB", "RGBA": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
                          "HSV": "RGB", "LA": "L", "1": "L"}
_PIL_MASK_CONVERSIONS = {"1": "L", "LA": "L"}  # palette masks keep their indices: any index > 0 is lesion
_DICOM_WINDOW_TAGS = (("00281050", "0028|1050"), ("00281051", "0028|1051"))
_DICOM_PHOTOMETRIC_TAGS = ("00280004", "0028|0004")


def reader_kind(path: str | Path) -> str:
    """``"pil"``, ``"nibabel"``, ``"dicom"`` or ``"itk"`` from the file name; ValueError for other suffixes."""
    name = Path(path).name.lower()
    for suffix in sorted(_SUFFIX_KINDS, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIX_KINDS[suffix]
    raise ValueError(f"Unsupported image file {str(path)!r}: expected one of {', '.join(SUPPORTED_SUFFIXES)}.")


@dataclass(frozen=True)
class ImageHeader:
    """What a file holds, read from its header only.

    Attributes:
        path: the file.
        kind: reader kind (see :func:`reader_kind`).
        spatial_shape: reader order ``(x, y)`` or ``(x, y, z)``; trailing singleton axes of 2D images stored
            as ``(x, y, 1)`` are dropped.
        channels: samples per pixel (1 grey, 3 RGB, ...), after the conversions :class:`ImageLoader` applies.
        frames: number of DICOM frames (1 for everything else).
    """

    path: str
    kind: str
    spatial_shape: tuple[int, ...]
    channels: int
    frames: int = 1

    @property
    def is_volume(self) -> bool:
        """True for a 3D image, from which a slice must be chosen."""
        return len(self.spatial_shape) == 3


def _squeeze_trailing(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def read_header(path: str | Path, mask: bool = False) -> ImageHeader:
    """Read shape and channels from a file's header, without decoding its pixels.

    Args:
        path: an image file with a supported suffix.
        mask: report channels as :class:`ImageLoader` would load the file as a mask (palette images stay
            single-channel indices).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported suffix, or the header cannot be read (the message says why).
    """
    path = Path(path)
    kind = reader_kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {str(path)!r}.")
    try:
        if kind == "pil":
            with Image.open(path) as image:
                conversions = _PIL_MASK_CONVERSIONS if mask else _PIL_IMAGE_CONVERSIONS
                mode = conversions.get(image.mode, image.mode)
                channels = 1 if mask and image.mode == "P" else Image.getmodebands(mode)
                return ImageHeader(str(path), kind, (image.width, image.height), channels)
        if kind == "nibabel":
            shape = tuple(int(s) for s in nib.load(path).shape)
            spatial, extra = shape[:3], shape[3:]
            return ImageHeader(str(path), kind, _squeeze_trailing(spatial), int(np.prod(extra)) if extra else 1)
        if kind == "dicom":
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
            spatial = (int(dataset.Columns), int(dataset.Rows)) + ((frames,) if frames > 1 else ())
            return ImageHeader(str(path), kind, spatial, int(getattr(dataset, "SamplesPerPixel", 1)), frames)
        with _quiet_library_warnings():
            import itk  # imported lazily: loading ITK's modules takes seconds

            image_io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
            if image_io is None:
                raise ValueError("ITK has no reader for this file")
            image_io.SetFileName(str(path))
            image_io.ReadImageInformation()
        shape = tuple(int(image_io.GetDimensions(i)) for i in range(image_io.GetNumberOfDimensions()))
        return ImageHeader(str(path), kind, _squeeze_trailing(shape), int(image_io.GetNumberOfComponents()))
    except (OSError, ValueError, AttributeError, RuntimeError, pydicom.errors.InvalidDicomError,
            ImageFileError) as error:
        raise ValueError(f"Cannot read the header of {str(path)!r} as a {kind} image: {error}") from error


def plane_size(spatial_shape: tuple[int, ...], slice_axis: int | None = None) -> Size:
    """``(height, width)`` of the 2D image (or of a slice of a volume) with reader-order ``spatial_shape``.

    For a volume, the slice across ``slice_axis`` keeps the other two axes in order: the first is ``x``
    (width), the second ``y`` (height). With ``slice_axis=2`` (the default for NIfTI), an axial slice of an
    ``(i, j, k)`` volume has width ``i`` and height ``j``.
    """
    if len(spatial_shape) == 2:
        return int(spatial_shape[1]), int(spatial_shape[0])
    if len(spatial_shape) != 3:
        raise ValueError(f"Expected a 2D or 3D spatial shape, got {spatial_shape}.")
    axis = 2 if slice_axis is None else slice_axis
    if axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2 for a volume, got {slice_axis!r}.")
    width, height = (s for i, s in enumerate(spatial_shape) if i != axis)
    return int(height), int(width)


def _convert_pil_image(image: Image.Image) -> Image.Image:
    target = _PIL_IMAGE_CONVERSIONS.get(image.mode)
    return image.convert(target) if target else image


def _convert_pil_mask(image: Image.Image) -> Image.Image:
    target = _PIL_MASK_CONVERSIONS.get(image.mode)
    return image.convert(target) if target else image


class ImageLoader:
    """Load an image or mask file with the right MONAI reader, as a channel-first ``(C, x, y[, z])`` array.

    Pixel values keep their stored type (``uint8`` stays ``uint8``; 16-bit PNGs come as ``int32``; DICOM
    with a rescale comes as floating point in its rescaled unit, e.g. Hounsfield units), so that intensity
    handling can tell display-ready 8-bit images from raw scanner values.
    """

    def __init__(self) -> None:
        with _quiet_library_warnings():
            self._load = LoadImage(image_only=True, ensure_channel_first=True, dtype=None)
        self._readers = {
            ("pil", False): PILReader(converter=_convert_pil_image),
            ("pil", True): PILReader(converter=_convert_pil_mask),
            ("nibabel", False): NibabelReader(),
            # prune_metadata=False keeps the window and photometric tags (see dicom_display_settings)
            ("dicom", False): PydicomReader(prune_metadata=False),
            ("itk", False): ITKReader(),
        }

    def __call__(self, path: str | Path, mask: bool = False, header: ImageHeader | None = None):
        """Read ``path`` (a mask when ``mask``) and return MONAI's ``MetaTensor`` with the reader's metadata."""
        header = header or read_header(path, mask=mask)
        kind = "itk" if header.kind == "dicom" and header.frames > 1 else header.kind
        reader = self._readers.get((kind, mask)) or self._readers[(kind, False)]
        with _quiet_library_warnings():
            image = self._load(str(path), reader=reader)
        while image.ndim > 3 and image.shape[-1] == 1:  # (C, x, y, 1): a 2D image stored as a volume
            image = image[..., 0]
        return image


@contextmanager
def _quiet_library_warnings():
    """Silence known, harmless library warnings (and only those) around reader calls."""
    with warnings.catch_warnings():
        # 2D DICOMs often lack the patient-orientation tags; the affine is irrelevant for a 2D image.
        warnings.filterwarnings("ignore", message=".*ImageOrientationPatient.*")
        # MONAI registers its optional nvImageCodec DICOM decoder even when it is not installed.
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        # ITK's SWIG bindings emit these DeprecationWarnings while ITK loads its modules.
        warnings.filterwarnings("ignore", message=r"builtin type \w+ has no __module__ attribute",
                                category=DeprecationWarning)
        yield


def _dicom_value(meta: dict, keys: tuple[str, ...]):
    for key in keys:
        value = meta.get(key)
        if isinstance(value, dict):  # pydicom's JSON form: {"vr": "DS", "Value": [40.0]}
            value = (value.get("Value") or [None])[0]
        elif isinstance(value, str):  # ITK's form: "40\\80" for multi-valued tags
            value = value.split("\\")[0].strip()
        if value not in (None, ""):
            return value
    return None


def dicom_display_settings(meta: dict) -> tuple[tuple[float, float] | None, bool]:
    """``(window, monochrome1)`` from a DICOM image's reader metadata.

    Returns:
        ``window`` as ``(center, width)`` from WindowCenter/WindowWidth (the first pair when several are
        stored; ``None`` when absent or not positive), and whether the photometric interpretation is
        MONOCHROME1 (low values bright: the image must be inverted for display).
    """
    center = _dicom_value(meta, _DICOM_WINDOW_TAGS[0])
    width = _dicom_value(meta, _DICOM_WINDOW_TAGS[1])
    window = None
    try:
        if center is not None and width is not None and float(width) > 0:
            window = (float(center), float(width))
    except (TypeError, ValueError):
        window = None
    photometric = _dicom_value(meta, _DICOM_PHOTOMETRIC_TAGS)
    return window, str(photometric or "").strip().upper() == "MONOCHROME1"
