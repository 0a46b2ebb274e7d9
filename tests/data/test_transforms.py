# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import numpy as np
import pytest
import torch

from scripts.data.coordinates import boxes_from_mask, original_to_mask_boxes
from scripts.data.prompts import parse_completion
from scripts.data.transforms import (
    BoxesFromLabeld,
    LoadImageAndLabeld,
    MLLMViewd,
    RenderTextd,
    SAMViewd,
    ScaleIntensityByModalityd,
    build_transforms,
    intensity_policy,
)
from scripts.networks import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from tests.data.conftest import (
    BOX,
    HEIGHT,
    TINY_GEOMETRY,
    WIDTH,
    mask_picture,
    picture,
    write_dicom,
    write_nifti,
    write_png,
)

ROW = {"modality": "CT", "anatomy": "lung", "disease": "lung nodule", "datalist_section": "training",
       "datalist_index": 4}


def _load(**record):
    return LoadImageAndLabeld()({**ROW, **record})


# ------------------------------------------------------------------------------------------------ loading
@pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")  # ITK's SWIG bindings, on import
@pytest.mark.parametrize("kind", ["png", "nifti", "dicom", "mha"])
def test_every_reader_gives_the_same_picture_in_height_width_order(tmp_path, kind):
    """A non-square picture and its box survive each reader with rows and columns where they belong."""
    if kind == "png":
        image, label = write_png(tmp_path / "i.png", picture()), write_png(tmp_path / "m.png", mask_picture())
    elif kind == "nifti":
        image, label = write_nifti(tmp_path / "i.nii.gz", picture()), write_nifti(tmp_path / "m.nii.gz", mask_picture())
    elif kind == "dicom":
        image = write_dicom(tmp_path / "i.dcm", picture(dtype=np.uint16))
        label = write_png(tmp_path / "m.png", mask_picture())
    else:
        import itk

        image, label = str(tmp_path / "i.mha"), str(tmp_path / "m.mha")
        itk.imwrite(itk.image_from_array(picture()), image)
        itk.imwrite(itk.image_from_array(mask_picture()), label)
    sample = _load(image=image, label=label)
    assert sample["original_size"] == (HEIGHT, WIDTH)
    assert torch.equal(sample["image"][0].double(), torch.from_numpy(picture().astype(np.float64)))
    assert sample["label"].dtype == torch.uint8 and set(sample["label"].unique().tolist()) == {0, 1}
    assert boxes_from_mask(sample["label"]) == [BOX]


def test_volume_slices_along_each_axis(tmp_path):
    volume = np.zeros((HEIGHT, WIDTH, 6), np.int16)  # rows, columns, slices
    volume[..., 4] = picture(0, 100)
    mask = (volume > 0).astype(np.uint8)
    image, label = write_nifti(tmp_path / "v.nii.gz", volume), write_nifti(tmp_path / "m.nii.gz", mask)
    axial = _load(image=image, label=label, slice_index=4)
    assert axial["original_size"] == (HEIGHT, WIDTH) and boxes_from_mask(axial["label"]) == [BOX]
    assert int(_load(image=image, slice_index=3)["image"].max()) == 0
    # across axis 0 (x = column 12): the slice keeps (y, z) -> width HEIGHT (y), height 6 (z)
    sagittal = _load(image=image, label=label, slice_index=12, slice_axis=0)
    assert sagittal["original_size"] == (6, HEIGHT)
    assert boxes_from_mask(sagittal["label"]) == [[BOX[1], 4, BOX[3], 5]]
    # a 2D mask of the slice's size is accepted for a volume
    slice_mask = write_png(tmp_path / "slice_mask.png", mask_picture())
    assert boxes_from_mask(_load(image=image, label=slice_mask, slice_index=4)["label"]) == [BOX]


