# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Build the bundle's release zip as the MONAI model zoo does, for ``python -m monai.bundle download``.

The zip holds one top-level folder named after the bundle with what a bundle run needs: ``configs/``, ``docs/``
(without ``docs/results/``, the raw outputs of the experiments), ``models/``, ``scripts/``, ``sample_data/``,
``LICENSE`` and the serving front ends (the MONAI Label app ``bundle/monailabel_app/`` and the 3D Slicer module
``bundle/slicer/``). Weights larger than ``max_file_mb`` can stay out of it:
with ``large_files_url`` they are listed in ``large_files.yml`` (path, URL, SHA-256), which
``python -m monai.bundle download_large_files`` reads, and copied to ``<output_dir>/<name>_v<version>_files/``
for upload under that URL. Entries are sorted and carry a fixed date and mode, so the same files give the same
bytes (a zip's hash then identifies its content).

Examples::

    python bundle/release.py                                   # dist/coreseg_v<version>.zip, weights inside
    python bundle/release.py --large_files_url https://example.org/coreseg/v0.2.0/   # weights > 20 MB outside

    python -m monai.bundle download --name coreseg --url https://example.org/coreseg/v0.2.0/coreseg_v0.2.0.zip \
        --bundle_dir downloads
    python -m monai.bundle download_large_files --bundle_path downloads/coreseg
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUNDLE_NAME", "RELEASE_CONTENT", "ReleaseResult", "build_release", "main"]

ROOT = Path(__file__).resolve().parents[1]
#: Folder name inside the zip and the ``--name`` of ``monai.bundle download``.
BUNDLE_NAME = "coreseg"
#: What the release holds, relative to the bundle root.
RELEASE_CONTENT = ("configs", "docs", "models", "scripts", "sample_data", "LICENSE", "bundle/monailabel_app",
                   "bundle/slicer")
_SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints"}
#: What ``monailabel start_server`` creates in the app folder of a checkout: run-time state, not release content.
#: ``docs/results``: raw outputs and throwaway drivers of the experiments that ``docs/sft_learning.md`` records (17 MB),
#: kept in the repository for the record, not needed to run or read the bundle.
_SKIPPED_FOLDERS = ("bundle/monailabel_app/bin", "bundle/monailabel_app/logs", "bundle/monailabel_app/model",
                    "docs/results")
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}
#: The zip format's earliest date: fixed entry times make the archive reproducible.
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class ReleaseResult:
    """What :func:`build_release` wrote.

    Attributes:
        zip_path: the release zip.
        large_files: files left out of the zip, as listed in ``large_files.yml`` (path, url, hash).
        large_files_dir: where they were copied for upload (None when there are none).
    """

    zip_path: Path
    large_files: list[dict]
    large_files_dir: Path | None


def _release_files(root: Path) -> list[Path]:
    files = []
    for name in RELEASE_CONTENT:
        path = root / name
        if not path.exists():
            raise FileNotFoundError(f"The release needs {path}, which does not exist.")
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates
                  if not (_SKIPPED_PARTS & set(p.relative_to(root).parts)) and p.suffix not in _SKIPPED_SUFFIXES
                  and not p.relative_to(root).as_posix().startswith(tuple(f"{f}/" for f in _SKIPPED_FOLDERS))]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _large_files_yaml(entries: list[dict]) -> str:
    lines = ["large_files:"]
    for entry in entries:
        lines += [f'  - path: "{entry["path"]}"', f'    url: "{entry["url"]}"',
                  f'    hash_val: "{entry["hash_val"]}"', f'    hash_type: "{entry["hash_type"]}"']
    return "\n".join(lines) + "\n"


def _write_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data, compresslevel=9)


def build_release(
    output_dir: str | Path = "dist",
    name: str = BUNDLE_NAME,
    large_files_url: str | None = None,
    max_file_mb: float = 20.0,
    root: str | Path = ROOT,
) -> ReleaseResult:
    """Write ``<output_dir>/<name>_v<version>.zip`` (version from ``configs/metadata.json``).

    Args:
        output_dir: where the zip (and the large files to upload) go.
        name: the bundle's folder name inside the zip.
        large_files_url: base URL under which the large files will be hosted; files of ``models/`` larger than
            ``max_file_mb`` are then left out of the zip and listed in ``large_files.yml``. None keeps every
            file in the zip.
        max_file_mb: size above which a weight file is a large file.
        root: the bundle root to release.

    Raises:
        FileNotFoundError: a part of the release is missing.
        ValueError: ``name`` is not a plain folder name.
    """
    root = Path(root)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"The bundle name must be a plain folder name, got {name!r}.")
    version = json.loads((root / "configs" / "metadata.json").read_text())["version"]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    zip_path = output_dir / f"{name}_v{version}.zip"
    files_dir = output_dir / f"{name}_v{version}_files"
    if files_dir.exists():
        shutil.rmtree(files_dir)

    large: list[dict] = []
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in _release_files(root):
            relative = path.relative_to(root).as_posix()
            is_large = (large_files_url is not None and relative.startswith("models/")
                        and path.stat().st_size > max_file_mb * 2**20)
            if is_large:
                large.append({"path": relative, "url": large_files_url.rstrip("/") + "/" + relative,
                              "hash_val": _sha256(path), "hash_type": "sha256"})
                (files_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, files_dir / relative)
                continue
            _write_entry(archive, f"{name}/{relative}", path.read_bytes())
        if large:
            _write_entry(archive, f"{name}/large_files.yml", _large_files_yaml(large).encode())
    return ReleaseResult(zip_path=zip_path, large_files=large, large_files_dir=files_dir if large else None)


def main(output_dir: str = "dist", name: str = BUNDLE_NAME, large_files_url: str | None = None,
         max_file_mb: float = 20.0) -> None:
    """Build the release zip and print what went where."""
    result = build_release(output_dir, name, large_files_url, max_file_mb)
    print(f"{result.zip_path} ({result.zip_path.stat().st_size / 2**20:.1f} MiB, sha256 {_sha256(result.zip_path)})")
    for entry in result.large_files:
        print(f"large file {entry['path']} -> {entry['url']} (upload {result.large_files_dir / entry['path']})")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
