# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A cached client of an OpenAI-compatible chat endpoint (the generator and the scorer of the builder).

* Transport: the official ``openai`` client (any OpenAI-compatible server: OpenAI, vLLM, SGLang, Ollama,
  DashScope...). It retries timeouts, connection errors, 408/409/429 and 5xx replies with exponential back-off
  and jitter, honouring ``Retry-After`` (``max_retries``, ``timeout``).
* Replies are read from the raw HTTP body, so a malformed one (not JSON, no choices, no text) raises
  :class:`MalformedReplyError` instead of surfacing as an odd object; callers count it and re-ask.
* Every well-formed reply is cached on disk under a hash of the request (model, messages, sampling settings,
  seed): an interrupted build resumes without repeating any answered call.

Settings come from the config or, when absent there, from the environment: ``CORESEG_<ROLE>_BASE_URL``,
``CORESEG_<ROLE>_MODEL``, ``CORESEG_<ROLE>_API_KEY`` (role ``GENERATOR`` or ``SCORER``), then the openai client's
own ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .files import reject_unknown_keys, write_json

__all__ = [
    "EndpointSettings",
    "EndpointError",
    "MalformedReplyError",
    "ResponseCache",
    "ChatEndpoint",
    "extract_json_object",
    "png_data_url",
    "user_content",
]


T = TypeVar("T")


class EndpointError(RuntimeError):
    """The endpoint could not be reached or kept failing after the client's retries."""


class MalformedReplyError(ValueError):
    """The endpoint answered, but not with what was asked for (not JSON, no text, wrong fields...)."""


@dataclass
class EndpointSettings:
    """How to reach one OpenAI-compatible chat endpoint.

    Attributes:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        model: model name as the server knows it (``gpt-4o``, ``qwen-vl-max``...).
        api_key: the key (prefer the environment variable to a config file).
        timeout: seconds per HTTP request.
        max_retries: retries of timeouts, connection errors, 429 and 5xx replies (exponential back-off).
        temperature: sampling temperature.
        max_tokens: cap on the reply's tokens.
        send_image: attach the image (a PNG data URL) to the prompt; needs a vision model.
        malformed_retries: re-asks (with a new seed) after a malformed reply before the sample fails.
    """

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    timeout: float = 120.0
    max_retries: int = 5
    temperature: float = 0.7
    max_tokens: int = 1024
    send_image: bool = True
    malformed_retries: int = 2

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None, role: str) -> EndpointSettings:
        """Settings from a config mapping, filling ``base_url``/``model``/``api_key`` from the environment.

        Args:
            values: the config section (may be ``None`` or empty).
            role: ``"generator"`` or ``"scorer"`` (the environment variables' infix).
        """
        values = dict(values or {})
        reject_unknown_keys(values, cls, f"{role} endpoint settings")
        prefix = f"CORESEG_{role.upper()}_"
        fallbacks = {"base_url": ("OPENAI_BASE_URL",), "api_key": ("OPENAI_API_KEY",), "model": ()}
        for key, others in fallbacks.items():
            if values.get(key) is None:
                for name in (prefix + key.upper(), *others):
                    if os.environ.get(name):
                        values[key] = os.environ[name]
                        break
        return cls(**values)

    @property
    def enabled(self) -> bool:
        """True when a base URL and a model are set (else the builder works offline)."""
        return bool(self.base_url and self.model)

    def describe(self) -> str:
        """``model @ base_url`` (never the key)."""
        return f"{self.model} @ {self.base_url}" if self.enabled else "offline"


