# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric
from PIL import Image

from scripts.baselines.text_blind_unet import (
    EnsureRGBd,
    aggregate,
    evaluate,
    evaluate_checkpoint,
    format_summary,
    load_split,
    predict,
    preprocessing,
    score,
    summarize,
    train,
)
from scripts.data.synthetic import generate_benchmark


def masks(*arrays):
    return torch.tensor(np.array(arrays), dtype=torch.float32)[:, None]


def test_dice_counts_a_correct_no_lesion_as_one():
    from scripts.metrics import mask_dice

    empty, lesion, half = np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))
    lesion[1:3, 1:3] = 1
    half[1:3, 1:2] = 1
    prediction = masks(empty, empty, lesion, lesion, half)
    label = masks(empty, lesion, empty, lesion, lesion)
    np.testing.assert_allclose(mask_dice(prediction, label).numpy(), [1.0, 0.0, 0.0, 1.0, 2 * 2 / (2 + 4)])
    # MONAI's default would drop the empty masks (NaN) and hide false alarms on lesion-free images
    default = DiceMetric(include_background=True, reduction="none")(y_pred=prediction, y=label)[:, 0]
    assert math.isnan(default[0]) and math.isnan(default[2])


def test_ensure_rgb_repeats_grey_and_rejects_other_channel_counts():
    grey = {"image": torch.arange(6.0).reshape(1, 2, 3)}
    out = EnsureRGBd(keys="image")(grey)["image"]
    assert out.shape == (3, 2, 3) and torch.equal(out[0], out[2])
    rgb = torch.rand(3, 2, 3)
    assert torch.equal(EnsureRGBd(keys="image")({"image": rgb})["image"], rgb)
    with pytest.raises(ValueError, match="expected a grey \\(1-channel\\) or RGB \\(3-channel\\) image, got 4"):
        EnsureRGBd(keys="image")({"image": torch.zeros(4, 2, 2)})


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_preprocessing_gives_rgb_in_unit_range_and_binary_masks(tmp_path, mode):
    rng = np.random.default_rng(0)
    shape = (30, 50) if mode == "L" else (30, 50, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(tmp_path / "image.png")
    label = np.zeros((30, 50), dtype=np.uint8)
    label[5:15, 10:30] = 255
    Image.fromarray(label).save(tmp_path / "label.png")
    data = preprocessing(32)({"image": str(tmp_path / "image.png"), "label": str(tmp_path / "label.png")})
    assert data["image"].shape == (3, 32, 32) and data["label"].shape == (1, 32, 32)
    assert 0.0 <= data["image"].min() and data["image"].max() <= 1.0
    assert set(torch.unique(data["label"]).tolist()) == {0.0, 1.0}
    original = preprocessing(0, ("label",))({"label": str(tmp_path / "label.png")})["label"]
    assert original.sum() == 10 * 20  # the original size keeps every pixel of the mask


def test_load_split_names_the_row_that_lacks_a_field(tmp_path):
    record = {"image": "a.png", "label": "a_mask.png", "modality": "CT", "num_targets": 1}
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [dict(record, num_distractors=0), record]}))
    with pytest.raises(ValueError, match=r"training\[1\] \(.*a\.png\) lacks \['num_distractors'\]"):
        load_split(tmp_path / "datalist.json", "training")


class ConstantLogits(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[2:]), self.value)


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    return generate_benchmark(root, {"training": 4, "validation": 2, "test": 3}, seed=2, progress=False)


def test_evaluation_scores_every_record_with_its_references(tiny_benchmark):
    records = load_split(tiny_benchmark, "test")
    nothing = evaluate(ConstantLogits(-10.0), records, spatial_size=32, device="cpu", progress=False)
    assert len(nothing) == len(records) == 6
    for result, record in zip(nothing, records):
        expected = 1.0 if record["num_targets"] == 0 else 0.0
        assert result["dice"] == result["dice_empty"] == expected
        # both findings of each test image are recorded, so the every-lesion reference is defined
        assert 0.0 <= result["dice_all_lesions"] <= 1.0
        if record["num_distractors"] == 0:
            assert result["dice_all_lesions"] == 1.0
    everything = evaluate(ConstantLogits(10.0), records, spatial_size=32, device="cpu", progress=False)
    for result, record in zip(everything, records):
        assert (result["dice"] > 0) == (record["num_targets"] > 0)


