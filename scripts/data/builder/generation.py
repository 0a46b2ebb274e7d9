# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""CoT and VQA generation (CORE-Seg paper, section 3.2).

Each record gets

* a **question** from the dynamic templates (:func:`scripts.data.prompts.render_question`, seeded per case);
* its **answer** from the mask's boxes: the record stores ``boxes`` (original pixels) and the pipeline renders
  ``"The {disease} is located at {bboxes}."`` in the MLLM processor's pixel space at load time
  (:class:`scripts.data.transforms.RenderTextd`), since only the processor knows that space;
* a **reasoning** written by an LLM with the paper's two-step prompting: step 1 (visual perception) describes
  the normal anatomy briefly and characterises the lesion in detail, conditioned on the metadata (and the image
  with the lesions outlined, for a vision model); step 2 (visual reasoning for localisation) deduces where the
  target lies from step 1's evidence and how it differs from background and confounders. Coordinates are
  stripped from the result (:func:`scripts.data.prompts.clean_reasoning`).

Without an endpoint the reasoning comes from the offline templates (:func:`scripts.data.prompts.render_reasoning`).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from ..prompts import clean_reasoning, describe_locations, render_question, render_reasoning
from ..readers import plane_size, read_header
from .llm import ChatEndpoint, MalformedReplyError, extract_json_object, user_content

__all__ = [
    "SYSTEM_PROMPT",
    "PerceptionNotes",
    "case_seed",
    "case_question",
    "case_picture",
    "lesion_summary",
    "perception_messages",
    "reasoning_messages",
    "parse_perception",
    "generate_reasoning",
    "template_reasoning",
]

SYSTEM_PROMPT = ("You are an experienced radiologist who writes teaching annotations for a dataset of complex "
                 "lesions in medical images. You are precise, you describe only what the image and the given facts "
                 "support, and you never state coordinates or pixel measurements.")
_NO_NUMBERS = ("Do not give coordinates, pixel values or pixel counts, and do not mention any outline, colour "
               "marking or annotation.")
#: Longer edge of the picture sent to the endpoint (the MLLM view's bound).
PICTURE_MAX_EDGE = 512


def case_seed(record: Mapping[str, Any], salt: str = "") -> int:
    """A stable seed per case (image, slice, disease): reruns render the same question and templates."""
    key = f"{record.get('image')}#{record.get('slice_index', '')}#{record.get('disease')}#{salt}"
    return zlib.crc32(key.encode())


def case_question(record: Mapping[str, Any]) -> str:
    """The case's question from the dynamic templates."""
    return render_question(record, random.Random(case_seed(record, "question")))


def _image_size(record: Mapping[str, Any]) -> tuple[int, int]:
    header = read_header(str(record["image"]))
    axis = int(record.get("slice_axis", 2)) if header.is_volume else None
    return plane_size(header.spatial_shape, axis)


def lesion_summary(record: Mapping[str, Any], image_size: Sequence[int] | None = None) -> str:
    """Lesion count and coarse location in words (from the record's boxes, original pixels)."""
    boxes = record.get("boxes") or []
    size = tuple(image_size) if image_size is not None else _image_size(record)
    if not boxes:
        return "no annotated lesion"
    area = sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes) / float(size[0] * size[1])
    extent = "small" if area < 0.02 else "medium-sized" if area < 0.1 else "large"
    count = f"{len(boxes)} annotated lesion{'s' if len(boxes) > 1 else ''}"
    return f"{count} ({extent} extent), {describe_locations(boxes, size)}"


