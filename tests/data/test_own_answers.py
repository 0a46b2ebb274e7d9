# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import json

import pytest
import torch

from scripts.data.own_answers import OWN_ANSWERS_FORMAT, OwnAnswers, UseOwnAnswersd, answer_key, usable_completion
from scripts.data.prompts import parse_completion
from scripts.data.transforms import build_transforms
from tests.data.conftest import TINY_GEOMETRY

OWN = ("<think> I look at the lung. </think><answer> The lung nodule is located at [30,9,12,40]. <seg> "
       "</answer>")


def test_answer_key_is_the_same_for_the_record_and_its_sample():
    record = {"image": "/data/a.nii.gz", "disease": "liver tumor", "slice_index": 7, "slice_axis": 2}
    sample = {**record, "image": torch.zeros(1, 4, 4), "image_path": "/data/a.nii.gz"}
    assert answer_key(record) == answer_key(sample) == "/data/a.nii.gz|liver tumor|2|7"
    assert answer_key({**record, "disease": "liver cyst"}) != answer_key(record)
    assert answer_key({**record, "slice_index": 8}) != answer_key(record)
    with pytest.raises(ValueError, match="row 3 of 'training'.*needs an image path"):
        answer_key({"image": torch.zeros(1), "datalist_section": "training", "datalist_index": 3})


@pytest.mark.parametrize("completion, usable", [
    (OWN, True),  # boxes with corners out of order: a format failure, still the text the model writes
    ("<think> no answer </think>", False),  # no <seg>: nothing to decode a mask from
    ("<answer> a <seg> b <seg> </answer>", False),
    ("<answer> x <seg> </answer><|im_end|>", False),  # the collator refuses control tokens
    ("<answer> x <seg> <|image_pad|> </answer>", False),
    (None, False),
])
def test_usable_completion(completion, usable):
    assert usable_completion(completion) is usable


def test_own_answers_round_trip_and_refuse_other_files(tmp_path):
    own = OwnAnswers(answers={"k": {"question": "Q?", "completion": OWN}, "j": {"question": "Q?", "completion": "x"}},
                     source={"weights": "abc", "seed": 0})
    path = own.save(tmp_path / "run" / "own_answers.json")
    assert not list(path.parent.glob(".*.tmp"))  # written atomically through a temporary file
    loaded = OwnAnswers.load(path)
    assert loaded == own and len(loaded) == 2 and loaded.num_usable == 1

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*delete it"):
        OwnAnswers.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"format": OWN_ANSWERS_FORMAT + 1, "answers": {}, "source": {}}))
    with pytest.raises(ValueError, match="not an own-answers cache"):
        OwnAnswers.load(tmp_path / "old.json")
    (tmp_path / "rows.json").write_text(json.dumps({"format": OWN_ANSWERS_FORMAT, "source": {},
                                                    "answers": {"k": {"question": "Q?"}}}))
    with pytest.raises(ValueError, match="'question', 'completion'"):
        OwnAnswers.load(tmp_path / "rows.json")


def test_use_own_answers_replaces_usable_text_and_keeps_the_reference_otherwise():
    sample = {"image_path": "/data/a.png", "disease": "lung nodule", "question": "ref Q", "completion": "ref C",
              "label": torch.ones(1, 2, 2)}
    other = {**sample, "image_path": "/data/b.png"}
    answers = {answer_key(sample): {"question": "own Q", "completion": OWN},
               answer_key(other): {"question": "own Q", "completion": "<think> cut short"}}
    transform = UseOwnAnswersd(OwnAnswers(answers=answers))
    used = transform(sample)
    assert (used["question"], used["completion"], used["text_source"]) == ("own Q", OWN, "own")
    assert used["label"] is sample["label"] and sample["completion"] == "ref C"  # the input is not changed
    kept = transform(other)
    assert (kept["question"], kept["completion"], kept["text_source"]) == ("ref Q", "ref C", "reference")
    with pytest.raises(KeyError, match=r"no own answer for '/data/c.png\|lung nodule.*Delete it"):
        transform({**sample, "image_path": "/data/c.png"})


def test_build_transforms_puts_the_own_answer_after_the_rendered_text(png_pair):
    reference = build_transforms(TINY_GEOMETRY, random_text=True)(png_pair)
    own = {answer_key(png_pair): {"question": "Where is the lung nodule?", "completion": OWN}}
    sample = build_transforms(TINY_GEOMETRY, random_text=True, own_answers=own)(png_pair)
    assert sample["question"] == "Where is the lung nodule?" and sample["completion"] == OWN
    assert sample["text_source"] == "own" and not parse_completion(OWN).valid
    # the mask target and the views are the reference ones
    assert torch.equal(sample["label"], reference["label"]) and torch.equal(sample["sam_image"], reference["sam_image"])
    assert sample["boxes"] == reference["boxes"]
