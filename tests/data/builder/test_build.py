# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The builder end to end on the synthetic generator's raw output, the CLI, and resuming a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scripts.data.builder import BuildConfig, build_dataset
from scripts.data.builder.__main__ import main as cli
from scripts.data.datalist import load_datalist
from scripts.data.prompts import has_box_literal
from scripts.data.synthetic import generate_benchmark
from scripts.data.validate import validate_datalist

from .conftest import good_reply

REPO = Path(__file__).resolve().parents[3]
DIFFICULTY = {"folds": 2, "models": 2, "channels": [8, 16, 32], "spatial_size": 64, "epochs": 40, "batch_size": 8, "learning_rate": 3e-3,
              "min_cases": 10}


@pytest.fixture(scope="module")
def raw_output(tmp_path_factory):
    """The synthetic generator's raw output: images, masks and a datalist without text."""
    root = tmp_path_factory.mktemp("raw")
    return generate_benchmark(root, size={"training": 24, "test": 6}, seed=3, progress=False)


def config(raw_output, server=None, **extra):
    values = {"sources": [{"name": "synthetic", "datalist": str(raw_output)}], "difficulty": DIFFICULTY,
              "text": {"max_workers": 2}, **extra}
    if server is not None:
        values["generator"] = {"base_url": server.base_url, "model": "fake-generator", "max_retries": 1}
        values["scorer"] = {"base_url": server.base_url, "model": "fake-scorer", "max_retries": 1}
    return values


def test_end_to_end_on_the_synthetic_generators_raw_output(raw_output, tmp_path, fake_openai):
    server = fake_openai(lambda request, n: good_reply(request, low_first_round=n % 5 == 0))
    out = tmp_path / "build"
    summary = build_dataset(BuildConfig.from_mapping(config(raw_output, server)), out, progress=False)
    raw = json.loads(Path(raw_output).read_text())
    ingest = json.loads((out / "ingest_report.json").read_text())
    lesion_rows = sum(1 for rows in raw.values() for r in rows if r["num_targets"] > 0)
    assert summary["ingested"] == ingest["records"] == lesion_rows  # rows asking for an absent finding skipped
    assert set(ingest["skipped_per_source"]["synthetic"]) == {"empty mask"}
    difficulty = json.loads((out / "difficulty" / "summary.json").read_text())[0]
    assert difficulty["cases"] == lesion_rows and 0 < difficulty["hard"] == summary["hard_cases"] < lesion_rows
    assert (out / "difficulty" / "synthetic" / "ccdf_knee.png").is_file()
    # every hard case got question, reasoning and scores and went to the datalist
    datalist = json.loads((out / "datalist.json").read_text())
    records = datalist["training"] + datalist["test"]
    assert summary["status"] == {"accepted": summary["hard_cases"]} and len(records) == summary["hard_cases"]
    for record in records:
        assert record["question"] and record["reasoning"] and not has_box_literal(record["reasoning"])
        assert record["quality"]["passed"] and record["reasoning_source"] == "llm:fake-generator"
        assert record["difficulty"]["votes"] >= 2 and "answer" not in record  # rendered by the pipeline from boxes
        assert record["distractor"] and record["source"] == "synthetic"  # the generator's fields travel along
    assert {r["image"] for r in datalist["training"]}.isdisjoint({r["image"] for r in datalist["test"]})
    # the result is a valid datalist that the training pipeline reads
    report = validate_datalist(out / "datalist.json")
    assert report.ok, report.summary()
    assert len(load_datalist(out / "datalist.json", "training")) == len(datalist["training"])
    quality = json.loads((out / "text" / "quality_report.json").read_text())
    assert quality["regenerated"] >= 1 and quality["mean_scores"]["S_final"] == pytest.approx(0.9)
    assert quality["endpoints"]["generator"]["calls"] == 2 * sum(quality["attempts"][k] * int(k)
                                                                 for k in quality["attempts"])
    assert (out / "text" / "scores.png").is_file() and (out / "text" / "samples.csv").is_file()
    text = (out / "report.md").read_text()
    assert "## Difficulty-aware filtering" in text and "| synthetic |" in text and "accepted" in text
    # a second run asks nothing: every reply comes from the cache
    before = len(server.requests)
    again = build_dataset(BuildConfig.from_mapping(config(raw_output, server)), out, progress=False)
    assert len(server.requests) == before and again["status"] == summary["status"]
    assert json.loads((out / "datalist.json").read_text()) == datalist


