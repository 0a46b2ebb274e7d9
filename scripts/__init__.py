# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""CORE-Seg bundle code, imported by the bundle configs as ``scripts`` (MONAI model-zoo convention)."""