def test_volume_without_or_with_bad_slice_is_refused_with_the_row(tmp_path):
    image = write_nifti(tmp_path / "v.nii.gz", np.zeros((HEIGHT, WIDTH, 6), np.int16))
    with pytest.raises(ValueError, match=r"row 4 of 'training' .*volume of shape \(30, 20, 6\).*slice_index"):
        _load(image=image)
    with pytest.raises(ValueError, match=r"row 4 .*integer in \[0, 5\]"):
        _load(image=image, slice_index=6)
    with pytest.raises(ValueError, match="slice_axis"):
        _load(image=image, slice_index=1, slice_axis=3)
    flat = write_png(tmp_path / "flat.png", picture())
    with pytest.raises(ValueError, match=r"row 4 .*mask .* is a volume .* the image is 2D"):
        _load(image=flat, label=image)


def test_mask_problems_are_refused_with_the_row(tmp_path):
    image = write_png(tmp_path / "i.png", picture())
    small = write_png(tmp_path / "small.png", np.zeros((HEIGHT, WIDTH - 1), np.uint8))
    with pytest.raises(ValueError, match=r"row 4 of 'training' \(image: .*i.png\).*mask .* size \(20, 29\).*\(20, 30\)"):
        _load(image=image, label=small)
    rgb = write_png(tmp_path / "rgb.png", np.stack([mask_picture()] * 3, -1))
    with pytest.raises(ValueError, match="3 channels; a mask must be a single-channel"):
        _load(image=image, label=rgb)
    with pytest.raises(ValueError, match=r"row 4 .*No such file.*missing.png"):
        _load(image=image, label=str(tmp_path / "missing.png"))


def test_corrupt_image_is_refused_with_the_row(tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(write_png(tmp_path / "full.png", picture()), "rb").read()[:60])
    with pytest.raises(ValueError, match=r"row 4 of 'training' \(image: .*truncated.png\)"):
        _load(image=str(truncated))


def test_empty_mask_is_legal_and_gives_no_boxes(tmp_path):
    sample = _load(image=write_png(tmp_path / "i.png", picture()),
                   label=write_png(tmp_path / "m.png", np.zeros((HEIGHT, WIDTH), np.uint8)))
    assert int(sample["label"].sum()) == 0
    assert BoxesFromLabeld()(sample)["boxes"] == []


def test_inference_row_without_label(tmp_path):
    sample = _load(image=write_png(tmp_path / "i.png", picture()))
    assert "label" not in sample and sample["label_path"] is None
    assert "boxes" not in BoxesFromLabeld()(sample)


# ------------------------------------------------------------------------------------------------ intensity
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("CT", torch.float32, "dicom", (50, 300)), ("window", (50.0, 300.0))),  # explicit window wins
        (("MRI", torch.uint8, "pil"), ("percentiles", None)),
        (("CT", torch.uint8, "pil"), ("as_is", None)),
        (("fundus", torch.uint8, "pil"), ("as_is", None)),
        (("CT", torch.float64, "dicom", None, (30, 350)), ("window", (30.0, 350.0))),  # the DICOM's window
        (("CT", torch.int16, "nibabel", None, None, "lung"), ("window", (-600.0, 1500.0))),
        (("CT", torch.int16, "nibabel", None, None, "abdomen"), ("window", (40.0, 400.0))),
        (("CT", torch.int32, "pil"), ("percentiles", None)),  # 16-bit PNG: unknown offset, not HU
        (("X-ray", torch.int32, "pil"), ("percentiles", None)),
    ],
)
def test_intensity_policy(args, expected):
    assert intensity_policy(*args) == expected


def test_ct_dicom_rescale_and_window_in_hounsfield_units(tmp_path):
    stored = picture(0, 1064, dtype=np.uint16)  # background -1024 HU (air), rectangle 40 HU
    sample = ScaleIntensityByModalityd()(_load(image=write_dicom(tmp_path / "ct.dcm", stored, intercept=-1024.0),
                                               anatomy="abdomen"))
    image = sample["image"]
    assert image.dtype == torch.float32 and sample["intensity_scaling"] == "window(40,400)"
    assert image[0, BOX[1], BOX[0]].item() == pytest.approx(0.5) and image[0, 0, 0].item() == 0.0


