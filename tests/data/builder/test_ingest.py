# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Ingest: folders and datalists, 2D images and lesion-bearing slices of volumes, and the skip report."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from scripts.data.builder.ingest import IngestReport, SourceSpec, ingest_source, ingest_sources, lesion_slices
from scripts.data.validate import validate_datalist


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def folder_source(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    lesion = np.zeros((20, 30), np.uint8)
    lesion[4:8, 10:15] = 255
    lesion[12:15, 2:4] = 255
    png(images / "a.png", np.full((20, 30), 80))
    png(masks / "a_seg.png", lesion)
    png(images / "sub" / "b.png", np.full((20, 30), 80))  # nested folders are matched too
    png(masks / "sub" / "b_seg.png", np.zeros((20, 30)))  # empty mask
    png(images / "c.png", np.full((20, 30), 80))  # no mask
    (images / "d.png").write_bytes(b"not a png")
    png(masks / "d_seg.png", lesion)
    png(images / "e.png", np.full((10, 30), 80))
    png(masks / "e_seg.png", lesion)  # size mismatch
    (images / "notes.txt").write_text("not an image")
    (tmp_path / "meta.csv").write_text("image,disease,window\na.png,hepatic cyst,\"[40, 400]\"\n")
    return SourceSpec(name="lab", images=str(images), masks=str(masks), mask_suffix="_seg", modality="CT",
                      anatomy="abdomen", disease="liver tumor", metadata_csv=str(tmp_path / "meta.csv"))


def test_folder_source_gives_records_and_says_what_was_skipped(folder_source, tmp_path):
    report = IngestReport()
    records = ingest_source(folder_source, report, progress=False)
    assert len(records) == 1
    record = records[0]
    assert record["image"] == str(tmp_path / "images" / "a.png")
    assert record["label"] == str(tmp_path / "masks" / "a_seg.png")
    assert (record["modality"], record["anatomy"], record["source"]) == ("CT", "abdomen", "lab")
    assert record["disease"] == "hepatic cyst" and record["window"] == [40.0, 400.0]  # the CSV overrides
    assert record["boxes"] == [[10, 4, 15, 8], [2, 12, 4, 15]]
    reasons = {item.image.rsplit("/", 1)[-1]: item.reason for item in report.skipped}
    assert set(reasons) == {"b.png", "c.png", "d.png", "e.png", "notes.txt"}
    assert reasons["b.png"].startswith("empty mask")
    assert reasons["c.png"].startswith("no mask") and "c_seg" in reasons["c.png"]
    assert reasons["d.png"].startswith("unreadable image")
    assert reasons["e.png"].startswith("invalid record") and "size" in reasons["e.png"]
    assert reasons["notes.txt"].startswith("unsupported format")
    assert report.reasons()["lab"] == {"empty mask": 1, "no mask": 1, "unreadable image": 1, "invalid record": 1,
                                       "unsupported format": 1}
    path = report.write(tmp_path / "report.json")
    assert json.loads(path.read_text())["skipped_per_source"] == report.to_dict()["skipped_per_source"]


def test_empty_masks_can_be_kept(folder_source):
    folder_source.keep_empty = True
    records = ingest_source(folder_source, progress=False)
    assert sorted(r["image"].rsplit("/", 1)[-1] for r in records) == ["a.png", "b.png"]
    assert next(r for r in records if r["image"].endswith("b.png"))["boxes"] == []


def test_volumes_give_their_lesion_bearing_slices(tmp_path):
    volume = np.random.default_rng(0).normal(40, 5, (32, 24, 8)).astype(np.float32)
    mask = np.zeros((32, 24, 8), np.uint8)
    mask[5:11, 2:7, 3:6] = 1  # x 5..10, y 2..6 on slices 3, 4, 5
    mask[20:22, 10:12, 5] = 1
    for name, array in (("vol.nii.gz", volume), ("vol_mask.nii.gz", mask)):
        folder = tmp_path / ("masks" if "mask" in name else "images")
        folder.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4)), folder / name.replace("_mask", ""))
    spec = SourceSpec(name="ct", images=str(tmp_path / "images"), masks=str(tmp_path / "masks"), modality="CT",
                      anatomy="abdomen", disease="liver tumor")
    records = ingest_source(spec, progress=False)
    assert [r["slice_index"] for r in records] == [3, 4, 5] and all(r["slice_axis"] == 2 for r in records)
    assert records[0]["boxes"] == [[5, 2, 11, 7]]  # (x1, y1, x2, y2) of the slice, x the first voxel axis
    assert records[2]["boxes"] == [[5, 2, 11, 7], [20, 10, 22, 12]]
    spec.max_slices_per_volume = 2
    assert [r["slice_index"] for r in ingest_source(spec, progress=False)] == [3, 5]
    # the records load through the training pipeline's validation
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": records}))
    assert validate_datalist(datalist).ok


