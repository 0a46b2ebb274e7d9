# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Box-prompt samples for training SAM2 on a datalist's lesion masks (MedSAM's recipe).

A sample is one lesion: the box of one 8-connected component of the record's label, optionally jittered as in
SAM's and MedSAM's training, and that component alone as the target mask. When an image holds several lesions,
a mask drawn from the image alone is wrong for most of its prompts, so the decoder has to read the box.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureTyped,
    MapTransform,
    Randomizable,
    Resized,
    SelectItemsd,
)
from scipy import ndimage

from .datalist import describe_record
from .transforms import LoadImageAndLabeld, SAMViewd, ScaleIntensityByModalityd

__all__ = ["LesionBoxPromptd", "build_box_prompt_transforms", "has_lesion"]


def has_lesion(record: Mapping[str, object]) -> bool:
    """Whether a datalist record's label holds a lesion, by its ``num_targets`` or ``boxes``; a record that
    states neither is assumed to (:class:`LesionBoxPromptd` raises when it does not)."""
    if record.get("num_targets") is not None:
        return int(record["num_targets"]) > 0
    if record.get("boxes") is not None:
        return len(record["boxes"]) > 0
    return True


class LesionBoxPromptd(Randomizable, MapTransform):
    """Turn a label into one lesion's box prompt and mask.

    Picks one 8-connected component of the ``(1, H, W)`` label (at random, or the largest one when
    ``random_lesion`` is off), writes its box ``[x1, y1, x2, y2]`` (pixel edges, float32) to ``box_key`` and
    replaces the label by that component. Box jitter moves each side by a normal draw with standard deviation
    ``jitter`` times the box's width or height, clipped to the image.

    Args:
        label_key: the label to read and replace.
        box_key: where the box goes.
        random_lesion: choose the lesion at random (training) or take the largest one (evaluation).
        jitter: standard deviation of the box jitter, as a fraction of the box's side (0: exact boxes).

    Raises:
        ValueError: the label is not ``(1, H, W)`` or holds no lesion.
    """

    def __init__(
        self, label_key: str = "label", box_key: str = "box", random_lesion: bool = True, jitter: float = 0.0
    ) -> None:
        MapTransform.__init__(self, keys=label_key)
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}.")
        self.label_key, self.box_key = label_key, box_key
        self.random_lesion, self.jitter = random_lesion, jitter

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        label = torch.as_tensor(d[self.label_key])
        if label.ndim != 3 or label.shape[0] != 1:
            raise ValueError(f"{describe_record(d)}: expected a (1, H, W) label, got shape {tuple(label.shape)}.")
        components, count = ndimage.label(label[0].cpu().numpy() > 0, structure=np.ones((3, 3), dtype=bool))
        if count == 0:
            raise ValueError(f"{describe_record(d)}: the label holds no lesion, so there is nothing to prompt; "
                             "leave lesion-free records out (scripts.data.box_prompts.has_lesion).")
        if self.random_lesion:
            chosen = int(self.R.randint(1, count + 1))
        else:
            chosen = int(np.argmax(ndimage.sum_labels(np.ones_like(components), components, np.arange(1, count + 1)))) + 1
        rows, cols = ndimage.find_objects(components)[chosen - 1]
        box = np.array([cols.start, rows.start, cols.stop, rows.stop], dtype=np.float64)
        if self.jitter:
            sides = np.array([cols.stop - cols.start, rows.stop - rows.start] * 2, dtype=np.float64)
            box = box + self.R.normal(0.0, self.jitter, 4) * sides
            height, width = components.shape
            box = np.clip(box, 0, [width, height, width, height])
            box = np.concatenate([np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])])
        d[self.box_key] = torch.as_tensor(box, dtype=torch.float32)
        d[self.label_key] = torch.as_tensor(components == chosen, dtype=label.dtype).unsqueeze(0)
        return d


def build_box_prompt_transforms(size: int, random_lesion: bool = True, jitter: float = 0.0) -> Compose:
    """Record -> ``{"sam_image": (3, size, size), "label": (1, size, size), "box": (4,)}``, with the same reading, intensity scaling and SAM view as :func:`scripts.data.transforms.build_transforms`.

    Args:
        size: side of the SAM input and of the mask.
        random_lesion, jitter: see :class:`LesionBoxPromptd`.
    """
    return Compose([
        LoadImageAndLabeld(),
        ScaleIntensityByModalityd(),
        SAMViewd(size=size),
        CastToTyped(keys="label", dtype=torch.float32),
        Resized(keys="label", spatial_size=(size, size), mode="nearest-exact"),
        EnsureTyped(keys=["label", "sam_image"], track_meta=False),
        LesionBoxPromptd(random_lesion=random_lesion, jitter=jitter),
        SelectItemsd(keys=["sam_image", "label", "box"]),  # the record's lists of boxes etc. do not collate
    ])
