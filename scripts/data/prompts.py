# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Questions, reasoning and answers: dynamic templates, the completion format and its strict parser.

Completion format (the training target and what the model must write), with exactly one ``<seg>``::

    <think> {reasoning} </think><answer> The {disease} is located at [x1,y1,x2,y2], [x1,y1,x2,y2]. <seg> </answer>
    <think> {reasoning} </think><answer> There is no {disease} in this image. <seg> </answer>

Without chain-of-thought (the CoT ablation of the paper's Table 3, ``reasoning=False`` throughout the pipeline) the
completion is the answer alone, ``<answer> ... <seg> </answer>``, and the user turn ends with
:data:`ANSWER_ONLY_INSTRUCTION` instead.

Boxes are integers in pixels of the MLLM processor's input image (see :mod:`scripts.data.coordinates`). The
reasoning never holds coordinates (CORE-Seg paper, section 3.2): :func:`strip_coordinates` removes them from
reasoning text given in a datalist, and the templates describe locations in words only.

The user turn is the question followed by :data:`FORMAT_INSTRUCTION`; control tokens typed into a question
(``<seg>``, ``<|image_pad|>``, ...) are removed by :func:`build_user_prompt`, so a user can neither inject a
``<seg>`` nor an image placeholder.

:func:`parse_completion` checks a completion against this format and never raises, whatever it is given:
GRPO's format reward is its ``valid`` field.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scripts.networks.mllm import SEG_TOKEN

from .vocabulary import ANATOMIES, MODALITIES

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_ONLY_INSTRUCTION",
    "ANSWER_OPEN",
    "BOXES_PLACEHOLDER",
    "DISEASE_PLACEHOLDER",
    "FORMAT_INSTRUCTION",
    "FORMAT_TAGS",
    "MAX_PARSED_CHARS",
    "QUESTION_TEMPLATES",
    "THINK_CLOSE",
    "THINK_OPEN",
    "ParsedCompletion",
    "build_user_prompt",
    "clean_reasoning",
    "describe_location",
    "describe_locations",
    "format_boxes",
    "has_box_literal",
    "has_control_token",
    "parse_completion",
    "remove_tokens",
    "render_answer",
    "render_completion",
    "render_question",
    "resolve_answer",
    "render_reasoning",
    "strip_coordinates",
    "text_fields",
]

_LOGGER = logging.getLogger(__name__)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
#: The tags of the completion format (never allowed in datalist text).
FORMAT_TAGS: tuple[str, ...] = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

#: Appended to every question in the user turn. It names the tags but never writes ``<seg>`` itself: the
#: string would be tokenised as the segmentation token inside the prompt.
FORMAT_INSTRUCTION = (
    "First reason about the image between <think> and </think>, without coordinates. Then, between <answer> and "
    "</answer>, give the box [x1,y1,x2,y2] in pixels of every lesion asked for, or say that there is none, and end "
    "the answer with the segmentation token."
)
#: The instruction without chain-of-thought (Table 3's CoT ablation).
ANSWER_ONLY_INSTRUCTION = (
    "Between <answer> and </answer>, give the box [x1,y1,x2,y2] in pixels of every lesion asked for, or say that "
    "there is none, and end the answer with the segmentation token."
)

# ------------------------------------------------------------------------------------------------ templates
_NUMBER_PATTERN = r"[-+]?\d+(?:\.\d+)?"
_MODALITY_PHRASES: dict[str, tuple[str, ...]] = {
    "CT": ("CT scan", "CT image", "computed tomography slice"),
    "MRI": ("MRI scan", "MR image", "magnetic resonance image"),
    "X-ray": ("X-ray", "radiograph", "X-ray image"),
    "ultrasound": ("ultrasound image", "sonogram", "ultrasound scan"),
    "endoscopy": ("endoscopy image", "endoscopic view", "endoscopic frame"),
    "dermoscopy": ("dermoscopy image", "dermoscopic photograph", "dermatoscope image"),
    "fundus": ("fundus photograph", "retinal fundus image", "fundus image"),
    "OCT": ("OCT scan", "optical coherence tomography image", "OCT B-scan"),
}
_ANATOMY_PHRASES: dict[str, tuple[str, ...]] = {
    "head": ("head", "brain"),
    "abdomen": ("abdomen", "abdominal region"),
    "lung": ("lungs", "chest", "thorax"),
    "eye": ("eye", "retina"),
    "neck": ("neck", "cervical region"),
    "skin": ("skin",),
    "foot": ("foot",),
    "breast": ("breast",),
    "heart": ("heart", "cardiac region"),
}
assert set(_MODALITY_PHRASES) == set(MODALITIES) and set(_ANATOMY_PHRASES) == set(ANATOMIES)

