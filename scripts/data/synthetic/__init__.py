# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Synthetic complex-lesion benchmark: phantoms in ComLesion's 8 modalities and 9 anatomies.

Every image shows one lesion type of :data:`scripts.data.vocabulary.LESION_TYPES` in its organ context, with 0-3
lesions of the disease and 0-3 of its paired finding, which look different in a way a reader can name. The
record asks for one of the two; its mask holds that finding only, and the other one is the distractor, so that
the question, not the image alone, decides the mask. Command line::

    python -m scripts.data.synthetic generate --out_dir data/synthetic --size demo --seed 0
    python -m scripts.data.synthetic figure --out_path docs/images/synthetic_phantoms.png
"""

from __future__ import annotations

from .benchmark import (
    DATALIST_NAME,
    LESION_TYPE_ORDER,
    PAIRED_SPLITS,
    SIZES,
    SPLITS,
    TextFn,
    ensure_benchmark,
    find_lesion_type,
    generate_benchmark,
    generate_split,
    image_seed,
    lesion_type_at,
    make_records,
)
from .findings import FINDING_STYLES, FindingStyle, appearance, style_of
from .phantom import Lesion, Phantom, render_phantom

__all__ = [
    "DATALIST_NAME",
    "LESION_TYPE_ORDER",
    "PAIRED_SPLITS",
    "SIZES",
    "SPLITS",
    "TextFn",
    "find_lesion_type",
    "generate_benchmark",
    "ensure_benchmark",
    "generate_split",
    "image_seed",
    "lesion_type_at",
    "make_records",
    "FINDING_STYLES",
    "FindingStyle",
    "appearance",
    "style_of",
    "Lesion",
    "Phantom",
    "render_phantom",
]
