# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A plain-PyTorch SFT loop for the tiny preset with a teacher-forced validation signal.

``configs/train_sft.json`` is the workflow users run; this probe trains the same model with the same data
pipeline and loss, but validates differently, to tell apart the two things SFT must learn on the synthetic
benchmark:

* **teacher-forced Dice**: masks from the ``<seg>`` state of the *ground-truth* answer (the question and the
  finding's name are in the text), i.e. how well the adapter and mask decoder segment what the text asks for,
  before the model writes well-formed answers by itself;
* **prompt sensitivity**: how much the masks change when the batch's ``<seg>`` prompts are swapped between
  samples, and how often the two questions on one validation image get the very same mask (a decoder that
  ignores its prompt segments the same pixels whatever is asked);
* **generated answers** (every ``gen_every`` steps): the model writes its answer, the mask follows from its own
  ``<seg>``; scored as :mod:`scripts.evaluation` does (format validity, Dice, box mIoU).

Both are reported overall and split by whether the image holds distractor lesions. ``docs/sft_learning.md``
records the runs made with it.

Example::

    python -m scripts.experiments.sft_probe --datalist data/synthetic_small/datalist.json --iters 6000 \\
        --sam_image_size 256 --train_sam_encoder --lora_r 64 --out runs/probe/C.json --save runs/probe/C.pt
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import fire
import numpy as np
import torch
from monai.data import DataLoader, Dataset

from scripts.data.collate import CoreSegCollator, model_inputs
from scripts.data.coordinates import ProcessorGeometry
from scripts.data.datalist import load_datalist
from scripts.data.sampling import ImageGroupedBatchSampler
from scripts.data.transforms import build_transforms
from scripts.evaluation import score_generation, summarize
from scripts.losses import CoreSegSFTLoss
from scripts.metrics import mask_dice, prompt_sensitivity_of
from scripts.networks import TrainableWeights, build_coreseg, load_trainable_weights, save_trainable_weights
from scripts.networks.medsam2 import SamImageFeatures
from scripts.optimization import coreseg_parameter_groups

__all__ = ["prompt_sensitivity", "teacher_forced_scores", "run"]

GENERATE_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "sam_images")


def prompt_sensitivity(
    model, sam_features: SamImageFeatures, seg_states: torch.Tensor, padding_mask: torch.Tensor | None = None
) -> float:
    """How much the masks depend on the ``<seg>`` prompt: mean absolute change of the mask logits when the
    batch's prompts are rotated by one sample, relative to the logits' standard deviation (0: the decoder
    ignores the question)."""
    if len(seg_states) < 2:
        return float("nan")
    prompts = model.adapter(seg_states, padding_mask=padding_mask)
    logits = model.segmenter.decode(sam_features, prompts).mask_logits
    rotated = model.segmenter.decode(sam_features, prompts.roll(1, dims=0)).mask_logits
    return prompt_sensitivity_of(logits, rotated)


def _split_by_distractors(values: list[float], distracted: list[bool]) -> dict[str, float]:
    values, distracted = np.asarray(values), np.asarray(distracted)
    return {"dice": float(values.mean()), "with_distractors": float(values[distracted].mean()),
            "without_distractors": float(values[~distracted].mean())}


def teacher_forced_scores(model, loader) -> dict[str, float]:
    """Teacher-forced Dice of ``model`` over a ``mode="train"`` loader, overall and by distractor presence, with the
    prompt sensitivity and the share of images whose two questions (consecutive records) get the same mask."""
    dice, distracted, sensitivity, masks, images = [], [], [], [], []
    with torch.no_grad():
        for batch in loader:
            inputs = model_inputs(batch)
            # Encode the images once: the forward pass and the prompt-swapped decodes share the features.
            features = model.encode_sam(inputs.pop("sam_images"))
            output = model(**inputs, sam_features=features)
            dice += mask_dice(output.mask_logits > 0, batch["label"] > 0).tolist()
            distracted += [bool(meta.get("num_distractors")) for meta in batch["metadata"]]
            sensitivity.append(prompt_sensitivity(model, features, output.seg_hidden_states,
                                                  output.probe_padding_mask))
            masks.append(output.mask_logits > 0)
            images += [meta.get("image_path") for meta in batch["metadata"]]
    masks = torch.cat(masks)
    # Validation and test images are asked both ways in a row: a model that reads the question gives two masks.
    pairs = [(i, i + 1) for i in range(len(images) - 1) if images[i] == images[i + 1]]
    identical = [bool(torch.equal(masks[i], masks[j])) for i, j in pairs if masks[i].any() or masks[j].any()]
    return _split_by_distractors(dice, distracted) | {
        "records": len(dice),
        "prompt_sensitivity": float(np.nanmean(sensitivity)),
        "identical_paired_masks": float(np.mean(identical)) if identical else float("nan"),
    }