#: Question templates (paper section 3.2): direct requests, questions, clinical scenarios and requests that
#: stress that only the asked finding counts. Fields: ``{disease}``, ``{modality}``, ``{anatomy}``.
QUESTION_TEMPLATES: tuple[str, ...] = (
    "Please segment the {disease} in this {modality} of the {anatomy}.",
    "Where is the {disease} in this {anatomy} {modality}?",
    "Can you find and outline every {disease} in this {modality}?",
    "Segment all regions of {disease} in the image.",
    "Identify the {disease} on this {modality} of the {anatomy} and delineate it.",
    "Is there any {disease} in this {modality}? If so, mark where it is.",
    "Look at this {modality} of the {anatomy}. Which area corresponds to the {disease}? Segment it.",
    "As a radiologist reading this {modality}, locate and segment the {disease}.",
    "This {anatomy} {modality} may show signs of {disease}. Find them and produce their mask.",
    "The image may contain several kinds of findings; segment only the {disease}.",
    "Delineate the boundaries of the {disease} visible in this {modality}.",
    "Highlight the region affected by {disease} in this image of the {anatomy}.",
    "For treatment planning, outline each {disease} in this {modality}.",
    "Which part of this {anatomy} {modality} shows the {disease}? Please segment it.",
    "Mark the {disease}, and nothing else, in this {modality}.",
    "Detect and segment the {disease} in the {anatomy} shown here.",
)

_CONTEXT_TEMPLATES: tuple[str, ...] = (
    "This {modality} of the {anatomy} shows the normal structures of the {anatomy} as background.",
    "The image is {a_modality} of the {anatomy}; most of the field shows ordinary tissue of the {anatomy}.",
    "Looking at the whole {modality} first, the anatomy of the {anatomy} gives the context for the search.",
)
_TARGET_TEMPLATES: tuple[str, ...] = (
    "{A_disease} here would look {appearance}.",
    "The {disease} is expected to appear {appearance}.",
    "I look for areas that are {appearance}, as {a_disease} is.",
)
_GENERIC_TARGET_TEMPLATES: tuple[str, ...] = (
    "{A_disease} stands out from the surrounding tissue by its intensity, texture and margin.",
    "I look for tissue whose intensity and texture depart from the normal {anatomy}, as {a_disease} does.",
)
_FOUND_TEMPLATES: tuple[str, ...] = (
    "{count} such {region} can be seen {location}.",
    "I find {count} {region} with this appearance {location}.",
    "{count} {region} {verb} this description {location}.",
)
_DISTRACTOR_TEMPLATES: dict[bool, tuple[str, ...]] = {
    False: (
        "The image also shows the {distractor}, which looks {appearance}; it is not the {disease} and is left out.",
        "One finding looks {appearance} instead: it is the {distractor}, not the {disease}, so it is excluded.",
    ),
    True: (
        "The image also shows {count} findings of {distractor}, which look {appearance}; they are not the "
        "{disease} and are left out.",
        "{count} findings look {appearance} instead: they correspond to the {distractor}, not to the {disease}, "
        "so they are excluded.",
    ),
}
_DISTRACTOR_NAME_ONLY_TEMPLATES: tuple[str, ...] = (
    "The image may also contain {distractor}, which must not be confused with the {disease}.",
)
_NONE_FOUND_TEMPLATES: tuple[str, ...] = (
    "No region in the image has this appearance.",
    "I find no area that matches the appearance of {a_disease}.",
)
_CONCLUSION_FOUND: tuple[str, ...] = (
    "Therefore the {disease} is segmented as {count} {region}.",
    "So the mask should cover {count} {region} of {disease}.",
)
_CONCLUSION_NONE: tuple[str, ...] = (
    "Therefore there is no {disease} to segment in this image.",
    "So the {disease} is absent and the mask stays empty.",
)
_COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _choose(rng: random.Random, options: Sequence[str]) -> str:
    return options[rng.randrange(len(options))]


