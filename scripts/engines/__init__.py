# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Ignite engines of the MONAI engine family for CORE-Seg training and evaluation."""

from .batch import MODEL_INPUT_KEYS, split_batch
from .evaluator import CoreSegEvaluator
from .grpo import CoreSegGRPOTrainer
from .handlers import TRAINING_STATS, EvaluationReportHandler, FreezeForIterations, PredictionWriter, training_stats
from .inferers import GenerationInferer, TeacherForcedInferer
from .reference import ReferencePolicy
from .trainer import CoreSegSFTTrainer

__all__ = [
    "MODEL_INPUT_KEYS",
    "TRAINING_STATS",
    "CoreSegEvaluator",
    "CoreSegGRPOTrainer",
    "CoreSegSFTTrainer",
    "EvaluationReportHandler",
    "FreezeForIterations",
    "GenerationInferer",
    "PredictionWriter",
    "ReferencePolicy",
    "TeacherForcedInferer",
    "split_batch",
    "training_stats",
]
