# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
from __future__ import annotations

import numpy as np
import pytest

from scripts.data.synthetic.boxes import mask_to_boxes


def test_empty_mask_has_no_boxes():
    assert mask_to_boxes(np.zeros((8, 9), dtype=np.uint8)) == []


def test_box_is_in_pixel_edge_coordinates():
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[3, 4] = 255
    mask[5:8, 6:11] = 255
    # one pixel at row 3, column 4 covers x in [4, 5) and y in [3, 4)
    assert mask_to_boxes(mask) == [[4, 3, 5, 4], [6, 5, 11, 8]]


def test_diagonal_neighbours_are_one_lesion():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True
    assert mask_to_boxes(mask) == [[1, 1, 4, 4]]


def test_boxes_come_in_reading_order():
    mask = np.zeros((20, 40), dtype=np.uint8)
    mask[5:7, 10:12] = 1  # second row of lesions, right
    mask[2:4, 30:33] = 1  # top
    mask[5:9, 1:3] = 1  # second row, left
    assert mask_to_boxes(mask) == [[30, 2, 33, 4], [1, 5, 3, 9], [10, 5, 12, 7]]


def test_boxes_are_plain_ints_for_json():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[1:3, 1:3] = 255
    assert all(type(value) is int for value in mask_to_boxes(mask)[0])


@pytest.mark.parametrize("shape", [(4,), (2, 4, 4), (4, 4, 3)])
def test_rejects_masks_that_are_not_2d(shape):
    with pytest.raises(ValueError, match=r"2-D \(H, W\) mask"):
        mask_to_boxes(np.zeros(shape))
