# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Teacher-forced evaluation of a bundle model: masks from the states of the *reference* answers.

``configs/evaluate.json`` scores what the model writes; this scores what its adapter and mask decoder make of the
right answer, which separates segmentation and question routing from the writing (``docs/sft_learning.md``).
Reported overall and split by distractor presence, with the prompt sensitivity and the share of images whose two
questions get the very same mask (datalists that ask each image both ways in consecutive records).

Example::

    python -m scripts.experiments.teacher_forced --datalist data/synthetic_small/datalist.json --section test
"""

from __future__ import annotations

import json
from pathlib import Path

import fire
from monai.data import DataLoader, Dataset

from scripts.data.collate import CoreSegCollator
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import load_datalist
from scripts.data.transforms import build_transforms
from scripts.experiments.sft_probe import teacher_forced_scores
from scripts.inference import Predictor

__all__ = ["run"]


def run(
    datalist: str,
    section: str = "test",
    checkpoint: str | None = None,
    config_file: str = "configs/inference.json",
    batch_size: int = 8,
    max_records: int | None = None,
    out: str | None = None,
) -> dict:
    """Teacher-forced Dice of the bundle's model (default: the demo model of ``configs/inference.json``) on CPU.

    Args:
        datalist: a datalist whose records carry ``label`` and the reference ``answer``/``reasoning`` fields.
        section: the datalist section.
        checkpoint: trainable weights (default: the config's ``models/model.pt``).
        config_file: the config that defines the network (relative to the bundle root).
        batch_size: records per forward pass.
        max_records: score only the first records.
        out: also write the scores as JSON here.

    Returns:
        The scores.
    """
    model = Predictor.from_bundle(config_file=config_file, checkpoint=checkpoint, device="cpu").network.eval()
    records = load_datalist(datalist, section)[:max_records]
    transform = build_transforms(ProcessorGeometry.from_processor(model.processor), random_text=False,
                                 mask_size=model.segmenter.image_size)
    loader = DataLoader(Dataset(records, transform), batch_size=batch_size,
                        collate_fn=CoreSegCollator(model.processor, mode="train"))
    scores = {"datalist": str(datalist), "section": section, **teacher_forced_scores(model, loader)}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(scores, indent=2) + "\n")
    return scores


if __name__ == "__main__":
    fire.Fire(run)
