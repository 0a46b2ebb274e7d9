# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Cost of a GRPO step with and without sharing the image encodings between rollouts and passes.

For each setting it runs :class:`scripts.engines.CoreSegGRPOTrainer` steps on one batch of ``batch_size`` prompts
(random images, ``G`` rollouts each, every completion exactly ``max_new_tokens`` long so both settings decode the
same number of tokens) and prints the images that went through the vision tower and the SAM image encoder per
step, the mean step time after one warm-up step, and the peak memory.

Examples::

    python -m scripts.benchmark_grpo --preset tiny                                    # CPU
    python -m scripts.benchmark_grpo --preset full --random_weights --device cuda --batch_size 4
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from ignite.engine import Events

from scripts.benchmark import _benchmark_batch, _peak_memory, _to
from scripts.engines import CoreSegGRPOTrainer
from scripts.losses import CoreSegGRPOLoss
from scripts.networks import build_coreseg

__all__ = ["GRPOCost", "measure_grpo_step", "main"]


@dataclass
class GRPOCost:
    """Figures of one setting (per optimisation step)."""

    reuse_encodings: bool
    batch_size: int
    num_generations: int
    completion_tokens: int
    vision_images_per_step: float
    sam_images_per_step: float
    step_seconds: float
    peak_memory_bytes: int
    peak_memory_kind: str


def measure_grpo_step(
    model, reuse_encodings: bool, batch_size: int = 2, num_generations: int = 4, max_new_tokens: int = 32,
    repeats: int = 3, image_size: tuple[int, int] = (512, 512),
) -> GRPOCost:
    """Run ``1 + repeats`` GRPO steps on one batch and measure the last ``repeats``."""
    device = next(model.parameters()).device
    batch, _, _ = _benchmark_batch(model, batch_size, image_size, with_answer=False)
    batch = _to(batch, device)
    size = model.segmenter.image_size
    batch["label"] = torch.zeros(batch_size, 1, size, size, device=device)
    batch["label"][:, :, size // 4: size // 2, size // 4: size // 2] = 1
    batch["metadata"] = [{"boxes_mllm": [[120, 88, 210, 176]]} for _ in range(batch_size)]
    counts = {"vision": 0, "sam": 0}
    hooks = [
        model.base_mllm.model.visual.register_forward_hook(
            lambda module, args, kwargs, out: counts.__setitem__("vision", counts["vision"] + len(kwargs["grid_thw"])),
            with_kwargs=True),
        model.segmenter.image_encoder.register_forward_hook(
            lambda module, args, out: counts.__setitem__("sam", counts["sam"] + len(args[0]))),
    ]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    amp = device.type == "cuda"
    trainer = CoreSegGRPOTrainer(
        device=device, max_epochs=1 + repeats, train_data_loader=[batch], network=model, optimizer=optimizer,
        loss_function=CoreSegGRPOLoss(beta=0.04), num_generations=num_generations, max_new_tokens=max_new_tokens,
        reuse_encodings=reuse_encodings, generation_kwargs={"min_new_tokens": max_new_tokens},
        amp=amp, amp_kwargs={"dtype": torch.bfloat16} if amp else None,
    )
    durations: list[float] = []
    start = [0.0]

    def started(engine):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if engine.state.epoch == 2:  # the warm-up step is over
            counts.update(vision=0, sam=0)
        start[0] = time.perf_counter()

    def completed(engine):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if engine.state.epoch > 1:
            durations.append(time.perf_counter() - start[0])

    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    try:
        trainer.run()
    finally:
        for hook in hooks:
            hook.remove()
    peak, kind = _peak_memory(device)
    return GRPOCost(
        reuse_encodings=reuse_encodings, batch_size=batch_size, num_generations=num_generations,
        completion_tokens=max_new_tokens, vision_images_per_step=counts["vision"] / repeats,
        sam_images_per_step=counts["sam"] / repeats, step_seconds=statistics.mean(durations),
        peak_memory_bytes=peak, peak_memory_kind=kind,
    )


def main(
    preset: str = "tiny",
    batch_size: int = 2,
    num_generations: int = 4,
    max_new_tokens: int = 32,
    repeats: int = 3,
    device: str | None = None,
    dtype: str | None = None,
    random_weights: bool = False,
    mllm_path: str | None = None,
    sam_checkpoint: str | None = None,
    output_json: str | None = None,
) -> None:
    """Measure a GRPO step with and without encoding reuse and print both (``output_json``: also write them)."""
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    build = {"dtype": dtype}
    if preset == "full":
        build.update(random_weights=random_weights, mllm_path=mllm_path, sam_checkpoint=sam_checkpoint)
    results = []
    for reuse in (True, False):
        if target.type == "cuda":
            torch.cuda.reset_peak_memory_stats(target)
        model = build_coreseg(preset, seed=0, **build).to(target)
        results.append(measure_grpo_step(model, reuse, batch_size, num_generations, max_new_tokens, repeats))
        del model
    print(f"GRPO step, preset {preset}, {target}, {batch_size} prompts x G={num_generations}, "
          f"{max_new_tokens} completion tokens")
    print("| encodings | vision images / step | SAM images / step | step (s) | peak memory (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for cost in results:
        print(f"| {'shared' if cost.reuse_encodings else 'per rollout and pass'} | "
              f"{cost.vision_images_per_step:.0f} | {cost.sam_images_per_step:.0f} | {cost.step_seconds:.3f} | "
              f"{cost.peak_memory_bytes / 2**20:.0f} ({cost.peak_memory_kind}) |")
    print(f"speed-up from sharing: {results[1].step_seconds / results[0].step_seconds:.2f}x")
    if output_json:
        Path(output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(output_json).write_text(json.dumps([asdict(cost) for cost in results], indent=2))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
