# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Boxes of a mask's lesions, as the datalist records them.

This is the one place the generator turns masks into boxes, so that it can be swapped for the data
pipeline's own ``boxes_from_mask`` once both exist on one branch; the contract below is what both must keep.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["mask_to_boxes"]

# 8-connectivity: pixels touching by a corner belong to the same lesion.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def mask_to_boxes(mask: np.ndarray) -> list[list[int]]:
    """One box per 8-connected component of a 2-D mask, in reading order.

    Args:
        mask: ``(H, W)`` array; nonzero pixels are lesion.

    Returns:
        ``[[x1, y1, x2, y2], ...]`` in pixel-edge coordinates of the mask: a box covers the columns
        ``x1 <= c < x2`` and rows ``y1 <= r < y2``. Sorted by top edge, then left edge (reading order).
        An empty mask gives ``[]``.

    Raises:
        ValueError: if ``mask`` is not two-dimensional.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"Expected a 2-D (H, W) mask, got an array of shape {mask.shape}.")
    labels, count = ndimage.label(mask != 0, structure=_EIGHT_CONNECTED)
    boxes = [[rows.start, cols.start, rows.stop, cols.stop] for rows, cols in ndimage.find_objects(labels)[:count]]
    boxes.sort()
    return [[int(x1), int(y1), int(x2), int(y2)] for y1, x1, y2, x2 in boxes]
