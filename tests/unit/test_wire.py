"""Request bodies from body + config defaults, and both wire APIs normalised to job events."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codexctl.protocol import ErrorKind, Usage
from codexd.jobs import UpstreamEvent
from codexd.upstream.chat import ChatStream
from codexd.upstream.errors import UpstreamError
from codexd.upstream.responses import ResponsesStream
from codexd.upstream.sse import SSEDecoder, SSEEvent
from codexd.upstream.wire import (
    RequestDefaults,
    StreamNormalizer,
    StreamResult,
    build_body,
    build_chat_body,
    build_responses_body,
    endpoint_url,
    usage_from_chat,
    usage_from_responses,
)

DEFAULTS = RequestDefaults(
    model="gpt-5.1-codex-max",
    reasoning_effort="high",
    reasoning_summary="auto",
    verbosity="low",
    model_params={
        "temperature": 0.2,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "max_tokens": 512,
    },
)
JOB_EVENT_TYPES = {
    "response.output_text.delta",
    "response.reasoning_summary_text.delta",
    "response.output_item.done",
}

# --------------------------------------------------------------------------- request bodies


def test_responses_body_is_filled_from_defaults() -> None:
    body = {"input": "hi", "store": False, "metadata": {"k": "v"}}
    assert build_responses_body(body, DEFAULTS) == {
        "input": "hi",
        "store": False,
        "metadata": {"k": "v"},
        "model": "gpt-5.1-codex-max",
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"verbosity": "low"},
        "temperature": 0.2,
        "top_p": 0.9,
        "max_output_tokens": 512,
        "stream": True,
    }


def test_responses_body_members_win_and_nested_members_merge() -> None:
    body = {
        "model": "gpt-4.1",
        "input": [],
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_object"}},
        "temperature": 1.0,
        "max_output_tokens": 10,
        "stream": False,
    }
    before = copy.deepcopy(body)
    out = build_responses_body(body, DEFAULTS)
    assert body == before, "the caller's body is not modified"
    assert out["model"] == "gpt-4.1"
    assert out["reasoning"] == {"effort": "low", "summary": "auto"}
    assert out["text"] == {"format": {"type": "json_object"}, "verbosity": "low"}
    assert (out["temperature"], out["max_output_tokens"], out["stream"]) == (1.0, 10, True)


def test_responses_body_respects_explicit_null_and_summary_none() -> None:
    out = build_responses_body({"input": "x", "reasoning": None}, DEFAULTS)
    assert out["reasoning"] is None
    d = RequestDefaults(model="m", reasoning_effort="medium", reasoning_summary="none")
    assert build_responses_body({}, d)["reasoning"] == {"effort": "medium"}
    assert "reasoning" not in build_responses_body({}, RequestDefaults(model="m"))
    assert "text" not in build_responses_body({}, RequestDefaults(model="m"))


def test_responses_body_has_no_penalties() -> None:
    out = build_responses_body({}, DEFAULTS)
    assert "frequency_penalty" not in out
    assert "presence_penalty" not in out
    assert "max_tokens" not in out


def test_chat_body_is_filled_from_defaults() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "seed": 7}
    assert build_chat_body(body, DEFAULTS) == {
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 7,
        "model": "gpt-5.1-codex-max",
        "reasoning_effort": "high",
        "verbosity": "low",
        "temperature": 0.2,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "max_completion_tokens": 512,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_chat_body_keeps_callers_caps_and_forces_usage() -> None:
    out = build_chat_body(
        {
            "messages": [],
            "max_tokens": 5,
            "stream": False,
            "stream_options": {"include_usage": False, "x": 1},
        },
        DEFAULTS,
    )
    assert out["max_tokens"] == 5
    assert "max_completion_tokens" not in out
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True, "x": 1}
    assert build_chat_body({"max_completion_tokens": 9}, DEFAULTS)["max_completion_tokens"] == 9


def test_build_body_dispatches_on_api() -> None:
    assert "max_output_tokens" in build_body("responses", {}, DEFAULTS)
    assert "max_completion_tokens" in build_body("chat", {}, DEFAULTS)


def test_endpoint_url() -> None:
    assert (
        endpoint_url("https://api.openai.com/v1/", "responses")
        == "https://api.openai.com/v1/responses"
    )
    assert endpoint_url("http://127.0.0.1:9/v1", "chat") == "http://127.0.0.1:9/v1/chat/completions"
    assert (
        endpoint_url(
            "https://x.openai.azure.com/openai", "responses", {"api-version": "2025-04-01-preview"}
        )
        == "https://x.openai.azure.com/openai/responses?api-version=2025-04-01-preview"
    )


# --------------------------------------------------------------------------- helpers


def feed(norm: StreamNormalizer, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The events `obj` becomes, as their JSON objects."""
    return [plain(e) for e in norm.feed(obj)]


