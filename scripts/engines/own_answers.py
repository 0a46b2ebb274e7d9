# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Generate, once per run, the language model's own answers to the training records (the mask stage's text).

``configs/train_sft.json`` with ``"own_answers": true`` calls :func:`ensure_own_answers` after the language
model is loaded (``init_checkpoint``). The answers are cached beside the run (``own_answers_file``), so a resumed
or repeated run reuses them; the cache is regenerated when the language model's weights, the records or the
generation settings change. See :mod:`scripts.data.own_answers` for why and how they are used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from scripts.data.own_answers import OwnAnswers, answer_key
from scripts.data.prompts import render_question
from scripts.inference import Predictor
from scripts.networks.coreseg import CoreSeg

logger = logging.getLogger(__name__)


@torch.no_grad()
def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short fingerprint of every parameter and buffer of ``module`` (names, shapes, dtypes, sums).

    It tells a cache made by other weights (another checkpoint, or another seed of a randomly initialised preset)
    from one made by these; summing on the module's device keeps it cheap for a 3B-parameter model.
    """
    digest = hashlib.sha256()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        values = tensor.detach().double()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|{values.sum().item():.10e}|"
                      f"{values.abs().sum().item():.10e}|{values.square().sum().item():.10e}".encode())
    return digest.hexdigest()[:16]


def records_fingerprint(records: Sequence[Mapping]) -> str:
    """A short fingerprint of datalist records (their JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(list(records), sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_question(record: Mapping, seed: int = 0) -> str:
    """The record's question, or one rendered from the templates with a seed fixed by the record and ``seed``."""
    question = record.get("question")
    if isinstance(question, str) and question.strip():
        return question
    return render_question(record, random.Random(zlib.crc32(f"{seed}|{answer_key(record)}".encode())))


def generate_own_answers(
    network: CoreSeg,
    records: Sequence[Mapping],
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    reasoning: bool = True,
    amp: bool = False,
    amp_dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
) -> dict[str, dict[str, str]]:
    """Greedy answers of ``network`` to the question of every record (:func:`training_question`).

    The network is put in eval mode for the generation and given back in the mode it was in.

    Args:
        network: the model, language model loaded.
        records: datalist records (their ``label``, ``boxes``, ``answer`` and ``reasoning`` are not used).
        seed: seed of the questions rendered for records without one.
        batch_size: records per generation batch.
        max_new_tokens: longest answer.
        reasoning: the model reasons before answering (the prompt asks for it).
        amp: generate under autocast with ``amp_dtype`` (CUDA).
        amp_dtype: autocast dtype.
        progress: show a progress bar.

    Returns:
        ``answer_key -> {"question": ..., "completion": ...}``, one entry per distinct key.
    """
    was_training = network.training
    device = next(network.parameters()).device
    unique: dict[str, Mapping] = {}
    for record in records:
        unique.setdefault(answer_key(record), record)
    questions = [training_question(record, seed) for record in unique.values()]
    asked = [{**record, "question": question} for record, question in zip(unique.values(), questions)]
    try:
        predictor = Predictor(network, device=device, max_new_tokens=max_new_tokens, amp=amp, amp_dtype=amp_dtype,
                              reasoning=reasoning)  # puts the network in eval mode
        predictions = predictor.predict_records(asked, batch_size=batch_size, progress=progress)
    finally:
        network.train(was_training)
    return {key: {"question": question, "completion": prediction.completion}
            for key, question, prediction in zip(unique, questions, predictions)}


def ensure_own_answers(
    network: CoreSeg,
    records: Sequence[Mapping],
    path: str | Path,
    seed: int = 0,
    max_new_tokens: int = 512,
    reasoning: bool = True,
    **generation_options: Any,
) -> OwnAnswers:
    """The cached own answers at ``path`` if they were made by this language model for these records with these
    settings; otherwise generate them (:func:`generate_own_answers`) and write the cache.

    Call it once the language model holds its trained weights. Meant for a mask stage whose language model stays
    frozen (``mllm_freeze_iterations: null``): answers of a model that then changes would go stale.

    Args:
        network: the model, language model loaded.
        records: the training records.
        path: the cache file (JSON).
        seed: seed of the questions rendered for records without one.
        max_new_tokens: longest answer.
        reasoning: the model reasons before answering (the prompt asks for it).
        generation_options: further arguments of :func:`generate_own_answers` that do not change the answers
            (``batch_size``, ``amp``, ``amp_dtype``, ``progress``).
    """
    path = Path(path)
    source = {
        "weights": weights_fingerprint(network.mllm),
        "records": records_fingerprint(records),
        "seed": int(seed),
        "max_new_tokens": int(max_new_tokens),
        "reasoning": bool(reasoning),
    }
    if path.is_file():
        try:
            cached = OwnAnswers.load(path)
        except ValueError as error:
            logger.warning("Own answers: %s Generating them again.", error)
        else:
            if cached.source == source:
                _log_usage(cached, f"loaded from {path}")
                return cached
            changed = sorted(k for k in source if cached.source.get(k) != source[k])
            logger.info("Own answers: the cache at %s was made with another %s; generating them again.", path,
                        ", ".join(changed))
    logger.info("Own answers: generating the language model's answers to %d training records.", len(records))
    answers = generate_own_answers(network, records, seed=seed, max_new_tokens=max_new_tokens, reasoning=reasoning,
                                   **generation_options)
    own = OwnAnswers(answers=answers, source=source)
    own.save(path)
    _log_usage(own, f"written to {path}")
    return own


def _log_usage(own: OwnAnswers, where: str) -> None:
    usable = own.num_usable
    logger.info("Own answers %s: %d answers, %d usable (one <seg>, no control token); the other %d records train "
                "on their reference text.", where, len(own), usable, len(own) - usable)
