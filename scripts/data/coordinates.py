# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Boxes, image sizes and the mappings between the three spaces a sample lives in.

Conventions (used everywhere in the bundle):

* A size is ``(height, width)``; an image array is ``(C, H, W)`` (rows first), as torch, SAM and the MLLM
  processor expect. ``x`` indexes columns, ``y`` rows.
* A box is ``[x1, y1, x2, y2]`` in **pixel-edge** coordinates: it covers the columns ``x1 <= c < x2`` and the
  rows ``y1 <= r < y2``. The box of a single pixel ``(r, c)`` is ``[c, r, c + 1, r + 1]`` and a box of an image of
  size ``(H, W)`` lies within ``[0, 0, W, H]``.
* With pixel edges, resizing an image from ``(H, W)`` to ``(H', W')`` (any interpolation with
  ``align_corners=False``, which is what torch, MONAI and the Qwen2-VL processor use) maps ``x`` to
  ``x * W' / W`` and ``y`` to ``y * H' / H`` exactly, so each mapping below is a plain scaling and every round
  trip is exact in floating point. Rounding to integers happens only where text is rendered
  (:func:`round_boxes`).

The three spaces:

``original``
    the image as read from disk (a 2D file, or the chosen slice of a volume).
``mask``
    the SAM view and the label, resized (aspect not kept) to ``mask_size`` = 512 x 512.
``mllm``
    the MLLM processor's input: the MLLM view (longer edge <= 512, aspect kept) resized again by the
    processor's ``smart_resize``. Qwen2.5-VL reads and writes boxes in absolute pixels of this image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

__all__ = [
    "MASK_SIZE",
    "MLLM_VIEW_MAX_EDGE",
    "Box",
    "Size",
    "ProcessorGeometry",
    "boxes_from_mask",
    "box_problems",
    "clip_boxes",
    "mask_to_original_boxes",
    "mllm_input_size",
    "mllm_to_original_boxes",
    "mllm_view_size",
    "original_to_mask_boxes",
    "original_to_mllm_boxes",
    "round_boxes",
    "scale_boxes",
]

Size = tuple[int, int]
Box = list[float]

#: Side of the SAM view and of the training label (MedSAM2's input size).
MASK_SIZE: Size = (512, 512)
#: Longest edge of the MLLM view before the processor's own resize.
MLLM_VIEW_MAX_EDGE = 512


def _as_size(size: Sequence[int], name: str) -> Size:
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"{name} must be (height, width) with two positive integers, got {tuple(size)}.")
    return int(size[0]), int(size[1])


def boxes_from_mask(mask: np.ndarray | torch.Tensor, min_pixels: int = 1) -> list[list[int]]:
    """One box per 8-connected component of a mask, in reading order.

    Args:
        mask: ``(H, W)`` or ``(1, H, W)`` array; every value > 0 is lesion.
        min_pixels: components with fewer pixels are left out (1 keeps every component).

    Returns:
        ``[[x1, y1, x2, y2], ...]`` integer pixel-edge boxes sorted by ``(y1, x1)``; empty for an empty mask.
    """
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"Expected a (H, W) or (1, H, W) mask, got shape {array.shape}.")
    labels, count = ndimage.label(array > 0, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    boxes = [
        [int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)]
        for (rows, cols), size in zip(ndimage.find_objects(labels), sizes)
        if size >= min_pixels
    ]
    return sorted(boxes, key=lambda box: (box[1], box[0], box[3], box[2]))


def box_problems(boxes: object, size: Sequence[int] | None = None) -> list[str]:
    """Say what is wrong with a list of boxes (empty list: nothing).

    Args:
        boxes: the value to check, expected ``[[x1, y1, x2, y2], ...]`` with finite numbers,
            ``x1 < x2`` and ``y1 < y2``.
        size: ``(height, width)`` of the image the boxes belong to; when given, boxes must lie in
            ``[0, 0, width, height]``.
    """
    if not isinstance(boxes, (list, tuple)):
        return [f"boxes must be a list of [x1, y1, x2, y2], got {type(boxes).__name__}"]
    problems = []
    for index, box in enumerate(boxes):
        numbers_ok = isinstance(box, (list, tuple)) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box
        )
        if not numbers_ok:
            problems.append(f"box {index} {box!r} is not [x1, y1, x2, y2] with 4 finite numbers")
            continue
        x1, y1, x2, y2 = box
        if not (x1 < x2 and y1 < y2):
            problems.append(f"box {index} {list(box)} is empty or inverted (need x1 < x2 and y1 < y2)")
        elif size is not None:
            height, width = size
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                problems.append(
                    f"box {index} {list(box)} lies outside the image of width {width} and height {height} "
                    f"(boxes use pixel edges: 0 <= x1 < x2 <= {width}, 0 <= y1 < y2 <= {height})"
                )
    return problems


def scale_boxes(boxes: Sequence[Sequence[float]], from_size: Sequence[int], to_size: Sequence[int]) -> list[Box]:
    """Map pixel-edge boxes from an image of ``from_size`` to the same image resized to ``to_size``."""
    from_height, from_width = _as_size(from_size, "from_size")
    to_height, to_width = _as_size(to_size, "to_size")
    sx, sy = to_width / from_width, to_height / from_height
    return [[box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy] for box in boxes]


def original_to_mask_boxes(
    boxes: Sequence[Sequence[float]], original_size: Sequence[int], mask_size: Sequence[int] = MASK_SIZE
) -> list[Box]:
    """Original image -> mask space (the 512 x 512 SAM view and label)."""
    return scale_boxes(boxes, original_size, mask_size)


