# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""What every builder stage needs for its config and its outputs: unknown-key checks and atomic JSON writes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

__all__ = ["reject_unknown_keys", "settings_from_mapping", "write_json"]


def reject_unknown_keys(values: Mapping[str, Any], cls: type, what: str) -> None:
    """Raise ``ValueError("Unknown {what} [...]; expected keys among [...]")`` for keys that are not fields of the
    dataclass ``cls`` (a misspelt setting must not be ignored silently)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown {what} {unknown}; expected keys among {sorted(known)}.")


def settings_from_mapping(cls: type, values: Mapping[str, Any] | None, what: str):
    """``cls(**values)`` after :func:`reject_unknown_keys` (``None`` gives the defaults)."""
    values = dict(values or {})
    reject_unknown_keys(values, cls, what)
    return cls(**values)


def write_json(path: str | Path, payload: Any, indent: int | None = 2) -> Path:
    """Write ``payload`` as JSON through a temporary file and a rename, so that a killed run leaves either the old
    file or the new one, never half of one; parent folders are created. Safe from several threads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    temporary.write_text(json.dumps(payload, indent=indent) + "\n")
    os.replace(temporary, path)
    return path
