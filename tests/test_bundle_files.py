# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The bundle's own files: metadata (validated like model-zoo CI does), versions, logging config, docs."""

import hashlib
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow, verify_metadata
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
METADATA = ROOT / "configs" / "metadata.json"
SCHEMA = ROOT / "tests" / "testing_data" / "meta_schema_from_mb_specification.json"
OFFICIAL_SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                   "meta_schema_20240725.json")


def _schema_md5() -> str:
    return hashlib.md5(SCHEMA.read_bytes()).hexdigest()


def _metadata() -> dict:
    return json.loads(METADATA.read_text())


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, pinned = line.split("==")
            pins[name.lower()] = pinned
    return pins


def test_metadata_passes_monai_verify_metadata_cli():
    """`python -m monai.bundle verify_metadata` as model-zoo CI runs it, against a pre-seeded schema file."""
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(METADATA),
         "--filepath", str(SCHEMA), "--hash_val", _schema_md5(), "--hash_type", "md5"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_schema_rejects_incomplete_metadata(tmp_path):
    broken = _metadata()
    del broken["network_data_format"]["outputs"]["pred"]["dtype"]
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="dtype"):
        verify_metadata(meta_file=str(path), filepath=str(SCHEMA), hash_val=_schema_md5(), hash_type="md5")


def test_metadata_keeps_the_official_schema_url_and_a_changelog_entry():
    meta = _metadata()
    assert meta["schema"] == OFFICIAL_SCHEMA
    assert meta["version"] in meta["changelog"]
    assert "optional_packages_version" not in meta  # deprecated in MONAI 1.6


def test_metadata_versions_are_the_installed_and_pinned_ones():
    """Model-zoo CI pip-installs these exact versions, so they must be real and match what we test with."""
    meta, pins = _metadata(), _constraints()
    packages = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"],
                **meta["required_packages_version"]}
    for name, pinned in packages.items():
        assert pins.get(name.lower()) == pinned, f"{name}: metadata {pinned}, constraints {pins.get(name.lower())}"
        assert Version(version(name)).base_version == Version(pinned).base_version, name


def test_logging_conf_is_accepted_by_monai_workflows():
    """MONAI 1.6 refuses logging configs with non-stdlib classes or non-literal arguments."""
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "network.json"),
        meta_file=str(METADATA),
        logging_file=str(ROOT / "configs" / "logging.conf"),
        workflow_type=None,
    )
    assert workflow.parser["preset"] == "demo"


def test_bundle_layout():
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    readme = (ROOT / "docs" / "README.md").read_text()
    for section in ("# Model Overview", "## Data", "## Performance", "## MONAI Bundle Commands",
                    "## System Configuration", "## Limitations", "## Citation", "# License"):
        assert section in readme, section


def test_paper_sft_overrides_merge_onto_the_training_config():
    """``train_sft.json`` + ``full.json`` + ``train_sft_paper.json``: full preset, paper hyper-parameters, no synthetic data."""
    configs = [str(ROOT / "configs" / name) for name in ("train_sft.json", "full.json", "train_sft_paper.json")]
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(METADATA), workflow_type="train",
                              logging_file=str(ROOT / "configs" / "logging.conf"), bundle_root="/bundle")
    parser = workflow.parser
    assert parser["network_def"]["preset"] == "@preset" and parser["preset"] == "full"
    assert parser.get_parsed_content("mllm_path") == "/bundle/models/Qwen2.5-VL-3B-Instruct"
    assert parser["learning_rate"] == 1e-4 and parser["max_epochs"] == 1
    assert parser["batch_size"] * parser["accumulation_steps"] == 32  # the paper's stage-1 batch
    assert parser["generate_synthetic"] is False
    assert parser.get_parsed_content("datalist") == "/bundle/data/ComLesion/datalist.json"


def test_paper_grpo_overrides_merge_onto_the_grpo_config():
    """``train_grpo.json`` + ``full.json`` + ``train_grpo_paper.json``: the paper's stage 2 from stage 1's best model."""
    configs = [str(ROOT / "configs" / name) for name in ("train_grpo.json", "full.json", "train_grpo_paper.json")]
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(METADATA), workflow_type="train",
                              logging_file=str(ROOT / "configs" / "logging.conf"), bundle_root="/bundle")
    parser = workflow.parser
    assert parser["preset"] == "full" and parser["learning_rate"] == 5e-6 and parser["max_epochs"] == 2
    assert parser["batch_size"] * parser["accumulation_steps"] == 16 and parser["num_generations"] == 4
    assert parser["beta"] > 0 and parser["train_max_records"] is None and parser["generate_synthetic"] is False
    assert parser.get_parsed_content("init_checkpoint") == "/bundle/eval/train_sft/best/model.pt"
    assert parser.get_parsed_content("sam_checkpoint") == "/bundle/models/MedSAM2_latest.pt"


def test_demo_grpo_overlay_continues_the_demo_recipe():
    """``make demo-model``'s last step: GRPO from the demo mask stage's best model, the result to ``models/``."""
    configs = [str(ROOT / "configs" / name) for name in ("train_grpo.json", "train_grpo_demo.json")]
    workflow = ConfigWorkflow(config_file=configs, meta_file=str(METADATA), workflow_type="train",
                              logging_file=str(ROOT / "configs" / "logging.conf"), bundle_root="/bundle")
    parser = workflow.parser
    sft_demo = ConfigWorkflow(config_file=[str(ROOT / "configs" / n) for n in ("train_sft.json", "train_sft_demo.json")],
                              meta_file=str(METADATA), workflow_type="train", bundle_root="/bundle").parser
    assert parser.get_parsed_content("init_checkpoint") == sft_demo.get_parsed_content("ckpt_dir") + "/model.pt"
    assert parser.get_parsed_content("ckpt_dir") == "/bundle/models" and parser["preset"] == "demo"
    assert parser.get_parsed_content("dataset_dir") == sft_demo.get_parsed_content("dataset_dir")
