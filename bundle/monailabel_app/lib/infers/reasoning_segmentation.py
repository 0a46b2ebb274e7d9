# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""MONAI Label infer task: an image and a free-text question -> the lesion mask, the reasoning and the answer.

Everything between the request and the label file is the bundle's :class:`scripts.inference.Predictor`; this task
only validates the request, picks the slices of a volume, serialises access to the one loaded model and writes
the label file with :func:`scripts.inference.write_label_image`.

Request parameters (the ``params`` JSON of ``POST /infer/<model>``):

- ``question`` (required): the clinical question, at most ``max_question_chars`` characters.
- ``slice_index``: for a 3D image, the slice to segment (the one the user is on); ``slice_axis`` (default 2, the
  third voxel axis: axial for an RAS/LPS-ordered CT) says across which voxel axis.
- ``all_slices``: for a 3D image, segment every slice (one answer per slice, one label volume).
- ``result_extension``: label format for 3D images (``.nii.gz`` default, ``.nii``, ``.nrrd``, ``.mha``); 2D
  raster images always get a PNG.
- ``modality``, ``anatomy``, ``window``: optional datalist fields the Predictor uses for intensity handling.

The JSON returned next to the label file holds ``question``, ``reasoning``, ``answer``, ``boxes`` (original-image
pixels ``[x1, y1, x2, y2]``), ``format_valid``/``format_error``, ``no_lesion``, ``completion`` and the slice, or,
with ``all_slices``, one such entry per slice in ``slices``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

logger = logging.getLogger(__name__)

_LABEL_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")


class InferRequestError(MONAILabelException):
    """A request the task cannot serve as asked; ``status_code`` is the HTTP status it deserves (4xx)."""

    def __init__(self, status_code: int, msg: str) -> None:
        super().__init__(MONAILabelError.INVALID_INPUT, msg)
        self.status_code = status_code

    def __str__(self) -> str:
        return self.msg


