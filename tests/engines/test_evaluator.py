# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import json

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import DiceMetric
from PIL import Image

from scripts.data.collate import CoreSegCollator
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.transforms import build_transforms
from scripts.engines import CoreSegEvaluator, EvaluationReportHandler, GenerationInferer


def _records(tmp_path, count=3):
    rng = np.random.default_rng(0)
    records = []
    for index in range(count):
        image = rng.integers(0, 255, size=(48 + 8 * index, 64), dtype=np.uint8)
        mask = np.zeros_like(image)
        if index % 2 == 0:  # odd rows have no lesion
            mask[10:20, 12:30] = 255
        Image.fromarray(image).save(tmp_path / f"image_{index}.png")
        Image.fromarray(mask).save(tmp_path / f"mask_{index}.png")
        records.append({"image": str(tmp_path / f"image_{index}.png"), "label": str(tmp_path / f"mask_{index}.png"),
                        "modality": "CT", "anatomy": ["lung", "head", "abdomen"][index], "disease": "tumor",
                        "datalist_section": "test", "datalist_index": index})
    return records


def _loader(model, records, mode="generate"):
    dataset = Dataset(records, transform=build_transforms(ProcessorGeometry.from_processor(model.processor)))
    return DataLoader(dataset, batch_size=2, collate_fn=CoreSegCollator(model.processor, mode=mode))


def test_evaluator_generates_scores_and_reports(tiny_model, tmp_path):
    records = _records(tmp_path)
    report = EvaluationReportHandler(output_dir=tmp_path / "report", num_overlays=1)
    evaluator = CoreSegEvaluator(
        device=torch.device("cpu"), val_data_loader=_loader(tiny_model, records), network=tiny_model,
        # MONAI's MeanDice handler keeps DiceMetric's ignore_empty=True (empty masks -> NaN -> skipped): wrap the
        # metric with ignore_empty=False instead, the convention of the report
        key_val_metric={"val_mean_dice": IgniteMetricHandler(
            metric_fn=DiceMetric(include_background=True, reduction="mean", ignore_empty=False),
            output_transform=from_engine(["pred", "label"]))},
        val_handlers=[report], inferer=GenerationInferer(max_new_tokens=4),
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    # MONAI's MeanDice over the run and the report's mDice are the same number
    assert metrics["mDice"] == pytest.approx(metrics["val_mean_dice"])
    assert len(report.scores) == 3
    # an untrained model with 4 new tokens never writes a valid answer: every sample is a failure
    assert metrics["failure_rate"] == 1.0 and metrics["format_valid_rate"] == 0.0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["samples"] == 3 and summary["dice_by_anatomy"]["head"] is not None
    for name in ("metrics.csv", "table.md", "dice_by_group.png", "overlays_best_worst.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert [s.anatomy for s in report.scores] == ["lung", "head", "abdomen"]
    assert report.scores[1].gt_pixels == 0 and report.scores[0].gt_pixels > 0


def test_evaluator_refuses_training_batches(tiny_model, tmp_path):
    evaluator = CoreSegEvaluator(device=torch.device("cpu"), network=tiny_model,
                                 val_data_loader=_loader(tiny_model, _records(tmp_path, 2), mode="train"))
    with pytest.raises(ValueError, match="mode='generate'"):
        evaluator.run()
