"""The Responses WebSocket's pure parts: handshake, client messages, the conversation kept
for `previous_response_id`, and the POST route's SSE re-framed as messages."""

from __future__ import annotations

import itertools
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexctl.protocol import ErrorKind, RpcError
from codexd.gateway.http import MAX_BODY_BYTES, Request
from codexd.gateway.translate import HttpError, ResponsesSSE, error_reply
from codexd.gateway.websocket import (
    Conversation,
    Create,
    EventTooLarge,
    Processed,
    Refused,
    ResponseTracker,
    SSEBlocks,
    Warmup,
    _TurnResponder,
    accept,
    http_error_event,
    is_websocket_request,
    read_message,
    sse_events,
    too_large_event,
    warmup_events,
)
from codexd.jobs import job_event

# RFC 6455 §1.3's example key and its accept value.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade(**headers: str) -> Request:
    base = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-version": "13",
        "sec-websocket-key": RFC_KEY,
    }
    merged = {k: v for k, v in {**base, **headers}.items() if v}
    return Request("GET", "/v1/responses", merged, b"", keep_alive=False, upgrade=b"")


def decoded(event: bytes) -> dict[str, Any]:
    value = msgspec.json.decode(event)
    assert isinstance(value, dict)
    return value


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


# --------------------------------------------------------------------------- handshake


def test_handshake_answers_with_the_accept_token() -> None:
    headers = accept(upgrade())
    assert not isinstance(headers, HttpError)
    assert dict(headers) == {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-accept": RFC_ACCEPT,
    }
    assert is_websocket_request(upgrade())
    assert not is_websocket_request(upgrade(upgrade="h2c"))


def test_handshake_refusals_name_what_to_send() -> None:
    no_connection = accept(
        Request("GET", "/v1/responses", {"upgrade": "websocket"}, b"", keep_alive=False)
    )
    old_version = accept(upgrade(**{"sec-websocket-version": "8"}))
    bad_key = accept(upgrade(**{"sec-websocket-key": "short"}))
    no_key = accept(upgrade(**{"sec-websocket-key": ""}))
    assert isinstance(no_connection, HttpError) and no_connection.status == 400
    assert b"Connection: Upgrade" in no_connection.body
    assert isinstance(old_version, HttpError) and old_version.status == 426
    assert ("sec-websocket-version", "13") in old_version.headers
    for refused in (bad_key, no_key):
        assert isinstance(refused, HttpError) and refused.status == 400
        assert b"Sec-WebSocket-Key" in refused.body


# --------------------------------------------------------------------------- client messages


def test_response_create_becomes_a_streamed_responses_body() -> None:
    message = read_message(
        '{"type": "response.create", "model": "gpt-5", "input": "hi", "stream": false,'
        ' "client_metadata": {"a": "b"}}'
    )
    assert message == Create(
        {"model": "gpt-5", "input": "hi", "stream": True, "client_metadata": {"a": "b"}}
    )


def test_generate_false_is_a_warm_up_and_leaves_the_body() -> None:
    message = read_message('{"type": "response.create", "model": "gpt-5", "generate": false}')
    assert message == Warmup({"model": "gpt-5", "stream": True})
    assert read_message('{"type": "response.create", "generate": true}') == Create(
        {"stream": True}
    )
    assert read_message('{"type": "response.processed", "response_id": "r"}') == Processed()


def test_malformed_messages_are_refused_with_an_error_event_naming_the_member() -> None:
    cases = {
        "not json": (None, "invalid_json"),
        "[1, 2]": (None, "invalid_json"),
        '{"model": "gpt-5"}': ("type", "missing_required_parameter"),
        '{"type": "response.append"}': ("type", "invalid_value"),
        '{"type": "response.create", "generate": "no"}': ("generate", "invalid_type"),
    }
    for text, (param, code) in cases.items():
        message = read_message(text)
        assert isinstance(message, Refused), text
        event = decoded(message.event)
        assert event["type"] == "error" and event["status"] == 400
        assert event["error"]["type"] == "invalid_request_error"
        assert (event["error"]["param"], event["error"]["code"]) == (param, code), text
        assert event["error"]["message"]


