# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The synthetic benchmark through the whole data pipeline: validator, transforms, collator and CoreSeg."""

from __future__ import annotations

import json

import pytest
import torch

from scripts.data.collate import CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import load_datalist
from scripts.data.prompts import parse_completion
from scripts.data.synthetic import ensure_benchmark, generate_benchmark
from scripts.data.transforms import build_transforms
from scripts.data.validate import validate_datalist

SIZE = {"training": 3, "validation": 1, "test": 1}


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    return ensure_benchmark(tmp_path_factory.mktemp("synthetic"), SIZE, seed=3, progress=False)


def test_generated_datalist_passes_the_validator_including_pixels(benchmark):
    report = validate_datalist(benchmark, deep=True, progress=False)
    assert report.ok, report.summary()
    assert report.rows == {"training": 3, "validation": 2, "test": 2}


def test_synthetic_records_become_training_batches_the_model_accepts(benchmark, tiny_model):
    records = load_datalist(benchmark, "training")
    transforms = build_transforms(ProcessorGeometry.from_processor(tiny_model.processor), seed=0)
    samples = [transforms(record) for record in records]
    for record, sample in zip(records, samples):
        # The rendered answer names the asked finding and one box per lesion of the record.
        parsed = parse_completion(sample["completion"])
        assert parsed.valid, (record["image"], parsed.error)
        assert len(parsed.boxes) == record["num_targets"]
        assert record["disease"] in parsed.answer
    batch = CoreSegCollator(tiny_model.processor, mode="train")(samples)
    assert batch["label"].shape == (3, 1, 512, 512)
    assert [int(mask.sum() > 0) for mask in batch["label"]] == [int(r["num_targets"] > 0) for r in records]
    with torch.no_grad():
        output = tiny_model(**model_inputs(batch))
    assert torch.isfinite(output.text_loss)
    # Every training answer holds exactly one <seg>, so every sample drives the mask decoder.
    assert output.seg_valid.all()
    assert output.mask_logits.shape == (3, 1, 512, 512)


def test_ensure_benchmark_reuses_the_same_benchmark_and_refuses_another(benchmark):
    folder = benchmark.rsplit("/", 1)[0]
    before = json.loads(open(benchmark).read())
    assert ensure_benchmark(folder, SIZE, seed=3, progress=False) == benchmark
    assert json.loads(open(benchmark).read()) == before
    with pytest.raises(ValueError, match="seed 3 and paired splits .*, not the requested"):
        ensure_benchmark(folder, SIZE, seed=4, progress=False)
    with pytest.raises(ValueError, match="not the requested"):
        ensure_benchmark(folder, "demo", seed=3, progress=False)


def test_ensure_benchmark_refuses_a_datalist_it_cannot_identify(tmp_path):
    (tmp_path / "datalist.json").write_text("{}")
    with pytest.raises(ValueError, match="generation.json"):
        ensure_benchmark(tmp_path, SIZE, seed=0)
    # generate_benchmark itself never writes over an existing datalist unasked.
    with pytest.raises(FileExistsError):
        generate_benchmark(tmp_path, SIZE, seed=0, progress=False)


def test_paired_training_asks_both_findings_of_every_training_image(tmp_path):
    from scripts.data.synthetic.__main__ import main

    main(["generate", "--out_dir", str(tmp_path / "paired"), "--size", "{'training': 2}", "--seed", "1",
          "--paired_splits", "training,validation,test"])
    records = json.loads((tmp_path / "paired" / "datalist.json").read_text())["training"]
    assert len(records) == 4 and records[0]["image"] == records[1]["image"] != records[2]["image"]
    assert {records[0]["disease"], records[1]["disease"]} == {records[0]["disease"], records[0]["distractor"]}
    assert records[0]["label"] != records[1]["label"]
    info = json.loads((tmp_path / "paired" / "generation.json").read_text())
    assert info["paired_splits"] == ["training", "validation", "test"]
    # The same benchmark is reused only when asked with the same pairing.
    assert ensure_benchmark(tmp_path / "paired", {"training": 2}, seed=1,
                            paired_splits=("training", "validation", "test")).endswith("datalist.json")
    with pytest.raises(ValueError, match="paired splits"):
        ensure_benchmark(tmp_path / "paired", {"training": 2}, seed=1)
    with pytest.raises(ValueError, match="Unknown splits"):
        ensure_benchmark(tmp_path / "other", {"training": 2}, seed=1, paired_splits=("train",))