def feed_sse(norm: StreamNormalizer, sse: SSEEvent) -> list[dict[str, Any]]:
    return [plain(e) for e in norm.feed_sse(sse)]


def plain(event: UpstreamEvent) -> dict[str, Any]:
    assert msgspec.json.decode(event.raw) == event.data  # what a socket subscriber reads
    assert event.type == event.data["type"]
    return event.data


def sse_bytes(objs: list[Any], *, named: bool = True) -> bytes:
    out = []
    for obj in objs:
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        head = (
            f"event: {obj['type']}\n" if named and isinstance(obj, dict) and "type" in obj else ""
        )
        out.append(f"{head}data: {data}\n\n")
    return "".join(out).encode()


def drive(
    norm: StreamNormalizer, raw: bytes, *, bytewise: bool = False
) -> tuple[list[dict[str, Any]], Any]:
    """What the shell does: decode, normalise, stop at an outcome, finish at EOF."""
    dec = SSEDecoder(1 << 20)
    chunks = [raw[i : i + 1] for i in range(len(raw))] if bytewise else [raw]
    events: list[dict[str, Any]] = []
    for chunk in chunks:
        for sse in dec.feed(chunk):
            events += feed_sse(norm, sse)
        if norm.outcome is not None:
            return events, norm.outcome
    for sse in dec.close():
        events += feed_sse(norm, sse)
    return events, norm.finish()


def responses_stream(deltas: list[str], *, usage: bool = True, completed: bool = True) -> list[Any]:
    text = "".join(deltas)
    item = {
        "id": "msg_1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
    }
    seq = iter(range(1000))
    evs: list[Any] = [
        {
            "type": "response.created",
            "sequence_number": next(seq),
            "response": {"id": "resp_1", "status": "in_progress"},
        },
        {
            "type": "response.in_progress",
            "sequence_number": next(seq),
            "response": {"id": "resp_1"},
        },
        {
            "type": "response.output_item.added",
            "sequence_number": next(seq),
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "sequence_number": next(seq),
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": ""},
        },
    ]
    evs += [
        {
            "type": "response.output_text.delta",
            "sequence_number": next(seq),
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": d,
            "logprobs": [],
        }
        for d in deltas
    ]
    evs += [
        {
            "type": "response.output_text.done",
            "sequence_number": next(seq),
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "text": text,
        },
        {
            "type": "response.output_item.done",
            "sequence_number": next(seq),
            "output_index": 0,
            "item": item,
        },
    ]
    if completed:
        response: dict[str, Any] = {"id": "resp_1", "status": "completed", "output": [item]}
        if usage:
            response["usage"] = {
                "input_tokens": 36,
                "input_tokens_details": {"cached_tokens": 10},
                "output_tokens": 87,
                "output_tokens_details": {"reasoning_tokens": 64},
                "total_tokens": 123,
            }
        evs.append(
            {"type": "response.completed", "sequence_number": next(seq), "response": response}
        )
    return evs


def chat_stream(
    deltas: list[str], *, usage: bool = True, done: bool = True, finish: bool = True
) -> list[Any]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1"}
    chunks: list[Any] = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    chunks += [
        {**base, "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]}
        for d in deltas
    ]
    if finish:
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 36,
                    "completion_tokens": 87,
                    "total_tokens": 123,
                    "prompt_tokens_details": {"cached_tokens": 10},
                    "completion_tokens_details": {"reasoning_tokens": 64},
                },
            }
        )
    if done:
        chunks.append("[DONE]")
    return chunks


USAGE = Usage(
    input_tokens=36, cached_input_tokens=10, output_tokens=87, reasoning_tokens=64, total_tokens=123
)