def _count_word(count: int) -> str:
    return _COUNT_WORDS[count] if 0 <= count < len(_COUNT_WORDS) else "several"


def _with_article(phrase: str) -> str:
    """``"an MRI scan"``, ``"a CT image"``, ``"an ulcer"``: the indefinite article by sound, acronyms spelled out."""
    if phrase[:2].isupper():  # an acronym: "an" before letters whose name starts with a vowel sound
        return ("an " if phrase[0] in "AEFHILMNORSX" else "a ") + phrase
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _modality_phrase(modality: str, rng: random.Random) -> str:
    return _choose(rng, _MODALITY_PHRASES.get(modality, (f"{modality} image",)))


def _anatomy_phrase(anatomy: str, rng: random.Random) -> str:
    return _choose(rng, _ANATOMY_PHRASES.get(anatomy, (anatomy,)))


def render_question(record: Mapping[str, object], rng: random.Random) -> str:
    """A question asking for the record's ``disease``, from a random template.

    Args:
        record: needs ``disease``, ``modality`` and ``anatomy``.
        rng: source of the template and phrase choices (seed it for reproducible text).
    """
    template = _choose(rng, QUESTION_TEMPLATES)
    return template.format(
        disease=str(record["disease"]),
        modality=_modality_phrase(str(record["modality"]), rng),
        anatomy=_anatomy_phrase(str(record["anatomy"]), rng),
    )


