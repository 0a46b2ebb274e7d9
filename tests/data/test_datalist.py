# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import json

import pytest

from scripts.data.datalist import (
    INDEX_KEY,
    SECTION_KEY,
    DatalistError,
    describe_record,
    load_datalist,
    prepare_record,
    read_datalist,
)
from tests.data.conftest import write_datalist


def test_paths_are_resolved_against_the_datalist_folder_and_rows_are_tagged(tmp_path):
    absolute = str(tmp_path / "elsewhere" / "b.png")
    path = write_datalist(tmp_path / "datalist.json", {
        "training": [{"image": "images/a.png", "label": "masks/a.png", "modality": "CT", "custom": [1, 2]}],
        "test": [{"image": absolute}, "images/c.png"],
    })
    content = read_datalist(path)
    assert set(content) == {"training", "test"}
    record = content["training"][0]
    assert record["image"] == str(tmp_path / "images" / "a.png") and record["label"] == str(tmp_path / "masks" / "a.png")
    assert record["custom"] == [1, 2] and record[SECTION_KEY] == "training" and record[INDEX_KEY] == 0
    assert content["test"][0]["image"] == absolute
    assert content["test"][1] == {"image": str(tmp_path / "images" / "c.png"), SECTION_KEY: "test", INDEX_KEY: 1}


def test_base_dir_and_single_section(tmp_path):
    path = write_datalist(tmp_path / "d.json", {"validation": [{"image": "a.png"}]})
    assert load_datalist(path, "validation", base_dir="/data")[0]["image"] == "/data/a.png"
    with pytest.raises(DatalistError, match="no section 'training'"):
        load_datalist(path, "training")


def test_the_datalist_file_itself_is_not_modified(tmp_path):
    content = {"training": [{"image": "a.png"}]}
    path = write_datalist(tmp_path / "d.json", content)
    read_datalist(path)
    assert json.loads((tmp_path / "d.json").read_text()) == content


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"train": []}', r"none of the sections \['training', 'validation', 'test'\] \(found keys: \['train'\]\)"),
        ('{"training": {"image": "a.png"}}', "must be a list of records"),
        ('{"training": [{"image": "a.png"}, 3]}', "Row 1 of 'training' must be an object"),
        ('{"training": [{"label": "m.png"}]}', r"row 0 of 'training': missing 'image'"),
        ('{"training": [{"image": 5}]}', r"row 0 of 'training'.*'image' must be a non-empty path string"),
    ],
)
def test_malformed_datalists_name_the_problem(tmp_path, content, message):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(DatalistError, match=message):
        read_datalist(path)


def test_missing_datalist(tmp_path):
    with pytest.raises(FileNotFoundError, match="Datalist not found"):
        read_datalist(tmp_path / "none.json")


def test_describe_record():
    record = prepare_record({"image": "a.png"}, 7, "test", "/data")
    assert describe_record(record) == "row 7 of 'test' (image: /data/a.png)"
    assert describe_record({"image_path": "/x/b.png"}) == "(image: /x/b.png)"
    assert describe_record({}) == "record"