def case_picture(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The picture sent to a vision model: ``uint8 (H, W, 3)``, lesion boundaries drawn in red, longer edge
    at most :data:`PICTURE_MAX_EDGE`.

    Args:
        image: ``(C, H, W)`` float image in [0, 1] (1 or 3 channels), as the pipeline scales it.
        mask: ``(H, W)`` lesion mask, or ``None`` for no outline.
    """
    image = np.asarray(image, dtype=np.float32)
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    picture = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0).copy()
    if mask is not None:
        lesion = np.asarray(mask) > 0
        thickness = max(1, round(max(lesion.shape) / 256))
        boundary = lesion & ~ndimage.binary_erosion(lesion, iterations=thickness)
        picture[boundary] = (255, 0, 0)
    pil = Image.fromarray(picture)
    pil.thumbnail((PICTURE_MAX_EDGE, PICTURE_MAX_EDGE), Image.Resampling.LANCZOS)
    return np.asarray(pil)


def _facts(record: Mapping[str, Any], lesions: str) -> str:
    return (f"Image: {record['modality']} of the {record['anatomy']}. Target finding: {record['disease']}. "
            f"Annotation: {lesions}.")


def perception_messages(record: Mapping[str, Any], lesions: str, picture: np.ndarray | None) -> list[dict]:
    """Step 1 (visual perception simulation): normal anatomy briefly, the lesion in detail, as JSON."""
    outline = " The annotated lesions are outlined in red in the image." if picture is not None else ""
    text = (f"{_facts(record, lesions)}{outline}\n\n"
            "Step 1, visual perception. Describe concisely the normal anatomical context of this image. Then "
            f"characterise the {record['disease']} in detail: its location relative to anatomical landmarks, its "
            "shape, margins, texture and intensity compared with the surrounding tissue, and how many lesions there "
            f"are. {_NO_NUMBERS}\n\n"
            'Reply with a JSON object only: {"normal_anatomy": "<one or two sentences>", '
            '"lesion": "<two to four sentences>"}')
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_content(text, picture)}]


@dataclass(frozen=True)
class PerceptionNotes:
    """Step 1's reply."""

    normal_anatomy: str
    lesion: str


def parse_perception(text: str) -> PerceptionNotes:
    """Read step 1's JSON reply.

    Raises:
        MalformedReplyError: not a JSON object with non-empty ``normal_anatomy`` and ``lesion`` strings.
    """
    reply = extract_json_object(text)
    values = {}
    for key in ("normal_anatomy", "lesion"):
        value = reply.get(key)
        if not isinstance(value, str) or not value.strip():
            raise MalformedReplyError(f"step 1 reply lacks a non-empty string {key!r}: {text[:120]!r}")
        values[key] = value.strip()
    return PerceptionNotes(**values)


def reasoning_messages(record: Mapping[str, Any], lesions: str, notes: PerceptionNotes,
                       picture: np.ndarray | None) -> list[dict]:
    """Step 2 (visual reasoning for localisation), given step 1's evidence."""
    text = (f"{_facts(record, lesions)}\n\nObservations from step 1:\n- Normal anatomy: {notes.normal_anatomy}\n"
            f"- Lesion: {notes.lesion}\n\n"
            "Step 2, visual reasoning for localisation. Reason, as a clinician reading this image would, from these "
            f"observations to where the {record['disease']} lies: which evidence identifies it, and how to tell it "
            "apart from the surrounding background and from confounders that could be mistaken for it. Write one "
            f"paragraph of three to six sentences in the first person. {_NO_NUMBERS}\n\n"
            "Reply with the paragraph only.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_content(text, picture)}]


def _reasoning_text(notes: PerceptionNotes, paragraph: str) -> str:
    reasoning = clean_reasoning(f"{notes.normal_anatomy} {notes.lesion} {paragraph.strip()}")
    if len(reasoning.split()) < 5:
        raise MalformedReplyError(f"the reasoning is empty or too short once cleaned: {reasoning!r}")
    return reasoning


def generate_reasoning(
    record: Mapping[str, Any],
    endpoint: ChatEndpoint,
    attempt: int,
    picture: np.ndarray | None,
    lesions: str,
    stats: dict[str, int] | None = None,
) -> str:
    """The two-step LLM reasoning of a case, coordinates stripped.

    Args:
        record: the case (modality, anatomy, disease, boxes).
        endpoint: the generator endpoint.
        attempt: regeneration round (0 first); each round asks with other seeds.
        picture: the picture to attach (``None``: text only).
        lesions: :func:`lesion_summary` of the case.
        stats: counters updated in place (``malformed``).

    Raises:
        MalformedReplyError: a step kept answering in the wrong format.
        scripts.data.builder.llm.EndpointError: the endpoint failed after its retries.
    """
    stats = {} if stats is None else stats
    picture = picture if endpoint.settings.send_image else None
    notes = endpoint.ask(lambda: perception_messages(record, lesions, picture), parse_perception, attempt, stats)
    return endpoint.ask(lambda: reasoning_messages(record, lesions, notes, picture),
                        lambda text: _reasoning_text(notes, text), attempt, stats)


def template_reasoning(record: Mapping[str, Any], attempt: int, image_size: Sequence[int] | None = None) -> str:
    """The offline fallback: template reasoning (no coordinates), another phrasing per attempt."""
    rng = random.Random(case_seed(record, f"reasoning{attempt}"))
    size = tuple(image_size) if image_size is not None else _image_size(record)
    return render_reasoning(record, record.get("boxes") or [], rng, size)