def spec_view(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The job event types with what a client reads of them."""
    out: list[tuple[str, Any]] = []
    for e in events:
        if e["type"] not in JOB_EVENT_TYPES:
            continue
        if e["type"] == "response.output_item.done":
            item = e["item"]
            texts = [p["text"] for p in item.get("content", [])]
            out.append((e["type"], (item["type"], item.get("role"), item["status"], texts)))
        else:
            out.append((e["type"], e["delta"]))
    return out


# --------------------------------------------------------------------------- Responses


@pytest.mark.parametrize("bytewise", [False, True])
def test_responses_stream_passes_every_event_and_completes(bytewise: bool) -> None:
    stream = responses_stream(["Hel", "lo\u2028", " world"])
    events, outcome = drive(ResponsesStream(), sse_bytes(stream), bytewise=bytewise)
    assert events == stream, "every event passes through with its own members"
    assert outcome == StreamResult(
        output_text="Hello\u2028 world",
        usage=USAGE,
        response_id="resp_1",
    )


def test_responses_reasoning_summary_and_unknown_events_pass_through() -> None:
    events = [
        {"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "summary_index": 0},
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": "rs_1",
            "summary_index": 0,
            "delta": "Thinking",
        },
        {
            "type": "codex.rate_limits",
            "plan_type": "plus",
            "rate_limits": {"primary": {"used_percent": 5}},
        },
        {"type": "response.brand_new_event", "anything": [1, 2]},
    ]
    norm = ResponsesStream()
    assert [e for obj in events for e in feed(norm, obj)] == events
    assert norm.outcome is None
    assert norm.output_text == ""


def test_responses_failed_ends_the_attempt_at_once() -> None:
    failed = {
        "type": "response.failed",
        "sequence_number": 99,
        "response": {"id": "resp_1", "error": {"code": "server_error", "message": "boom"}},
    }
    late = {"type": "response.output_text.delta", "delta": "late"}
    stream = [*responses_stream(["Hi"], completed=False), failed, late]
    events, outcome = drive(ResponsesStream(), sse_bytes(stream))
    assert isinstance(outcome, UpstreamError)
    assert outcome.kind == ErrorKind.UPSTREAM_ERROR
    assert outcome.in_stream
    assert all(e["type"] != "response.failed" for e in events)
    assert "late" not in [e.get("delta") for e in events]


def test_responses_error_event() -> None:
    norm = ResponsesStream()
    assert (
        feed(
            norm,
            {
                "type": "error",
                "code": "context_length_exceeded",
                "message": "too long",
                "sequence_number": 1,
            },
        )
        == []
    )
    assert isinstance(norm.outcome, UpstreamError)
    assert norm.outcome.kind == ErrorKind.CONTEXT_LENGTH_EXCEEDED
    assert norm.finish() is norm.outcome


def test_responses_usage_limit_in_the_stream_uses_the_injected_clock() -> None:
    norm = ResponsesStream(wall_now=lambda: 1_000_000.0)
    feed(norm, {"type": "error", "error": {"type": "usage_limit_reached", "resets_in_seconds": 30}})
    assert isinstance(norm.outcome, UpstreamError)
    assert norm.outcome.retry_after_s == pytest.approx(30)


def test_responses_stream_without_completion_is_a_stream_error() -> None:
    events, outcome = drive(
        ResponsesStream(), sse_bytes(responses_stream(["Hi", "!"], completed=False))
    )
    assert isinstance(outcome, UpstreamError)
    assert outcome.kind == ErrorKind.STREAM_ERROR
    assert outcome.retryable
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hi", "!"]


def test_responses_incomplete_completes_with_its_text() -> None:
    norm = ResponsesStream()
    feed(norm, {"type": "response.output_text.delta", "delta": "partial"})
    out = feed(
        norm,
        {
            "type": "response.incomplete",
            "response": {"id": "r", "incomplete_details": {"reason": "max_output_tokens"}},
        },
    )
    assert out[0]["type"] == "response.incomplete"
    assert norm.outcome == StreamResult(output_text="partial", usage=None, response_id="r")


def test_responses_text_from_the_final_output_when_no_deltas_came() -> None:
    stream = [e for e in responses_stream(["a", "b"]) if e["type"] != "response.output_text.delta"]
    _, outcome = drive(ResponsesStream(), sse_bytes(stream))
    assert isinstance(outcome, StreamResult)
    assert outcome.output_text == "ab"


def test_malformed_data_is_a_stream_error() -> None:
    raw = sse_bytes([{"type": "response.output_text.delta", "delta": "a"}]) + b"data: {not json\n\n"
    events, outcome = drive(ResponsesStream(), raw)
    assert len(events) == 1
    assert isinstance(outcome, UpstreamError)
    assert outcome.kind == ErrorKind.STREAM_ERROR
    assert "malformed" in outcome.message
    _, outcome = drive(ResponsesStream(), b"data: [1, 2]\n\n")
    assert isinstance(outcome, UpstreamError)


def test_events_without_a_type_are_skipped() -> None:
    norm = ResponsesStream()
    assert feed(norm, {"delta": "x"}) == []
    assert norm.outcome is None


# --------------------------------------------------------------------------- Chat


@pytest.mark.parametrize("bytewise", [False, True])
def test_chat_stream_becomes_responses_event_types(bytewise: bool) -> None:
    events, outcome = drive(
        ChatStream(), sse_bytes(chat_stream(["Hel", "lo"]), named=False), bytewise=bytewise
    )
    assert events == [
        {"type": "response.output_text.delta", "delta": "Hel"},
        {"type": "response.output_text.delta", "delta": "lo"},
        {
            "type": "response.output_item.done",
            "item": {
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
            },
        },
    ]
    assert outcome == StreamResult(output_text="Hello", usage=USAGE, response_id="chatcmpl-1")


def test_chat_and_responses_give_the_same_events_for_the_same_text() -> None:
    deltas = ["The ", "answer\u2028is", " 42."]
    r_events, r_outcome = drive(ResponsesStream(), sse_bytes(responses_stream(deltas)))
    c_events, c_outcome = drive(ChatStream(), sse_bytes(chat_stream(deltas), named=False))
    assert spec_view(r_events) == spec_view(c_events)
    assert spec_view(c_events)[0] == ("response.output_text.delta", "The ")
    assert isinstance(r_outcome, StreamResult)
    assert isinstance(c_outcome, StreamResult)
    assert (r_outcome.output_text, r_outcome.usage) == (c_outcome.output_text, c_outcome.usage)


@settings(max_examples=100)
@given(deltas=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=10))
def test_same_text_for_any_deltas(deltas: list[str]) -> None:
    r_events, r_outcome = drive(ResponsesStream(), sse_bytes(responses_stream(deltas)))
    c_events, c_outcome = drive(ChatStream(), sse_bytes(chat_stream(deltas), named=False))
    assert spec_view(r_events) == spec_view(c_events)
    assert isinstance(r_outcome, StreamResult)
    assert isinstance(c_outcome, StreamResult)
    assert r_outcome.output_text == c_outcome.output_text == "".join(deltas)


def test_chat_tool_calls_accumulate_into_function_call_items() -> None:
    base = {"id": "chatcmpl-2", "choices": []}
    chunks = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ],
                    },
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_b",
                                "function": {"name": "now", "arguments": "{}"},
                            }
                        ]
                    },
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
                }
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        "[DONE]",
    ]
    events, outcome = drive(ChatStream(), sse_bytes(chunks, named=False))
    assert events == [
        {
            "type": "response.output_item.done",
            "item": {
                "type": "function_call",
                "call_id": "call_a",
                "name": "get_weather",
                "arguments": '{"city":"Oslo"}',
                "status": "completed",
            },
        },
        {
            "type": "response.output_item.done",
            "item": {
                "type": "function_call",
                "call_id": "call_b",
                "name": "now",
                "arguments": "{}",
                "status": "completed",
            },
        },
    ]
    assert outcome == StreamResult(output_text="", usage=None, response_id="chatcmpl-2")


def test_chat_reasoning_deltas() -> None:
    norm = ChatStream()
    out = feed(norm, {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]})
    out += feed(norm, {"choices": [{"index": 0, "delta": {"reasoning": "ok", "content": "A"}}]})
    assert out == [
        {"type": "response.reasoning_text.delta", "delta": "hmm"},
        {"type": "response.reasoning_text.delta", "delta": "ok"},
        {"type": "response.output_text.delta", "delta": "A"},
    ]


def test_chat_other_choices_are_ignored() -> None:
    norm = ChatStream()
    assert feed(norm, {"choices": [{"index": 1, "delta": {"content": "other"}}]}) == []


def test_chat_eof_before_the_choice_finished_is_a_stream_error() -> None:
    _, outcome = drive(
        ChatStream(),
        sse_bytes(chat_stream(["a"], usage=False, done=False, finish=False), named=False),
    )
    assert isinstance(outcome, UpstreamError)
    assert outcome.kind == ErrorKind.STREAM_ERROR


def test_chat_eof_after_the_choice_finished_completes_without_usage() -> None:
    _, outcome = drive(
        ChatStream(), sse_bytes(chat_stream(["a"], usage=False, done=False), named=False)
    )
    assert outcome == StreamResult(output_text="a", usage=None, response_id="chatcmpl-1")


def test_chat_error_chunk() -> None:
    raw = sse_bytes(chat_stream(["a"], usage=False, done=False, finish=False), named=False)
    error = {"message": "Rate limit reached. Please try again in 2s", "code": "rate_limit_exceeded"}
    raw += sse_bytes([{"error": error}], named=False)
    _, outcome = drive(ChatStream(), raw)
    assert isinstance(outcome, UpstreamError)
    assert outcome.kind == ErrorKind.RATE_LIMITED
    assert outcome.in_stream


# --------------------------------------------------------------------------- usage


def test_usage_normalisation() -> None:
    assert usage_from_responses({"input_tokens": 5, "output_tokens": 7}) == Usage(5, 0, 7, 0, 12)
    assert usage_from_responses({"input_tokens": "x"}) is None
    assert usage_from_responses(None) is None
    assert usage_from_chat(
        {
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
            "prompt_tokens_details": None,
        }
    ) == Usage(3, 0, 4, 0, 7)
    assert usage_from_chat({"prompt_tokens": None}) == Usage()
