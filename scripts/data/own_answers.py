# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The language model's own answers as the training text of the mask stage.

A mask stage trained on the reference completions learns to read the lesion's position from the answer's box
digits and its absence from "There is no ...". At inference the language model writes its own answer, whose
boxes and wording differ, so the adapter and SAM see states they were not trained on: exposure bias
(``docs/sft_learning.md``, points 13-14). Training the mask stage on the held language model's own answers to
the training questions, with the reference masks as targets, removes that gap.

This module holds the data side: the cache of answers (:class:`OwnAnswers`, written by
:func:`scripts.engines.own_answers.ensure_own_answers`) and the transform that puts an answer into a sample
(:class:`UseOwnAnswersd`). Each record is keyed by :func:`answer_key`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from monai.transforms import MapTransform

from .datalist import describe_record
from .prompts import CONTROL_TOKEN_PATTERN, SEG_TOKEN

#: Version of the cache file's layout; a file of another version is regenerated.
OWN_ANSWERS_FORMAT = 1


def answer_key(record: Mapping[Hashable, object]) -> str:
    """``"<image>|<disease>|<slice_axis>|<slice_index>"``: the record an answer belongs to.

    Works on datalist records and on samples of :func:`scripts.data.transforms.build_transforms` (which keep
    the path as ``image_path``).
    """
    image = record.get("image_path", record.get("image"))
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError(f"{describe_record(record)}: needs an image path to be matched with its own answer.")
    return "|".join(str(v) for v in (os.fspath(image), record.get("disease"), record.get("slice_axis"),
                                     record.get("slice_index")))


def usable_completion(completion: object, seg_token: str = SEG_TOKEN) -> bool:
    """Whether a generated completion can be a training target of the mask stage.

    It needs exactly one ``seg_token`` (whose state drives the mask) and no ``<|...|>`` control token (which the
    collator refuses). Its format may be wrong otherwise, e.g. boxes with corners out of order: the mask stage
    must learn to segment from the answers the model really writes.
    """
    return isinstance(completion, str) and completion.count(seg_token) == 1 and not CONTROL_TOKEN_PATTERN.search(completion)


@dataclass
class OwnAnswers:
    """A language model's answers to the training questions, as cached beside a run.

    Attributes:
        answers: ``answer_key -> {"question": ..., "completion": ...}``.
        source: what produced them (weights fingerprint, records fingerprint, generation settings); a cache whose
            source differs from the run's is regenerated.
    """

    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    source: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def num_usable(self) -> int:
        """How many answers :func:`usable_completion` accepts."""
        return sum(usable_completion(entry.get("completion")) for entry in self.answers.values())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache as JSON, atomically (an interrupted run leaves no half-written file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        content = {"format": OWN_ANSWERS_FORMAT, "source": self.source, "answers": self.answers}
        temporary.write_text(json.dumps(content, indent=1, sort_keys=True))
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> OwnAnswers:
        """Read a cache written by :meth:`save`.

        Raises:
            ValueError: the file is not such a cache (not JSON, another format version, malformed entries).
        """
        path = Path(path)
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); delete it to generate the answers again.") from error
        if not isinstance(content, Mapping) or content.get("format") != OWN_ANSWERS_FORMAT:
            found = content.get("format") if isinstance(content, Mapping) else type(content).__name__
            raise ValueError(f"{path} is not an own-answers cache of format {OWN_ANSWERS_FORMAT} (found {found!r}).")
        answers, source = content.get("answers"), content.get("source")
        if not isinstance(answers, Mapping) or not isinstance(source, Mapping) or not all(
                isinstance(v, Mapping) and isinstance(v.get("question"), str) and isinstance(v.get("completion"), str)
                for v in answers.values()):
            raise ValueError(f"{path}: 'answers' must map record keys to {{'question', 'completion'}} strings and "
                             "'source' must be a mapping; delete the file to generate the answers again.")
        return cls(answers={k: dict(v) for k, v in answers.items()}, source=dict(source))


class UseOwnAnswersd(MapTransform):
    """Replace a sample's question and completion by the language model's own answer to that record.

    Place it after :class:`scripts.data.transforms.RenderTextd`. The label (the reference mask) stays: the mask
    stage learns to segment the asked finding from the states of the answer the model really writes. A record
    whose own answer is not usable (:func:`usable_completion`) keeps its reference text; the sample's
    ``text_source`` says which was used (``"own"`` or ``"reference"``).

    Args:
        answers: the cache (:class:`OwnAnswers`) or its ``answers`` mapping.
        seg_token: the segmentation token.

    Raises:
        KeyError: a sample has no answer in the cache (the cache was made for other records).
    """

    def __init__(self, answers: OwnAnswers | Mapping[str, Mapping[str, str]], seg_token: str = SEG_TOKEN) -> None:
        MapTransform.__init__(self, keys=("question", "completion"))
        self.answers = answers.answers if isinstance(answers, OwnAnswers) else answers
        self.seg_token = seg_token

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        key = answer_key(d)
        entry = self.answers.get(key)
        if entry is None:
            raise KeyError(f"{describe_record(d)}: no own answer for {key!r} in the cache of {len(self.answers)} "
                           "answers; it was generated for other records. Delete it to generate it again.")
        d["text_source"] = "reference"
        if usable_completion(entry["completion"], self.seg_token):
            d["question"], d["completion"] = entry["question"], entry["completion"]
            d["text_source"] = "own"
        return d
