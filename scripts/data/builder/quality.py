# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Automated quality assurance (CORE-Seg paper, section 3.3).

A second endpoint, decoupled from the generator, scores each sample on normal anatomy description
(``S_normal``), lesion characterisation (``S_lesion``) and reasoning logic (``S_reason``), each in [0, 1];
``S_final = 0.3 * S_normal + 0.3 * S_lesion + 0.4 * S_reason`` (eq. 2). The builder regenerates samples scoring
below the threshold (0.8), a bounded number of times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..prompts import render_answer
from .generation import SYSTEM_PROMPT
from .llm import ChatEndpoint, MalformedReplyError, extract_json_object, user_content

__all__ = ["SCORE_KEYS", "PAPER_WEIGHTS", "QualityScores", "final_score", "scoring_messages", "parse_scores",
           "score_sample"]

SCORE_KEYS: tuple[str, ...] = ("S_normal", "S_lesion", "S_reason")
#: ``(w1, w2, w3)`` of eq. 2: reasoning logic weighs most.
PAPER_WEIGHTS: tuple[float, float, float] = (0.3, 0.3, 0.4)


def final_score(s_normal: float, s_lesion: float, s_reason: float,
                weights: Sequence[float] = PAPER_WEIGHTS) -> float:
    """``S_final = w1 * S_normal + w2 * S_lesion + w3 * S_reason`` (paper eq. 2)."""
    if len(weights) != 3 or any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0):
        raise ValueError(f"weights must be three non-negative numbers summing to 1, got {list(weights)}.")
    return float(np.dot(weights, (s_normal, s_lesion, s_reason)))


@dataclass(frozen=True)
class QualityScores:
    """One sample's scores."""

    S_normal: float
    S_lesion: float
    S_reason: float
    S_final: float
    comment: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores."""
        return asdict(self)


def scoring_messages(record: Mapping[str, Any], question: str, reasoning: str, lesions: str,
                     picture: np.ndarray | None) -> list[dict]:
    """The scorer's prompt: the case, its question, reasoning and answer, and the three criteria."""
    outline = " The annotated lesions are outlined in red in the image." if picture is not None else ""
    answer = render_answer(str(record["disease"]), [[int(v) for v in box] for box in record.get("boxes") or []])
    text = (f"Review one sample of a lesion segmentation dataset with reasoning.\nImage: {record['modality']} of the "
            f"{record['anatomy']}. Annotated finding: {record['disease']}; {lesions}.{outline}\n\n"
            f"Question: {question}\nReasoning: {reasoning}\nAnswer: {answer}\n\n"
            "Score the reasoning from 0 (wrong or missing) to 1 (fully correct) on three criteria:\n"
            "- S_normal: the description of the normal anatomy is correct and relevant to this image.\n"
            "- S_lesion: the lesion characterisation (location, shape, margins, texture, number) is correct and "
            "specific.\n"
            "- S_reason: the reasoning is logical, grounded in the image, free of contradictions, and leads to the "
            "lesions' location.\n\n"
            'Reply with a JSON object only: {"S_normal": <0 to 1>, "S_lesion": <0 to 1>, "S_reason": <0 to 1>, '
            '"comment": "<one sentence>"}')
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_content(text, picture)}]


def parse_scores(text: str, weights: Sequence[float] = PAPER_WEIGHTS) -> QualityScores:
    """Read the scorer's reply.

    Raises:
        MalformedReplyError: not a JSON object with the three scores as numbers in [0, 1].
    """
    reply = extract_json_object(text)
    lowered = {str(k).lower(): v for k, v in reply.items()}
    values = []
    for key in SCORE_KEYS:
        value = reply.get(key, lowered.get(key.lower()))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise MalformedReplyError(f"the scorer's reply needs {key} as a number in [0, 1], got {value!r} "
                                      f"(reply {text[:120]!r})")
        values.append(float(value))
    comment = reply.get("comment")
    return QualityScores(*values, final_score(*values, weights=weights),
                         comment.strip() if isinstance(comment, str) else "")


def score_sample(
    record: Mapping[str, Any],
    question: str,
    reasoning: str,
    endpoint: ChatEndpoint,
    attempt: int,
    picture: np.ndarray | None,
    lesions: str,
    weights: Sequence[float] = PAPER_WEIGHTS,
    stats: dict[str, int] | None = None,
) -> QualityScores:
    """Score one generated sample with the scorer endpoint.

    Raises:
        MalformedReplyError: the scorer kept answering in the wrong format.
        scripts.data.builder.llm.EndpointError: the endpoint failed after its retries.
    """
    stats = {} if stats is None else stats
    picture = picture if endpoint.settings.send_image else None
    return endpoint.ask(lambda: scoring_messages(record, question, reasoning, lesions, picture),
                        lambda text: parse_scores(text, weights), attempt, stats)
