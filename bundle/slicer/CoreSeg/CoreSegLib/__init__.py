# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Slicer-free part of the CORE-Seg Slicer module: the HTTP client and the formatting of results.

No ``slicer``, ``qt`` or ``vtk`` imports: this package runs in Slicer's Python (3.9 in Slicer 5.8, 3.12 in 5.10)
with only ``requests``, and is tested with pytest against a real CORE-Seg MONAI Label server.
"""

from .client import CoreSegClient, InferResult, ServerError, parse_multipart
from .results import reasoning_report, segment_name

__all__ = ["CoreSegClient", "InferResult", "ServerError", "parse_multipart", "reasoning_report", "segment_name"]