class ReasoningSegmentation(InferTask):
    """Reasoning segmentation with the bundle's Predictor, loaded once and shared by all requests.

    Args:
        predictor: a :class:`scripts.inference.Predictor` with its weights loaded.
        description: shown in ``/info/``.
        max_question_chars: longest question accepted.
        batch_size: slices predicted together for ``all_slices``.
    """

    def __init__(self, predictor: Any, description: str, max_question_chars: int = 2000, batch_size: int = 1) -> None:
        super().__init__(
            type=InferType.SEGMENTATION,
            labels={"lesion": 1},
            dimension=2,
            description=description,
            # string values show as editable cells in the stock Slicer plugin's Options table
            config={"question": "", "slice_index": -1, "all_slices": False, "result_extension": ".nii.gz"},
        )
        self.predictor = predictor
        self.max_question_chars = max_question_chars
        self.batch_size = batch_size
        # One model, many request threads: generation runs one request at a time, reading and checking the
        # input (which is what fails for a bad request) runs outside the lock.
        self._model_lock = threading.Lock()

    def is_valid(self) -> bool:
        return self.predictor is not None

    def __call__(self, request: Mapping) -> tuple[str, dict]:
        start = time.time()
        question = self._question(request)
        image = request.get("image")
        if not image or not Path(str(image)).exists():
            raise InferRequestError(404, f"Image {image!r} not found: give the id of an image of the datastore, "
                                         "upload it as 'file' or create a session.")
        workdir = Path(tempfile.mkdtemp(prefix="coreseg_infer_"))
        waited = 0.0
        try:
            path = self._readable_path(Path(str(image)), workdir)
            records = self._records(path, question, request)
            extension = self._label_extension(path, request)
            predictions = []
            # Batch by batch: slices are read outside the lock, and a long every-slice request lets other
            # requests in between its batches.
            for first in range(0, len(records), self.batch_size):
                samples = [self._preprocess(record) for record in records[first:first + self.batch_size]]
                queued = time.time()
                with self._model_lock:
                    waited += time.time() - queued
                    predictions.extend(self.predictor.predict_samples(samples))
            label = self._write_label(predictions, path, extension)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result = self._result_json(question, predictions, all_slices=len(records) > 1 or _flag(request, "all_slices"))
        total = time.time() - start
        result["latencies"] = {"queue": round(waited, 3), "total": round(total, 3)}
        return str(label), result

    # ------------------------------------------------------------------------------------------ request checks
    def _question(self, request: Mapping) -> str:
        question = request.get("question")
        if not isinstance(question, str) or not question.strip():
            raise InferRequestError(422, "The request has no question: send params={'question': 'Where is the "
                                         "liver tumor?'} (a non-empty string).")
        if len(question) > self.max_question_chars:
            raise InferRequestError(422, f"The question has {len(question)} characters; at most "
                                         f"{self.max_question_chars} are accepted.")
        return question.strip()

    @staticmethod
    def _readable_path(image: Path, workdir: Path) -> Path:
        """The image as a file the Predictor reads: a DICOM series folder becomes one NIfTI volume (via ITK)."""
        if not image.is_dir():
            return image
        import itk

        try:
            volume = itk.imread(str(image))
        except Exception as error:  # ITK raises RuntimeError with its own text for unreadable series
            raise InferRequestError(422, f"The folder {image.name!r} is not a readable DICOM series: {error}") from error
        path = workdir / "series.nii.gz"
        itk.imwrite(volume, str(path))
        return path

    def _records(self, path: Path, question: str, request: Mapping) -> list[dict]:
        from scripts.data.readers import read_header

        try:
            header = read_header(path)
        except (ValueError, OSError) as error:
            raise InferRequestError(422, f"Cannot read the image: {error}") from error
        record = {"image": str(path), "question": question}
        record.update({k: request[k] for k in ("modality", "anatomy", "window") if request.get(k) not in (None, "")})
        if not header.is_volume:
            return [record]
        axis = _integer(request.get("slice_axis", 2))
        if axis not in (0, 1, 2):
            raise InferRequestError(422, f"slice_axis must be 0, 1 or 2, got {axis}.")
        depth = header.spatial_shape[axis]
        if _flag(request, "all_slices"):
            return [{**record, "slice_index": index, "slice_axis": axis} for index in range(depth)]
        index = _integer(request.get("slice_index", -1))
        if index is None or not 0 <= index < depth:
            raise InferRequestError(422, f"The image is a volume with {depth} slices across axis {axis}: send "
                                         f"'slice_index' (0 to {depth - 1}, the slice to segment) or "
                                         "'all_slices': true.")
        return [{**record, "slice_index": index, "slice_axis": axis}]

    def _preprocess(self, record: dict) -> dict:
        try:
            return self.predictor.preprocess(record)
        except (ValueError, OSError) as error:
            raise InferRequestError(422, f"Cannot use the image: {error}") from error

    # ------------------------------------------------------------------------------------------ outputs
    @staticmethod
    def _label_extension(path: Path, request: Mapping) -> str:
        from scripts.data.readers import reader_kind

        if reader_kind(path) == "pil":  # 2D raster images (PNG/JPG/BMP)
            return ".png"
        extension = str(request.get("result_extension") or ".nii.gz")
        if extension not in _LABEL_EXTENSIONS:
            raise InferRequestError(422, f"result_extension {extension!r} is not supported for 3D images: use one "
                                         f"of {', '.join(_LABEL_EXTENSIONS)}.")
        return extension

    @staticmethod
    def _write_label(predictions: list, path: Path, extension: str) -> Path:
        from scripts.inference import write_label_image

        label = Path(tempfile.NamedTemporaryFile(prefix="coreseg_label_", suffix=extension, delete=False).name)
        return write_label_image(predictions, path, label)

    @staticmethod
    def _result_json(question: str, predictions: list, all_slices: bool) -> dict:
        entries = [{key: value for key, value in prediction.to_json().items() if key != "image"}
                   for prediction in predictions]
        if all_slices:
            return {"question": question, "slices": entries,
                    "format_valid": all(entry["format_valid"] for entry in entries)}
        return entries[0]


def _integer(value: object) -> int | None:
    """An integer parameter, also as text (the stock Slicer plugin's Options table sends strings); None if not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _flag(request: Mapping, key: str) -> bool:
    value = request.get(key, False)
    return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)
