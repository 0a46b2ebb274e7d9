# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A real CORE-Seg MONAI Label server on 127.0.0.1 (the demo model), shared by the serving tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SLICER_LIB = ROOT / "bundle" / "slicer" / "CoreSeg"
MAX_NEW_TOKENS = 32
STARTUP_SECONDS = 300

if str(SLICER_LIB) not in sys.path:  # CoreSegLib is the Slicer module's package, imported by its folder
    sys.path.insert(0, str(SLICER_LIB))


@dataclass
class Server:
    url: str
    studies: Path
    log: Path
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _studies(folder: Path) -> Path:
    """A 2D CT image, a 3-slice NIfTI volume and a 12-slice one (long enough to watch the server meanwhile)."""
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "sample_data" / "images" / "test" / "00000.png", folder / "ct2d.png")
    plane = np.asarray(Image.open(folder / "ct2d.png").convert("L")).T.astype(np.int16)  # (x, y)
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = [-90.0, -80.0, 10.0]
    nib.save(nib.Nifti1Image(np.stack([plane, plane[::-1], plane], -1), affine), folder / "ct3d.nii.gz")
    nib.save(nib.Nifti1Image(np.stack([plane] * 12, -1), affine), folder / "ct3d_long.nii.gz")
    return folder


@pytest.fixture(scope="session")
def coreseg_server(tmp_path_factory) -> Server:
    """``python -m monailabel.main start_server`` with the CORE-Seg app and the non-blocking infer route."""
    base = tmp_path_factory.mktemp("monailabel")
    app_dir = base / "app"  # a copy: start_server writes logs/, model/ and bin/ into the app folder
    shutil.copytree(ROOT / "bundle" / "monailabel_app", app_dir,
                    ignore=shutil.ignore_patterns("logs", "model", "bin", "__pycache__"))
    studies = _studies(base / "studies")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "MONAI_LABEL_DATASTORE_CACHE_PATH": str(base / "cache"), "MONAI_LABEL_SESSION_PATH": str(base / "sessions")}
    log = base / "server.log"
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies",
               str(studies), "--host", "127.0.0.1", "--port", str(port),
               "--uvicorn_app", "bundle.monailabel_app.coreseg_server:app",
               "--conf", "bundle_root", str(ROOT), "--conf", "max_new_tokens", str(MAX_NEW_TOKENS)]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"The MONAI Label server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/info/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"The server did not answer /info/ in {STARTUP_SECONDS} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield Server(url=url, studies=studies, log=log, process=process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own process group: only what this fixture started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def demo_predictor():
    """The bundle's Predictor in this process, as the server loads it: what the server must answer."""
    from scripts.inference import Predictor

    return Predictor.from_bundle(ROOT, max_new_tokens=MAX_NEW_TOKENS, device="$torch.device('cpu')")
