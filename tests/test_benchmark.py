# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The benchmark script runs and reports consistent figures (no timing thresholds: figures go to docs)."""

import json

from scripts.benchmark import format_result, main, run_benchmark
from scripts.networks import parameter_report


def test_benchmark_reports_every_figure():
    result, model = run_benchmark("tiny", batch_size=2, device="cpu", max_new_tokens=4, repeats=1,
                                  image_size=(64, 96))
    rows = parameter_report(model)
    assert result.parameters_total == sum(r.total for r in rows) > result.parameters_trainable > 0
    assert result.generated_tokens == 2 * 4
    assert result.generation_tokens_per_second == result.generated_tokens / result.generate_seconds
    for seconds in (result.build_seconds, result.forward_seconds, result.forward_backward_seconds,
                    result.generate_seconds):
        assert seconds > 0
    assert result.peak_memory_bytes > 0 and result.peak_memory_kind == "process peak RSS"
    assert 0 < result.image_tokens < result.prompt_tokens and result.answer_tokens > 0
    assert "tokens/s" in format_result(result)


def test_benchmark_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "tiny.json"
    main(preset="tiny", device="cpu", max_new_tokens=2, repeats=1, output_json=str(out))
    figures = json.loads(out.read_text())
    assert figures["preset"] == "tiny" and figures["generated_tokens"] == 2
    printed = capsys.readouterr().out
    assert "| **all** |" in printed and "forward+backward" in printed


def test_grpo_cost_benchmark_counts_encoder_images_with_and_without_sharing():
    from scripts.benchmark_grpo import measure_grpo_step
    from scripts.networks import build_coreseg

    model = build_coreseg("tiny", seed=0)
    shared = measure_grpo_step(model, True, batch_size=2, num_generations=3, max_new_tokens=4, repeats=1,
                               image_size=(64, 64))
    separate = measure_grpo_step(model, False, batch_size=2, num_generations=3, max_new_tokens=4, repeats=1,
                                 image_size=(64, 64))
    assert (shared.vision_images_per_step, shared.sam_images_per_step) == (2, 2)
    # sampling, reference and policy pass each encode the 6 rollouts' images; SAM once per rollout
    assert (separate.vision_images_per_step, separate.sam_images_per_step) == (18, 6)
    assert shared.step_seconds > 0 and separate.completion_tokens == 4
