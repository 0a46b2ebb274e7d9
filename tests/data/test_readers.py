# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import numpy as np
import pytest
import torch
from PIL import Image

from scripts.data.readers import ImageLoader, dicom_display_settings, plane_size, read_header, reader_kind
from tests.data.conftest import HEIGHT, WIDTH, picture, write_dicom, write_nifti, write_png


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.png", "pil"), ("a.JPG", "pil"), ("a.jpeg", "pil"), ("a.bmp", "pil"), ("a.nii", "nibabel"),
     ("a.nii.gz", "nibabel"), ("a.dcm", "dicom"), ("a.mha", "itk"), ("a.nrrd", "itk"), ("a.tiff", "itk")],
)
def test_reader_kind_by_suffix(name, kind):
    assert reader_kind(name) == kind


def test_unsupported_suffix_says_what_is_supported():
    with pytest.raises(ValueError, match=r"Unsupported image file 'scan\.xyz'.*\.png"):
        reader_kind("scan.xyz")


def test_headers_of_each_format_without_decoding(tmp_path):
    grey = read_header(write_png(tmp_path / "g.png", picture()))
    assert (grey.kind, grey.spatial_shape, grey.channels, grey.is_volume) == ("pil", (WIDTH, HEIGHT), 1, False)
    rgb = read_header(write_png(tmp_path / "c.png", np.stack([picture()] * 3, -1)))
    assert rgb.channels == 3
    nifti = read_header(write_nifti(tmp_path / "v.nii.gz", np.zeros((HEIGHT, WIDTH, 4), np.int16)))
    assert nifti.spatial_shape == (WIDTH, HEIGHT, 4) and nifti.is_volume
    flat = read_header(write_nifti(tmp_path / "f.nii.gz", np.zeros((HEIGHT, WIDTH, 1), np.int16)))
    assert flat.spatial_shape == (WIDTH, HEIGHT) and not flat.is_volume
    dicom = read_header(write_dicom(tmp_path / "a.dcm", picture(dtype=np.uint16)))
    assert (dicom.kind, dicom.spatial_shape, dicom.frames) == ("dicom", (WIDTH, HEIGHT), 1)
    frames = read_header(write_dicom(tmp_path / "m.dcm", np.stack([picture(dtype=np.uint16)] * 3)))
    assert frames.spatial_shape == (WIDTH, HEIGHT, 3) and frames.frames == 3


def test_palette_png_is_rgb_as_an_image_and_indices_as_a_mask(tmp_path):
    path = write_png(tmp_path / "p.png", np.stack([picture()] * 3, -1), mode="P")
    assert read_header(path).channels == 3
    assert read_header(path, mask=True).channels == 1
    loader = ImageLoader()
    assert loader(path).shape[0] == 3
    assert loader(path, mask=True).shape[0] == 1


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such file"):
        read_header(tmp_path / "missing.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not a PNG")
    with pytest.raises(ValueError, match="Cannot read the header of .*corrupt.png"):
        read_header(corrupt)
    bad_dicom = tmp_path / "bad.dcm"
    bad_dicom.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="dicom"):
        read_header(bad_dicom)


def test_plane_size_of_2d_images_and_volume_slices():
    assert plane_size((30, 20)) == (20, 30)
    assert plane_size((30, 20, 5)) == (20, 30)  # axial slice of (i, j, k): width i, height j
    assert plane_size((30, 20, 5), slice_axis=0) == (5, 20)
    with pytest.raises(ValueError, match="slice_axis"):
        plane_size((30, 20, 5), slice_axis=3)


def test_png_8_and_16_bit_keep_values_in_reader_order(tmp_path):
    loader = ImageLoader()
    eight = loader(write_png(tmp_path / "8.png", picture()))
    assert eight.dtype == torch.uint8 and tuple(eight.shape) == (1, WIDTH, HEIGHT)
    assert torch.equal(eight[0].T, torch.from_numpy(picture()))  # MONAI's (x, y) order is the transpose
    sixteen = picture(100, 40000, dtype=np.uint16)
    loaded = loader(write_png(tmp_path / "16.png", sixteen))
    assert int(loaded.max()) == 40000 and torch.equal(loaded[0].T.long(), torch.from_numpy(sixteen.astype(np.int64)))


def test_dicom_applies_rescale_slope_and_intercept(tmp_path):
    stored = picture(0, 1064, dtype=np.uint16)
    image = ImageLoader()(write_dicom(tmp_path / "ct.dcm", stored, slope=1.0, intercept=-1024.0))
    assert image.dtype.is_floating_point
    assert torch.equal(image[0].T, torch.from_numpy(stored.astype(np.float64) - 1024.0).to(image.dtype))


def test_multiframe_dicom_keeps_frames_on_the_last_axis(tmp_path):
    frames = np.stack([picture(0, 10 * k, dtype=np.uint16) for k in range(1, 4)])
    image = ImageLoader()(write_dicom(tmp_path / "mf.dcm", frames, intercept=-5.0))
    assert tuple(image.shape) == (1, WIDTH, HEIGHT, 3)
    for k in range(3):
        assert torch.equal(image[0, ..., k].T.double(), torch.from_numpy(frames[k].astype(np.float64) - 5.0))


def test_dicom_display_settings_from_both_metadata_forms(tmp_path):
    image = ImageLoader()(write_dicom(tmp_path / "w.dcm", picture(dtype=np.uint16), window=(40, 400),
                                      photometric="MONOCHROME1"))
    assert dicom_display_settings(image.meta) == ((40.0, 400.0), True)
    assert dicom_display_settings({"0028|1050": "50\\60", "0028|1051": "350\\500", "0028|0004": "MONOCHROME2"}) == \
        ((50.0, 350.0), False)
    assert dicom_display_settings({}) == (None, False)
    assert dicom_display_settings({"0028|1050": "40", "0028|1051": "0"}) == (None, False)  # width must be > 0


@pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")  # ITK's SWIG bindings, on import
def test_itk_formats_load(tmp_path):
    import itk

    path = str(tmp_path / "image.mha")
    itk.imwrite(itk.image_from_array(picture(dtype=np.int16)), path)  # ITK's array order is (y, x)
    header = read_header(path)
    image = ImageLoader()(path)
    assert header.kind == "itk" and header.spatial_shape == (WIDTH, HEIGHT)
    assert torch.equal(image[0].T.long(), torch.from_numpy(picture().astype(np.int64)))


def test_jpeg_and_bmp_load(tmp_path):
    loader = ImageLoader()
    for name in ("a.jpg", "a.bmp"):
        path = tmp_path / name
        Image.fromarray(np.stack([picture()] * 3, -1)).save(path)
        image = loader(path)
        assert tuple(image.shape) == (3, WIDTH, HEIGHT)
        assert abs(int(image[0, 15, 3]) - 200) < 8 and abs(int(image[0, 0, 0]) - 10) < 8  # JPEG is lossy
