# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The release zip: reproducible, model-zoo shaped, and usable after `monai.bundle download` from a local server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from bundle.release import BUNDLE_NAME, build_release

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "site"``."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_release_zip_is_reproducible_and_shaped_like_a_model_zoo_bundle(tmp_path):
    first = build_release(tmp_path / "a")
    second = build_release(tmp_path / "b")
    assert first.zip_path.read_bytes() == second.zip_path.read_bytes()
    version = json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
    assert first.zip_path.name == f"{BUNDLE_NAME}_v{version}.zip"
    with zipfile.ZipFile(first.zip_path) as archive:
        names = archive.namelist()
        infos = archive.infolist()
    assert {name.split("/", 1)[0] for name in names} == {BUNDLE_NAME}
    for needed in ("configs/metadata.json", "configs/inference.json", "configs/train_sft.json", "scripts/__init__.py",
                   "models/model.pt", "docs/README.md", "LICENSE", "sample_data/datalist.json",
                   "bundle/monailabel_app/main.py", "bundle/monailabel_app/coreseg_server.py",
                   "bundle/slicer/CoreSeg/CoreSeg.py", "bundle/slicer/CoreSeg/CoreSegLib/client.py"):
        assert f"{BUNDLE_NAME}/{needed}" in names, needed
    assert not any("__pycache__" in name or name.endswith(".pyc") or "/tests/" in name for name in names)
    assert not any(name.startswith(f"{BUNDLE_NAME}/bundle/monailabel_app/logs/") for name in names)
    assert f"{BUNDLE_NAME}/docs/sft_learning.md" in names and (ROOT / "docs" / "results").is_dir()
    assert not any(name.startswith(f"{BUNDLE_NAME}/docs/results/") for name in names)  # raw experiment outputs
    assert names == sorted(names) and {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert first.large_files == [] and first.large_files_dir is None


def test_download_from_a_local_server_then_run_inference_from_the_copy(tmp_path, file_server):
    site, base_url = file_server
    version = json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
    release = build_release(site, large_files_url=f"{base_url}/{BUNDLE_NAME}_v{version}_files", max_file_mb=10)
    assert {entry["path"] for entry in release.large_files} == {"models/model.pt", "models/tiny_sam2_256.pt"}
    with zipfile.ZipFile(release.zip_path) as archive:
        assert f"{BUNDLE_NAME}/models/model.pt" not in archive.namelist()
        assert f"{BUNDLE_NAME}/large_files.yml" in archive.namelist()

    env = {**os.environ, "PYTHONPATH": ""}  # the copy must run on its own code, not this checkout's
    downloads = tmp_path / "downloads"
    subprocess.run([sys.executable, "-m", "monai.bundle", "download", "--name", BUNDLE_NAME,
                    "--url", f"{base_url}/{release.zip_path.name}", "--bundle_dir", str(downloads)],
                   check=True, env=env, cwd=tmp_path)
    bundle = downloads / BUNDLE_NAME
    assert (bundle / "configs" / "inference.json").is_file() and not (bundle / "models" / "model.pt").exists()
    subprocess.run([sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)],
                   check=True, env=env, cwd=bundle)
    for name in ("model.pt", "tiny_sam2_256.pt"):
        assert hashlib.sha256((bundle / "models" / name).read_bytes()).digest() == \
            hashlib.sha256((ROOT / "models" / name).read_bytes()).digest()

    code = subprocess.run([sys.executable, "-c", "import scripts; print(scripts.__file__)"], check=True, env=env,
                          cwd=bundle, capture_output=True, text=True).stdout
    assert Path(code.strip()).resolve().is_relative_to(bundle.resolve())
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                    "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf",
                    "--max_new_tokens", "24"], check=True, env=env, cwd=bundle)
    index = json.loads((bundle / "eval" / "inference" / "predictions.json").read_text())
    datalist = json.loads((bundle / "sample_data" / "datalist.json").read_text())
    assert len(index) == sum(len(records) for records in datalist.values())
    for entry in index:  # every answer has its JSON; a mask file wherever the answer had a usable <seg>
        assert (bundle / entry["json"]).is_file()
        assert entry.get("mask") is None or (bundle / entry["mask"]).is_file()
    assert any(entry.get("mask") for entry in index)
    assert len({entry["json"] for entry in index}) == len(index)  # two questions per image, two answers kept
