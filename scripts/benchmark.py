# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Speed and memory benchmark of CoreSeg: parameters, forward, forward+backward, generation, peak memory.

Examples::

    python -m scripts.benchmark --preset tiny                                    # CPU, random tiny model
    python -m scripts.benchmark --preset full --random_weights --device cuda     # Qwen2.5-VL-3B + MedSAM2, bf16
    python -m scripts.benchmark --preset full --mllm_path /models/Qwen2.5-VL-3B-Instruct \\
        --sam_checkpoint /models/MedSAM2_latest.pt --device cuda --batch_size 4

Timings are wall-clock means over ``repeats`` runs after one warm-up run (CUDA is synchronised around each
run). Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident set size on CPU
(a high-water mark of the whole process, model weights included).
"""

from __future__ import annotations

import contextlib
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scripts.networks import CoreSeg, build_coreseg, format_parameter_report, parameter_report

__all__ = ["BenchmarkResult", "run_benchmark", "main"]

# A reasoning of realistic length for ComLesion-style answers (about 100-150 tokens with Qwen's tokenizer).
_REASONING = (
    "The image shows the {anatomy} with preserved overall anatomy. Within the parenchyma there is a region "
    "whose intensity is lower than the surrounding tissue, with an irregular outline and a blurred margin that "
    "fades into the background. Its texture is heterogeneous, unlike the smooth and sharply marginated bright "
    "structures elsewhere, which look like benign findings. The irregular shape, low contrast and infiltrative "
    "border are typical of the asked lesion, so this region, and a second smaller one with the same appearance, "
    "are the targets, while the sharply defined bright foci are not."
)


@dataclass
class BenchmarkResult:
    """Figures printed by the benchmark (seconds, tokens/s, bytes)."""

    preset: str
    device: str
    dtype: str
    batch_size: int
    prompt_tokens: int
    answer_tokens: int
    image_tokens: int
    parameters_total: int
    parameters_trainable: int
    build_seconds: float
    forward_seconds: float
    forward_backward_seconds: float
    generate_seconds: float
    generated_tokens: int
    generation_tokens_per_second: float
    peak_memory_bytes: int
    peak_memory_kind: str
    environment: dict = field(default_factory=dict)


def _benchmark_batch(model: CoreSeg, batch_size: int, image_size: tuple[int, int], with_answer: bool):
    processor = model.processor
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(*image_size, 3), dtype=np.uint8))
    question = "Please segment the liver tumor in this CT image of the abdomen."
    answer = (f"<think> {_REASONING.format(anatomy='abdomen')} </think><answer> The liver tumor is located at "
              "[120,88,210,176], [260,300,301,342]. <seg> </answer>")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text = prompt
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        text = processor.apply_chat_template(messages, tokenize=False)
    processor.tokenizer.padding_side = "right" if with_answer else "left"
    batch = dict(processor(text=[text] * batch_size, images=[image] * batch_size, return_tensors="pt", padding=True))
    prompt_length = len(processor(text=[prompt], images=[image])["input_ids"][0])
    if with_answer:
        labels = batch["input_ids"].clone()
        labels[:, :prompt_length] = -100
        batch["labels"] = labels
    batch["sam_images"] = torch.randn(batch_size, 3, model.segmenter.image_size, model.segmenter.image_size)
    image_tokens = int(batch["input_ids"][0].eq(model.base_mllm.config.image_token_id).sum())
    return batch, prompt_length, image_tokens


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocator, kernels, lazy init)
    durations = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        durations.append(time.perf_counter() - start)
    return statistics.mean(durations)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "process peak RSS"


def run_benchmark(
    preset: str = "tiny",
    batch_size: int = 1,
    device: str | None = None,
    dtype: str | None = None,
    max_new_tokens: int = 32,
    repeats: int = 3,
    image_size: tuple[int, int] = (512, 512),
    **build_kwargs,
) -> tuple[BenchmarkResult, CoreSeg]:
    """Build a preset and measure it. ``build_kwargs`` go to :func:`scripts.networks.build_coreseg`."""
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    start = time.perf_counter()
    model = build_coreseg(preset, dtype=dtype, **build_kwargs).to(target)
    build_seconds = time.perf_counter() - start
    mllm_dtype = next(model.base_mllm.parameters()).dtype
    # Mixed precision as in training: bf16/fp16 MLLM, fp32 adapter and SAM under autocast.
    autocast = (torch.autocast(target.type, dtype=mllm_dtype) if mllm_dtype in (torch.bfloat16, torch.float16)
                else contextlib.nullcontext())

    train_batch, prompt_length, image_tokens = _benchmark_batch(model, batch_size, image_size, with_answer=True)
    train_batch = _to(train_batch, target)
    answer_tokens = int(train_batch["input_ids"].shape[1] - prompt_length)

    def forward():
        with torch.no_grad(), autocast:
            model(**train_batch)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        with autocast:
            out = model(**train_batch)
            loss = out.text_loss + out.mask_logits.float().sigmoid().mean()
        loss.backward()

    model.train()
    forward_seconds = _timed(forward, repeats, target)
    forward_backward_seconds = _timed(forward_backward, repeats, target)
    model.zero_grad(set_to_none=True)

    model.eval()
    generate_batch, _, _ = _benchmark_batch(model, batch_size, image_size, with_answer=False)
    generate_batch = _to(generate_batch, target)
    # min_new_tokens = max_new_tokens: every run decodes the same number of tokens whatever a random model says
    generate_kwargs = {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens, "do_sample": False}

    def generate():
        with autocast:
            model.generate(**generate_batch, **generate_kwargs)

    generate_seconds = _timed(generate, repeats, target)
    generated_tokens = batch_size * max_new_tokens
    peak, peak_kind = _peak_memory(target)
    rows = parameter_report(model)
    result = BenchmarkResult(
        preset=preset,
        device=str(target) if target.type != "cuda" else torch.cuda.get_device_name(target),
        dtype=str(mllm_dtype).replace("torch.", ""),
        batch_size=batch_size,
        prompt_tokens=prompt_length,
        answer_tokens=answer_tokens,
        image_tokens=image_tokens,
        parameters_total=sum(r.total for r in rows),
        parameters_trainable=sum(r.trainable for r in rows),
        build_seconds=build_seconds,
        forward_seconds=forward_seconds,
        forward_backward_seconds=forward_backward_seconds,
        generate_seconds=generate_seconds,
        generated_tokens=generated_tokens,
        generation_tokens_per_second=generated_tokens / generate_seconds,
        peak_memory_bytes=peak,
        peak_memory_kind=peak_kind,
        environment={
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
    )
    return result, model


def format_result(result: BenchmarkResult) -> str:
    """Human-readable table of a :class:`BenchmarkResult`."""
    gib = result.peak_memory_bytes / 2**30
    lines = [
        f"preset={result.preset} device={result.device} dtype={result.dtype} batch={result.batch_size}",
        f"sequence: {result.prompt_tokens} prompt tokens ({result.image_tokens} image tokens) "
        f"+ {result.answer_tokens} answer tokens",
        f"parameters: {result.parameters_total:,} total, {result.parameters_trainable:,} trainable",
        f"build:            {result.build_seconds:8.3f} s",
        f"forward:          {result.forward_seconds:8.3f} s per batch",
        f"forward+backward: {result.forward_backward_seconds:8.3f} s per batch",
        f"generate:         {result.generate_seconds:8.3f} s for {result.generated_tokens} new tokens "
        f"({result.generation_tokens_per_second:.1f} tokens/s, KV cache on, includes the <seg> pass)",
        f"peak memory:      {gib:8.2f} GiB ({result.peak_memory_kind})",
    ]
    return "\n".join(lines)


def main(
    preset: str = "tiny",
    batch_size: int = 1,
    device: str | None = None,
    dtype: str | None = None,
    max_new_tokens: int = 32,
    repeats: int = 3,
    random_weights: bool = False,
    mllm_path: str | None = None,
    sam_checkpoint: str | None = None,
    adapter: str = "semantic",
    output_json: str | None = None,
) -> None:
    """Benchmark a preset and print the figures (and write them to ``output_json`` if given)."""
    result, model = run_benchmark(
        preset=preset, batch_size=batch_size, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
        repeats=repeats, random_weights=random_weights, mllm_path=mllm_path, sam_checkpoint=sam_checkpoint,
        adapter=adapter,
    )
    print(format_parameter_report(parameter_report(model)))
    print(format_result(result))
    if output_json:
        Path(output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(output_json).write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