def run(
    datalist: str,
    iters: int = 6000,
    learning_rate: float = 1e-3,
    segmenter_learning_rate: float | None = None,
    mllm_learning_rate: float | None = None,
    mllm_freeze_steps: int = 0,
    paired_batches: bool = False,
    batch_size: int = 4,
    sam_image_size: int = 256,
    train_sam_encoder: bool = True,
    adapter: str = "semantic",
    semantic_probe: str = "seg",
    lora_r: int = 64,
    train_embeddings: bool = False,
    text_weight: float = 1.0,
    mask_weight: float = 1.0,
    dice_batch: bool = True,
    eval_every: int = 500,
    gen_every: int = 1500,
    max_new_tokens: int = 96,
    num_val: int = 96,
    seed: int = 0,
    init: str | None = None,
    init_components: list[str] | None = None,
    sam_checkpoint: str | None = None,
    out: str = "runs/sft_probe.json",
    save: str | None = None,
    num_workers: int = 1,
) -> dict:
    """Train the tiny preset with AdamW + one-cycle schedule and log validation signals.

    Args:
        datalist: a benchmark datalist with ``training`` and ``validation`` sections.
        iters: optimiser steps.
        learning_rate: peak learning rate (one-cycle, 5 % warm-up, clipping at norm 1).
        segmenter_learning_rate: peak learning rate of the SAM encoder and mask decoder (default:
            ``learning_rate``).
        mllm_learning_rate: peak learning rate of the language model's LoRA and ``<seg>`` rows (default:
            ``learning_rate``).
        mllm_freeze_steps: keep the language model frozen for this many steps (as ``FreezeForIterations``).
        paired_batches: put records of the same image side by side in a batch (the datalist must hold both
            questions of each training image, e.g. a benchmark generated with ``--paired_splits training,...``);
            images asked once are left out.
        batch_size: records per step (even with ``paired_batches``).
        sam_image_size: SAM input side (and mask size).
        train_sam_encoder: train the randomly initialised SAM image encoder too.
        adapter: ``"semantic"`` or ``"linear"``.
        semantic_probe: ``"seg"`` or ``"answer"`` (``build_coreseg``).
        lora_r: LoRA rank (alpha = 2 r); 64 is full rank for the tiny 64-d language model.
        train_embeddings: train the language model's whole embedding and lm_head (``build_coreseg``).
        text_weight, mask_weight: loss weights (``CoreSegSFTLoss``); ``mask_weight=0`` trains the text alone.
        dice_batch: Dice over the whole batch (``DiceCELoss(batch=True)``) rather than per image.
        eval_every: steps between teacher-forced validations.
        gen_every: steps between generation validations (0: never).
        max_new_tokens: generation length limit.
        num_val: validation records used (the first ones of the section).
        seed: seed of the model and data order.
        init: trainable weights to start from (``save_trainable_weights`` format).
        init_components: load only these parts of ``init`` (e.g. ``["mllm"]``: a text-trained language model,
            with the adapter and SAM as built, e.g. from ``sam_checkpoint``).
        sam_checkpoint: sam2-format checkpoint of the tiny SAM (e.g. from :mod:`scripts.pretrain_sam`).
        out: JSON log of the settings and the validation curve (rewritten at each validation).
        save: where to write the trainable weights at each validation.
        num_workers: data loader workers for training.

    Returns:
        The log.
    """
    settings = dict(locals())  # the arguments, for the log
    torch.manual_seed(seed)
    model = build_coreseg("tiny", adapter=adapter, sam_image_size=sam_image_size, train_sam_encoder=train_sam_encoder,
                          lora_r=lora_r, lora_alpha=2 * lora_r, sam_checkpoint=sam_checkpoint, seed=seed,
                          train_embeddings=train_embeddings, semantic_probe=semantic_probe)
    if init:
        load_trainable_weights(model, init, components=init_components)
    geometry = ProcessorGeometry.from_processor(model.processor)
    train_records = load_datalist(datalist, "training")
    val_records = load_datalist(datalist, "validation")[:num_val]
    train_transform = build_transforms(geometry, random_text=True, seed=seed, mask_size=sam_image_size)
    collator = CoreSegCollator(model.processor, mode="train")
    if paired_batches:
        counts = Counter(str(record["image"]) for record in train_records)
        paired = [record for record in train_records if counts[str(record["image"])] == 2]
        if not paired or batch_size % 2:
            raise ValueError("paired_batches needs an even batch_size and images asked both ways in the datalist.")
        train_loader = DataLoader(
            Dataset(paired, train_transform), num_workers=num_workers, collate_fn=collator,
            batch_sampler=ImageGroupedBatchSampler(paired, batch_size, seed=seed, drop_last=len(paired) > batch_size),
            persistent_workers=num_workers > 0,
        )
    else:
        train_loader = DataLoader(
            Dataset(train_records, train_transform), batch_size=batch_size, shuffle=True,
            drop_last=len(train_records) > batch_size, num_workers=num_workers, collate_fn=collator,
            persistent_workers=num_workers > 0,
        )
    val_dataset = Dataset(val_records, build_transforms(geometry, random_text=False, seed=seed, mask_size=sam_image_size))
    forced_loader = DataLoader(val_dataset, batch_size=8, collate_fn=CoreSegCollator(model.processor, mode="train"))
    generate_loader = DataLoader(val_dataset, batch_size=8, collate_fn=CoreSegCollator(model.processor, mode="generate"))
    parameters = [p for p in model.parameters() if p.requires_grad]
    mllm_parameters = [p for p in model.mllm.parameters() if p.requires_grad]
    trainable_weights = TrainableWeights(model)  # made before any freeze, so saves always hold every trained tensor
    groups = coreseg_parameter_groups(model, learning_rate, segmenter_learning_rate, mllm_learning_rate)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=iters,
                                                   pct_start=0.05)
    loss_function = CoreSegSFTLoss(text_weight=text_weight, mask_weight=mask_weight,
                                   dice_ce_kwargs={"batch": dice_batch})
    log = {"settings": settings, "curve": []}
    Path(out).parent.mkdir(parents=True, exist_ok=True)

    def teacher_forced() -> dict[str, float]:
        return teacher_forced_scores(model, forced_loader)

    def generated() -> dict[str, object]:
        scores = []
        with torch.no_grad():
            for batch in generate_loader:
                result = model.generate(**{k: batch[k] for k in GENERATE_INPUTS if k in batch},
                                        max_new_tokens=max_new_tokens)
                scores += score_generation(result.completions, result.masks, batch["label"] > 0, batch["metadata"])
        summary = summarize(scores)
        return {"dice": summary["mDice"], "with_distractors": summary.get("dice_with_distractors"),
                "without_distractors": summary.get("dice_without_distractors"),
                "format_valid_rate": summary["format_valid_rate"], "box_mIoU": summary["box_mIoU"],
                "example": result.completions[0]}

    start, step, history = time.perf_counter(), 0, []
    model.train()
    while step < iters:
        for batch in train_loader:
            for parameter in mllm_parameters:  # steps 0..mllm_freeze_steps-1 leave the language model as it is
                parameter.requires_grad_(step >= mllm_freeze_steps)
            parts = loss_function(model(**model_inputs(batch)), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            history.append((float(parts["text_loss"]), float(parts["mask_loss"])))
            if step % eval_every == 0 or step == iters:
                model.eval()
                text_loss, mask_loss = np.mean(history[-eval_every:], axis=0)
                entry = {"step": step, "seconds": round(time.perf_counter() - start), "text_loss": float(text_loss),
                         "mask_loss": float(mask_loss), "teacher_forced": teacher_forced()}
                if gen_every and (step % gen_every == 0 or step == iters):
                    entry["generated"] = generated()
                model.train()
                log["curve"].append(entry)
                print(json.dumps(entry), flush=True)
                Path(out).write_text(json.dumps(log, indent=1) + "\n")
                if save:
                    save_trainable_weights(trainable_weights, save)
            if step >= iters:
                break
    return log


if __name__ == "__main__":
    fire.Fire(run)
