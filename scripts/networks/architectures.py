# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Architecture definitions of the two presets, for building models without any weight file.

* Qwen2.5-VL: the configuration of Qwen2.5-VL-3B-Instruct (values of its ``config.json``) and a tiny
  configuration of the same class for tests and CPU runs.
* SAM2: MedSAM2 is SAM2.1 hiera-tiny at 512x512. Both SAM2 presets are expressed as hydra overrides of the
  ``sam2`` package's own ``configs/sam2.1/sam2.1_hiera_t.yaml``, so they are built by ``sam2.build_sam.build_sam2``
  exactly like any SAM2 model.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase, Qwen2_5_VLConfig

__all__ = [
    "SAM2_BASE_CONFIG",
    "MEDSAM2_HYDRA_OVERRIDES",
    "TINY_SAM2_HYDRA_OVERRIDES",
    "sam2_image_size_overrides",
    "qwen2_5_vl_3b_config",
    "tiny_qwen2_5_vl_config",
    "bind_special_token_ids",
]

# SAM2.1 hiera-tiny config inside the installed `sam2` package (resolved by sam2's hydra config module).
SAM2_BASE_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"

# MedSAM2 (bowang-lab/MedSAM2, `sam2.1_hiera_tiny512_*.yaml`): SAM2.1 hiera-tiny trained at 512x512, so the
# image embedding is 32x32 and the memory attention's RoPE grid is 32x32. Parameter shapes are unchanged,
# so `MedSAM2_latest.pt` loads strictly into this model.
def sam2_image_size_overrides(image_size: int) -> tuple[str, ...]:
    """Hydra overrides that set a SAM2 model's input side: the image size and the memory attention's RoPE grid
    (``image_size / 16`` a side). Parameter shapes do not depend on it.

    Raises:
        ValueError: ``image_size`` is not a positive multiple of 32 (Hiera's coarsest stage has stride 32).
    """
    if int(image_size) != image_size or image_size <= 0 or image_size % 32:
        raise ValueError(f"The SAM image size must be a positive multiple of 32, got {image_size}.")
    side = int(image_size) // 16
    return (
        f"++model.image_size={int(image_size)}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{side},{side}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{side},{side}]",
    )


MEDSAM2_HYDRA_OVERRIDES: tuple[str, ...] = sam2_image_size_overrides(512)

# A small Hiera trunk (5 blocks, 16 channels) on the same 512x512 geometry and 256-d prompt space as MedSAM2.
# The first block of a Hiera stage pools its queries and cannot use global attention, hence stages [1,1,2,1]
# with the global block at index 3 (the second block of stage 3).
TINY_SAM2_HYDRA_OVERRIDES: tuple[str, ...] = MEDSAM2_HYDRA_OVERRIDES + (
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.memory_attention.num_layers=1",
)


def qwen2_5_vl_3b_config() -> Qwen2_5_VLConfig:
    """Configuration of Qwen2.5-VL-3B-Instruct (3.75 B parameters), for random-weight builds."""
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
        },
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def tiny_qwen2_5_vl_config(vocab_size: int, hidden_size: int = 64, num_layers: int = 2) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL configuration small enough to build and train in seconds on a CPU.

    Same classes, same M-RoPE, same windowed vision attention and patch merger as the 3B model; only the
    widths and depths shrink. Token ids are bound to a tokenizer with :func:`bind_special_token_ids`.

    Args:
        vocab_size: number of embedding rows (the tokenizer's length).
        hidden_size: language model width (divisible by 4 heads; head_dim/2 must split 2/3/3 for M-RoPE).
        num_layers: language model depth.
    """
    head_dim = hidden_size // 4
    if hidden_size % 4 or head_dim % 16:
        raise ValueError(f"hidden_size must be a multiple of 64 for the tiny config, got {hidden_size}.")
    half = head_dim // 2
    mrope_section = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            "bos_token_id": None,
            "eos_token_id": None,
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        tie_word_embeddings=True,
    )


def bind_special_token_ids(config: Qwen2_5_VLConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    """Point the config's vision and end-of-text token ids at the ids the tokenizer gives them.

    Needed when a config is paired with a tokenizer other than the model's own (the offline tokenizer of the
    ``tiny`` preset, or of random-weight builds of the 3B architecture).
    """
    ids = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    for attribute, token in ids.items():
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"Tokenizer has no {token!r} token, which Qwen2.5-VL needs.")
        setattr(config, attribute, token_id)
    config.text_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.text_config.bos_token_id = None
    return config
