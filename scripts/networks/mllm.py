# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Multimodal LLM builder: load an image-text-to-text model, add ``<seg>``, apply LoRA with peft.

Works with any transformers image-text-to-text model that has a processor (default Qwen2.5-VL-3B-Instruct);
the only architecture knowledge used is where the language model and the vision tower sit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import AddedToken
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin

__all__ = [
    "SEG_TOKEN",
    "LoraSettings",
    "PreparedMLLM",
    "load_mllm",
    "add_seg_token",
    "find_language_model",
    "find_vision_tower",
    "apply_lora",
    "prepare_mllm",
]

SEG_TOKEN = "<seg>"
_VISION_TOWER_NAMES = ("visual", "vision_tower", "vision_model")


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (paper section 5.1.2: r=64, alpha=128, dropout=0.05).

    Attributes:
        r: rank.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the LoRA input.
        target_modules: leaf names of the language model's linear layers to adapt; ``None`` adapts all of them
            (for Qwen2.5-VL: q/k/v/o projections and the gate/up/down MLP projections).
    """

    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] | None = field(default=None)


@dataclass
class PreparedMLLM:
    """A peft-wrapped MLLM ready for CORE-Seg, with its processor and the ``<seg>`` token id."""

    model: PeftModel
    processor: ProcessorMixin
    seg_token_id: int


def load_mllm(
    path: str | Path,
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    local_files_only: bool = True,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load an image-text-to-text model and its processor from a local directory.

    Args:
        path: a directory written by ``save_pretrained`` (or, with ``local_files_only=False``, a hub id).
        dtype: parameter dtype (``"auto"`` keeps the checkpoint's).
        attn_implementation: e.g. ``"sdpa"`` or ``"flash_attention_2"``; ``None`` lets transformers choose.
        local_files_only: never touch the network (default). Set False to allow a hub download.
        trust_remote_code: run model code shipped with the checkpoint; off by default.

    Raises:
        FileNotFoundError: ``local_files_only`` and ``path`` is not an existing directory.
    """
    if local_files_only and not Path(path).is_dir():
        raise FileNotFoundError(
            f"MLLM weights not found at {path!s}. Download them first, e.g. "
            f"`hf download Qwen/Qwen2.5-VL-3B-Instruct --local-dir {path!s}`, or allow a download explicitly."
        )
    kwargs = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
    processor = AutoProcessor.from_pretrained(path, **kwargs)
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation, **kwargs
    )
    return model, processor


def add_seg_token(model: PreTrainedModel, processor: ProcessorMixin, seg_token: str = SEG_TOKEN) -> tuple[int, bool]:
    """Add ``seg_token`` as a special token and give it an embedding row (and an lm_head row).

    The embedding matrix grows only when the vocabulary has no free row: Qwen2.5-VL's matrix (151936 rows) is
    larger than its tokenizer (151665 tokens), and shrinking it to ``len(tokenizer)`` would drop rows. A newly
    added token's input (and, if untied, output) row is set to the mean of the existing token rows, a
    neutral start that keeps the initial logits of the new token close to the average token.

    Returns:
        ``(token_id, added)`` where ``added`` is False when the tokenizer already had the token (e.g. a
        model directory saved after CORE-Seg training, whose trained row must be kept).
    """
    tokenizer = processor.tokenizer
    if seg_token in tokenizer.get_vocab():
        return tokenizer.convert_tokens_to_ids(seg_token), False
    old_length = len(tokenizer)
    tokenizer.add_special_tokens(
        {"extra_special_tokens": [AddedToken(seg_token, special=True, normalized=False)]},
        replace_extra_special_tokens=False,  # keep the model's own extra special tokens
    )
    token_id = tokenizer.convert_tokens_to_ids(seg_token)
    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        rows = [model.get_input_embeddings().weight]
        output = model.get_output_embeddings()
        if output is not None and output.weight is not rows[0]:
            rows.append(output.weight)
        for weight in rows:
            weight[token_id] = weight[:old_length].float().mean(0).to(weight.dtype)
    return token_id, True


