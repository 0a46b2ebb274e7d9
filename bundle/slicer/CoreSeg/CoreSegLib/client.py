# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""HTTP client of the CORE-Seg MONAI Label app (``bundle/monailabel_app``), with ``requests`` and the stdlib only.

MONAI Label answers ``POST /infer/<model>`` with a ``multipart/form-data`` body: a ``params`` part (the JSON with
the reasoning, the answer and the boxes) and an ``image`` part (the label file). MONAI Label's own client parses it
with the ``cgi`` module, which Python 3.13 removed; this one uses :mod:`email`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import requests

from .results import answer_entries

__all__ = ["CoreSegClient", "InferResult", "ServerError", "parse_multipart"]

PathLike = Union[str, "os.PathLike[str]"]


class ServerError(Exception):
    """The server refused or failed a request.

    Attributes:
        status_code: HTTP status (None when the server could not be reached).
        detail: the server's explanation (its ``detail`` field when it sent JSON).
    """

    def __init__(self, status_code: int | None, detail: str) -> None:
        super().__init__(f"{status_code}: {detail}" if status_code else detail)
        self.status_code = status_code
        self.detail = detail


@dataclass
class InferResult:
    """What the server answered for one question.

    Attributes:
        params: the JSON part (``question``, ``reasoning``, ``answer``, ``boxes``, ``format_valid``, ...; with
            ``all_slices``, one entry per slice in ``slices``).
        label_path: the label file written locally (None when the server sent JSON only).
    """

    params: dict[str, Any]
    label_path: Path | None = None
    slices: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.slices = answer_entries(self.params)

    @property
    def format_valid(self) -> bool:
        """Every answer followed the CORE-Seg format (an invalid answer is a failed prediction)."""
        return all(bool(entry.get("format_valid")) for entry in self.slices)


class CoreSegClient:
    """Talk to a CORE-Seg MONAI Label server.

    Args:
        server_url: e.g. ``http://127.0.0.1:8000``.
        timeout: seconds to wait for an answer (inference on a CPU can take minutes).
        session: a ``requests.Session`` to reuse (one is made otherwise).
    """

    def __init__(self, server_url: str, timeout: float = 600.0, session: requests.Session | None = None) -> None:
        if not server_url.startswith(("http://", "https://")):
            raise ValueError(f"Server URL {server_url!r} must start with http:// or https://.")
        self.server_url = server_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    # ------------------------------------------------------------------------------------------ server
    def info(self) -> dict[str, Any]:
        """The server's ``/info/``: name, version, models and their configs."""
        return self._json(self._request("GET", "/info/"))

    def reasoning_models(self) -> list[str]:
        """Names of the models that take a question (their config has a ``question`` entry)."""
        models = self.info().get("models", {})
        return sorted(name for name, model in models.items() if "question" in model.get("config", {}))

    def create_session(self, paths: PathLike | Sequence[PathLike], uncompress: bool = False) -> str:
        """Upload an image (one file, the files of a DICOM series, or a zip with ``uncompress``) for later questions.

        Returns:
            The session id, to pass to :meth:`infer` as ``session_id``.
        """
        files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
        if not files:
            raise ValueError("No files to upload: give an image file, the files of a DICOM series or a zip.")
        handles = [path.open("rb") for path in files]
        try:
            response = self._request("PUT", "/session/", params={"uncompress": str(uncompress).lower()},
                                     files=[("files", (path.name, handle)) for path, handle in zip(files, handles)])
        finally:
            for handle in handles:
                handle.close()
        return str(self._json(response)["session_id"])

    def remove_session(self, session_id: str) -> None:
        """Delete an uploaded image from the server."""
        self._request("DELETE", f"/session/{session_id}")

    # ------------------------------------------------------------------------------------------ inference
    def infer(
        self,
        model: str,
        question: str,
        image_id: str | None = None,
        image_file: PathLike | None = None,
        session_id: str | None = None,
        slice_index: int | None = None,
        slice_axis: int | None = None,
        all_slices: bool = False,
        result_extension: str | None = None,
        output_dir: PathLike | None = None,
        **params: Any,
    ) -> InferResult:
        """Ask a question about one image.

        Give exactly one of ``image_id`` (an image of the server's datastore), ``image_file`` (uploaded with the
        request) or ``session_id`` (from :meth:`create_session`).

        Args:
            model: the model name (see :meth:`reasoning_models`).
            question: the clinical question.
            slice_index, slice_axis: for a volume, the slice to segment and the voxel axis it is taken across.
            all_slices: for a volume, segment every slice.
            result_extension: label format for volumes (``.nii.gz``, ``.nrrd``, ...).
            output_dir: where to write the label file (default: a new temporary folder).
            params: further request parameters (``modality``, ``anatomy``, ``window``).

        Raises:
            ServerError: the server refused the request (its reason in ``detail``) or could not be reached.
        """
        sources = [source for source in (image_id, image_file, session_id) if source]
        if len(sources) != 1:
            raise ValueError("Give exactly one of image_id, image_file or session_id.")
        request = {"question": question, **params}
        for key, value in (("slice_index", slice_index), ("slice_axis", slice_axis),
                           ("result_extension", result_extension)):
            if value is not None:
                request[key] = value
        if all_slices:
            request["all_slices"] = True
        query = {key: value for key, value in (("image", image_id), ("session_id", session_id)) if value}
        files: dict[str, Any] = {"params": (None, json.dumps(request), "application/json")}
        handle = open(image_file, "rb") if image_file else None  # noqa: SIM115 (closed below)
        try:
            if handle is not None:
                files["file"] = (Path(image_file).name, handle, "application/octet-stream")
            response = self._request("POST", f"/infer/{model}", params=query, files=files)
        finally:
            if handle is not None:
                handle.close()
        return self._infer_result(response, output_dir)

    def _infer_result(self, response: requests.Response, output_dir: PathLike | None) -> InferResult:
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            return InferResult(params=self._json(response))
        if not content_type.startswith("multipart/"):
            raise ServerError(response.status_code, f"Unexpected answer of type {content_type!r}.")
        parts = parse_multipart(content_type, response.content)
        if "params" not in parts:
            raise ServerError(response.status_code, "The answer has no 'params' part.")
        params = json.loads(parts["params"][1].decode("utf-8"))
        label_path = None
        if "image" in parts:
            filename, payload = parts["image"]
            folder = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="coreseg_"))
            folder.mkdir(parents=True, exist_ok=True)
            label_path = folder / Path(filename or "label.nii.gz").name  # never a path the server chose
            label_path.write_bytes(payload)
        return InferResult(params=params, label_path=label_path)

    # ------------------------------------------------------------------------------------------ transport
    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, self.server_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise ServerError(None, f"Cannot reach {self.server_url}: {error}") from error
        if response.status_code >= 400:
            raise ServerError(response.status_code, _error_detail(response))
        return response

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as error:
            raise ServerError(response.status_code, f"The answer is not JSON: {response.text[:200]!r}") from error


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple]:
    """Split a ``multipart/form-data`` body into ``{name: (filename or None, payload bytes)}``."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ValueError(f"Not a multipart body (content type {content_type!r}).")
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


def _error_detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail else (response.text.strip()[:500] or response.reason or "no detail")
