# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""One lesion's box prompt and mask per sample (scripts.data.box_prompts)."""

from __future__ import annotations

import pytest
import torch

from scripts.data.box_prompts import LesionBoxPromptd, build_box_prompt_transforms, has_lesion
from scripts.data.datalist import load_datalist
from scripts.data.synthetic import ensure_benchmark


def two_lesions() -> torch.Tensor:
    label = torch.zeros(1, 32, 40)
    label[0, 2:5, 3:9] = 1  # small: 3 rows x 6 columns
    label[0, 20:30, 10:30] = 1  # large: 10 rows x 20 columns
    return label


def test_each_lesion_comes_with_its_own_box_and_mask_only():
    transform = LesionBoxPromptd(random_lesion=True)
    seen = set()
    for seed in range(20):
        transform.set_random_state(seed=seed)
        out = transform({"label": two_lesions()})
        box = tuple(out["box"].tolist())
        assert box in {(3.0, 2.0, 9.0, 5.0), (10.0, 20.0, 30.0, 30.0)}
        x1, y1, x2, y2 = map(int, box)
        expected = torch.zeros(1, 32, 40)
        expected[0, y1:y2, x1:x2] = 1
        assert torch.equal(out["label"], expected)
        seen.add(box)
    assert len(seen) == 2  # both lesions get picked


def test_evaluation_takes_the_largest_lesion_every_time():
    out = LesionBoxPromptd(random_lesion=False)({"label": two_lesions()})
    assert out["box"].tolist() == [10.0, 20.0, 30.0, 30.0]
    assert out["label"].sum() == 200


def test_jitter_moves_the_box_but_keeps_it_ordered_and_inside_the_image():
    transform = LesionBoxPromptd(random_lesion=False, jitter=0.5)
    moved = 0
    for seed in range(20):
        transform.set_random_state(seed=seed)
        x1, y1, x2, y2 = transform({"label": two_lesions()})["box"].tolist()
        assert 0 <= x1 <= x2 <= 40 and 0 <= y1 <= y2 <= 32
        moved += [x1, y1, x2, y2] != [10.0, 20.0, 30.0, 30.0]
    assert moved == 20


def test_an_empty_or_misshapen_label_is_refused_with_the_record_named():
    with pytest.raises(ValueError, match="holds no lesion"):
        LesionBoxPromptd()({"label": torch.zeros(1, 8, 8), "image": "a.png"})
    with pytest.raises(ValueError, match=r"expected a \(1, H, W\) label"):
        LesionBoxPromptd()({"label": torch.zeros(8, 8)})
    with pytest.raises(ValueError, match="jitter"):
        LesionBoxPromptd(jitter=-0.1)


def test_has_lesion_reads_counts_then_boxes_and_keeps_unknown_records():
    assert has_lesion({"num_targets": 2}) and not has_lesion({"num_targets": 0, "boxes": [[0, 0, 1, 1]]})
    assert has_lesion({"boxes": [[0, 0, 1, 1]]}) and not has_lesion({"boxes": []})
    assert has_lesion({"label": "x.png"})


def test_benchmark_records_become_box_prompt_samples(tmp_path):
    datalist = ensure_benchmark(tmp_path, {"training": 6, "validation": 1, "test": 1}, seed=1, progress=False)
    records = [r for r in load_datalist(datalist, "training") if has_lesion(r)]
    assert records
    sample = build_box_prompt_transforms(64, random_lesion=False)(records[0])
    assert set(sample) == {"sam_image", "label", "box"}
    assert sample["sam_image"].shape == (3, 64, 64) and sample["label"].shape == (1, 64, 64)
    x1, y1, x2, y2 = map(int, sample["box"].tolist())
    inside = sample["label"][0, y1:y2, x1:x2]
    assert inside.sum() == sample["label"].sum() > 0  # the mask lies in its box