def test_dicom_window_and_monochrome1_are_honoured(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", picture(0, 100, dtype=np.uint16), window=(50, 100),
                       photometric="MONOCHROME1", modality="DX")
    sample = ScaleIntensityByModalityd()(_load(image=path, modality="X-ray"))
    assert sample["intensity_scaling"] == "window(50,100)"
    assert sample["image"][0, 0, 0].item() == pytest.approx(1.0)  # 0 is bright in MONOCHROME1
    assert sample["image"][0, BOX[1], BOX[0]].item() == pytest.approx(0.0)
    overridden = ScaleIntensityByModalityd()(_load(image=path, modality="X-ray", window=[100, 200]))
    assert overridden["intensity_scaling"] == "window(100,200)"


def test_mri_percentile_scaling_and_16_bit_png(tmp_path):
    values = np.linspace(0, 60000, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH).astype(np.uint16)
    sample = ScaleIntensityByModalityd()(_load(image=write_png(tmp_path / "mr.png", values), modality="MRI"))
    image = sample["image"]
    assert sample["intensity_scaling"] == "percentiles"
    assert image.min().item() == 0.0 and image.max().item() == 1.0
    low, high = np.percentile(values, [0.5, 99.5])
    expected = (values[HEIGHT // 2, WIDTH // 2] - low) / (high - low)
    assert image[0, HEIGHT // 2, WIDTH // 2].item() == pytest.approx(expected, abs=1e-5)


def test_eight_bit_rgb_is_kept_as_is(tmp_path):
    rgb = np.stack([picture(), picture(5, 100), picture(0, 50)], -1)
    sample = ScaleIntensityByModalityd()(_load(image=write_png(tmp_path / "d.png", rgb), modality="dermoscopy"))
    assert torch.allclose(sample["image"], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)


def test_blank_image_stays_blank_and_bad_window_is_refused(tmp_path):
    blank = write_png(tmp_path / "b.png", np.full((HEIGHT, WIDTH), 7, np.uint16))
    assert ScaleIntensityByModalityd()(_load(image=blank, modality="MRI"))["image"].abs().max() == 0
    with pytest.raises(ValueError, match=r"row 4 .*\[center, width\]"):
        ScaleIntensityByModalityd()(_load(image=blank, window=[40, -1]))


# ------------------------------------------------------------------------------------------------ views
def _scaled(height: int, width: int, channels: int = 1) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {**ROW, "image": torch.rand(channels, height, width, generator=generator)}


def test_mllm_view_keeps_aspect_and_is_uint8_rgb():
    small = MLLMViewd(geometry=TINY_GEOMETRY)(_scaled(HEIGHT, WIDTH))
    view = small["mllm_image"]
    assert view.dtype == torch.uint8 and tuple(view.shape) == (3, HEIGHT, WIDTH)
    assert torch.equal(view[0], view[1]) and torch.equal(view[1], view[2])
    assert small["mllm_view_size"] == (HEIGHT, WIDTH) and small["mllm_input_size"] == TINY_GEOMETRY.input_size((20, 30))
    large = MLLMViewd()(_scaled(1000, 600))
    assert tuple(large["mllm_image"].shape) == (3, 512, 307) and "mllm_input_size" not in large


def test_sam_view_is_512_square_with_sam_normalisation():
    sample = SAMViewd()({**ROW, "image": torch.full((1, HEIGHT, WIDTH), 0.5)})
    sam = sample["sam_image"]
    assert sam.dtype == torch.float32 and tuple(sam.shape) == (3, 512, 512)
    for channel in range(3):
        expected = (0.5 - SAM_PIXEL_MEAN[channel]) / SAM_PIXEL_STD[channel]
        assert torch.allclose(sam[channel], torch.full((512, 512), expected), atol=1e-5)


def test_views_refuse_other_channel_counts():
    with pytest.raises(ValueError, match="row 4 .*2 channels"):
        MLLMViewd()(_scaled(HEIGHT, WIDTH, channels=2))


# ------------------------------------------------------------------------------------------------ boxes and text
def test_given_boxes_are_checked_against_the_image():
    sample = {**ROW, "original_size": (HEIGHT, WIDTH), "boxes": [[1, 2, 31, 4]]}
    with pytest.raises(ValueError, match="row 4 .*outside the image of width 30 and height 20"):
        BoxesFromLabeld()(sample)


def _text_ready(**extra) -> dict:
    return {**ROW, "image_path": "/data/a.png", "original_size": (HEIGHT, WIDTH), "boxes": [BOX],
            "mllm_input_size": (56, 84), **extra}


def test_render_text_answers_in_processor_pixels():
    sample = RenderTextd()(_text_ready())
    assert sample["boxes_mllm"] == [[28, 6, 56, 14]]  # [10, 2, 20, 5] * (84 / 30, 56 / 20)
    assert sample["answer"] == "The lung nodule is located at [28,6,56,14]."
    parsed = parse_completion(sample["completion"])
    assert parsed.valid and parsed.boxes == [[28, 6, 56, 14]]
    assert "lung nodule" in sample["question"]


def test_render_text_is_fixed_per_image_unless_random():
    fixed = [RenderTextd(seed=1)(_text_ready())["completion"] for _ in range(3)]
    assert len(set(fixed)) == 1
    other_image = RenderTextd(seed=1)(_text_ready(image_path="/data/b.png"))["question"]
    questions = {RenderTextd(seed=1)(_text_ready(image_path=f"/data/{i}.png"))["question"] for i in range(30)}
    assert len(questions) > 5 and isinstance(other_image, str)
    random_text = RenderTextd(random_text=True)
    random_text.set_random_state(seed=5)
    first = [random_text(_text_ready())["question"] for _ in range(20)]
    random_text.set_random_state(seed=5)
    assert [random_text(_text_ready())["question"] for _ in range(20)] == first and len(set(first)) > 3


def test_render_text_uses_given_fields_safely():
    sample = RenderTextd()(_text_ready(question="Where is the nodule?", reasoning="Dense spot at [1, 2, 3, 4] <seg>.",
                                       answer="The {disease} sits at {bboxes}."))
    assert sample["question"] == "Where is the nodule?"
    assert sample["reasoning"] == "Dense spot." and sample["answer"] == "The lung nodule sits at [28,6,56,14]."
    assert parse_completion(sample["completion"]).valid
    with pytest.raises(ValueError, match="row 4 .*literal coordinates"):
        RenderTextd()(_text_ready(answer="The nodule is at [10, 2, 20, 5]."))


def test_render_text_for_no_lesion_and_for_inference():
    none = RenderTextd()(_text_ready(boxes=[]))
    assert none["answer"] == "There is no lung nodule in this image." and parse_completion(none["completion"]).no_lesion
    inference = RenderTextd()({**ROW, "image_path": "/data/a.png", "original_size": (HEIGHT, WIDTH)})
    assert "question" in inference and "completion" not in inference and "answer" not in inference
    with pytest.raises(ValueError, match="needs a 'disease'"):
        RenderTextd()({"image_path": "/data/a.png"})


# ------------------------------------------------------------------------------------------------ whole chain
def test_build_transforms_end_to_end(tmp_path, png_pair):
    sample = build_transforms(TINY_GEOMETRY)(png_pair)
    assert "image" not in sample and sample["image_path"] == png_pair["image"]
    assert tuple(sample["sam_image"].shape) == (3, 512, 512) and tuple(sample["label"].shape) == (1, 512, 512)
    assert sample["label"].dtype == torch.float32 and set(sample["label"].unique().tolist()) == {0.0, 1.0}
    assert all(type(sample[k]) is torch.Tensor for k in ("sam_image", "label", "mllm_image"))
    assert sample["boxes"] == [[float(v) for v in BOX]]
    # the 512 x 512 label holds the lesion where the mapped box says (nearest-exact resize)
    label_box = boxes_from_mask(sample["label"])[0]
    np.testing.assert_allclose(label_box, original_to_mask_boxes([BOX], (HEIGHT, WIDTH))[0], atol=1.0)
    assert parse_completion(sample["completion"]).valid
    kept = build_transforms(TINY_GEOMETRY, keep_original=True)(png_pair)
    assert tuple(kept["image"].shape) == (1, HEIGHT, WIDTH)
