# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ComLesion-style dataset builder (CORE-Seg paper, section 3): a lab's raw collections in, a datalist of complex
lesion cases with questions, reasoning and quality scores out.

Stages (``python -m scripts.data.builder build --config builder.json --out_dir data/comlesion``):

1. :mod:`.ingest`: folders of image + mask, or MONAI datalists; 2D images and lesion-bearing slices of volumes.
2. :mod:`.difficulty`: k-fold MONAI U-Nets, power-law tail of ``1 - Dice`` (Clauset) and its knee (Kneedle),
   model votes.
3. :mod:`.generation`: template questions, two-step LLM reasoning (OpenAI-compatible endpoint, :mod:`.llm`) or an
   offline template fallback.
4. :mod:`.quality`: ``S_final = 0.3 S_normal + 0.3 S_lesion + 0.4 S_reason`` by a second endpoint; regeneration
   below 0.8.

See ``docs/dataset_builder.md``.
"""

from .build import STAGES, Annotation, BuildConfig, SplitSettings, TextSettings, annotate_case, build_dataset
from .difficulty import DifficultySettings, TailFit, TooFewCasesError, filter_source, fit_error_tail
from .ingest import IngestReport, SourceSpec, ingest_sources
from .llm import ChatEndpoint, EndpointError, EndpointSettings, MalformedReplyError, ResponseCache
from .quality import PAPER_WEIGHTS, QualityScores, final_score, parse_scores

__all__ = [
    "STAGES",
    "Annotation",
    "BuildConfig",
    "ChatEndpoint",
    "DifficultySettings",
    "EndpointError",
    "EndpointSettings",
    "IngestReport",
    "MalformedReplyError",
    "PAPER_WEIGHTS",
    "QualityScores",
    "ResponseCache",
    "SourceSpec",
    "SplitSettings",
    "TailFit",
    "TextSettings",
    "TooFewCasesError",
    "annotate_case",
    "build_dataset",
    "filter_source",
    "final_score",
    "fit_error_tail",
    "ingest_sources",
    "parse_scores",
]
