# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Model presets, instantiable from bundle configs (``"network_def": {"_target_": "scripts.networks.build_coreseg"}``).

``full``
    Qwen2.5-VL-3B-Instruct and MedSAM2 from local paths (``mllm_path``, ``sam_checkpoint``), LoRA r=64,
    alpha=128, dropout=0.05. Nothing is downloaded unless ``allow_download=True``. With ``random_weights=True``
    the same architecture is built from its configuration with random weights (for speed and memory
    benchmarks; no file needed).
``tiny``
    A random-init small Qwen2.5-VL, an offline byte-level tokenizer and a small SAM2 (same 512x512 geometry and
    256-d prompts as MedSAM2), LoRA r=8, alpha=16. Built offline and deterministically from ``seed`` in a few
    seconds on a CPU, for tests and CI.
``demo``
    The bundled synthetic-data demo model (``configs/train_sft_demo*.json``, ``docs/sft_learning.md``): the tiny
    SAM2 at 256 pixels with its encoder trained, a random-init Qwen2.5-VL of 128 dimensions and 4 layers (the tiny
    one's 64 and 2 cannot learn to write the answers) with LoRA r=128/alpha=256 (full rank) and its whole
    embedding and lm_head trained (they are random), and the whole-answer semantic probe without the ``<seg>``
    state (``"answer_text"``).

All presets build the same classes through the same functions: only where the weights come from differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from .adapter import build_prompt_adapter
from .architectures import (
    MEDSAM2_HYDRA_OVERRIDES,
    SAM2_BASE_CONFIG,
    TINY_SAM2_HYDRA_OVERRIDES,
    bind_special_token_ids,
    qwen2_5_vl_3b_config,
    sam2_image_size_overrides,
    tiny_qwen2_5_vl_config,
)
from .coreseg import CoreSeg
from .medsam2 import MedSAM2Segmenter
from .mllm import LoraSettings, load_mllm, prepare_mllm
from .processor import build_offline_processor, build_offline_tokenizer

__all__ = ["PRESETS", "build_coreseg", "build_base_mllm", "build_segmenter", "resolve_dtype"]

DEFAULT_MLLM_HUB_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
#: Init std of the tiny preset's (tied) token embeddings; see :func:`build_base_mllm`.
TINY_EMBEDDING_STD = 0.2
DEFAULT_SAM_HUB_FILE = ("wanglab/MedSAM2", "MedSAM2_latest.pt")

PRESETS: dict[str, dict] = {
    "full": {
        "architecture": "qwen2.5-vl-3b",
        "sam_hydra_overrides": MEDSAM2_HYDRA_OVERRIDES,
        "lora": LoraSettings(r=64, alpha=128, dropout=0.05),
        "train_embeddings": False,
        "semantic_probe": "seg",
        "sam_image_size": None,
        "train_sam_encoder": False,
        "dtype": "bfloat16",
        "min_pixels": 3136,
        "max_pixels": 12845056,
    },
    "tiny": {
        "architecture": "tiny",
        "sam_hydra_overrides": TINY_SAM2_HYDRA_OVERRIDES,
        "lora": LoraSettings(r=8, alpha=16, dropout=0.05),
        "train_embeddings": False,
        "semantic_probe": "seg",
        "sam_image_size": None,
        "train_sam_encoder": False,
        "dtype": "float32",
        "min_pixels": 4 * 28 * 28,
        "max_pixels": 224 * 224,
    },
}
PRESETS["demo"] = {
    **PRESETS["tiny"],
    "architecture": "small",
    "lora": LoraSettings(r=128, alpha=256, dropout=0.05),
    "train_embeddings": True,
    "semantic_probe": "answer_text",
    "sam_image_size": 256,
    "train_sam_encoder": True,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16`` etc. to a ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(dtype, dtype)
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}; expected e.g. 'bfloat16', 'float16' or 'float32'.")
    return resolved


def build_base_mllm(architecture: str, dtype: torch.dtype, min_pixels: int, max_pixels: int, seed: int = 0):
    """Random-init MLLM and offline processor for an architecture name (``"tiny"``, ``"small"``, ``"qwen2.5-vl-3b"``).

    ``small`` is the tiny configuration at 128 dimensions and 4 layers, with the usual initialisation: the demo
    trains its embeddings, so they need no enlarged init, and a 64-d, 2-layer model cannot write the answers.
    """
    tokenizer = build_offline_tokenizer()
    processor = build_offline_processor(tokenizer, min_pixels=min_pixels, max_pixels=max_pixels)
    if architecture == "tiny":
        config = tiny_qwen2_5_vl_config(vocab_size=len(tokenizer))
    elif architecture == "small":
        config = tiny_qwen2_5_vl_config(vocab_size=len(tokenizer), hidden_size=128, num_layers=4)
    elif architecture == "qwen2.5-vl-3b":
        config = qwen2_5_vl_3b_config()
    else:
        raise ValueError(f"Unknown MLLM architecture {architecture!r}; expected 'tiny', 'small' or 'qwen2.5-vl-3b'.")
    bind_special_token_ids(config, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
        if architecture == "tiny":
            # With the usual 0.02 init, a 64-d model's tied embedding/lm_head rows have norm ~0.16 against a
            # final RMSNorm output of norm ~8, so every logit stays within +-1.3 and no LoRA update can fit a
            # text distribution (the loss floor is ~5.6 nats). Rows of norm ~1.6 give logits a usable range.
            torch.nn.init.normal_(model.get_input_embeddings().weight, std=TINY_EMBEDDING_STD)
    model.generation_config.eos_token_id = [config.text_config.eos_token_id, tokenizer.pad_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def build_coreseg(
    preset: str = "tiny",
    mllm_path: str | Path | None = None,
    sam_checkpoint: str | Path | None = None,
    adapter: str = "semantic",
    adapter_kwargs: dict | None = None,
    semantic_probe: str | None = None,
    lora_r: int | None = None,
    lora_alpha: int | None = None,
    lora_dropout: float | None = None,
    lora_target_modules: Sequence[str] | None = None,
    train_embeddings: bool | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    sam_hydra_overrides: Sequence[str] | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    random_weights: bool = False,
    allow_download: bool = False,
    train_sam_encoder: bool | None = None,
    sam_image_size: int | None = None,
    seed: int = 0,
) -> CoreSeg:
    """Build a :class:`~scripts.networks.coreseg.CoreSeg` from a preset.

    Args:
        preset: ``"full"``, ``"tiny"`` or ``"demo"`` (see the module docstring); the other arguments override its
            values (``None``: the preset's).
        mllm_path: directory of an image-text-to-text model written by ``save_pretrained``. Required for
            ``full`` unless ``random_weights``; optional for ``tiny`` (random init when omitted).
        sam_checkpoint: sam2-format checkpoint (``{"model": state_dict}``, e.g. ``MedSAM2_latest.pt``).
            Required for ``full`` unless ``random_weights``.
        adapter: ``"semantic"`` (Semantic-Guided Prompt Adapter) or ``"linear"`` (Table 2 ablation).
        adapter_kwargs: options of the adapter (``num_blocks``, ``mlp_ratio``, ``attn_dim``, ``num_heads``, ...).
        semantic_probe: what the adapter reads: ``"seg"``, the ``<seg>`` token's final state (the paper's choice),
            ``"answer"``, the states of the whole answer up to ``<seg>`` (the paper's Table 4 alternative), or
            ``"answer_text"``, the same without the ``<seg>`` state. Default: the preset's.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: LoRA settings.
        train_embeddings: train the language model's whole input embedding and lm_head rather than only the
            ``<seg>`` rows (LISA's choice; useful for the randomly initialised tiny language model, whose frozen
            random output layer limits how well it can learn the answers). Default: the preset's (off).
        dtype: MLLM parameter dtype (``"bfloat16"`` for ``full``, ``"float32"`` for ``tiny``). The adapter and
            SAM stay in float32 (use autocast for mixed precision).
        attn_implementation: transformers attention backend for a loaded MLLM.
        sam_hydra_overrides: hydra overrides of sam2's ``sam2.1_hiera_t.yaml`` describing the SAM2 model.
        min_pixels, max_pixels: pixel budget of the MLLM image processor for random-init models
            (a loaded model keeps its own processor settings).
        random_weights: build the preset's architecture with random weights instead of loading files.
        allow_download: let a missing ``mllm_path``/``sam_checkpoint`` be fetched from the Hugging Face hub
            (``Qwen/Qwen2.5-VL-3B-Instruct``, ``wanglab/MedSAM2``). Off by default.
        train_sam_encoder: train the SAM image encoder too (off: the paper freezes MedSAM2's pretrained encoder;
            a randomly initialised tiny encoder trained from scratch needs it). Default: the preset's.
        sam_image_size: side of SAM's input and of the masks (default: the preset's, 512 as in MedSAM2). Set
            the data pipeline's ``mask_size`` to the same value (``network.segmenter.image_size``).
        seed: seed of every random initialisation (base weights, LoRA, adapter), for reproducible builds.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; expected one of {sorted(PRESETS)}.")
    settings = PRESETS[preset]
    torch_dtype = resolve_dtype(dtype or settings["dtype"])
    lora = LoraSettings(
        r=lora_r if lora_r is not None else settings["lora"].r,
        alpha=lora_alpha if lora_alpha is not None else settings["lora"].alpha,
        dropout=lora_dropout if lora_dropout is not None else settings["lora"].dropout,
        target_modules=list(lora_target_modules) if lora_target_modules is not None else None,
    )
    needs_files = preset == "full" and not random_weights
    if needs_files and mllm_path is None and not allow_download:
        raise ValueError("The 'full' preset needs mllm_path (a local Qwen2.5-VL-3B-Instruct directory), "
                         "or random_weights=True, or allow_download=True.")
    if needs_files and sam_checkpoint is None and not allow_download:
        raise ValueError("The 'full' preset needs sam_checkpoint (a local MedSAM2_latest.pt), "
                         "or random_weights=True, or allow_download=True.")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if mllm_path is not None or needs_files:
            path, local_only = _resolve_mllm_path(mllm_path, allow_download)
            model, processor = load_mllm(
                path, dtype=torch_dtype, attn_implementation=attn_implementation, local_files_only=local_only
            )
        else:
            model, processor = build_base_mllm(
                settings["architecture"], torch_dtype,
                min_pixels=min_pixels or settings["min_pixels"], max_pixels=max_pixels or settings["max_pixels"],
                seed=seed,
            )
        train_embeddings = settings["train_embeddings"] if train_embeddings is None else train_embeddings
        prepared = prepare_mllm(model, processor, lora, train_embeddings=train_embeddings)
        if sam_checkpoint is None and needs_files:
            sam_checkpoint = _download_sam_checkpoint()
        segmenter = build_segmenter(preset, sam_checkpoint, train_sam_encoder, sam_image_size, sam_hydra_overrides)
        semantic_probe = semantic_probe or settings["semantic_probe"]
        hidden_size = model.config.get_text_config().hidden_size
        prompt_adapter = build_prompt_adapter(adapter, hidden_size, segmenter.prompt_dim, **(adapter_kwargs or {}))
    return CoreSeg(
        mllm=prepared.model,
        processor=prepared.processor,
        seg_token_id=prepared.seg_token_id,
        adapter=prompt_adapter,
        segmenter=segmenter,
        semantic_probe=semantic_probe,
    )


def build_segmenter(
    preset: str = "tiny",
    sam_checkpoint: str | Path | None = None,
    train_sam_encoder: bool | None = None,
    sam_image_size: int | None = None,
    sam_hydra_overrides: Sequence[str] | None = None,
) -> MedSAM2Segmenter:
    """The SAM2 part of a preset alone (what :func:`build_coreseg` puts in ``CoreSeg.segmenter``).

    Args:
        preset: a preset name; gives the SAM2 architecture and the defaults of the other arguments.
        sam_checkpoint, train_sam_encoder, sam_image_size, sam_hydra_overrides: as in :func:`build_coreseg`.
            Random weights when ``sam_checkpoint`` is ``None`` (seed them with ``torch.manual_seed``).
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; expected one of {sorted(PRESETS)}.")
    settings = PRESETS[preset]
    overrides = tuple(sam_hydra_overrides) if sam_hydra_overrides is not None else settings["sam_hydra_overrides"]
    sam_image_size = settings["sam_image_size"] if sam_image_size is None else sam_image_size
    train_sam_encoder = settings["train_sam_encoder"] if train_sam_encoder is None else train_sam_encoder
    if sam_image_size is not None:
        sized = sam2_image_size_overrides(sam_image_size)
        keys = {override.split("=", 1)[0] for override in sized}
        overrides = tuple(o for o in overrides if o.split("=", 1)[0] not in keys) + sized
    return MedSAM2Segmenter.from_config(
        SAM2_BASE_CONFIG, hydra_overrides=overrides, checkpoint=sam_checkpoint, train_image_encoder=train_sam_encoder
    )


def _resolve_mllm_path(mllm_path: str | Path | None, allow_download: bool) -> tuple[str, bool]:
    if mllm_path is not None and Path(mllm_path).is_dir():
        return str(mllm_path), True
    if not allow_download:
        return str(mllm_path), True  # load_mllm raises a FileNotFoundError that says how to get the weights
    return str(mllm_path or DEFAULT_MLLM_HUB_ID), False


def _download_sam_checkpoint() -> str:
    from huggingface_hub import hf_hub_download

    repo_id, filename = DEFAULT_SAM_HUB_FILE
    return hf_hub_download(repo_id=repo_id, filename=filename)
