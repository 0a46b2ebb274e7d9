# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.data.coordinates import boxes_from_mask
from scripts.data.synthetic import (
    LESION_TYPE_ORDER,
    SIZES,
    find_lesion_type,
    generate_benchmark,
    generate_split,
    image_seed,
    lesion_type_at,
    render_phantom,
)
from scripts.data.synthetic.__main__ import main
from scripts.data.vocabulary import ANATOMIES, LESION_TYPES, MODALITIES

TINY = {"training": 3, "validation": 1, "test": 2}
RECORD_FIELDS = {"image", "label", "modality", "anatomy", "disease", "distractor", "boxes", "num_targets",
                 "num_distractors", "noise_level", "target_appearance", "distractor_appearance", "seed", "source"}


def files_of(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    """The demo size, generated once through the command line."""
    out_dir = tmp_path_factory.mktemp("demo")
    main(["generate", "--out_dir", str(out_dir), "--size", "demo", "--seed", "0"])
    return out_dir, json.loads((out_dir / "datalist.json").read_text())


def test_cli_writes_the_demo_datalist_in_monai_layout(demo):
    out_dir, datalist = demo
    assert list(datalist) == ["training", "validation", "test"]
    images = SIZES["demo"]
    assert len(datalist["training"]) == images["training"]
    # validation and test ask both questions of each image
    assert len(datalist["validation"]) == 2 * images["validation"]
    assert len(datalist["test"]) == 2 * images["test"]
    info = json.loads((out_dir / "generation.json").read_text())
    assert info["seed"] == 0 and info["size"] == "demo" and info["images"] == SIZES["demo"]
    # the demo covers every lesion type in training and every modality in each split
    assert {(r["modality"], r["anatomy"]) for r in datalist["training"]} == {
        (lesion.modality, lesion.anatomy) for lesion in LESION_TYPES}
    for split in ("validation", "test"):
        assert {r["modality"] for r in datalist[split]} == set(MODALITIES)


def test_demo_records_are_valid_and_match_their_files(demo):
    out_dir, datalist = demo
    for split, records in datalist.items():
        for row, record in enumerate(records):
            where = f"{split}[{row}] {record['image']}"
            assert set(record) == RECORD_FIELDS, where
            assert record["modality"] in MODALITIES and record["anatomy"] in ANATOMIES, where
            lesion = find_lesion_type(record["modality"], record["disease"], record["distractor"])
            assert lesion.anatomy == record["anatomy"], where
            assert record["source"] == "synthetic" and record["noise_level"] in (0, 1, 2, 3), where
            assert record["target_appearance"] != record["distractor_appearance"], where
            assert not Path(record["image"]).is_absolute() and not Path(record["label"]).is_absolute(), where
            image = np.asarray(Image.open(out_dir / record["image"]))
            label = np.asarray(Image.open(out_dir / record["label"]))
            assert image.dtype == np.uint8 and label.dtype == np.uint8, where
            assert image.ndim == (3 if record["modality"] in ("endoscopy", "dermoscopy", "fundus") else 2), where
            assert label.shape == image.shape[:2], where
            assert set(np.unique(label)) <= {0, 255}, where
            assert record["boxes"] == boxes_from_mask(label), where
            assert record["num_targets"] == len(record["boxes"]), where
            for x1, y1, x2, y2 in record["boxes"]:
                assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0], where


def test_paired_records_show_that_the_question_decides_the_mask(demo):
    out_dir, datalist = demo
    test = datalist["test"]
    for first, second in zip(test[0::2], test[1::2]):
        assert first["image"] == second["image"] and first["seed"] == second["seed"]
        assert (first["disease"], first["distractor"]) == (second["distractor"], second["disease"])
        assert first["num_targets"] == second["num_distractors"]
        assert second["num_targets"] == first["num_distractors"]
        first_mask = np.asarray(Image.open(out_dir / first["label"])) > 0
        second_mask = np.asarray(Image.open(out_dir / second["label"])) > 0
        assert not (first_mask & second_mask).any()  # a mask holds the asked finding only


def test_record_seed_regenerates_its_image(demo):
    out_dir, datalist = demo
    for record in datalist["validation"][::5]:
        lesion = find_lesion_type(record["modality"], record["disease"], record["distractor"])
        phantom = render_phantom(lesion, record["seed"])
        np.testing.assert_array_equal(phantom.image, np.asarray(Image.open(out_dir / record["image"])))
        np.testing.assert_array_equal(phantom.mask(record["disease"]),
                                      np.asarray(Image.open(out_dir / record["label"])))


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    generate_benchmark(tmp_path / "a", TINY, seed=5, progress=False)
    generate_benchmark(tmp_path / "b", TINY, seed=5, progress=False)
    generate_benchmark(tmp_path / "c", TINY, seed=6, progress=False)
    a, b, c = files_of(tmp_path / "a"), files_of(tmp_path / "b"), files_of(tmp_path / "c")
    assert len(a) == 3 + 1 + 2 + 3 + 2 + 4 + 2  # images, labels (training 1 per image, else 2), two json files
    assert a == b
    assert a["datalist.json"] != c["datalist.json"]
    images = [name for name in a if name.startswith("images/")]
    assert all(a[name] != c.get(name) for name in images)


