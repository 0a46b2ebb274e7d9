# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""MONAI Label's FastAPI app with an ``/infer/{model}`` route that does not block the server.

Stock MONAI Label 0.8.5 declares ``POST /infer/{model}`` as ``async def`` and runs the (synchronous) inference
inside it, on the event loop: while one inference runs, no other request (``/info/``, another ``/infer``) is
answered. Here the same handler (``monailabel.endpoints.infer.run_inference``: uploads, sessions, output types)
runs from a plain ``def`` route, matched before the stock one, which FastAPI executes in its thread pool; the model itself serialises generation.

Requests the task refuses (no question, unknown image, unreadable image, ...) raise
:class:`lib.infers.InferRequestError`; they are answered with their 4xx status and the reason as ``detail``
instead of stock MONAI Label's bare 500.

Serve with ``python -m monailabel.main start_server ... --uvicorn_app bundle.monailabel_app.coreseg_server:app``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from monailabel.app import app
from monailabel.config import RBAC_USER, settings
from monailabel.endpoints import infer as stock_infer
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.utils.app import app_instance

__all__ = ["app"]

logger = logging.getLogger(__name__)

_INFER_PATH = "/infer/{model}"


def infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[stock_infer.ResultType] = None,  # noqa: UP045 (FastAPI reads the annotation)
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    """Run inference: the stock handler, in a worker thread, with 4xx answers for bad requests."""
    _check_request(model, image, session_id, params, file)
    try:
        return stock_infer.run_inference(background_tasks, model, image, session_id, params, file, label, output)
    except MONAILabelException as error:
        _run_cleanups(background_tasks)  # the uploaded file would otherwise stay in the temp folder
        status_code = getattr(error, "status_code", None)
        if status_code is None:
            raise
        logger.info(f"Refused an infer request ({status_code}): {error.msg}")
        raise HTTPException(status_code=status_code, detail=error.msg) from error


def _check_request(model: str, image: str, session_id: str, params: str, file: UploadFile | None) -> None:
    """Answer requests that cannot run with 4xx before they wait for the model."""
    instance = app_instance()
    models = instance.info().get("models", {})
    if model not in models:
        raise HTTPException(status_code=404, detail=f"Unknown model {model!r}: this server has {sorted(models)}.")
    try:
        parsed = json.loads(params) if params else {}
    except json.JSONDecodeError as error:
        raise HTTPException(status_code=400, detail=f"params is not valid JSON ({error}): send a JSON object such "
                                                    "as {\"question\": \"Where is the liver tumor?\"}.") from error
    if not isinstance(parsed, dict):
        raise HTTPException(status_code=400, detail=f"params must be a JSON object, got {type(parsed).__name__}.")
    if not file and not image and not session_id:
        raise HTTPException(status_code=422, detail="No image: give 'image' (a datastore id), upload 'file' or "
                                                    "give a 'session_id'.")
    if session_id and not instance.sessions().get_session(session_id):
        raise HTTPException(status_code=404, detail=f"Unknown or expired session {session_id!r}: create one with "
                                                    "PUT /session/.")
    # like stock MONAI Label, `image` may also be a path on the server
    if image and not file and not session_id and not (instance.datastore().get_image_uri(image) or os.path.exists(image)):
        raise HTTPException(status_code=404, detail=f"Unknown image {image!r}: it is not in the datastore "
                                                    "(GET /datastore/?output=all lists the image ids).")


def _run_cleanups(background_tasks: BackgroundTasks) -> None:
    for task in background_tasks.tasks:
        try:
            task.func(*task.args, **task.kwargs)
        except Exception:  # cleanup must not hide the request's own error
            logger.exception("Cleanup after a refused request failed")
    background_tasks.tasks.clear()


def _route_infer_first() -> None:
    """Add the route and move it before the stock routers: Starlette serves a request with the first match."""
    app.add_api_route(_INFER_PATH, infer, methods=["POST"], tags=["Infer"],
                      summary=f"{RBAC_USER}Run Inference for supported model (in a worker thread)")
    route = app.router.routes.pop()
    if not (isinstance(route, APIRoute) and route.endpoint is infer):
        raise RuntimeError("monailabel's FastAPI app did not take the CORE-Seg infer route as expected.")
    app.router.routes.insert(0, route)


_route_infer_first()
