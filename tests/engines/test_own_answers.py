# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
import logging

import pytest
import torch

from scripts.data.own_answers import OwnAnswers, answer_key
from scripts.engines import own_answers as own_module
from scripts.engines.own_answers import (
    ensure_own_answers,
    generate_own_answers,
    records_fingerprint,
    training_question,
    weights_fingerprint,
)
from scripts.inference import Predictor
from tests.data.conftest import mask_picture, picture, write_png

TOKENS = 6


@pytest.fixture()
def records(tmp_path):
    image = write_png(tmp_path / "image.png", picture())
    label = write_png(tmp_path / "mask.png", mask_picture())
    row = {"image": image, "label": label, "modality": "CT", "anatomy": "lung"}
    return [{**row, "disease": "lung nodule"}, {**row, "disease": "lung cyst"},
            {**row, "disease": "lung nodule", "question": "Where is the lung nodule?"},  # the first record again
            {**row, "disease": "pneumonia", "question": "Outline the pneumonia."}]


def test_training_question_is_the_given_one_or_a_fixed_rendering(records):
    assert training_question(records[3]) == "Outline the pneumonia."
    assert training_question(records[0], seed=0) == training_question(dict(records[0]), seed=0)
    assert "lung nodule" in training_question(records[0])
    # the seed changes the template choices of some of the records
    renderings = [{training_question({**records[0], "image": f"/d/{i}.png"}, seed=s) for s in range(4)} for i in range(4)]
    assert any(len(r) > 1 for r in renderings)


def test_generate_own_answers_are_the_greedy_predictions_and_keep_the_mode(records, tiny_model):
    assert not tiny_model.training
    answers = generate_own_answers(tiny_model, records, batch_size=2, max_new_tokens=TOKENS, progress=False)
    assert not tiny_model.training
    # one answer per record key: the repeated record is asked once, with the first record's question
    assert list(answers) == [answer_key(r) for r in (records[0], records[1], records[3])]
    assert answers[answer_key(records[3])]["question"] == "Outline the pneumonia."
    assert answers[answer_key(records[0])]["question"] == training_question(records[0])
    predictor = Predictor(tiny_model, device="cpu", max_new_tokens=TOKENS)
    expected = predictor.predict(records[1]["image"], training_question(records[1]), modality="CT", anatomy="lung")
    assert answers[answer_key(records[1])]["completion"] == expected.completion


def test_generation_gives_a_training_network_back_in_training_mode(records, fresh_tiny_model):
    assert fresh_tiny_model.training
    generate_own_answers(fresh_tiny_model, records[:1], max_new_tokens=2, progress=False)
    assert fresh_tiny_model.training


def test_fingerprints_follow_the_weights_and_the_records(records, fresh_tiny_model):
    before = weights_fingerprint(fresh_tiny_model.mllm)
    assert weights_fingerprint(fresh_tiny_model.mllm) == before
    frozen = next(p for p in fresh_tiny_model.mllm.parameters() if not p.requires_grad)  # e.g. the vision tower
    with torch.no_grad():
        frozen.view(-1)[0] += 0.5
    assert weights_fingerprint(fresh_tiny_model.mllm) != before
    assert records_fingerprint(records) == records_fingerprint([dict(r) for r in records])
    assert records_fingerprint(records) != records_fingerprint(records[:-1])


def test_ensure_own_answers_caches_and_regenerates_when_the_source_changes(records, fresh_tiny_model, tmp_path,
                                                                           monkeypatch, caplog):
    path = tmp_path / "run" / "own_answers.json"
    calls = []
    generate = own_module.generate_own_answers

    def counted(*args, **kwargs):
        calls.append(kwargs["max_new_tokens"])
        return generate(*args, **kwargs)

    monkeypatch.setattr(own_module, "generate_own_answers", counted)
    kwargs = {"max_new_tokens": TOKENS, "batch_size": 4, "progress": False}
    caplog.set_level(logging.INFO, logger=own_module.__name__)
    first = ensure_own_answers(fresh_tiny_model, records, path, **kwargs)
    assert calls == [TOKENS] and OwnAnswers.load(path) == first and len(first) == 3
    assert first.source["weights"] == weights_fingerprint(fresh_tiny_model.mllm)
    assert "3 answers" in caplog.text

    assert ensure_own_answers(fresh_tiny_model, records, path, **kwargs) == first  # a resumed run
    assert calls == [TOKENS]

    ensure_own_answers(fresh_tiny_model, records, path, **{**kwargs, "max_new_tokens": TOKENS + 1})
    assert calls == [TOKENS, TOKENS + 1] and "another max_new_tokens;" in caplog.text
    ensure_own_answers(fresh_tiny_model, records, path, **{**kwargs, "max_new_tokens": TOKENS + 1})
    assert len(calls) == 2
    with torch.no_grad():  # another language model (e.g. another text-stage checkpoint)
        next(fresh_tiny_model.mllm.parameters()).view(-1)[0] += 0.5
    ensure_own_answers(fresh_tiny_model, records, path, **{**kwargs, "max_new_tokens": TOKENS + 1})
    assert len(calls) == 3 and "another weights;" in caplog.text
    ensure_own_answers(fresh_tiny_model, records[:2], path, **{**kwargs, "max_new_tokens": TOKENS + 1})
    assert len(calls) == 4 and "another records;" in caplog.text

    path.write_text("{half written")
    again = ensure_own_answers(fresh_tiny_model, records[:2], path, **kwargs)
    assert len(calls) == 5 and "not valid JSON" in caplog.text and OwnAnswers.load(path) == again
