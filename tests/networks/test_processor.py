# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The offline tokenizer spells every finding name the same way wherever it occurs."""

from __future__ import annotations

import random

import pytest

from scripts.data.prompts import QUESTION_TEMPLATES, render_answer, render_question, render_reasoning
from scripts.data.vocabulary import LESION_TYPES
from scripts.networks.processor import build_offline_tokenizer, default_atomic_phrases

FINDINGS = sorted({name for lesion in LESION_TYPES for name in (lesion.disease, lesion.distractor)})


def _contexts(finding: str) -> list[str]:
    """Texts of the pipeline that name ``finding``: every question template, a reasoning and the two answers."""
    lesion = next(lesion for lesion in LESION_TYPES if finding in (lesion.disease, lesion.distractor))
    record = {"disease": finding, "modality": lesion.modality, "anatomy": lesion.anatomy}
    questions = [render_question(record, random.Random(seed)) for seed in range(4 * len(QUESTION_TEMPLATES))]
    reasoning = render_reasoning(record, [[10, 10, 40, 40]], random.Random(0), image_size=(128, 128))
    answers = [render_answer(finding, [[10, 10, 40, 40]]), render_answer(finding, [])]
    return [text for text in questions + [reasoning] + answers if f" {finding}" in text]


def _spelling_in(tokenizer, text: str, finding: str) -> tuple[str, ...]:
    """The tokens that cover the first ``" " + finding`` in ``text`` (one token may also cover neighbours)."""
    start = text.index(f" {finding}")
    end = start + len(finding) + 1
    encoding = tokenizer(text, return_offsets_mapping=True)
    return tuple(
        tokenizer.convert_ids_to_tokens(token_id)
        for token_id, (begin, stop) in zip(encoding["input_ids"], encoding["offset_mapping"])
        if begin < end and stop > start
    )


@pytest.fixture(scope="module")
def tokenizer():
    return build_offline_tokenizer()


def test_default_atomic_phrases_are_the_vocabulary_findings_longest_first():
    phrases = default_atomic_phrases()
    assert sorted(phrases) == FINDINGS
    assert [len(phrase) for phrase in phrases] == sorted((len(phrase) for phrase in phrases), reverse=True)


@pytest.mark.parametrize("finding", FINDINGS)
def test_a_finding_is_spelled_the_same_in_questions_reasoning_and_answers(tokenizer, finding):
    contexts = _contexts(finding)
    assert len(contexts) > 10
    spellings = {_spelling_in(tokenizer, text, finding) for text in contexts}
    assert len(spellings) == 1, spellings
    # ... and its tokens cover the name only, so the answer can be written by copying them from the question.
    assert tokenizer.convert_tokens_to_string(list(spellings.pop())) == f" {finding}"


def test_merges_across_words_without_atomic_phrases_fuse_findings_with_their_neighbours():
    # The behaviour the atomic phrases fix: the answer's finding becomes part of another token than the question's.
    fused = build_offline_tokenizer(atomic_phrases=())
    answer = render_answer("kidney stone", [[1, 2, 3, 4]])
    question = "Where is the kidney stone in this abdomen CT?"
    assert _spelling_in(fused, answer, "kidney stone") != _spelling_in(fused, question, "kidney stone")


def test_atomic_phrases_match_whole_words_only(tokenizer):
    text = "It is the pseudocyst, not the cyst."
    assert _spelling_in(tokenizer, text, "pseudocyst") == ("Ġpseudocyst",)
    assert _spelling_in(tokenizer, text, "cyst") == ("Ġcyst",)
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_word_level_tokenizer_needs_no_atomic_phrases():
    word_level = build_offline_tokenizer(merge_across_words=False)
    question = "Where is the kidney stone in this abdomen CT?"
    assert _spelling_in(word_level, question, "kidney stone") == ("Ġkidney", "Ġstone")
