# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""CoreSeg network: MLLM builder, Semantic-Guided Prompt Adapter, MedSAM2 segmenter, presets, checkpoints."""

from .adapter import LinearPromptAdapter, ResMLPBlock, SemanticPromptAdapter, build_prompt_adapter
from .checkpoint import (
    TrainableWeights,
    format_parameter_report,
    load_trainable_weights,
    parameter_report,
    save_trainable_weights,
    trainable_state_dict,
)
from .coreseg import (
    EMPTY_MASK_LOGIT,
    CoreSeg,
    CoreSegGeneration,
    CoreSegOutput,
    CoreSegSamples,
    locate_seg_tokens,
    repeat_mm_encoder_outputs,
)
from .medsam2 import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    MedSAM2Segmenter,
    SamImageFeatures,
    SegmenterOutput,
    load_sam2_checkpoint,
    save_sam2_checkpoint,
)
from .mllm import SEG_TOKEN, LoraSettings, add_seg_token, load_mllm, prepare_mllm
from .presets import PRESETS, build_coreseg
from .processor import build_offline_processor, build_offline_tokenizer

__all__ = [
    "EMPTY_MASK_LOGIT",
    "PRESETS",
    "SAM_PIXEL_MEAN",
    "SAM_PIXEL_STD",
    "SEG_TOKEN",
    "CoreSeg",
    "CoreSegGeneration",
    "CoreSegOutput",
    "CoreSegSamples",
    "LinearPromptAdapter",
    "LoraSettings",
    "MedSAM2Segmenter",
    "ResMLPBlock",
    "SamImageFeatures",
    "SegmenterOutput",
    "SemanticPromptAdapter",
    "TrainableWeights",
    "add_seg_token",
    "build_coreseg",
    "build_offline_processor",
    "build_offline_tokenizer",
    "build_prompt_adapter",
    "format_parameter_report",
    "load_mllm",
    "load_sam2_checkpoint",
    "load_trainable_weights",
    "locate_seg_tokens",
    "parameter_report",
    "prepare_mllm",
    "repeat_mm_encoder_outputs",
    "save_sam2_checkpoint",
    "save_trainable_weights",
    "trainable_state_dict",
]
