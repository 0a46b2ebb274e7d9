# Copyright 2026 CORE-Seg bundle contributors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The cached OpenAI-compatible endpoint against a fake server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import json

import pytest

from scripts.data.builder.llm import (
    ChatEndpoint,
    EndpointError,
    EndpointSettings,
    MalformedReplyError,
    ResponseCache,
    extract_json_object,
)

from .conftest import Reply, chat_completion

MESSAGES = [{"role": "user", "content": "Describe the lesion."}]


def endpoint(server, tmp_path, **settings) -> ChatEndpoint:
    values = dict(base_url=server.base_url, model="fake-model", api_key="secret", timeout=5.0, max_retries=3)
    return ChatEndpoint(EndpointSettings(**{**values, **settings}), ResponseCache(tmp_path / "cache"))


def test_replies_are_cached_and_not_asked_again(fake_openai, tmp_path):
    server = fake_openai(lambda request, n: Reply(body=chat_completion(f"reply {request['seed']}")))
    first = endpoint(server, tmp_path)
    assert first.complete(MESSAGES, seed=1) == "reply 1"
    assert first.complete(MESSAGES, seed=2) == "reply 2"  # another seed is another request
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    assert request["body"]["model"] == "fake-model" and request["body"]["messages"] == MESSAGES
    # a new run (new client, same cache folder) asks nothing
    second = endpoint(server, tmp_path)
    assert second.complete(MESSAGES, seed=1) == "reply 1"
    assert len(server.requests) == 2 and second.stats["cached"] == 1 and second.stats["calls"] == 0


def test_rate_limits_are_retried_with_back_off(fake_openai, tmp_path):
    def responder(request, n):
        if n < 2:
            return Reply(429, {"error": {"message": "rate limited"}}, {"retry-after-ms": "20"})
        return Reply(body=chat_completion("finally"))

    server = fake_openai(responder)
    assert endpoint(server, tmp_path).complete(MESSAGES) == "finally"
    assert [r["retry"] for r in server.requests] == [0, 1, 2]  # the client's own retries, one request body
    assert len({r["hash"] for r in server.requests}) == 1


def test_timeouts_are_retried(fake_openai, tmp_path):
    server = fake_openai(lambda request, n: Reply(body=chat_completion("slow then fast"), delay=2.0 if n == 0 else 0))
    assert endpoint(server, tmp_path, timeout=0.5).complete(MESSAGES) == "slow then fast"
    assert len(server.requests) == 2


def test_persistent_errors_raise_a_clear_error_and_cache_nothing(fake_openai, tmp_path):
    server = fake_openai(lambda request, n: Reply(503, {"error": {"message": "overloaded"}}, {"retry-after-ms": "5"}))
    client = endpoint(server, tmp_path, max_retries=2)
    with pytest.raises(EndpointError, match=r"HTTP 503 after 2 retries"):
        client.complete(MESSAGES)
    assert len(server.requests) == 3 and client.stats["errors"] == 1
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_a_server_that_never_answers_in_time_fails_after_the_retries(fake_openai, tmp_path):
    server = fake_openai(lambda request, n: Reply(body=chat_completion("too late"), delay=1.5))
    with pytest.raises(EndpointError, match="APITimeoutError after 1 retries"):
        endpoint(server, tmp_path, timeout=0.3, max_retries=1).complete(MESSAGES)
    assert len(server.requests) == 2


@pytest.mark.parametrize("body", [
    "<html>Bad gateway</html>",                                   # not JSON
    json.dumps({"id": "x", "object": "chat.completion"}),        # no choices
    json.dumps({"choices": []}),                                  # empty choices
    json.dumps(chat_completion(None)),                            # no text
    json.dumps(chat_completion("   ")),                           # blank text
])
def test_malformed_replies_raise_and_are_not_cached(fake_openai, tmp_path, body):
    server = fake_openai(lambda request, n: Reply(body=body))
    client = endpoint(server, tmp_path)
    with pytest.raises(MalformedReplyError, match="fake-model"):
        client.complete(MESSAGES)
    assert client.stats["malformed"] == 1 and not list((tmp_path / "cache").rglob("*.json"))


def test_ask_re_asks_with_new_seeds_until_the_reply_parses(fake_openai, tmp_path):
    replies = ["not json at all", json.dumps({"other": 1}), json.dumps({"value": 7})]
    server = fake_openai(lambda request, n: Reply(body=chat_completion(replies[min(n, 2)])))
    client = endpoint(server, tmp_path, malformed_retries=2)

    def parse(text):
        value = extract_json_object(text).get("value")
        if value is None:
            raise MalformedReplyError("no value")
        return value

    stats = {}
    assert client.ask(lambda: MESSAGES, parse, attempt=1, stats=stats) == 7
    assert [r["body"]["seed"] for r in server.requests] == [100, 101, 102] and stats["malformed"] == 2
    # the same sequence replays from the cache on a rerun
    again = endpoint(server, tmp_path, malformed_retries=2)
    assert again.ask(lambda: MESSAGES, parse, attempt=1) == 7 and len(server.requests) == 3
    # bounded: with no retries left, the malformed reply is an error
    chatty = fake_openai(lambda request, n: Reply(body=chat_completion("Sure! Here is my answer.")))
    with pytest.raises(MalformedReplyError, match="2 malformed replies in a row"):
        endpoint(chatty, tmp_path / "other", malformed_retries=1).ask(lambda: MESSAGES, parse, attempt=0)
    assert len(chatty.requests) == 2


def test_settings_come_from_config_then_environment(monkeypatch):
    monkeypatch.setenv("CORESEG_SCORER_BASE_URL", "http://scorer/v1")
    monkeypatch.setenv("CORESEG_SCORER_MODEL", "qwen-vl-max")
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai-env")
    settings = EndpointSettings.from_config({"timeout": 10}, "scorer")
    assert (settings.base_url, settings.model, settings.api_key, settings.timeout) == (
        "http://scorer/v1", "qwen-vl-max", "from-openai-env", 10)
    assert EndpointSettings.from_config({"model": "gpt-4o"}, "scorer").model == "gpt-4o"  # config wins
    assert "from-openai-env" not in settings.describe()
    monkeypatch.delenv("CORESEG_SCORER_BASE_URL")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert not EndpointSettings.from_config(None, "scorer").enabled
    with pytest.raises(ValueError, match="Unknown generator endpoint settings"):
        EndpointSettings.from_config({"url": "x"}, "generator")
    with pytest.raises(ValueError, match="needs base_url and model"):
        ChatEndpoint(EndpointSettings(), ResponseCache("/tmp/unused-cache"))


@pytest.mark.parametrize("text", [
    '{"a": 1}', 'Here you go:\n```json\n{"a": 1}\n```', 'Scores: {"a": 1} -- done', "```\n{\"a\": 1}\n```",
])
def test_json_objects_are_found_in_common_reply_shapes(text):
    assert extract_json_object(text) == {"a": 1}


@pytest.mark.parametrize("text", ["no json", "[1, 2]", "{broken: json}"])
def test_replies_without_a_json_object_are_malformed(text):
    with pytest.raises(MalformedReplyError, match="expected a JSON object"):
        extract_json_object(text)
