# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Offline tokenizer and Qwen2.5-VL processor for the `tiny` preset and random-weight builds.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in memory on a small corpus, and
the processor is transformers' own `Qwen2_5_VLProcessor` around it, with Qwen2.5-VL's chat template. The
resulting processor tokenises prompts exactly like the real one (same special tokens, same chat template,
same image processor), so every code path that touches it is the one the full model uses.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from importlib import resources

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "QWEN2_5_VL_IMAGE_MEAN",
    "QWEN2_5_VL_IMAGE_STD",
    "default_atomic_phrases",
    "default_tokenizer_corpus",
    "build_offline_tokenizer",
    "build_offline_processor",
    "qwen2_5_vl_chat_template",
]

# The control tokens of Qwen2.5-VL, in the order of their ids in the real vocabulary.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2.5-VL's image normalisation (OpenAI CLIP statistics), from its preprocessor_config.json.
QWEN2_5_VL_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
QWEN2_5_VL_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

_MODALITIES = ("CT", "MRI", "X-ray", "ultrasound", "endoscopy", "dermoscopy", "fundus photography", "OCT")
_ANATOMIES = ("head", "abdomen", "lung", "eye", "neck", "skin", "foot", "breast", "heart")
_FINDINGS = (
    "tumor", "nodule", "lesion", "polyp", "cyst", "hemorrhage", "edema", "metastasis", "ulcer", "melanoma",
    "exudate", "effusion", "infarct", "calcification", "mass", "abscess", "glioma", "carcinoma",
)


