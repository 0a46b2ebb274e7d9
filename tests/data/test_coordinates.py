# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import numpy as np
import pytest
import torch
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from scripts.data.coordinates import (
    ProcessorGeometry,
    box_problems,
    boxes_from_mask,
    clip_boxes,
    mask_to_original_boxes,
    mllm_input_size,
    mllm_to_original_boxes,
    mllm_view_size,
    original_to_mask_boxes,
    original_to_mllm_boxes,
    round_boxes,
)
from scripts.networks import build_offline_processor

BOXES = [[3, 5, 40, 17], [0, 0, 1, 1], [299, 119, 300, 120]]
ORIGINAL = (120, 300)  # height, width: non-square on purpose


def test_boxes_from_mask_one_box_per_8_connected_component_in_reading_order():
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[10:13, 2:6] = 255  # lower left
    mask[1:4, 20:25] = 1  # upper right
    mask[5, 5] = 7  # these two pixels touch diagonally: one 8-connected component
    mask[6, 6] = 7
    assert boxes_from_mask(mask) == [[20, 1, 25, 4], [5, 5, 7, 7], [2, 10, 6, 13]]
    assert boxes_from_mask(torch.from_numpy(mask)[None]) == boxes_from_mask(mask)
    assert boxes_from_mask(mask, min_pixels=3) == [[20, 1, 25, 4], [2, 10, 6, 13]]


def test_boxes_from_mask_of_empty_mask_is_empty_and_bad_shapes_are_refused():
    assert boxes_from_mask(np.zeros((4, 5))) == []
    with pytest.raises(ValueError, match="mask"):
        boxes_from_mask(np.zeros((2, 4, 5)))


def test_box_covers_exactly_its_pixels():
    mask = np.zeros((7, 9), dtype=bool)
    mask[2:5, 3:8] = True
    x1, y1, x2, y2 = boxes_from_mask(mask)[0]
    assert mask[y1:y2, x1:x2].all() and mask.sum() == (x2 - x1) * (y2 - y1)


def test_original_mask_round_trip_is_exact_and_scales_each_axis_separately():
    in_mask = original_to_mask_boxes(BOXES, ORIGINAL)
    assert in_mask[0] == pytest.approx([3 * 512 / 300, 5 * 512 / 120, 40 * 512 / 300, 17 * 512 / 120])
    np.testing.assert_allclose(mask_to_original_boxes(in_mask, ORIGINAL), BOXES, rtol=0, atol=1e-9)
    assert original_to_mask_boxes([[0, 0, 300, 120]], ORIGINAL) == [[0, 0, 512, 512]]


def test_original_mllm_round_trip_through_the_real_processor_size():
    geometry = ProcessorGeometry.from_processor(build_offline_processor(max_pixels=224 * 224))
    size = mllm_input_size(ORIGINAL, geometry)
    assert size[0] % 28 == 0 and size[1] % 28 == 0 and size[0] * size[1] <= 224 * 224
    in_mllm = original_to_mllm_boxes(BOXES, ORIGINAL, size)
    np.testing.assert_allclose(mllm_to_original_boxes(in_mllm, size, ORIGINAL), BOXES, rtol=0, atol=1e-9)
    assert original_to_mllm_boxes([[0, 0, 300, 120]], ORIGINAL, size) == [[0, 0, size[1], size[0]]]


def test_rounded_mllm_boxes_come_back_within_half_a_processor_pixel():
    size = (84, 224)
    rounded = round_boxes(original_to_mllm_boxes(BOXES, ORIGINAL, size), size)
    back = mllm_to_original_boxes(rounded, size, ORIGINAL)
    tolerance = np.array([300 / 224, 120 / 84, 300 / 224, 120 / 84]) * 0.5 + 1e-9
    for original, restored in zip(BOXES, back):
        assert np.all(np.abs(np.subtract(original, restored)) <= tolerance)


def test_round_boxes_keeps_tiny_boxes_and_clips():
    assert round_boxes([[2.2, 3.6, 2.4, 3.9]], (10, 10)) == [[2, 4, 3, 5]]
    assert round_boxes([[9.8, 0, 10.2, 1]], (10, 10)) == [[9, 0, 10, 1]]
    assert round_boxes([[-3.0, -1, 12.4, 11]], (10, 10)) == [[0, 0, 10, 10]]
    assert round_boxes([[1.5, 2.5, 3.5, 4.5]], (10, 10)) == [[2, 3, 4, 5]]  # half up, not to even


def test_clip_boxes():
    assert clip_boxes([[-1.5, 2, 30, 4]], (10, 20)) == [[0, 2, 20, 4]]


def test_mllm_view_size_keeps_aspect_and_never_upsamples():
    assert mllm_view_size((120, 300)) == (120, 300)
    assert mllm_view_size((1000, 2000)) == (256, 512)
    assert mllm_view_size((2048, 333)) == (512, 83)  # 333 / 4 = 83.25
    assert mllm_view_size((3, 5000)) == (1, 512)
    with pytest.raises(ValueError, match="height, width"):
        mllm_view_size((0, 10))


def test_processor_geometry_matches_transformers_smart_resize_and_the_processor_grid():
    processor = build_offline_processor(max_pixels=224 * 224)
    geometry = ProcessorGeometry.from_processor(processor)
    assert geometry == ProcessorGeometry(patch_size=14, merge_size=2, min_pixels=4 * 28 * 28, max_pixels=224 * 224)
    for view in [(120, 300), (512, 83), (37, 41), (512, 512)]:
        expected = smart_resize(*view, factor=28, min_pixels=4 * 28 * 28, max_pixels=224 * 224)
        assert geometry.input_size(view) == tuple(expected)
        image = torch.zeros(3, *view, dtype=torch.uint8)
        grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
        assert (int(grid[1]) * 14, int(grid[2]) * 14) == geometry.input_size(view)


def test_processor_geometry_refuses_processors_without_a_pixel_budget():
    class NotQwen:
        patch_size = 16

    with pytest.raises(ValueError, match="Qwen2-VL"):
        ProcessorGeometry.from_processor(NotQwen())


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ("nope", "must be a list"),
        ([[1, 2, 3]], "4 finite numbers"),
        ([[1, 2, 3, float("nan")]], "4 finite numbers"),
        ([[1, True, 3, 4]], "4 finite numbers"),
        ([[5, 2, 3, 4]], "empty or inverted"),
        ([[1, 2, 31, 4]], "outside the image of width 30 and height 20"),
        ([[-1, 2, 3, 4]], "outside"),
    ],
)
def test_box_problems_name_the_problem(boxes, message):
    problems = box_problems(boxes, (20, 30))
    assert problems and message in problems[0]


def test_box_problems_accepts_boxes_touching_the_far_edges():
    assert box_problems([[0, 0, 30, 20], [29.5, 19, 30, 20]], (20, 30)) == []
