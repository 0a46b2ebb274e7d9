# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Command line of the dataset builder (fire).

Examples::

    python -m scripts.data.builder example_config > builder.json      # a config to edit
    python -m scripts.data.builder ingest --config builder.json --out_dir data/comlesion
    python -m scripts.data.builder build --config builder.json --out_dir data/comlesion --stop_after filter
    CORESEG_GENERATOR_API_KEY=... CORESEG_SCORER_API_KEY=... \\
        python -m scripts.data.builder build --config builder.json --out_dir data/comlesion
    python -m scripts.data.builder build --config builder.json --out_dir data/comlesion --offline   # templates

Rerunning ``build`` with the same arguments resumes an interrupted run (cached models, predictions, replies).
"""

from __future__ import annotations

import json
from dataclasses import replace

import fire

from .build import BuildConfig, build_dataset
from .ingest import ingest_sources
from .llm import EndpointSettings

EXAMPLE_CONFIG = {
    "sources": [
        {"name": "brain-mri", "images": "/data/brain/images", "masks": "/data/brain/masks", "mask_suffix": "_seg",
         "modality": "MRI", "anatomy": "head", "disease": "glioma"},
        {"name": "liver-ct", "datalist": "/data/liver/datalist.json", "sections": ["training"], "modality": "CT",
         "anatomy": "abdomen", "disease": "liver tumor", "window": [60, 400], "slice_axis": 2,
         "max_slices_per_volume": 8},
    ],
    "difficulty": {"folds": 5, "models": 3, "epochs": 20, "spatial_size": 128, "channels": [16, 32, 64, 128]},
    "generator": {"base_url": "https://api.openai.com/v1", "model": "gpt-4o"},
    "scorer": {"base_url": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "model": "qwen-vl-max"},
    "text": {"quality_threshold": 0.8, "max_regenerations": 2, "weights": [0.3, 0.3, 0.4], "max_workers": 4},
    "split": {"test_fraction": 0.15, "seed": 0},
}


def example_config() -> str:
    """Print an example config (JSON) to edit; keys are documented in docs/dataset_builder.md."""
    return json.dumps(EXAMPLE_CONFIG, indent=2)


def ingest(config: str, out_dir: str, progress: bool = True) -> str:
    """Ingest only: write ``<out_dir>/ingest_report.json`` and say what was kept and skipped."""
    records, report = ingest_sources(BuildConfig.from_file(config).sources, progress)
    path = report.write(f"{out_dir}/ingest_report.json")
    return (f"{len(records)} records, {len(report.skipped)} images skipped {report.reasons() or ''}; "
            f"details in {path}")


def build(config: str, out_dir: str, stop_after: str | None = None, offline: bool = False,
          progress: bool = True) -> str:
    """Run the whole build (or up to ``stop_after``: ingest, filter, text) and print where things went.

    Args:
        config: the JSON config (see ``example_config``).
        out_dir: output folder; rerun with the same folder to resume.
        stop_after: stop after this stage.
        offline: ignore the endpoints: template reasoning, no scoring.
        progress: show progress bars.
    """
    settings = BuildConfig.from_file(config)
    if offline:
        settings = replace(settings, generator=EndpointSettings(), scorer=EndpointSettings())
    return json.dumps(build_dataset(settings, out_dir, stop_after=stop_after, progress=progress), indent=2)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; ``argv`` defaults to ``sys.argv[1:]``."""
    fire.Fire({"build": build, "ingest": ingest, "example_config": example_config}, command=argv)


if __name__ == "__main__":
    main()
