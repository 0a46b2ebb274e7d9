# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Shared fixtures: the tiny CoreSeg and processor batches built from in-memory images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scripts.networks import build_coreseg

QUESTION = "Please segment the nodule in this CT image of the lung."
ANSWER = "<think> A round region with blurred margins differs from the lung tissue. </think>" \
         "<answer> The nodule is located at [10,20,60,70]. <seg> </answer>"


def random_image(seed: int, size: tuple[int, int] = (96, 128)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))


def chat_text(processor, question: str, answer: str | None) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is None:
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return processor.apply_chat_template(messages, tokenize=False)


def make_batch(
    model,
    answers: list[str | None],
    questions: list[str] | None = None,
    padding_side: str = "right",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Processor batch for one random image per sample; with answers, labels cover the answer tokens only."""
    processor = model.processor
    questions = questions or [QUESTION] * len(answers)
    images = [random_image(seed + i, size=(96 + 16 * (i % 2), 128)) for i in range(len(answers))]
    processor.tokenizer.padding_side = padding_side
    texts = [chat_text(processor, q, a) for q, a in zip(questions, answers)]
    batch = dict(processor(text=texts, images=images, return_tensors="pt", padding=True))
    if all(a is not None for a in answers):
        prompts = [chat_text(processor, q, None) for q in questions]
        labels = batch["input_ids"].clone()
        for row, prompt in enumerate(prompts):
            prompt_length = len(processor(text=[prompt], images=[images[row]])["input_ids"][0])
            labels[row, :prompt_length] = -100
        labels[batch["attention_mask"].eq(0)] = -100
        batch["labels"] = labels
    generator = torch.Generator().manual_seed(seed)
    batch["sam_images"] = torch.randn(len(answers), 3, 512, 512, generator=generator)
    return batch


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny CoreSeg in eval mode, shared by read-only tests (do not modify its parameters)."""
    model = build_coreseg("tiny", seed=0)
    model.eval()
    return model


@pytest.fixture()
def fresh_tiny_model():
    """A tiny CoreSeg of one's own, in train mode (for tests that step or change parameters)."""
    return build_coreseg("tiny", seed=0)
