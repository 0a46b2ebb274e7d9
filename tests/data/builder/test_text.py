# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""CoT/VQA generation and quality scoring, one case at a time, against the fake endpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scripts.data.builder.build import TextSettings, annotate_case
from scripts.data.builder.generation import (
    case_picture,
    case_question,
    lesion_summary,
    parse_perception,
    template_reasoning,
)
from scripts.data.builder.llm import ChatEndpoint, EndpointSettings, MalformedReplyError, ResponseCache
from scripts.data.builder.quality import final_score, parse_scores
from scripts.data.prompts import has_box_literal

from .conftest import Reply, chat_completion, good_reply, has_image, prompt_text


@pytest.fixture
def case(tmp_path):
    from PIL import Image

    picture = np.full((40, 60), 50, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    picture[5:15, 40:55] = 200
    mask[5:15, 40:55] = 255
    Image.fromarray(picture).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return {"image": str(tmp_path / "img.png"), "label": str(tmp_path / "mask.png"), "modality": "MRI",
            "anatomy": "head", "disease": "glioma", "source": "lab", "boxes": [[40, 5, 55, 15]]}


def endpoint(server, folder, **settings):
    values = dict(base_url=server.base_url, model="fake", timeout=5.0, max_retries=2, malformed_retries=1)
    return ChatEndpoint(EndpointSettings(**{**values, **settings}), ResponseCache(folder))


def test_questions_and_templates_are_stable_and_free_of_coordinates(case):
    assert case_question(case) == case_question(dict(case)) and "glioma" in case_question(case)
    first, second = template_reasoning(case, 0, (40, 60)), template_reasoning(case, 1, (40, 60))
    assert "glioma" in first and not has_box_literal(first) and not has_box_literal(second)
    assert lesion_summary(case, (40, 60)) == "1 annotated lesion (medium-sized extent), in the upper right part " \
                                             "of the image"


def test_the_picture_outlines_the_lesion_and_is_bounded():
    image = np.zeros((1, 600, 900), np.float32)
    mask = np.zeros((600, 900), bool)
    mask[100:200, 300:500] = True
    picture = case_picture(image, mask)
    assert picture.shape == (341, 512, 3) and picture.dtype == np.uint8
    red = (picture[..., 0] > 150) & (picture[..., 1] < 80)
    assert red.any() and not red[150, 400 * 512 // 900]  # the boundary, not the inside


def test_step_one_replies_are_parsed_strictly():
    notes = parse_perception('```json\n{"normal_anatomy": "Normal brain.", "lesion": "A bright mass."}\n```')
    assert notes.lesion == "A bright mass."
    for bad in ('{"normal_anatomy": "x"}', '{"normal_anatomy": "x", "lesion": ""}', "plain text"):
        with pytest.raises(MalformedReplyError):
            parse_perception(bad)


def test_final_score_follows_equation_2():
    assert final_score(1.0, 0.5, 0.25) == pytest.approx(0.3 + 0.15 + 0.1)
    scores = parse_scores('{"S_normal": 1, "S_lesion": 0.5, "S_reason": 0.25, "comment": " fine "}')
    assert scores.S_final == pytest.approx(0.55) and scores.comment == "fine"
    with pytest.raises(ValueError, match="sum"):
        final_score(1, 1, 1, weights=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("reply", [
    '{"S_normal": 8, "S_lesion": 0.5, "S_reason": 0.5}',         # out of range (a 0-10 scale)
    '{"S_normal": 0.8, "S_lesion": 0.5}',                        # missing key
    '{"S_normal": true, "S_lesion": 0.5, "S_reason": 0.5}',      # not a number
    '{"S_normal": "0.8", "S_lesion": 0.5, "S_reason": 0.5}',     # a string
    "I would give it 0.8 overall.",                              # no JSON
])
def test_malformed_scores_are_refused(reply):
    with pytest.raises(MalformedReplyError):
        parse_scores(reply)


def test_two_step_reasoning_and_scores(fake_openai, tmp_path, case):
    server = fake_openai()
    generator, scorer = endpoint(server, tmp_path / "g"), endpoint(server, tmp_path / "s", send_image=False)
    result = annotate_case(case, generator, scorer, TextSettings())
    assert result.status == "accepted" and result.attempts == 1
    record = result.record
    assert record["question"] == case_question(case)
    assert "irregular margin" in record["reasoning"] and "Normal" not in record["reasoning"][:0]
    assert not has_box_literal(record["reasoning"]) and "12, 34" not in record["reasoning"]  # coordinates stripped
    assert record["reasoning"].startswith("The surrounding tissue looks homogeneous")  # step 1, then step 2
    assert record["reasoning_source"] == "llm:fake"
    assert record["quality"] == {"S_normal": 0.9, "S_lesion": 0.9, "S_reason": 0.9, "S_final": pytest.approx(0.9),
                                 "comment": "ok", "attempts": 1, "passed": True, "scorer": "fake"}
    texts = [prompt_text(r["body"]) for r in server.requests]
    assert ["Step 1" in t for t in texts] == [True, False, False]
    assert "Observations from step 1" in texts[1] and "homogeneous" in texts[1]  # step 2 builds on step 1
    assert "Reasoning: " + record["reasoning"] in texts[2] and "[40,5,55,15]" in texts[2]  # the scorer sees all
    assert [has_image(r["body"]) for r in server.requests] == [True, True, False]
    assert all("MRI of the head" in t and "glioma" in t for t in texts)


def test_low_scores_are_regenerated_and_the_best_round_kept(fake_openai, tmp_path, case):
    server = fake_openai(lambda request, n: good_reply(request, low_first_round=True))
    result = annotate_case(case, endpoint(server, tmp_path / "g"), endpoint(server, tmp_path / "s"), TextSettings())
    assert result.status == "accepted" and result.attempts == 2
    assert [s.S_final for s in result.scores] == pytest.approx([0.5, 0.9])
    assert result.record["quality"]["S_final"] == pytest.approx(0.9) and result.record["quality"]["attempts"] == 2
    seeds = [r["body"]["seed"] for r in server.requests]
    assert seeds == [0, 0, 0, 100, 100, 100]  # round 2 asks anew (other seeds: other cache keys)


def test_regeneration_is_bounded(fake_openai, tmp_path, case):
    def always_low(request, n):
        reply = good_reply(request)
        if "Score the reasoning" in prompt_text(request):
            reply.body = chat_completion(json.dumps({"S_normal": 0.9, "S_lesion": 0.9, "S_reason": 0.4}))
        return reply

    server = fake_openai(always_low)
    settings = TextSettings(max_regenerations=2)
    result = annotate_case(case, endpoint(server, tmp_path / "g"), endpoint(server, tmp_path / "s"), settings)
    assert result.status == "rejected" and result.attempts == 3 and len(server.requests) == 9
    assert "S_final 0.700 < 0.8 after 3" in result.reason
    assert result.record["quality"]["passed"] is False


def test_endpoint_failures_and_malformed_replies_fail_the_case_not_the_run(fake_openai, tmp_path, case):
    down = fake_openai(lambda request, n: Reply(500, {"error": {"message": "boom"}}, {"retry-after-ms": "5"}))
    failed = annotate_case(case, endpoint(down, tmp_path / "g1"), None, TextSettings())
    assert failed.status == "failed" and "HTTP 500 after 2 retries" in failed.reason
    assert len(down.requests) == 3  # one request, retried twice by the client
    chatty = fake_openai(lambda request, n: Reply(body=chat_completion("I think it is a glioma.")))
    failed = annotate_case(case, endpoint(chatty, tmp_path / "g2"), None, TextSettings())
    assert failed.status == "failed" and "2 malformed replies in a row" in failed.reason and failed.malformed == 2


def test_offline_cases_get_template_reasoning_without_scores(case):
    result = annotate_case(case, None, None, TextSettings())
    assert result.status == "accepted" and result.record["reasoning_source"] == "template"
    assert "quality" not in result.record and result.record["reasoning"] == template_reasoning(case, 0, (40, 60))


def test_unreadable_cases_fail_with_the_reason(case, tmp_path):
    (tmp_path / "img.png").write_bytes(b"corrupt")
    result = annotate_case(case, None, None, TextSettings())
    assert result.status == "failed" and result.reason.startswith("unreadable")
