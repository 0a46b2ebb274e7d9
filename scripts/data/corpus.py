# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Text in the bundle's prompt format, for training the tiny preset's tokenizer.

The tiny preset's byte-level BPE tokenizer is trained in memory. Byte-level BPE encodes any text whatever it was
trained on; the corpus only decides which character sequences become single tokens. Training it on the very
questions, reasoning and answers the pipeline renders (every lesion type of the vocabulary, both findings of
each pair, 0-3 lesions) makes those texts short in tokens, so a randomly initialised 2-layer model learns and
generates them in far fewer steps. The full preset keeps Qwen's own tokenizer.
"""

from __future__ import annotations

import random

from .prompts import render_answer, render_completion, render_question, render_reasoning
from .synthetic.findings import appearance, style_of
from .vocabulary import LESION_TYPES

__all__ = ["prompt_corpus"]


def prompt_corpus(renderings_per_finding: int = 6, seed: int = 0) -> list[str]:
    """Questions and completions for every finding of the vocabulary, rendered as the data pipeline does.

    Args:
        renderings_per_finding: questions and completions rendered per (lesion type, finding), each with a
            random number of lesions (0-3) and random boxes.
        seed: seed of the template choices and boxes; the corpus is deterministic for a given seed.

    Returns:
        ``2 * renderings_per_finding`` texts per finding (a question, then a completion).
    """
    rng = random.Random(seed)
    texts: list[str] = []
    for lesion in LESION_TYPES:
        for asked, other in ((lesion.disease, lesion.distractor), (lesion.distractor, lesion.disease)):
            record = {
                "modality": lesion.modality, "anatomy": lesion.anatomy, "disease": asked, "distractor": other,
                "target_appearance": appearance(style_of(lesion.modality, asked)),
                "distractor_appearance": appearance(style_of(lesion.modality, other)),
            }
            for _ in range(renderings_per_finding):
                size = (rng.randint(192, 512), rng.randint(192, 512))
                boxes = [_random_box(rng, size) for _ in range(rng.choice((0, 1, 1, 2, 3)))]
                record["num_distractors"] = rng.choice((0, 1, 2))
                texts.append(render_question(record, rng))
                reasoning = render_reasoning(record, boxes, rng, size)
                texts.append(render_completion(reasoning, render_answer(asked, boxes)))
    return texts


def _random_box(rng: random.Random, size: tuple[int, int]) -> list[int]:
    height, width = size
    x1, y1 = rng.randrange(0, width - 8), rng.randrange(0, height - 8)
    return [x1, y1, rng.randint(x1 + 4, min(width, x1 + 120)), rng.randint(y1 + 4, min(height, y1 + 120))]