class ResponseCache:
    """Replies on disk, one JSON file per request hash; writes are atomic, so a killed run leaves no half file."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(request: Mapping[str, Any]) -> str:
        """SHA-256 of the request's canonical JSON."""
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached reply text of ``key``, or ``None``."""
        path = self._path(key)
        if not path.is_file():
            return None
        return json.loads(path.read_text())["content"]

    def put(self, key: str, content: str, model: str) -> None:
        """Store a reply."""
        write_json(self._path(key), {"model": model, "content": content}, indent=None)


def png_data_url(image: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URL of an ``(H, W)`` or ``(H, W, 3)`` ``uint8`` picture."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def user_content(text: str, picture: np.ndarray | None) -> str | list[dict[str, Any]]:
    """A user message's content: the text alone, or the picture (PNG data URL) followed by the text."""
    if picture is None:
        return text
    return [{"type": "image_url", "image_url": {"url": png_data_url(picture)}}, {"type": "text", "text": text}]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a reply: the whole text, a fenced block, or the outermost ``{...}``.

    Raises:
        MalformedReplyError: no JSON object can be read.
    """
    candidates = [text.strip()]
    candidates += [block.strip() for block in _FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise MalformedReplyError(f"expected a JSON object, got {text[:120]!r}")


class ChatEndpoint:
    """One OpenAI-compatible chat endpoint with a reply cache and call statistics.

    Thread-safe: the builder sends the samples of a run from several threads.

    Args:
        settings: where and how to call (must be :attr:`EndpointSettings.enabled`).
        cache: reply cache shared by runs.
        client: an ``openai.OpenAI`` client to use instead of building one (tests, custom HTTP settings).
    """

    def __init__(self, settings: EndpointSettings, cache: ResponseCache, client: Any | None = None) -> None:
        if not settings.enabled:
            raise ValueError("An endpoint needs base_url and model (config keys or CORESEG_<ROLE>_BASE_URL / "
                             "CORESEG_<ROLE>_MODEL in the environment).")
        if client is None:
            from openai import OpenAI

            # A local server needs no key, but the client insists on one.
            client = OpenAI(base_url=settings.base_url, api_key=settings.api_key or "not-needed",
                            timeout=settings.timeout, max_retries=settings.max_retries)
        self.settings, self.cache, self.client = settings, cache, client
        self.stats: Counter = Counter()
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def request(self, messages: Sequence[Mapping[str, Any]], seed: int) -> dict[str, Any]:
        """The request body sent for ``messages`` (its hash is the cache key)."""
        return {"model": self.settings.model, "messages": list(messages), "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens, "seed": int(seed)}

    def complete(self, messages: Sequence[Mapping[str, Any]], seed: int = 0) -> str:
        """The reply text to ``messages``: from the cache, or from the endpoint (then cached).

        Args:
            messages: chat messages in OpenAI's format.
            seed: sampling seed; a different seed is a different request (used to re-ask and regenerate).

        Raises:
            EndpointError: the call failed after the client's retries.
            MalformedReplyError: the endpoint answered without a usable text (nothing is cached).
        """
        import openai

        body = self.request(messages, seed)
        key = ResponseCache.key(body)
        cached = self.cache.get(key)
        if cached is not None:
            self._count("cached")
            return cached
        self._count("calls")
        try:
            raw = self.client.chat.completions.with_raw_response.create(**body)
        except openai.APIStatusError as error:
            self._count("errors")
            raise EndpointError(f"{self.settings.describe()}: HTTP {error.status_code} after "
                                f"{self.settings.max_retries} retries: {str(error)[:200]}") from error
        except openai.APIError as error:  # timeouts and connection errors, after the retries
            self._count("errors")
            raise EndpointError(f"{self.settings.describe()}: {type(error).__name__} after "
                                f"{self.settings.max_retries} retries: {error}") from error
        content = self._content(raw.http_response.text)
        self.cache.put(key, content, str(self.settings.model))
        return content

    def ask(self, build_messages: Callable[[], list[dict]], parse: Callable[[str], T], attempt: int = 0,
            stats: dict[str, int] | None = None) -> T:
        """Ask until a reply parses: up to ``1 + malformed_retries`` seeds per attempt, each a distinct (cached)
        request, so a resumed run replays the same sequence from the cache.

        Args:
            build_messages: makes the messages (called once per try).
            parse: turns the reply text into the result; raises :class:`MalformedReplyError` when it cannot.
            attempt: regeneration round; rounds use disjoint seeds.
            stats: counters updated in place (``malformed``).

        Raises:
            MalformedReplyError: every try was malformed.
            EndpointError: the endpoint failed after the client's retries.
        """
        stats = {} if stats is None else stats
        tries = self.settings.malformed_retries + 1
        error: MalformedReplyError | None = None
        for retry in range(tries):
            try:
                return parse(self.complete(build_messages(), seed=attempt * 100 + retry))
            except MalformedReplyError as caught:
                stats["malformed"] = stats.get("malformed", 0) + 1
                error = caught
        raise MalformedReplyError(f"{tries} malformed replies in a row from {self.settings.describe()}; last: {error}")

    def _content(self, body: str) -> str:
        try:
            reply = json.loads(body)
            content = reply["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as error:
            self._count("malformed")
            raise MalformedReplyError(f"{self.settings.describe()}: the reply is not a chat completion with a "
                                      f"message ({type(error).__name__}); body starts {body[:120]!r}") from error
        if not isinstance(content, str) or not content.strip():
            self._count("malformed")
            raise MalformedReplyError(f"{self.settings.describe()}: the reply's message has no text "
                                      f"(content {content!r:.60}).")
        return content