def test_lesion_slices_counts_pixels_per_slice():
    mask = np.zeros((4, 4, 6), np.uint8)
    mask[0, 0, 1] = 1
    mask[:2, :2, 3] = 1
    mask[:, :, 5] = 1
    assert lesion_slices(mask, axis=2) == [1, 3, 5]
    assert lesion_slices(mask, axis=2, min_pixels=4) == [3, 5]
    assert lesion_slices(mask, axis=2, max_slices=2) == [1, 5]
    assert lesion_slices(mask, axis=0) == [0, 1, 2, 3]


def test_datalist_source_keeps_row_fields_and_reports_bad_rows(tmp_path):
    lesion = np.zeros((16, 16), np.uint8)
    lesion[3:6, 3:6] = 1
    for name in ("x", "y", "z"):
        png(tmp_path / "img" / f"{name}.png", np.full((16, 16), 100))
        png(tmp_path / "lab" / f"{name}.png", lesion)
    rows = [
        {"image": "img/x.png", "label": "lab/x.png", "disease": "polyp", "patient": "P1"},
        {"image": "img/y.png"},                                            # no label
        {"image": "img/z.png", "label": "lab/z.png", "modality": "MR"},    # unknown modality
        ["not", "an", "object"],
    ]
    (tmp_path / "dl.json").write_text(json.dumps({"training": rows[:2], "validation": rows[2:]}))
    spec = SourceSpec(name="endo", datalist=str(tmp_path / "dl.json"), modality="endoscopy", anatomy="abdomen",
                      disease="adenoma")
    records, report = ingest_sources([spec], progress=False)
    assert len(records) == 1 and records[0]["disease"] == "polyp" and records[0]["patient"] == "P1"
    assert records[0]["image"] == str(tmp_path / "img" / "x.png")
    reasons = sorted(item.reason for item in report.skipped)
    assert reasons[0].startswith("invalid record: modality: unknown modality 'MR' (did you mean 'MRI'?)")
    assert reasons[1].startswith("malformed row") and reasons[2].startswith("no mask")
    spec.sections = ["test"]
    with pytest.raises(ValueError, match="has no section .test."):
        ingest_source(spec, progress=False)


def test_specs_are_checked():
    with pytest.raises(ValueError, match="exactly one of 'images'"):
        SourceSpec(name="x")
    with pytest.raises(ValueError, match="needs a 'masks' folder"):
        SourceSpec(name="x", images="/a")
    with pytest.raises(ValueError, match="Unknown source settings"):
        SourceSpec.from_mapping({"name": "x", "datalist": "d.json", "modalty": "CT"})
    with pytest.raises(ValueError, match="unique"):
        ingest_sources([SourceSpec(name="x", datalist="a.json"), SourceSpec(name="x", datalist="b.json")])
    with pytest.raises(FileNotFoundError, match="images folder"):
        ingest_source(SourceSpec(name="x", images="/does/not/exist", masks="/nope"), progress=False)
