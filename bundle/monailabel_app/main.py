# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""MONAI Label app serving CORE-Seg: ask a question about an image, get the lesion mask and the reasoning.

Start it from the bundle root (docs/serving.md)::

    python -m monailabel.main start_server --app bundle/monailabel_app --studies <images folder> \\
        --uvicorn_app bundle.monailabel_app.coreseg_server:app --host 127.0.0.1 --port 8000

``--uvicorn_app`` serves the same API with a non-blocking ``/infer`` (stock MONAI Label runs inference on the
event loop, which freezes every other endpoint meanwhile). ``--conf`` options (all optional):

- ``bundle_root``: the bundle directory (default: two levels above this file).
- ``config_file``: comma-separated inference configs, relative to the bundle root
  (default ``configs/inference.json``; add ``configs/full.json`` for the full-size model).
- ``checkpoint``: trainable weights (default: the config's ``models/model.pt``, the synthetic-data demo model).
- ``preset``, ``mllm_path``, ``sam_checkpoint``, ``device``, ``max_new_tokens``: inference config overrides.
- ``model_name`` (default ``coreseg``), ``max_question_chars`` (2000), ``batch_size`` (1, slices per batch).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from lib.infers import ReasoningSegmentation
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

logger = logging.getLogger(__name__)

_DEFAULT_BUNDLE_ROOT = Path(__file__).resolve().parents[2]
_CONFIG_OVERRIDES = ("preset", "mllm_path", "sam_checkpoint", "device")


class CoreSegApp(MONAILabelApp):
    """One reasoning-segmentation model (the bundle's Predictor), loaded when the app starts."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle_root = Path(conf.get("bundle_root") or _DEFAULT_BUNDLE_ROOT).resolve()
        if not (self.bundle_root / "configs" / "inference.json").is_file():
            raise FileNotFoundError(f"{self.bundle_root} is not the CORE-Seg bundle (no configs/inference.json): "
                                    "pass --conf bundle_root <bundle directory>.")
        # The bundle's code is the top-level package `scripts` (model-zoo convention), imported from its root.
        if str(self.bundle_root) not in sys.path:
            sys.path.insert(0, str(self.bundle_root))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="CORE-Seg",
                         description="Reasoning segmentation of complex lesions: ask a question, get the mask and "
                                     "the reasoning", version=_bundle_version(self.bundle_root))

    def init_infers(self) -> dict[str, InferTask]:
        from scripts.inference import Predictor

        conf = self.conf
        config_files = [name.strip() for name in conf.get("config_file", "configs/inference.json").split(",")]
        overrides: dict[str, object] = {key: conf[key] for key in _CONFIG_OVERRIDES if conf.get(key)}
        if conf.get("max_new_tokens"):
            overrides["max_new_tokens"] = int(conf["max_new_tokens"])
        if "device" in overrides:
            overrides["device"] = f"$torch.device('{overrides['device']}')"
        logger.info(f"Loading the CORE-Seg predictor from {self.bundle_root} ({config_files}, {overrides})")
        predictor = Predictor.from_bundle(self.bundle_root, config_files, checkpoint=conf.get("checkpoint"),
                                          **overrides)
        weights = conf.get("checkpoint") or "the config's checkpoint"
        task = ReasoningSegmentation(
            predictor,
            description=f"CORE-Seg reasoning segmentation ({', '.join(config_files)}; weights: {weights})",
            max_question_chars=int(conf.get("max_question_chars", 2000)),
            batch_size=int(conf.get("batch_size", 1)),
        )
        return {conf.get("model_name", "coreseg"): task}


def _bundle_version(bundle_root: Path) -> str:
    import json

    return json.loads((bundle_root / "configs" / "metadata.json").read_text())["version"]
