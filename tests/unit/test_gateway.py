"""The gateway's pure parts: job events → OpenAI bytes, error mapping, token file, names."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexctl.protocol import ErrorKind, RpcError
from codexd.gateway.server import client_name, parse_tcp_address
from codexd.gateway.translate import (
    ChatJSON,
    ChatSSE,
    ResponsesJSON,
    ResponsesSSE,
    Translator,
    error_reply,
)
from codexd.jobs import job_event
from codexd.service.token import TokenFile


def run(tr: Translator, events: list[dict[str, Any]]) -> bytes:
    out = b""
    for event in events:
        out += tr.feed(job_event(event))
        if tr.done:
            break
    return out


def delta(text: str, seq: int = 0) -> dict[str, Any]:
    return {"type": "response.output_text.delta", "delta": text, "sequence_number": seq}


PREAMBLE = [
    {
        "type": "response.created",
        "sequence_number": 0,
        "response": {"id": "resp_1", "status": "in_progress"},
    },
    {
        "type": "response.in_progress",
        "sequence_number": 1,
        "response": {"id": "resp_1", "status": "in_progress"},
    },
]
COMPLETED = {
    "type": "job.completed",
    "output_text": "ab",
    "usage": {
        "input_tokens": 3,
        "cached_input_tokens": 1,
        "output_tokens": 2,
        "reasoning_tokens": 0,
        "total_tokens": 5,
    },
    "cost_usd": 0.0,
    "response_id": "chatcmpl-up",
}
RETRY = {
    "type": "job.retrying",
    "attempt": 2,
    "delay_s": 0.1,
    "reason": "x",
    "error_kind": "stream_error",
    "reset_output": True,
}


def sse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        lines = dict(part.split(b": ", 1) for part in frame.split(b"\n"))
        out.append((lines[b"event"].decode(), msgspec.json.decode(lines[b"data"])))
    return out


def chat_data(data: bytes) -> list[Any]:
    return [
        "[DONE]" if frame == b"data: [DONE]" else msgspec.json.decode(frame[len(b"data: ") :])
        for frame in data.split(b"\n\n")
        if frame
    ]


# --------------------------------------------------------------------------- Responses


def test_responses_passes_upstream_events_and_drops_job_events() -> None:
    tr = ResponsesSSE()
    events = [
        {"type": "job.queued", "position": 0},
        {"type": "job.started", "attempt": 1},
        *PREAMBLE,
        delta("a", 2),
    ]
    out = sse_events(run(tr, events))
    assert [t for t, _ in out] == [
        "response.created",
        "response.in_progress",
        "response.output_text.delta",
    ]
    assert out[2][1] == delta("a", 2)


def test_responses_preamble_is_held_until_output() -> None:
    tr = ResponsesSSE()
    assert run(tr, [*PREAMBLE]) == b""
    assert not tr.sent


def test_responses_retry_before_output_is_invisible() -> None:
    tr = ResponsesSSE()
    out = run(tr, [*PREAMBLE, {**RETRY, "reset_output": False}, *PREAMBLE, delta("a", 2)])
    assert [t for t, _ in sse_events(out)].count("response.created") == 1
    assert not tr.done and tr.error is None


def test_responses_retry_after_output_fails_in_stream() -> None:
    tr = ResponsesSSE()
    out = sse_events(run(tr, [*PREAMBLE, delta("a", 2), RETRY, *PREAMBLE, delta("a", 2)]))
    assert [t for t, _ in out] == [
        "response.created",
        "response.in_progress",
        "response.output_text.delta",
        "response.failed",
    ]
    failed = out[-1][1]
    assert failed["sequence_number"] == 3
    assert failed["response"]["id"] == "resp_1" and failed["response"]["status"] == "failed"
    assert tr.done


def test_failure_before_output_is_an_http_error() -> None:
    error = RpcError(ErrorKind.RATE_LIMITED, "slow down", retry_after_s=2.5, http_status=429)
    tr = ResponsesSSE()
    assert (
        run(
            tr, [*PREAMBLE, {"type": "job.failed", "error": msgspec.to_builtins(error.to_object())}]
        )
        == b""
    )
    assert tr.error is not None and tr.error.status == 429
    assert ("retry-after", "3") in tr.error.headers


def test_responses_json_is_the_final_response_object() -> None:
    tr = ResponsesJSON()
    final = {"id": "resp_1", "object": "response", "status": "completed", "output": []}
    run(
        tr,
        [
            *PREAMBLE,
            {"type": "response.completed", "sequence_number": 2, "response": final},
            COMPLETED,
        ],
    )
    assert tr.done and msgspec.json.decode(tr.body()) == final


# --------------------------------------------------------------------------- Chat


def chat_sse(include_usage: bool = True) -> ChatSSE:
    return ChatSSE(
        completion_id="chatcmpl-1", model="gpt-5", created=7, include_usage=include_usage
    )


def test_chat_chunks_then_usage_then_done() -> None:
    out = chat_data(
        run(chat_sse(), [{"type": "job.started", "attempt": 1}, delta("a"), delta("b"), COMPLETED])
    )
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "ab"
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 3
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 1


def test_chat_without_include_usage_sends_no_usage() -> None:
    chunks = chat_data(run(chat_sse(False), [delta("a"), COMPLETED]))[:-1]
    assert all("usage" not in c for c in chunks)


def test_chat_function_call_becomes_tool_calls() -> None:
    item = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    tr = ChatJSON(completion_id="chatcmpl-1", model="gpt-5", created=7)
    run(tr, [{"type": "response.output_item.done", "item": item}, {**COMPLETED, "output_text": ""}])
    body = msgspec.json.decode(tr.body())
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert body["id"] == "chatcmpl-up"


@given(
    first=st.lists(st.text(min_size=1, max_size=5), max_size=6),
    second=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=6),
)
def test_chat_never_sends_text_twice(first: list[str], second: list[str]) -> None:
    """Whatever a retry interrupts, the text a client sees is one attempt's, never a replay."""
    events = [delta(t) for t in first] + [{**RETRY, "reset_output": bool(first)}]
    events += [delta(t) for t in second] + [{**COMPLETED, "output_text": "".join(second)}]
    out = chat_data(run(chat_sse(), events))
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in out
        if isinstance(c, dict) and c.get("choices")
    )
    if first:
        assert text == "".join(first)
        assert "error" in out[-1] and "[DONE]" not in out
    else:
        assert text == "".join(second) and out[-1] == "[DONE]"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kind", "data", "status", "code"),
    [
        (ErrorKind.RATE_LIMITED, {"retry_after_s": 1.2}, 429, "rate_limit_exceeded"),
        (
            ErrorKind.QUOTA_EXCEEDED,
            {"upstream_code": "insufficient_quota"},
            429,
            "insufficient_quota",
        ),
        (ErrorKind.AUTH_EXPIRED, {}, 401, "token_expired"),
        (ErrorKind.UNAUTHENTICATED, {}, 401, "unauthenticated"),
        (
            ErrorKind.BAD_REQUEST,
            {"http_status": 404, "upstream_code": "model_not_found"},
            404,
            "model_not_found",
        ),
        (ErrorKind.BAD_REQUEST, {}, 400, None),
        (ErrorKind.CONTEXT_LENGTH_EXCEEDED, {}, 400, "context_length_exceeded"),
        (ErrorKind.UPSTREAM_ERROR, {}, 502, None),
        (ErrorKind.UPSTREAM_ERROR, {"http_status": 503}, 503, None),
        (ErrorKind.OVERLOADED, {}, 503, "overloaded"),
        (ErrorKind.INTERNAL_ERROR, {}, 500, None),
    ],
)
def test_error_reply(kind: ErrorKind, data: dict[str, Any], status: int, code: str | None) -> None:
    reply = error_reply(RpcError(kind, "what happened: what to do", **data).to_object())
    assert reply.status == status
    body = msgspec.json.decode(reply.body)
    assert body == {
        "error": {
            "message": "what happened: what to do",
            "type": body["error"]["type"],
            "param": None,
            "code": code,
        }
    }
    headers = dict(reply.headers)
    if kind == ErrorKind.RATE_LIMITED:
        assert headers["retry-after"] == "2" and "x-should-retry" not in headers
    elif kind != ErrorKind.OVERLOADED:
        assert headers["x-should-retry"] == "false"