@given(st.text(max_size=200))
def test_any_text_is_a_message_or_a_refusal(text: str) -> None:
    message = read_message(text)
    assert isinstance(message, Create | Warmup | Processed | Refused)
    if isinstance(message, Refused):
        assert decoded(message.event)["type"] == "error"


def test_http_errors_become_error_events_with_status_and_headers() -> None:
    error = RpcError(ErrorKind.RATE_LIMITED, "slow down", retry_after_s=2.5, http_status=429)
    reply = error_reply(error.to_object())
    event = decoded(http_error_event(reply.status, reply.body, reply.headers))
    assert event["type"] == "error" and event["status"] == 429
    assert event["error"]["code"] == "rate_limit_exceeded"
    assert event["error"]["message"] == "slow down"
    assert event["headers"]["retry-after"] == "3"
    not_json = decoded(http_error_event(502, b"upstream said no", ()))
    assert not_json["error"]["message"] == "upstream said no" and "headers" not in not_json


def test_too_large_names_the_bound() -> None:
    event = decoded(too_large_event("conversation"))
    assert str(MAX_BODY_BYTES) in event["error"]["message"]
    assert "previous_response_id" in event["error"]["message"]


# --------------------------------------------------------------------------- conversation


def test_a_continuation_of_the_last_response_gets_its_whole_history() -> None:
    conversation = Conversation()
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text"}]}
    conversation.remember("resp_1", {"input": [user("one")], "model": "m"}, [answer])
    body = {"model": "m", "previous_response_id": "resp_1", "input": [user("two")]}
    assert conversation.expand(body) == {
        "model": "m",
        "input": [user("one"), answer, user("two")],
    }
    # A string input is one user message, on either side.
    conversation.remember("resp_2", {"input": "three"}, [])
    assert conversation.expand({"previous_response_id": "resp_2", "input": "four"}) == {
        "input": [user("three"), user("four")]
    }


def test_other_ids_and_first_turns_go_upstream_unchanged() -> None:
    conversation = Conversation()
    first = {"input": [user("one")]}
    assert conversation.expand(first) is first
    conversation.remember("resp_1", first, [])
    elsewhere = {"previous_response_id": "resp_stored_upstream", "input": [user("x")]}
    assert conversation.expand(elsewhere) is elsewhere
    conversation.forget()
    again = {"previous_response_id": "resp_1", "input": [user("x")]}
    assert conversation.expand(again) is again


def test_the_tracker_takes_the_completed_response() -> None:
    item = {"type": "message", "id": "msg_1"}
    tracker = ResponseTracker()
    tracker.observe(b"response.output_item.done", msgspec.json.encode({"item": item}))
    assert not tracker.completed
    tracker.observe(
        b"response.completed", msgspec.json.encode({"response": {"id": "resp_9", "output": []}})
    )
    # An empty output in response.completed: the items that were streamed stand.
    assert (tracker.completed, tracker.response_id, tracker.output) == (True, "resp_9", [item])
    full = ResponseTracker()
    full.observe(
        b"response.completed",
        msgspec.json.encode({"response": {"id": "resp_8", "output": [item, item]}}),
    )
    assert full.output == [item, item]


def test_a_warm_up_is_created_and_completed_with_no_output() -> None:
    created, completed = (decoded(e) for e in warmup_events("resp_w", {"model": "gpt-5"}))
    assert created["type"] == "response.created"
    assert completed["type"] == "response.completed"
    assert completed["response"]["id"] == "resp_w"
    assert completed["response"]["status"] == "completed"
    assert completed["response"]["output"] == []


# --------------------------------------------------------------------------- re-framing