def test_scores_follow_the_probability_threshold(tiny_benchmark):
    records = load_split(tiny_benchmark, "test")
    logits = predict(ConstantLogits(0.0), [r["image"] for r in records], spatial_size=16, device="cpu",
                     progress=False)
    assert len(logits) == 3  # the paired records of an image share one prediction
    by_threshold = score(records, logits, thresholds=(0.4, 0.6))
    for everything, nothing, record in zip(by_threshold[0.4], by_threshold[0.6], records):
        assert nothing["dice"] == nothing["dice_empty"]  # probability 0.5 is below 0.6: nothing predicted
        assert (everything["dice"] > 0) == (record["num_targets"] > 0)  # and above 0.4: everything
        assert everything["threshold"] == 0.4 and nothing["threshold"] == 0.6


def test_summaries_group_records_and_aggregate_seeds():
    results = [
        {"modality": "CT", "num_targets": 1, "num_distractors": 0, "dice": 0.8, "dice_empty": 0.0},
        {"modality": "CT", "num_targets": 0, "num_distractors": 2, "dice": 0.0, "dice_empty": 1.0},
        {"modality": "OCT", "num_targets": 2, "num_distractors": 1, "dice": 0.5, "dice_empty": 0.0},
    ]
    summary = summarize(results)
    assert summary["all"]["records"] == 3 and summary["all"]["dice"] == pytest.approx(1.3 / 3)
    assert summary["with_distractors"]["dice"] == pytest.approx(0.25)
    assert summary["without_distractors"]["dice"] == pytest.approx(0.8)
    assert summary["no_targets"]["failure_rate"] == 1.0
    assert summary["per_modality"]["OCT"]["dice"] == 0.5
    assert "dice_all_lesions" not in summary["all"]
    other = summarize([dict(r, dice=r["dice"] / 2) for r in results])
    table = aggregate([{"test": summary}, {"test": other}])
    assert table["all"]["mean"] == pytest.approx(0.75 * 1.3 / 3)
    assert table["all"]["std"] == pytest.approx(np.std([1.3 / 3, 0.65 / 3], ddof=1))
    assert "0.325 ± 0.153" in format_summary(table)


def test_training_smoke_run_trains_saves_and_evaluates(tiny_benchmark, tmp_path):
    kwargs = dict(epochs=2, batch_size=2, spatial_size=32, crop_size=16, channels=(4, 8, 16), val_interval=1,
                  device="cpu", progress=False)
    metrics = train(str(tiny_benchmark), str(tmp_path / "a"), seed=3, **kwargs)
    assert metrics["settings"]["steps"] == 4  # 2 epochs of 2 batches of 2 images
    assert [point["epoch"] for point in metrics["validation_curve"]] == [1, 2]
    assert metrics["threshold"] in metrics["validation_curve"][0]["val_dice_by_threshold"]
    assert all(math.isfinite(point["loss"]) for point in metrics["validation_curve"])
    test = metrics["test"]
    assert test["all"]["records"] == 6
    assert test["with_distractors"]["records"] + test["without_distractors"]["records"] == 6
    assert 0.0 <= test["all"]["dice"] <= 1.0
    for name in ("model.pt", "metrics.json", "test_records.csv"):
        assert (tmp_path / "a" / name).is_file()
    # the saved weights reproduce the reported test summary
    assert evaluate_checkpoint(str(tiny_benchmark), str(tmp_path / "a" / "model.pt"), spatial_size=32,
                               channels=(4, 8, 16), device="cpu") == test
    # and the seed decides the run
    again = train(str(tiny_benchmark), str(tmp_path / "b"), seed=3, **kwargs)
    assert again["validation_curve"] == metrics["validation_curve"] and again["test"] == test
    first = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    second = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(first[name], second[name]) for name in first)