def test_invalid_params_names_the_param() -> None:
    err = RpcError(
        ErrorKind.INVALID_PARAMS, "invalid params for job/submit: bad - at `$.body.input`"
    )
    assert msgspec.json.decode(error_reply(err.to_object()).body)["error"]["param"] == "input"


# --------------------------------------------------------------------------- token, names


def test_token_file_is_created_private_and_rotates(tmp_path: Path) -> None:
    tokens = TokenFile(str(tmp_path))
    first = tokens.current()
    assert stat.S_IMODE(os.stat(tokens.path).st_mode) == 0o600
    assert TokenFile(str(tmp_path)).current() == first
    assert tokens.matches(f"Bearer {first}") and tokens.matches(f"bearer  {first} ")
    assert not tokens.matches(None) and not tokens.matches(first) and not tokens.matches("Bearer x")
    second = TokenFile(str(tmp_path)).rotate()
    assert second != first
    assert tokens.current() == second and not tokens.matches(f"Bearer {first}")


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ({"x-codexd-client": "my-tool", "user-agent": "OpenAI/Python 3.57.0"}, "my-tool"),
        ({"user-agent": "OpenAI/Python 3.57.0"}, "OpenAI"),
        ({"user-agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm"}, "codex_exec"),
        ({"user-agent": "curl/8.5.0"}, "curl"),
        ({}, "gateway"),
        ({"x-codexd-client": "a\nb c"}, "abc"),
    ],
)
def test_client_name(headers: dict[str, str], name: str) -> None:
    assert client_name(headers) == name


def test_parse_tcp_address() -> None:
    assert parse_tcp_address("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_tcp_address("[::1]:8765") == ("::1", 8765)
    with pytest.raises(ValueError):
        parse_tcp_address("localhost")
