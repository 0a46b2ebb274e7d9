# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scripts.data.synthetic.figure import plot_phantom_grid


def test_figure_has_one_row_per_modality(tmp_path):
    path = plot_phantom_grid(tmp_path / "nested" / "grid.png", seed=1, columns=1, cell_inches=1.5, dpi=60)
    image = np.asarray(Image.open(path).convert("RGB"))
    height, width = image.shape[:2]
    assert height > 6 * width  # eight rows of one column
    # the outlines are drawn in their two colours
    target = np.all(np.abs(image.astype(int) - (0x39, 0xFF, 0x14)) < 40, axis=-1)
    distractor = np.all(np.abs(image.astype(int) - (0xFF, 0x2B, 0xD6)) < 40, axis=-1)
    assert target.sum() > 20 and distractor.sum() > 20


def test_figure_rejects_an_empty_grid(tmp_path):
    with pytest.raises(ValueError, match="columns must be at least 1"):
        plot_phantom_grid(tmp_path / "grid.png", columns=0)