def test_the_post_routes_stream_splits_back_into_its_events() -> None:
    upstream = [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "r"}},
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "delta": "two\n\nlines and data: inside",
        },
        {"type": "job.retrying", "attempt": 2, "delay_s": 0.1, "reason": "x",
         "error_kind": "stream_error", "reset_output": True},
    ]
    tr = ResponsesSSE()
    data = b"".join(tr.feed(job_event(e)) for e in upstream)
    events = [(etype, decoded(payload)) for etype, payload in sse_events(data)]
    assert [etype for etype, _ in events] == [
        b"response.created",
        b"response.output_text.delta",
        b"response.failed",  # a retry after output ends the stream in-stream
    ]
    assert events[1][1] == upstream[1]
    assert events[2][1]["response"]["status"] == "failed"


def two_event_stream() -> bytes:
    """What the POST route writes for a response.created and a delta (one write today)."""
    upstream = [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "r"}},
        {"type": "response.output_text.delta", "sequence_number": 1, "delta": "a\n\nb é"},
    ]
    tr = ResponsesSSE()
    return b"".join(tr.feed(job_event(e)) for e in upstream)


def test_a_block_split_at_any_byte_between_two_writes_is_one_message() -> None:
    data = two_event_stream()
    whole = sse_events(data)
    assert [etype for etype, _ in whole] == [b"response.created", b"response.output_text.delta"]
    for cut in range(len(data) + 1):
        blocks = SSEBlocks(MAX_BODY_BYTES)
        got = blocks.feed(data[:cut]) + blocks.feed(data[cut:])
        assert got == whole, cut
        assert blocks.pending == 0
    one_by_one = SSEBlocks(MAX_BODY_BYTES)
    assert [e for i in range(len(data)) for e in one_by_one.feed(data[i : i + 1])] == whole


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_splitting_of_the_stream_gives_its_events(cuts: list[int]) -> None:
    data = two_event_stream() * 3
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    blocks = SSEBlocks(MAX_BODY_BYTES)
    got = [e for a, b in itertools.pairwise(bounds) for e in blocks.feed(data[a:b])]
    assert got == sse_events(data)


def test_an_unfinished_block_past_the_bound_fails_and_stays_failed() -> None:
    blocks = SSEBlocks(32)
    assert blocks.feed(b"event: a\ndata: {}\n\nevent: b\ndata: {") == [(b"a", b"{}")]
    assert blocks.pending == len(b"event: b\ndata: {")
    with pytest.raises(EventTooLarge, match="over 32 bytes"):
        blocks.feed(b"0123456789" * 2)
    with pytest.raises(EventTooLarge):
        blocks.feed(b"}\n\n")


class RecordingSession:
    """What a turn writes to: the messages it sends."""

    stream = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_messages(self, messages: list[bytes]) -> None:
        self.sent.extend(messages)


@pytest.mark.anyio
async def test_a_turn_sends_a_block_split_over_two_writes_as_one_message() -> None:
    session = RecordingSession()
    turn = _TurnResponder(cast(Any, session))
    data = two_event_stream()
    cut = data.index(b"data: ", data.index(b"response.output_text.delta")) + 10
    await turn.write(data[:cut])
    assert [decoded(m)["type"] for m in session.sent] == ["response.created"]
    await turn.finish(data[cut:])
    assert [decoded(m)["type"] for m in session.sent] == [
        "response.created",
        "response.output_text.delta",
    ]
    assert decoded(session.sent[1])["delta"] == "a\n\nb é"


@pytest.mark.anyio
async def test_a_turn_whose_event_outgrows_the_bound_ends_with_an_error_message() -> None:
    session = RecordingSession()
    turn = _TurnResponder(cast(Any, session))
    turn.blocks = SSEBlocks(16)
    with turn.scope:
        await turn.write(b"event: response.output_text.delta\ndata: {")
        assert turn.scope.cancel_called
    (message,) = session.sent
    error = decoded(message)
    assert (error["type"], error["status"], error["error"]["code"]) == (
        "error",
        500,
        "event_too_large",
    )
