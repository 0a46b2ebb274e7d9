# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import re

import fire
import numpy as np
import pytest

from scripts.data.datalist import DatalistError
from scripts.data.validate import main, validate_cli, validate_datalist
from tests.data.conftest import BOX, HEIGHT, WIDTH, mask_picture, picture, write_datalist, write_nifti, write_png

GOOD = {"image": "image.png", "label": "mask.png", "modality": "CT", "anatomy": "lung", "disease": "lung nodule"}


@pytest.fixture()
def folder(tmp_path):
    write_png(tmp_path / "image.png", picture())
    write_png(tmp_path / "mask.png", mask_picture())
    write_png(tmp_path / "small_mask.png", np.zeros((HEIGHT - 1, WIDTH), np.uint8))
    write_png(tmp_path / "rgb_mask.png", np.stack([mask_picture()] * 3, -1))
    write_png(tmp_path / "empty_mask.png", np.zeros((HEIGHT, WIDTH), np.uint8))
    write_nifti(tmp_path / "volume.nii.gz", np.zeros((HEIGHT, WIDTH, 5), np.int16))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    return tmp_path


def _issues(folder, row, section="training", deep=False):
    path = write_datalist(folder / "datalist.json", {section: [GOOD, row]})
    report = validate_datalist(path, deep=deep, progress=False)
    assert all(issue.index == 1 for issue in report.issues), report.summary()  # the good row stays clean
    return report


def test_a_clean_datalist_passes(folder):
    report = validate_datalist(write_datalist(folder / "d.json", {"training": [GOOD], "test": [{
        "image": "image.png", "modality": "CT", "anatomy": "lung", "question": "Any nodule?"}]}), progress=False)
    assert report.ok and not report.issues and report.rows == {"training": 1, "test": 1}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"image": "missing.png"}, "image", "file not found"),
        ({"image": "corrupt.png"}, "image", "Cannot read the header"),
        ({"image": "scan.xyz"}, "image", "Unsupported image file"),
        ({"label": "missing_mask.png"}, "label", "mask file not found"),
        ({"label": "small_mask.png"}, "label", r"size \(19, 30\) \(height, width\) but the image has size \(20, 30\)"),
        ({"label": "rgb_mask.png"}, "label", "3 channels"),
        ({"boxes": [[10, 2, 31, 5]]}, "boxes", "outside the image of width 30 and height 20"),
        ({"boxes": [[10, 2, 5, 5]]}, "boxes", "empty or inverted"),
        ({"boxes": "10,2,20,5"}, "boxes", "must be a list"),
        ({"modality": "MR"}, "modality", "unknown modality 'MR' \\(did you mean 'MRI'\\?\\)"),
        ({"modality": "ct"}, "modality", "did you mean 'CT'"),
        ({"anatomy": "liver"}, "anatomy", "unknown anatomy 'liver'.*expected one of head, abdomen"),
        ({"anatomy": None}, "anatomy", "missing"),
        ({"disease": ""}, "disease", "missing"),
        ({"disease": "nodule <seg>"}, "disease", "control tags"),
        ({"answer": "There is no nodule.<|im_end|>"}, "answer", "control tags or tokens"),
        ({"answer": "The nodule is located at [1, 2, 3, 4]."}, "answer", "literal coordinates"),
        ({"answer": "Nothing here.", "boxes": [BOX]}, "answer", "no \\{bboxes\\} placeholder"),
        ({"question": 5}, "question", "must be a string"),
        ({"label": None}, "label", "training rows need a mask"),
        ({"window": [40]}, "window", "\\[center, width\\]"),
        ({"image": "volume.nii.gz", "label": None}, "slice_index", "volume of shape \\(30, 20, 5\\)"),
        ({"image": "volume.nii.gz", "label": None, "slice_index": 5}, "slice_index", "outside \\[0, 4\\]"),
        ({"image": "volume.nii.gz", "label": None, "slice_index": 1, "slice_axis": 4}, "slice_axis", "0, 1 or 2"),
    ],
)
def test_each_kind_of_bad_row_is_named(folder, change, field, message):
    # rows without a mask are checked as test rows, where a mask is optional (except the missing-mask case)
    section = "test" if change.get("label", "") is None and field != "label" else "training"
    report = _issues(folder, {**GOOD, **change}, section=section)
    errors = [issue for issue in report.errors if issue.field == field]
    assert errors, report.summary()
    assert any(re.search(message, issue.message) for issue in errors), report.summary()
    assert all(issue.section in ("training", "test") and issue.index == 1 for issue in errors)
    assert not report.ok


def test_warnings_do_not_fail_the_datalist(folder):
    report = _issues(folder, {**GOOD, "question": "Where is the <seg>?", "reasoning": "Dense at [1, 2, 3, 4].",
                              "slice_index": 3})
    assert report.ok and {issue.field for issue in report.warnings} == {"question", "reasoning", "slice_index"}


def test_malformed_rows_and_unknown_sections_are_reported_not_raised(folder):
    path = write_datalist(folder / "d.json", {"training": [GOOD, 42, {"label": "mask.png"}], "train": []})
    report = validate_datalist(path, progress=False)
    messages = [str(issue) for issue in report.issues]
    assert any("training[1]" in m and "must be an object" in m for m in messages)
    assert any("training[2]" in m and "missing 'image'" in m for m in messages)
    assert any("unknown section 'train'" in m and m.startswith("WARNING") for m in messages)
    with pytest.raises(DatalistError, match="2 errors"):
        report.raise_for_errors()


def test_deep_validation_decodes_pixels_and_compares_boxes(folder):
    truncated = folder / "truncated.png"
    truncated.write_bytes((folder / "image.png").read_bytes()[:60])  # valid header, broken pixel data
    assert _issues(folder, {**GOOD, "image": "truncated.png"}).ok  # headers alone cannot see it
    deep = _issues(folder, {**GOOD, "image": "truncated.png"}, deep=True)
    assert not deep.ok and "cannot read the image" in deep.errors[0].message
    mismatch = _issues(folder, {**GOOD, "boxes": [[0, 0, 5, 5]]}, deep=True)
    assert mismatch.ok and "differ from the mask" in mismatch.warnings[0].message
    empty = _issues(folder, {**GOOD, "label": "empty_mask.png", "boxes": [BOX]}, deep=True)
    assert "the mask is empty" in empty.errors[0].message
    assert _issues(folder, {**GOOD, "boxes": [BOX]}, deep=True).ok


def test_command_line_exit_status_and_report(folder, capsys):
    good = write_datalist(folder / "good.json", {"training": [GOOD]})
    bad = write_datalist(folder / "bad.json", {"training": [GOOD, {**GOOD, "modality": "PET"}]})
    assert validate_cli(good, progress=False) == 0
    assert validate_cli(bad, sections="training", progress=False) == 1
    output = capsys.readouterr().out
    assert "0 errors" in output and "ERROR training[1]" in output and "unknown modality 'PET'" in output
    with pytest.raises(SystemExit) as exit_info:  # the fire entry point, as `python -m scripts.data.validate` runs it
        fire.Fire(main, command=["--datalist", bad, "--deep", "--progress=False"])
    assert exit_info.value.code == 1