def mask_to_original_boxes(
    boxes: Sequence[Sequence[float]], original_size: Sequence[int], mask_size: Sequence[int] = MASK_SIZE
) -> list[Box]:
    """Mask space (512 x 512) -> original image."""
    return scale_boxes(boxes, mask_size, original_size)


def original_to_mllm_boxes(
    boxes: Sequence[Sequence[float]], original_size: Sequence[int], mllm_size: Sequence[int]
) -> list[Box]:
    """Original image -> MLLM processor input (the space of the boxes in the model's answers).

    The intermediate MLLM view cancels out: scaling to the view and then to the processor input is one
    scaling from the original to the processor input.
    """
    return scale_boxes(boxes, original_size, mllm_size)


def mllm_to_original_boxes(
    boxes: Sequence[Sequence[float]], mllm_size: Sequence[int], original_size: Sequence[int]
) -> list[Box]:
    """MLLM processor input (boxes as the model writes them) -> original image."""
    return scale_boxes(boxes, mllm_size, original_size)


def clip_boxes(boxes: Sequence[Sequence[float]], size: Sequence[int]) -> list[Box]:
    """Clip boxes to ``[0, 0, width, height]`` (a predicted box may reach outside the image)."""
    height, width = _as_size(size, "size")
    return [
        [min(max(b[0], 0.0), width), min(max(b[1], 0.0), height), min(max(b[2], 0.0), width),
         min(max(b[3], 0.0), height)]
        for b in boxes
    ]


def round_boxes(boxes: Sequence[Sequence[float]], size: Sequence[int]) -> list[list[int]]:
    """Round pixel-edge boxes to integers for the answer text, keeping each box at least one pixel wide.

    Edges go to the nearest integer (half up), so the rounding error is at most half a pixel per edge and
    unbiased; the box is then clipped to the image, and a box that rounding would make empty grows by one
    pixel (towards the inside of the image), so that a tiny lesion is never dropped from the answer.
    """
    height, width = _as_size(size, "size")
    rounded = []
    for box in boxes:
        x1, y1, x2, y2 = (math.floor(v + 0.5) for v in box)
        x1, x2 = _keep_one_pixel(min(max(x1, 0), width), min(max(x2, 0), width), width)
        y1, y2 = _keep_one_pixel(min(max(y1, 0), height), min(max(y2, 0), height), height)
        rounded.append([x1, y1, x2, y2])
    return rounded


def _keep_one_pixel(low: int, high: int, limit: int) -> tuple[int, int]:
    if high > low:
        return low, high
    return (low, low + 1) if low < limit else (limit - 1, limit)


def mllm_view_size(original_size: Sequence[int], max_edge: int = MLLM_VIEW_MAX_EDGE) -> Size:
    """Size of the MLLM view: the original scaled so that its longer edge is at most ``max_edge``.

    Images whose longer edge is already ``<= max_edge`` keep their size (they are not up-sampled); larger
    ones get exactly ``max_edge`` on the longer side and the other side rounded half up (at least 1).
    """
    height, width = _as_size(original_size, "original_size")
    longest = max(height, width)
    if longest <= max_edge:
        return height, width
    scale = max_edge / longest
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


@dataclass(frozen=True)
class ProcessorGeometry:
    """How a Qwen2-VL-style processor resizes images: the pixel budget and the patch grid.

    It holds only what decides the processor's ``smart_resize``, so dataset transforms can compute the
    processor's input size (and render answers in its pixel space) without carrying the processor itself.

    Attributes:
        patch_size: vision patch size (14 for Qwen2.5-VL).
        merge_size: spatial merge size (2); sizes are multiples of ``patch_size * merge_size``.
        min_pixels: lower bound on ``height * width`` (the processor's ``size["shortest_edge"]``).
        max_pixels: upper bound on ``height * width`` (the processor's ``size["longest_edge"]``).
    """

    patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int

    @property
    def factor(self) -> int:
        """Both sides of the processor's input are multiples of this."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_processor(cls, processor) -> ProcessorGeometry:
        """Read the geometry of a transformers processor (or of its ``image_processor``)."""
        image_processor = getattr(processor, "image_processor", processor)
        size = getattr(image_processor, "size", None)
        try:
            min_pixels = _size_entry(size, "shortest_edge", getattr(image_processor, "min_pixels", None))
            max_pixels = _size_entry(size, "longest_edge", getattr(image_processor, "max_pixels", None))
            return cls(
                patch_size=int(image_processor.patch_size),
                merge_size=int(image_processor.merge_size),
                min_pixels=int(min_pixels),
                max_pixels=int(max_pixels),
            )
        except (AttributeError, TypeError, KeyError) as error:
            raise ValueError(
                f"{type(image_processor).__name__} does not look like a Qwen2-VL image processor (expected "
                "patch_size, merge_size and size={'shortest_edge': min_pixels, 'longest_edge': max_pixels})."
            ) from error

    def input_size(self, view_size: Sequence[int]) -> Size:
        """Size the processor resizes an image of ``view_size`` to (transformers' ``smart_resize``)."""
        height, width = _as_size(view_size, "view_size")
        resized = smart_resize(height, width, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return int(resized[0]), int(resized[1])


def _size_entry(size, key: str, fallback):
    value = None
    if size is not None:
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    value = value if value is not None else fallback
    if value is None:
        raise KeyError(key)
    return value


def mllm_input_size(
    original_size: Sequence[int], geometry: ProcessorGeometry, max_edge: int = MLLM_VIEW_MAX_EDGE
) -> Size:
    """Size of the MLLM processor's input for an original image (view resize, then ``smart_resize``)."""
    return geometry.input_size(mllm_view_size(original_size, max_edge))