def describe_location(box: Sequence[float], size: Sequence[int]) -> str:
    """Where a box's centre lies, in words (thirds of the image): ``"in the upper left part"``, ``"centrally"``."""
    height, width = size
    cx, cy = (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height
    row = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else ""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    if not row and not col:
        return "centrally"
    return f"in the {' '.join(p for p in (row, col) if p)} part of the image"


def describe_locations(boxes: Sequence[Sequence[float]], size: Sequence[int] | None) -> str:
    """Where the boxes lie, in words, each place once: ``"in the upper left part of the image and centrally"``."""
    if not boxes or size is None:
        return "in the image"
    places = list(dict.fromkeys(describe_location(box, size) for box in boxes))
    return places[0] if len(places) == 1 else ", ".join(places[:-1]) + " and " + places[-1]


def _int_field(record: Mapping[str, object], key: str) -> int | None:
    value = record.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text_field(record: Mapping[str, object], key: str) -> str | None:
    value = record.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def render_reasoning(
    record: Mapping[str, object],
    boxes: Sequence[Sequence[float]],
    rng: random.Random,
    image_size: Sequence[int] | None = None,
) -> str:
    """Reasoning text without coordinates: context, what the target looks like, how it differs from the
    distractor, what is found, and the conclusion.

    When the record carries the synthetic generator's fields (``target_appearance``, ``distractor``,
    ``distractor_appearance``, ``num_distractors``), the reasoning says how the target differs from the
    distractor, which is what the model must learn to use; otherwise it stays generic.

    Args:
        record: needs ``disease``, ``modality`` and ``anatomy``.
        boxes: the target's boxes in original pixels (only their number and coarse location are used).
        rng: source of the template choices.
        image_size: ``(height, width)`` of the image the boxes belong to, to word their location.
    """
    disease = str(record["disease"])
    anatomy = _anatomy_phrase(str(record["anatomy"]), rng)
    modality = _modality_phrase(str(record["modality"]), rng)
    appearance = _text_field(record, "target_appearance")
    distractor = _text_field(record, "distractor")
    distractor_appearance = _text_field(record, "distractor_appearance")
    num_distractors = _int_field(record, "num_distractors")
    count = len(boxes)
    region = "region" if count == 1 else "regions"

    a_disease = _with_article(disease)
    sentences = [_choose(rng, _CONTEXT_TEMPLATES).format(
        modality=modality, a_modality=_with_article(modality), anatomy=anatomy)]
    if appearance:
        sentences.append(_choose(rng, _TARGET_TEMPLATES).format(
            disease=disease, a_disease=a_disease, A_disease=_capitalise(a_disease), appearance=appearance))
    else:
        sentences.append(_choose(rng, _GENERIC_TARGET_TEMPLATES).format(
            disease=disease, a_disease=a_disease, A_disease=_capitalise(a_disease), anatomy=anatomy))
    if count:
        sentences.append(_capitalise(_choose(rng, _FOUND_TEMPLATES).format(
            count=_count_word(count), region=region, verb="matches" if count == 1 else "match",
            location=describe_locations(boxes, image_size),
        )))
    else:
        sentences.append(_choose(rng, _NONE_FOUND_TEMPLATES).format(a_disease=a_disease))
    if distractor and distractor_appearance and num_distractors:
        sentences.append(_capitalise(_choose(rng, _DISTRACTOR_TEMPLATES[num_distractors > 1]).format(
            count=_count_word(num_distractors), distractor=distractor, disease=disease,
            appearance=distractor_appearance,
        )))
    elif distractor:
        sentences.append(_choose(rng, _DISTRACTOR_NAME_ONLY_TEMPLATES).format(distractor=distractor, disease=disease))
    conclusion = _CONCLUSION_FOUND if count else _CONCLUSION_NONE
    sentences.append(_choose(rng, conclusion).format(disease=disease, count=_count_word(count), region=region))
    return strip_coordinates(" ".join(sentences))


def text_fields(
    record: Mapping[str, object], rng: random.Random | int | object, image_size: Sequence[int] | None = None
) -> dict[str, str]:
    """A question and a reasoning to store in a datalist record (e.g. the synthetic generator's ``text_fn``).

    No answer is produced: answers hold coordinates in the MLLM processor's pixel space, which only the
    pipeline knows, so :class:`scripts.data.transforms.RenderTextd` renders them at load time. Leaving the
    question and reasoning out of a datalist is usually better still: the pipeline then renders them at load
    time too, with a new phrasing every training epoch.

    Args:
        record: needs ``disease``, ``modality`` and ``anatomy``; uses ``boxes`` (original pixels) and the
            synthetic generator's appearance fields when present.
        rng: a ``random.Random``, a numpy ``Generator`` or an integer seed.
        image_size: ``(height, width)`` of the image, to word the lesions' location (default:
            ``record["image_size"]`` if present, else no location words).
    """
    if isinstance(rng, int):
        rng = random.Random(rng)
    elif not isinstance(rng, random.Random):
        rng = random.Random(int(rng.integers(0, 2**31 - 1)))  # a numpy Generator
    size = image_size if image_size is not None else record.get("image_size")
    boxes = record.get("boxes") or []
    return {"question": render_question(record, rng), "reasoning": render_reasoning(record, boxes, rng, size)}


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def format_boxes(boxes: Iterable[Sequence[int]]) -> str:
    """``[[1, 2, 3, 4], [5, 6, 7, 8]]`` -> ``"[1,2,3,4], [5,6,7,8]"`` (integers, as in the answers)."""
    parts = []
    for box in boxes:
        if len(box) != 4 or any(int(v) != v for v in box):
            raise ValueError(f"Answer boxes must be 4 integers [x1, y1, x2, y2], got {list(box)}.")
        parts.append("[" + ",".join(str(int(v)) for v in box) + "]")
    return ", ".join(parts)


def render_answer(disease: str, boxes: Sequence[Sequence[int]]) -> str:
    """``The {disease} is located at {boxes}.`` or, without boxes, ``There is no {disease} in this image.``

    Args:
        disease: the lesion name.
        boxes: integer boxes in MLLM-input pixels (see :func:`scripts.data.coordinates.round_boxes`).
    """
    if not boxes:
        return f"There is no {disease} in this image."
    return f"The {disease} is located at {format_boxes(boxes)}."


#: Placeholders a datalist ``answer`` may hold; the pipeline fills them in.
BOXES_PLACEHOLDER, DISEASE_PLACEHOLDER = "{bboxes}", "{disease}"
_BOX_LITERAL = re.compile(rf"\[\s*{_NUMBER_PATTERN}(?:\s*,\s*{_NUMBER_PATTERN}){{3}}\s*\]")


def has_box_literal(text: str) -> bool:
    """True when ``text`` writes a box such as ``[12, 34, 56, 78]``."""
    return bool(_BOX_LITERAL.search(text))


def resolve_answer(template: str | None, disease: str, boxes: Sequence[Sequence[int]]) -> str:
    """The answer sentence of a record: rendered, or a datalist answer with its placeholders filled in.

    A datalist answer may hold ``{bboxes}`` (and ``{disease}``) but never literal coordinates, since the
    coordinates must be rendered in the processor's pixel space, which the datalist cannot know. A template
    with ``{bboxes}`` describes lesions, so a row without boxes gets the standard no-lesion sentence; a
    template without ``{bboxes}`` is a no-lesion sentence and needs a row without boxes.

    Args:
        template: the record's ``answer`` field (``None`` or empty: :func:`render_answer`).
        disease: the lesion name.
        boxes: integer boxes in MLLM-input pixels.

    Raises:
        ValueError: literal coordinates in the template, or a template that contradicts the boxes.
    """
    if template is None or not str(template).strip():
        return render_answer(disease, boxes)
    template = str(template).strip()
    if has_box_literal(template):
        raise ValueError(f"The answer {template!r} holds literal coordinates; write {BOXES_PLACEHOLDER} where the "
                         "boxes go (they are rendered in the MLLM processor's pixel space) or leave it out.")
    if BOXES_PLACEHOLDER in template:
        if not boxes:
            return render_answer(disease, boxes)
        return template.replace(DISEASE_PLACEHOLDER, disease).replace(BOXES_PLACEHOLDER, format_boxes(boxes))
    if boxes:
        raise ValueError(f"The answer {template!r} has no {BOXES_PLACEHOLDER} placeholder, but the row has "
                         f"{len(boxes)} lesion box(es).")
    return template.replace(DISEASE_PLACEHOLDER, disease)


#: A Qwen-style control token such as ``<|im_end|>`` or ``<|image_pad|>``.
CONTROL_TOKEN_PATTERN = re.compile(r"<\|[^<>|\s]{1,40}\|>")


def has_control_token(text: str, seg_token: str = SEG_TOKEN) -> bool:
    """True when ``text`` holds a format tag, ``<seg>`` or a Qwen-style control token such as ``<|im_end|>``."""
    return seg_token in text or any(tag in text for tag in FORMAT_TAGS) or bool(CONTROL_TOKEN_PATTERN.search(text))


def clean_reasoning(text: str, seg_token: str = SEG_TOKEN) -> str:
    """Reasoning text from a datalist made safe for a target: no coordinates, no tags, no ``<seg>``, no
    ``<|...|>`` control tokens."""
    previous = None
    while previous != text:
        previous = text
        text = CONTROL_TOKEN_PATTERN.sub("", remove_tokens(text, (*FORMAT_TAGS, seg_token)))
    return strip_coordinates(text)


def render_completion(reasoning: str | None, answer: str, seg_token: str = SEG_TOKEN) -> str:
    """The training target: ``<think> {reasoning} </think><answer> {answer} <seg> </answer>``.

    With ``reasoning=None`` (no chain-of-thought), the answer alone: ``<answer> {answer} <seg> </answer>``.
    """
    answer_part = f"{ANSWER_OPEN} {answer.strip()} {seg_token} {ANSWER_CLOSE}"
    if reasoning is None:
        return answer_part
    return f"{THINK_OPEN} {reasoning.strip()} {THINK_CLOSE}{answer_part}"


# ------------------------------------------------------------------------------------------------ text hygiene
_LEADING_PREPOSITION = r"(?:\b(?:at|near|to|from|around)\s+)?"
_COORDINATE_PATTERNS = (
    # [x1, y1, x2, y2], [12,34], (12, 34), (x=12, y=34) ...: any bracketed group of two or more numbers
    re.compile(rf"{_LEADING_PREPOSITION}[\[(]\s*(?:[a-z]\w*\s*[=:]\s*)?{_NUMBER_PATTERN}(?:\s*[,;]\s*(?:[a-z]\w*\s*[=:]\s*)?{_NUMBER_PATTERN})+\s*[\])]",
               re.IGNORECASE),
    # x=12, y1: 34, x2 = 56
    re.compile(rf"{_LEADING_PREPOSITION}\b[xy][12]?\s*[=:]\s*{_NUMBER_PATTERN}", re.IGNORECASE),
)


def strip_coordinates(text: str) -> str:
    """Remove explicit coordinates (bracketed number groups, ``x=12``-style values) from reasoning text.

    The paper strips coordinates from the reasoning so that the model locates lesions from semantics rather
    than by regressing numbers (section 3.2). Words that describe a location ("upper left") are kept.
    """
    for pattern in _COORDINATE_PATTERNS:
        text = pattern.sub("", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)  # "at , the" / "at ." left behind by a removal
    return re.sub(r"\s{2,}", " ", text).strip()


def remove_tokens(text: str, tokens: Iterable[str]) -> str:
    """Remove every occurrence of the given token strings, until none is left.

    Removing repeatedly matters: deleting ``<seg>`` once from ``"<se<seg>g>"`` would leave a new ``<seg>``.
    """
    tokens = sorted({t for t in tokens if t}, key=len, reverse=True)
    previous = None
    while previous != text:
        previous = text
        for token in tokens:
            text = text.replace(token, "")
    return text


def build_user_prompt(question: str, special_tokens: Iterable[str] = (SEG_TOKEN,), reasoning: bool = True) -> str:
    """The text of the user turn: the question (control tokens removed) and :data:`FORMAT_INSTRUCTION`.

    Args:
        question: the clinical question.
        special_tokens: token strings that must not reach the model from a user's text; pass the tokenizer's
            special tokens (``tokenizer.all_special_tokens`` plus ``<seg>``), as the collator does.
        reasoning: ask for the reasoning first (False: :data:`ANSWER_ONLY_INSTRUCTION`, the CoT ablation).
    """
    cleaned = re.sub(r"\s{2,}", " ", remove_tokens(question, special_tokens)).strip()
    if not cleaned:
        raise ValueError(f"The question {question!r} is empty once control tokens are removed.")
    return f"{cleaned}\n{FORMAT_INSTRUCTION if reasoning else ANSWER_ONLY_INSTRUCTION}"


# ------------------------------------------------------------------------------------------------ parser
#: Longer inputs are not parsed (reported invalid): a completion is a few hundred tokens.
MAX_PARSED_CHARS = 100_000

_MAX_SENTENCE_CHARS = 2_000
_BOX_GROUP = re.compile(r"\[([^\[\]]*)\]")
_NUMBER_ONLY = re.compile(rf"^\s*{_NUMBER_PATTERN}\s*$")
_LESION_SENTENCE = re.compile(r"^\s*the\s+(?P<lesion>.+?)\s+(?:is|are)\s+located\s+at\b", re.IGNORECASE | re.DOTALL)
_NO_LESION_SENTENCE = re.compile(
    r"^\s*there\s+(?:is|are)\s+no\s+(?P<lesion>[^.,;\[\]]+?)"
    r"(?:\s+(?:in|on|within|visible\s+in)\s+(?:this|the)\s+(?:image|scan|picture|slice|view))?\s*(?:[.,;]|$)",
    re.IGNORECASE,
)


@dataclass
class ParsedCompletion:
    """What :func:`parse_completion` found in a completion.

    Attributes:
        valid: the completion follows the format: ``<think>`` non-empty reasoning ``</think>`` then
            ``<answer> ... </answer>``, nothing but whitespace outside the tags, exactly one ``<seg>`` in the
            whole text and it inside the answer, every ``[...]`` in the answer a well-formed box, and the
            answer either gives at least one box or says that there is no lesion.
        error: why the completion is invalid (empty when valid).
        reasoning: text between the think tags, stripped (empty if not found).
        answer: text between the answer tags with ``<seg>`` removed, stripped (empty if not found).
        boxes: well-formed boxes of the answer as written (floats, MLLM-input pixels), in order; filled even
            when another part of the completion is invalid.
        seg_count: number of ``<seg>`` in the whole text.
        no_lesion: the answer states that there is no such lesion (``There is no ... in this image``).
        lesion: the lesion named in the answer sentence, if one was recognised.
    """

    valid: bool = False
    error: str = ""
    reasoning: str = ""
    answer: str = ""
    boxes: list[list[float]] = field(default_factory=list)
    seg_count: int = 0
    no_lesion: bool = False
    lesion: str | None = None


def parse_completion(text: object, seg_token: str = SEG_TOKEN, require_reasoning: bool = True) -> ParsedCompletion:
    """Check a completion against the CORE-Seg format and extract its parts. Never raises.

    Args:
        text: the completion (what follows the prompt), as decoded with special tokens kept. ``bytes`` are
            decoded as UTF-8 (invalid bytes replaced); anything that is not text is reported invalid.
        seg_token: the segmentation token string.
        require_reasoning: the ``<think>`` block is required (default). False (a model trained without
            chain-of-thought) also accepts the answer alone; a ``<think>`` block that is there is still checked.

    Returns:
        A :class:`ParsedCompletion`; ``valid`` is False with an ``error`` for anything off-format.
    """
    try:
        return _parse(text, seg_token, require_reasoning)
    except Exception as error:  # noqa: BLE001 - the contract is "never raises", but a parser bug must be seen
        _LOGGER.exception("parse_completion failed on a %d-character input; reported as invalid", len(str(text)))
        return ParsedCompletion(valid=False, error=f"internal parser error ({type(error).__name__}: {error})")


def _parse(text: object, seg_token: str, require_reasoning: bool = True) -> ParsedCompletion:
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return ParsedCompletion(error=f"expected a text, got {type(text).__name__}")
    if len(text) > MAX_PARSED_CHARS:
        return ParsedCompletion(error=f"the completion has {len(text)} characters (more than {MAX_PARSED_CHARS})",
                                seg_count=text.count(seg_token))
    result = ParsedCompletion(seg_count=text.count(seg_token))
    counts = {tag: text.count(tag) for tag in FORMAT_TAGS}
    positions = {tag: text.find(tag) for tag in FORMAT_TAGS}
    think_ok = counts[THINK_OPEN] == 1 and counts[THINK_CLOSE] == 1 and positions[THINK_OPEN] < positions[THINK_CLOSE]
    answer_ok = (counts[ANSWER_OPEN] == 1 and counts[ANSWER_CLOSE] == 1
                 and positions[ANSWER_OPEN] < positions[ANSWER_CLOSE])
    if think_ok:
        result.reasoning = text[positions[THINK_OPEN] + len(THINK_OPEN):positions[THINK_CLOSE]].strip()
    answer_body = ""
    if answer_ok:
        answer_body = text[positions[ANSWER_OPEN] + len(ANSWER_OPEN):positions[ANSWER_CLOSE]]
        result.answer = re.sub(r"\s{2,}", " ", answer_body.replace(seg_token, " ")).strip()
        _read_answer(result)

    with_think = require_reasoning or counts[THINK_OPEN] > 0 or counts[THINK_CLOSE] > 0
    result.error = _first_error(text, result, counts, positions, think_ok, answer_ok, answer_body, seg_token,
                                with_think)
    result.valid = not result.error
    return result


def _read_answer(result: ParsedCompletion) -> None:
    """Fill ``boxes``, ``no_lesion`` and ``lesion`` from ``result.answer`` (errors are found later)."""
    for group in _BOX_GROUP.findall(result.answer):
        box = _parse_box(group)
        if box is not None:
            result.boxes.append(box)
    if len(result.answer) > _MAX_SENTENCE_CHARS:
        return  # lazy sentence patterns are quadratic on long runs of whitespace; no answer is this long
    found = _LESION_SENTENCE.match(result.answer)
    none = _NO_LESION_SENTENCE.match(result.answer)
    if none is not None:
        result.no_lesion = True
        result.lesion = none.group("lesion").strip()
    elif found is not None:
        result.lesion = found.group("lesion").strip()


def _parse_box(group: str) -> list[float] | None:
    parts = group.split(",")
    if len(parts) != 4 or not all(_NUMBER_ONLY.match(p) for p in parts):
        return None
    values = [float(p) for p in parts]
    x1, y1, x2, y2 = values
    if not all(math.isfinite(v) for v in values) or min(values) < 0 or not (x1 < x2 and y1 < y2):
        return None
    return values


def _first_error(text, result, counts, positions, think_ok, answer_ok, answer_body, seg_token, with_think=True) -> str:
    """The first format error; ``with_think=False`` checks a completion without ``<think>`` block (allowed with
    ``require_reasoning=False``)."""
    for tag in FORMAT_TAGS if with_think else (ANSWER_OPEN, ANSWER_CLOSE):
        if counts[tag] != 1:
            return f"expected exactly one {tag}, found {counts[tag]}"
    if with_think and not think_ok:
        return f"{THINK_CLOSE} comes before {THINK_OPEN}"
    if not answer_ok:
        return f"{ANSWER_CLOSE} comes before {ANSWER_OPEN}"
    if with_think and positions[ANSWER_OPEN] < positions[THINK_CLOSE]:
        return f"the answer must follow the reasoning ({ANSWER_OPEN} after {THINK_CLOSE})"
    after_answer = ("after </answer>", text[positions[ANSWER_CLOSE] + len(ANSWER_CLOSE):])
    if with_think:
        outside = [("before <think>", text[:positions[THINK_OPEN]]),
                   ("between </think> and <answer>",
                    text[positions[THINK_CLOSE] + len(THINK_CLOSE):positions[ANSWER_OPEN]]), after_answer]
    else:
        outside = [("before <answer>", text[:positions[ANSWER_OPEN]]), after_answer]
    for where, chunk in outside:
        if chunk.strip():
            return f"unexpected text {where}: {_preview(chunk)}"
    if with_think and not result.reasoning:
        return "the reasoning between <think> and </think> is empty"
    return _answer_error(result, answer_body, seg_token)


def _answer_error(result, answer_body, seg_token) -> str:
    """The first error inside a well-placed answer: ``<seg>`` count, boxes, lesion statement."""
    seg_in_answer = answer_body.count(seg_token)
    if result.seg_count != 1 or seg_in_answer != 1:
        return (f"expected exactly one {seg_token}, inside the answer; found {result.seg_count} in the text, "
                f"{seg_in_answer} in the answer")
    groups = _BOX_GROUP.findall(result.answer)
    for group in groups:
        if _parse_box(group) is None:
            return (f"malformed box [{_preview(group, 40)}]: expected [x1,y1,x2,y2] with 4 non-negative numbers, "
                    "x1 < x2 and y1 < y2")
    if result.answer.count("[") != len(groups) or result.answer.count("]") != len(groups):
        return "unbalanced or nested brackets in the answer"
    if result.no_lesion and result.boxes:
        return "the answer both says there is no lesion and gives boxes"
    if not result.no_lesion and not result.boxes:
        return "the answer gives no box and does not say that there is no lesion"
    return ""


def _preview(text: str, limit: int = 60) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")