def find_language_model(model: nn.Module) -> tuple[str, nn.Module]:
    """Return ``(qualified_name, module)`` of the text decoder inside an image-text-to-text model."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        raise ValueError(f"Cannot find the language model of {type(model).__name__} (no get_decoder()).")
    for name, module in model.named_modules():
        if module is decoder:
            return name, module
    raise ValueError(f"get_decoder() of {type(model).__name__} is not a submodule of the model.")


def find_vision_tower(model: nn.Module) -> tuple[str, nn.Module]:
    """Return ``(qualified_name, module)`` of the vision encoder inside an image-text-to-text model."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in _VISION_TOWER_NAMES:
            return name, module
    raise ValueError(f"Cannot find the vision tower of {type(model).__name__}; looked for {_VISION_TOWER_NAMES}.")


def apply_lora(
    model: PreTrainedModel, seg_token_ids: list[int], settings: LoraSettings, train_embeddings: bool = False
) -> PeftModel:
    """Freeze the model, add LoRA to the language model's linear layers and make the ``<seg>`` rows trainable.

    The ``<seg>`` rows train through peft's trainable tokens (``LoraConfig.trainable_token_indices``): only
    those rows of the input embedding (and of the lm_head, tied or not) get gradients, not the whole matrix.

    Args:
        model: the image-text-to-text model.
        seg_token_ids: ids of the segmentation token(s).
        settings: LoRA hyper-parameters.
        train_embeddings: train the whole input embedding and lm_head instead of the ``<seg>`` rows only, as
            LISA does. Meant for randomly initialised language models (the tiny preset), whose frozen random
            output layer would otherwise bound how well any LoRA update can fit the text.
    """
    model.requires_grad_(False)
    lm_name, language_model = find_language_model(model)
    linear_leaves = sorted({n.rsplit(".", 1)[-1] for n, m in language_model.named_modules() if isinstance(m, nn.Linear)})
    targets = settings.target_modules if settings.target_modules is not None else linear_leaves
    unknown = sorted(set(targets) - set(linear_leaves))
    if unknown or not targets:
        raise ValueError(f"LoRA target modules {unknown or targets} are not linear layers of the language model; "
                         f"available: {linear_leaves}.")
    # A regex anchored on the language model keeps LoRA off the vision tower's layers of the same name.
    target_regex = rf"^{re.escape(lm_name)}\..*\.({'|'.join(map(re.escape, targets))})$"
    embedding_layers = [model.get_input_embeddings()]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not embedding_layers[0].weight:
        embedding_layers.append(output)
    token_targets = None
    if not train_embeddings:
        token_targets = {_leaf_name(model, layer): list(seg_token_ids) for layer in embedding_layers}
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_regex,
        trainable_token_indices=token_targets,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    if train_embeddings:
        # Plain parameters of the base model (not peft modules_to_save copies), so tied weights stay tied.
        for layer in embedding_layers:
            layer.weight.requires_grad_(True)
    return peft_model


def prepare_mllm(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    lora: LoraSettings | None = None,
    seg_token: str = SEG_TOKEN,
    train_embeddings: bool = False,
) -> PreparedMLLM:
    """Add ``<seg>``, apply LoRA and check that the vision tower stays frozen.

    Args:
        model: an image-text-to-text model (any dtype/device).
        processor: its processor; the tokenizer gains ``seg_token``.
        lora: LoRA settings (default: the paper's r=64, alpha=128, dropout=0.05).
        seg_token: the segmentation token.
        train_embeddings: train the whole input embedding and lm_head (see :func:`apply_lora`).
    """
    seg_token_id, _ = add_seg_token(model, processor, seg_token)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    peft_model = apply_lora(model, [seg_token_id], lora or LoraSettings(), train_embeddings)
    vision_name, vision = find_vision_tower(peft_model.get_base_model())
    trainable_vision = [n for n, p in vision.named_parameters() if p.requires_grad]
    if trainable_vision:
        raise RuntimeError(f"Vision tower {vision_name} must stay frozen, but {trainable_vision[:3]} are trainable.")
    return PreparedMLLM(model=peft_model, processor=processor, seg_token_id=seg_token_id)


def _leaf_name(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name.rsplit(".", 1)[-1]
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(model).__name__}.")
