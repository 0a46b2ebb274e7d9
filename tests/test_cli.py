# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import json

import numpy as np
from PIL import Image

from scripts.cli import demo, phantom_image


def test_demo_runs_the_bundle_network_end_to_end(tmp_path, capsys):
    demo(output_dir=str(tmp_path), max_new_tokens=6)
    summary = json.loads((tmp_path / "result.json").read_text())
    assert set(summary) >= {"question", "completion", "seg_count", "format_valid", "mask_pixels"}
    assert summary["format_valid"] == (summary["seg_count"] == 1)
    image, mask = Image.open(tmp_path / "image.png"), Image.open(tmp_path / "mask.png")
    assert image.size == mask.size
    assert bool((np.asarray(mask) > 0).any()) == (summary["mask_pixels"] > 0)
    assert "untrained" in capsys.readouterr().out


def test_phantom_is_deterministic():
    assert np.array_equal(np.asarray(phantom_image(seed=3)), np.asarray(phantom_image(seed=3)))
    assert not np.array_equal(np.asarray(phantom_image(seed=3)), np.asarray(phantom_image(seed=4)))