def test_any_subset_regenerates_identically(tmp_path):
    full = generate_split(tmp_path / "full", "test", 4, seed=3, progress=False)
    part = generate_split(tmp_path / "part", "test", [1, 3], seed=3, progress=False)
    assert part == full[2:4] + full[6:8]
    for name in ("images/test/00003.png", part[-1]["label"]):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "part" / name).read_bytes()


def test_workers_do_not_change_the_output(tmp_path):
    serial = generate_split(tmp_path / "serial", "training", 3, seed=1, progress=False)
    parallel = generate_split(tmp_path / "parallel", "training", 3, seed=1, num_workers=2, progress=False)
    assert serial == parallel
    assert files_of(tmp_path / "serial") == files_of(tmp_path / "parallel")


def test_image_seeds_are_distinct_across_splits_and_indices():
    seeds = {image_seed(0, split, index) for split in ("training", "validation", "test") for index in range(200)}
    assert len(seeds) == 600
    assert image_seed(0, "training", 7) != image_seed(1, "training", 7)


def test_lesion_types_cycle_round_robin_over_modalities():
    assert sorted(LESION_TYPE_ORDER, key=LESION_TYPES.index) == list(LESION_TYPES)
    assert [lesion_type_at(i).modality for i in range(8)] == list(MODALITIES)
    assert lesion_type_at(len(LESION_TYPES)) == lesion_type_at(0)


def _question_text(record, rng):
    return {"question": f"Where is the {record['disease']} in this {record['modality']} image?",
            "answer_token": int(rng.integers(1000))}


def test_text_hook_adds_fields_from_a_record_seeded_generator(tmp_path):
    records = generate_split(tmp_path / "a", "validation", 2, seed=0, text_fn=_question_text, progress=False)
    again = generate_split(tmp_path / "b", "validation", 2, seed=0, text_fn=_question_text, progress=False)
    assert records == again
    assert records[0]["question"] == f"Where is the {records[0]['disease']} in this {records[0]['modality']} image?"
    assert set(records[0]) == RECORD_FIELDS | {"question", "answer_token"}
    # the text never changes the pixels
    plain = generate_split(tmp_path / "c", "validation", 2, seed=0, progress=False)
    assert (tmp_path / "a/images/validation/00001.png").read_bytes() == (
        tmp_path / "c/images/validation/00001.png").read_bytes()
    assert [{k: r[k] for k in RECORD_FIELDS} for r in records] == plain


def test_text_hook_may_not_replace_generator_fields(tmp_path):
    with pytest.raises(ValueError, match=r"text_fn returned fields \['boxes'\]"):
        generate_split(tmp_path, "test", 1, text_fn=lambda record, rng: {"boxes": []}, progress=False)
    with pytest.raises(TypeError, match="text_fn must return a mapping"):
        generate_split(tmp_path, "test", 1, text_fn=lambda record, rng: "a question", progress=False)


def test_existing_datalist_is_not_overwritten_by_accident(tmp_path):
    generate_benchmark(tmp_path, {"test": 1}, progress=False)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        generate_benchmark(tmp_path, {"test": 1}, progress=False)
    generate_benchmark(tmp_path, {"test": 1}, overwrite=True, progress=False)


@pytest.mark.parametrize("size, message", [
    ("huge", "Unknown size 'huge'"),
    ({"train": 3}, "unknown splits"),
    ({"test": -1}, "must be non-negative"),
])
def test_bad_sizes_are_clear_errors(tmp_path, size, message):
    with pytest.raises(ValueError, match=message):
        generate_benchmark(tmp_path, size, progress=False)


def test_unknown_split_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Unknown split 'train'"):
        generate_split(tmp_path, "train", 1)


def test_cli_rejects_a_text_hook_that_is_not_a_function(tmp_path):
    with pytest.raises(ValueError, match="is not a callable"):
        main(["generate", "--out_dir", str(tmp_path), "--text_fn", "scripts.data.synthetic.SIZES"])
    with pytest.raises(ValueError, match="is not a callable"):
        main(["generate", "--out_dir", str(tmp_path), "--text_fn", "scripts.data.no_such_module.text"])


def test_cli_passes_a_text_hook_by_dotted_path_and_a_custom_size(tmp_path):
    main(["generate", "--out_dir", str(tmp_path), "--size", "{'test': 1}", "--seed", "1",
          "--text_fn", "tests.data.test_synthetic_benchmark._question_text"])
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert [len(datalist[split]) for split in ("training", "validation", "test")] == [0, 0, 2]
    assert all(record["question"].startswith("Where is the") for record in datalist["test"])
    info = json.loads((tmp_path / "generation.json").read_text())
    assert info["text_fn"] == "tests.data.test_synthetic_benchmark._question_text"