def test_cli_offline_without_filter_and_stop_after(raw_output, tmp_path, capsys):
    path = tmp_path / "builder.json"
    path.write_text(json.dumps(config(raw_output, filter=False)))
    cli(["build", "--config", str(path), "--out_dir", str(tmp_path / "a"), "--stop_after", "ingest",
         "--progress", "False"])
    assert json.loads(capsys.readouterr().out)["ingested"] > 0 and not (tmp_path / "a" / "datalist.json").exists()
    cli(["build", "--config", str(path), "--out_dir", str(tmp_path / "b"), "--offline", "--progress", "False"])
    summary = json.loads(capsys.readouterr().out)
    datalist = json.loads((tmp_path / "b" / "datalist.json").read_text())
    records = datalist["training"] + datalist["test"]
    assert len(records) == summary["ingested"] and all(r["reasoning_source"] == "template" for r in records)
    assert not (tmp_path / "b" / "difficulty").exists()
    assert validate_datalist(tmp_path / "b" / "datalist.json").ok
    cli(["example_config"])
    example = json.loads(capsys.readouterr().out)
    assert BuildConfig.from_mapping(example).text.weights == (0.3, 0.3, 0.4)


def test_bad_configs_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="needs 'sources'"):
        BuildConfig.from_mapping({"sources": []})
    with pytest.raises(ValueError, match="Unknown builder config keys"):
        BuildConfig.from_mapping({"sources": [{"name": "a", "datalist": "x.json"}], "scorers": {}})
    with pytest.raises(ValueError, match="Unknown text settings"):
        BuildConfig.from_mapping({"sources": [{"name": "a", "datalist": "x.json"}], "text": {"threshold": 0.8}})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BuildConfig.from_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="stop_after"):
        build_dataset(BuildConfig.from_mapping({"sources": [{"name": "a", "datalist": "x.json"}]}), tmp_path,
                      stop_after="everything")


def canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


def test_a_killed_run_resumes_without_repeating_answered_calls(raw_output, tmp_path, fake_openai):
    answered_in_first_run = 7
    release = threading.Event()

    def responder(request, n):
        if n >= answered_in_first_run and not release.is_set():
            release.wait(60)  # hang: the run is killed while waiting for this reply
        return good_reply(request)

    server = fake_openai(responder)
    values = config(raw_output, server, filter=False, text={"max_workers": 1})
    path = tmp_path / "builder.json"
    path.write_text(json.dumps(values))
    out = tmp_path / "build"
    command = [sys.executable, "-m", "scripts.data.builder", "build", "--config", str(path), "--out_dir", str(out),
               "--progress", "False"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(server.requests) <= answered_in_first_run:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first run never reached the hanging request"
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # as hard as an interruption gets
        process.wait()
    first_run = [canonical(r["body"]) for r in server.requests[:answered_in_first_run]]
    release.set()
    server.requests.clear()
    summary = build_dataset(BuildConfig.from_mapping(values), out, progress=False)
    second_run = [canonical(r["body"]) for r in server.requests]
    assert set(first_run).isdisjoint(second_run)  # nothing answered before was asked again
    cases = summary["ingested"]
    assert len(first_run) + len(second_run) == 3 * cases  # step 1, step 2, score per case: nothing lost either
    assert summary["status"] == {"accepted": cases}
