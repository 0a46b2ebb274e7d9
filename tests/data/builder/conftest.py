# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Fixtures of the dataset-builder tests: a fake OpenAI-compatible server on 127.0.0.1 (real HTTP) and small
collections on disk."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


@dataclass
class Reply:
    """What the fake server sends back: status, body (a dict is sent as JSON), headers, delay before answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def chat_completion(content: str | None) -> dict[str, Any]:
    """An OpenAI chat-completion body with one choice."""
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def prompt_text(request: dict[str, Any]) -> str:
    """The text parts of a request's user message."""
    content = request["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


def has_image(request: dict[str, Any]) -> bool:
    content = request["messages"][-1]["content"]
    return isinstance(content, list) and any(part.get("type") == "image_url" for part in content)


def good_reply(request: dict[str, Any], low_first_round: bool = False) -> Reply:
    """A well-behaved generator/scorer: step 1 JSON, step 2 paragraph (with a coordinate to strip), scores.

    With ``low_first_round`` the scorer gives 0.5 to first-round samples (seeds < 100) and 0.9 later.
    """
    text = prompt_text(request)
    if "Step 1, visual perception" in text:
        content = json.dumps({"normal_anatomy": "The surrounding tissue looks homogeneous and normal.",
                              "lesion": "A well-defined bright lesion with an irregular margin stands out."})
    elif "Step 2, visual reasoning" in text:
        content = ("I first look for a focus brighter than the surrounding tissue. The lesion at [12, 34, 56, 78] "
                   "has an irregular margin, which sets it apart from the smooth background, so I mark it.")
    elif "Score the reasoning" in text:
        score = 0.5 if low_first_round and request.get("seed", 0) < 100 else 0.9
        content = "```json\n" + json.dumps({"S_normal": score, "S_lesion": score, "S_reason": score,
                                            "comment": "ok"}) + "\n```"
    else:
        return Reply(400, {"error": {"message": "unexpected prompt"}})
    return Reply(body=chat_completion(content))


class FakeOpenAIServer:
    """A threaded HTTP server answering ``POST /v1/chat/completions`` with ``responder(request, n)``.

    Every request is logged with its attempt header (``x-stainless-retry-count``) and body hash.
    """

    def __init__(self, responder: Callable[[dict[str, Any], int], Reply]) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = json.loads(raw)
                with server.lock:
                    number = len(server.requests)
                    server.requests.append({"body": request, "hash": hashlib.sha256(raw).hexdigest(),
                                            "retry": int(self.headers.get("x-stainless-retry-count", 0)),
                                            "path": self.path, "auth": self.headers.get("Authorization")})
                reply = server.responder(request, number)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body if isinstance(reply.body, (bytes, str)) else json.dumps(reply.body)
                body = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
                    for key, value in reply.headers.items():
                        if key != "Content-Type":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_openai():
    """Factory of fake servers, closed at the end of the test."""
    servers: list[FakeOpenAIServer] = []

    def start(responder: Callable[[dict[str, Any], int], Reply] | None = None) -> FakeOpenAIServer:
        server = FakeOpenAIServer(responder or (lambda request, n: good_reply(request)))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def write_planted_collection(root: Path, easy: int = 42, hard: int = 6, size: int = 64, seed: int = 0
                             ) -> tuple[Path, Path, list[str]]:
    """Images with one disk lesion each: easy ones bright on a dark noisy background; planted hard ones with
    the lesion at the background's intensity (no contrast: no model can see it). Returns the images folder,
    the masks folder and the names of the hard images."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    hard_names = []
    kinds = ["easy"] * easy + ["hard"] * hard
    rng.shuffle(kinds)
    for index, kind in enumerate(kinds):
        radius = rng.uniform(size * 0.1, size * 0.2)
        cy, cx = rng.uniform(radius + 2, size - radius - 2, size=2)
        lesion = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        picture = rng.normal(60, 12, (size, size))
        if kind == "easy":
            picture[lesion] += 140
        else:
            hard_names.append(f"case{index:03d}.png")
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(images / f"case{index:03d}.png")
        Image.fromarray(lesion.astype(np.uint8) * 255).save(masks / f"case{index:03d}.png")
    return images, masks, hard_names