def default_tokenizer_corpus() -> list[str]:
    """A deterministic corpus in the style of the bundle's prompts, reasoning and answers.

    Byte-level BPE can encode any text whatever the corpus; the corpus only decides which character
    sequences get their own tokens, so it mirrors the text the model is asked to read and produce: generic
    clinical phrasings over every modality and anatomy, plus the questions and completions the data pipeline
    renders for every finding of the vocabulary (:func:`scripts.data.corpus.prompt_corpus`).
    """
    from scripts.data.corpus import prompt_corpus  # here, not at the top: scripts.data imports this package

    corpus = [
        "Please segment the {finding} in this {modality} image of the {anatomy}.",
        "Where is the {finding} in this {anatomy} {modality} scan? Think step by step.",
        "<think> The {modality} image shows the normal {anatomy} anatomy. A region with irregular margins, "
        "heterogeneous texture and low contrast differs from the surrounding tissue, which suggests a "
        "{finding}. </think><answer> The {finding} is located at [12,34,156,178], [200,40,260,98]. </answer>",
        "There is no {finding} in this image.",
        "The boundary is blurred and the shape is irregular; the intensity is lower than the background.",
    ]
    lines: list[str] = []
    for template in corpus:
        for modality in _MODALITIES:
            for anatomy in _ANATOMIES:
                for finding in _FINDINGS[:: len(_ANATOMIES) // 3]:
                    lines.append(template.format(finding=finding, modality=modality, anatomy=anatomy))
    lines.append(" ".join(str(number) for number in range(0, 1025)))
    lines.append("[ ] ( ) { } < > / , . ; : ! ? - _ = + * ' \" \n")
    return lines + prompt_corpus()


def build_offline_tokenizer(
    corpus: Iterable[str] | None = None,
    vocab_size: int = 4096,
    extra_special_tokens: Sequence[str] = (),
    merge_across_words: bool = True,
    atomic_phrases: Sequence[str] | None = None,
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer in memory, with Qwen2.5-VL's control tokens.

    The control tokens come first in the vocabulary (ids 0..6), so a processor built on this tokenizer
    resolves ``<|image_pad|>`` and friends by name exactly as with the real Qwen tokenizer. Training is
    deterministic for a given corpus and vocabulary size.

    Args:
        corpus: training text; defaults to :func:`default_tokenizer_corpus`.
        vocab_size: target vocabulary size, control tokens included.
        extra_special_tokens: further special tokens added after training (e.g. ``"<seg>"``); usually left
            to :func:`scripts.networks.mllm.add_seg_token` so that tiny and full models add it the same way.
        merge_across_words: let merges span spaces, so that the corpus's recurring phrases become single
            tokens (a rendered completion takes about 36 tokens instead of about 290 with word-level merges at
            1k tokens). Digits are always split one per token, as Qwen2.5's tokenizer does, so box coordinates
            are spelled digit by digit.
        atomic_phrases: phrases that are always split off as pre-tokens of their own (with the space before them),
            so that merges never join them to their neighbours and each is spelled with the same tokens wherever
            it occurs. Defaults to the finding names of :data:`scripts.data.vocabulary.LESION_TYPES` when
            ``merge_across_words`` is set: with merges across words, "liver tumor" in a question and "liver tumor
            is located at [" in an answer became unrelated tokens (and "kidney stone" split as "kidney ston" +
            "e is located at ["), so the model could not answer by copying the asked finding, as a word-level
            tokenizer like Qwen's lets it. Pass ``()`` for none.

    Returns:
        A transformers fast tokenizer with ``eos_token="<|im_end|>"`` and ``pad_token="<|endoftext|>"``.
    """
    if atomic_phrases is None:
        atomic_phrases = default_atomic_phrases() if merge_across_words else ()
    atomic_phrases = tuple(atomic_phrases)
    if corpus is None:
        # The default tokenizer is rebuilt by every tiny-preset build: train it once per process.
        backend = Tokenizer.from_str(_trained_default_backend(vocab_size, merge_across_words, atomic_phrases))
    else:
        backend = _train_backend(list(corpus), vocab_size, merge_across_words, atomic_phrases)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]) + list(extra_special_tokens),
    )
    tokenizer.chat_template = qwen2_5_vl_chat_template()
    return tokenizer


def default_atomic_phrases() -> tuple[str, ...]:
    """The finding names of the controlled vocabulary (diseases and their distractors), longest first."""
    from scripts.data.vocabulary import LESION_TYPES  # here, not at the top: scripts.data imports this package

    names = {name for lesion in LESION_TYPES for name in (lesion.disease, lesion.distractor)}
    return tuple(sorted(names, key=lambda name: (-len(name), name)))


def _atomic_phrase_splitter(phrases: Sequence[str]) -> pre_tokenizers.Split:
    # Longest first, so that "liver cyst" wins over "cyst"; word boundaries keep "cyst" out of "pseudocyst".
    alternatives = "|".join(re.escape(phrase) for phrase in sorted(phrases, key=len, reverse=True))
    return pre_tokenizers.Split(Regex(rf" ?\b(?:{alternatives})\b"), behavior="isolated")


def _train_backend(corpus: list[str], vocab_size: int, merge_across_words: bool,
                   atomic_phrases: Sequence[str] = ()) -> Tokenizer:
    backend = Tokenizer(models.BPE())
    steps = [_atomic_phrase_splitter(atomic_phrases)] if atomic_phrases else []
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps + [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not merge_across_words),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    return backend


@functools.lru_cache(maxsize=4)
def _trained_default_backend(vocab_size: int, merge_across_words: bool, atomic_phrases: tuple[str, ...]) -> str:
    """The default-corpus tokenizer as JSON (immutable, so the cache cannot be altered through a tokenizer)."""
    return _train_backend(default_tokenizer_corpus(), vocab_size, merge_across_words, atomic_phrases).to_str()


def qwen2_5_vl_chat_template() -> str:
    """Qwen2.5-VL-Instruct's chat template (as shipped in its ``chat_template.json``)."""
    return resources.files(__package__).joinpath("qwen2_5_vl_chat_template.jinja").read_text()


def build_offline_processor(
    tokenizer: PreTrainedTokenizerFast | None = None,
    min_pixels: int = 4 * 28 * 28,
    max_pixels: int = 12845056,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> Qwen2_5_VLProcessor:
    """Build a `Qwen2_5_VLProcessor` without any file: offline tokenizer + Qwen2-VL image processor.

    The defaults are those of Qwen2.5-VL-3B-Instruct's ``preprocessor_config.json`` except ``min_pixels``
    (3136 there), which is lowered so that small test images are not up-scaled; the ``tiny`` preset lowers
    ``max_pixels`` so that CPU runs see few image tokens.

    Args:
        tokenizer: tokenizer to wrap; defaults to :func:`build_offline_tokenizer`.
        min_pixels: lower bound on ``height * width`` after the processor's resize.
        max_pixels: upper bound on ``height * width`` after the processor's resize.
        patch_size: vision patch size of the model.
        merge_size: spatial merge size of the model (image tokens = patches / merge_size**2).
        temporal_patch_size: temporal patch size of the model (images are repeated to fill it).
    """
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels}).")
    tokenizer = tokenizer if tokenizer is not None else build_offline_tokenizer()
    common = {
        # transformers v5 spells the pixel budget as size={"shortest_edge": min_pixels, "longest_edge": max_pixels}
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "patch_size": patch_size,
        "merge_size": merge_size,
        "temporal_patch_size": temporal_patch_size,
        "image_mean": list(QWEN2_5_VL_IMAGE_MEAN),
        "image_std": list(QWEN2_5_VL_IMAGE_STD),
    }
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common),
        tokenizer=tokenizer,
        chat_template=qwen2_5_vl_chat_template(),
    )
