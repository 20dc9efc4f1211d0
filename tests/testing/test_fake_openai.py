"""The fake OpenAI upstream, driven with real httpx over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexd.testing import fake_openai as fo
from codexd.testing.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.timeout(30)

RESPONSES_SEQUENCE_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
RESPONSES_SEQUENCE_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
BODY: dict[str, Any] = {
    "model": "gpt-5",
    "instructions": "Be brief.",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}],
    "stream": True,
}
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.running() as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event, per the WHATWG rules the SDK follows."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events


def read_events_until_error(response: httpx.Response) -> tuple[list[str], Exception | None]:
    """Raw SSE blocks read until the stream ends or breaks."""
    buffer = ""
    try:
        for chunk in response.iter_text():
            buffer += chunk
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        return [b for b in buffer.split("\n\n") if b.strip()], exc
    return [b for b in buffer.split("\n\n") if b.strip()], None


# --- Responses -------------------------------------------------------------------------------


def test_responses_stream_is_complete_ordered_and_reports_usage(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    response = client.post(f"{fake.base_url}/responses", json=BODY)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    payloads = [json.loads(data) for _, data in events]
    names = [p["type"] for p in payloads]
    deltas = fo.split_deltas(fo.DEFAULT_REPLY_TEXT)
    assert len(deltas) > 1
    assert names == [
        *RESPONSES_SEQUENCE_HEAD,
        *["response.output_text.delta"] * len(deltas),
        *RESPONSES_SEQUENCE_TAIL,
    ]
    assert [name for name, _ in events] == names  # `event:` agrees with `type`
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert "".join(p["delta"] for p in payloads if "delta" in p) == fo.DEFAULT_REPLY_TEXT
    item_ids = {p["item_id"] for p in payloads if "item_id" in p}
    assert item_ids == {payloads[2]["item"]["id"]}

    completed = payloads[-1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == fo.DEFAULT_REPLY_TEXT
    expected = fo.usage_for(BODY, fo.DEFAULT_REPLY_TEXT)
    assert completed["usage"] == {
        "input_tokens": expected.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": expected.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": expected.input_tokens + expected.output_tokens,
    }
    assert expected.input_tokens == fo.count_tokens("Be brief.\nSay hello.")
    assert payloads[0]["response"]["usage"] is None
    assert fake.model_requests()[-1].usage == expected
    stats = fake.stats()
    assert (stats.completed_streams, stats.in_flight, stats.disconnects) == (1, 0, 0)


def test_rate_limit_headers_count_down(fake: FakeOpenAI, client: httpx.Client) -> None:
    first = client.post(f"{fake.base_url}/responses", json=BODY)
    second = client.post(f"{fake.base_url}/responses", json=BODY)

    limit = int(first.headers["x-ratelimit-limit-requests"])
    assert int(first.headers["x-ratelimit-remaining-requests"]) == limit - 1
    assert int(second.headers["x-ratelimit-remaining-requests"]) == limit - 2
    assert int(second.headers["x-ratelimit-remaining-tokens"]) < int(
        first.headers["x-ratelimit-remaining-tokens"]
    )
    for name in (
        "x-ratelimit-limit-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
    ):
        assert name in second.headers
    assert second.headers["x-request-id"].startswith("req_")


def test_responses_not_streamed_is_one_object(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(Reply(text="Plain answer.", cached_tokens=2, reasoning_tokens=7))
    response = client.post(f"{fake.base_url}/responses", json={**BODY, "stream": False})

    assert response.status_code == 200
    obj = response.json()
    assert obj["object"] == "response"
    assert obj["status"] == "completed"
    assert obj["output"][0]["content"] == [
        {"type": "output_text", "text": "Plain answer.", "annotations": []}
    ]
    usage = obj["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == 2
    assert usage["output_tokens_details"]["reasoning_tokens"] == 7
    assert usage["output_tokens"] == fo.count_tokens("Plain answer.") + 7
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert fake.stats().completed_replies == 1


def test_chatgpt_path_streams_responses_with_codex_headers(client: httpx.Client) -> None:
    with FakeOpenAI.running(codex_limits=fo.CodexLimits(primary_used_percent=42.5)) as fake:
        assert fake.chatgpt_base_url.endswith("/backend-api/")
        response = client.post(
            f"{fake.chatgpt_base_url}codex/responses",
            json=BODY,
            headers={"chatgpt-account-id": "acct-1", "authorization": "Bearer tok"},
        )
        record = fake.model_requests(fo.CHATGPT_RESPONSES_PATH)[0]

    payloads = [json.loads(d) for _, d in sse_events(response.text)]
    assert payloads[-1]["type"] == "response.completed"
    assert response.headers["x-codex-primary-used-percent"] == "42.5"
    assert response.headers["x-codex-primary-window-minutes"] == "300"
    assert response.headers["x-codex-secondary-window-minutes"] == "10080"
    assert int(response.headers["x-codex-primary-reset-at"]) > time.time()
    assert record.headers["chatgpt-account-id"] == "acct-1"
    assert record.body == BODY


def test_stream_failure_is_response_failed(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.stream_failed("server_error", "boom", after_deltas=2))
    response = client.post(f"{fake.base_url}/responses", json=BODY)

    payloads = [json.loads(d) for _, d in sse_events(response.text)]
    assert [p["type"] for p in payloads] == [
        *RESPONSES_SEQUENCE_HEAD,
        "response.output_text.delta",
        "response.output_text.delta",
        "response.failed",
    ]
    assert payloads[-1]["response"]["status"] == "failed"
    assert payloads[-1]["response"]["error"] == {"code": "server_error", "message": "boom"}
    assert fake.stats().completed_streams == 0


# --- Chat ------------------------------------------------------------------------------------


def test_chat_stream_ends_with_usage_chunk_and_done(fake: FakeOpenAI, client: httpx.Client) -> None:
    response = client.post(f"{fake.base_url}/chat/completions", json=CHAT_BODY)

    assert response.status_code == 200
    events = sse_events(response.text)
    assert all(name is None for name, _ in events)  # Chat streams carry no `event:` lines
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == fo.DEFAULT_REPLY_TEXT
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    expected = fo.usage_for(CHAT_BODY, fo.DEFAULT_REPLY_TEXT)
    assert chunks[-1]["usage"]["prompt_tokens"] == expected.input_tokens
    assert chunks[-1]["usage"]["completion_tokens"] == expected.output_tokens
    assert chunks[-1]["usage"]["total_tokens"] == expected.total_tokens
    assert all(c["usage"] is None for c in chunks[:-1])


def test_chat_stream_without_include_usage_has_no_usage(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    body = {k: v for k, v in CHAT_BODY.items() if k != "stream_options"}
    events = sse_events(client.post(f"{fake.base_url}/chat/completions", json=body).text)

    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_not_streamed(fake: FakeOpenAI, client: httpx.Client) -> None:
    obj = client.post(
        f"{fake.base_url}/chat/completions", json={**CHAT_BODY, "stream": False}
    ).json()

    assert obj["object"] == "chat.completion"
    assert obj["choices"][0]["message"]["content"] == fo.DEFAULT_REPLY_TEXT
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert (
        obj["usage"]["total_tokens"] == fo.usage_for(CHAT_BODY, fo.DEFAULT_REPLY_TEXT).total_tokens
    )


def test_chat_stream_failure_is_an_error_object(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.stream_failed("server_error", "boom"))
    events = sse_events(client.post(f"{fake.base_url}/chat/completions", json=CHAT_BODY).text)

    assert json.loads(events[-1][1]) == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": "server_error"}
    }


# --- Models and routing ----------------------------------------------------------------------


def test_models(fake: FakeOpenAI, client: httpx.Client) -> None:
    listing = client.get(f"{fake.base_url}/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == list(fo.DEFAULT_MODELS)
    assert client.get(f"{fake.base_url}/models/gpt-5").json() == {
        "id": "gpt-5",
        "object": "model",
        "created": fo.MODEL_CREATED,
        "owned_by": "openai",
    }
    missing = client.get(f"{fake.base_url}/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_unknown_path_is_404_json(fake: FakeOpenAI, client: httpx.Client) -> None:
    response = client.post(f"{fake.base_url}/images/generations", json={})
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_embeddings_as_numbers_or_base64_with_usage_from_the_input(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    body = {"model": "text-embedding-3-small", "input": ["abcdefgh", "abc"], "dimensions": 3}
    floats = client.post(f"{fake.base_url}/embeddings", json=body)
    packed = client.post(f"{fake.base_url}/embeddings", json={**body, "encoding_format": "base64"})
    assert floats.status_code == packed.status_code == 200
    assert floats.headers["content-type"] == "application/json"
    reply = floats.json()
    assert reply["object"] == "list" and reply["model"] == "text-embedding-3-small"
    assert reply["usage"] == {"prompt_tokens": 2 + 1, "total_tokens": 3}
    assert [d["object"] for d in reply["data"]] == ["embedding", "embedding"]
    assert [len(d["embedding"]) for d in reply["data"]] == [3, 3]
    assert [isinstance(d["embedding"], str) for d in packed.json()["data"]] == [True, True]
    assert reply == fo.embeddings_reply(body, "text-embedding-3-small")
    assert fake.stats().completed_replies == 2
    assert fake.model_requests("/v1/embeddings")[0].usage == fo.Usage(3, 0, 0, 0)


def test_embeddings_can_be_scripted_and_want_an_input(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(fo.rate_limited(retry_after=2), path=fo.EMBEDDINGS_PATH)
    body = {"model": "m", "input": "hi"}
    assert client.post(f"{fake.base_url}/responses", json={"input": "x"}).status_code == 200
    limited = client.post(f"{fake.base_url}/embeddings", json=body)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert client.post(f"{fake.base_url}/embeddings", json=body).status_code == 200
    missing = client.post(f"{fake.base_url}/embeddings", json={"model": "m"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "input"


def test_body_that_is_not_json_is_400(fake: FakeOpenAI, client: httpx.Client) -> None:
    response = client.post(f"{fake.base_url}/responses", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_keep_alive_reuses_one_connection(fake: FakeOpenAI, client: httpx.Client) -> None:
    for _ in range(3):
        client.post(f"{fake.base_url}/responses", json=BODY).raise_for_status()
    client.post(f"{fake.base_url}/chat/completions", json=CHAT_BODY).raise_for_status()
    assert len({r.connection for r in fake.requests}) == 1


def test_request_log_keeps_method_path_headers_body_and_time(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    before = time.monotonic()
    client.post(f"{fake.base_url}/responses", json=BODY, headers={"originator": "codexd"})
    client.get(f"{fake.base_url}/models")
    after = time.monotonic()

    first, second = fake.requests
    assert (first.method, first.path, first.status) == ("POST", "/v1/responses", 200)
    assert first.headers["originator"] == "codexd"
    assert first.body == BODY
    assert before <= first.time <= second.time <= after
    assert (second.method, second.path) == ("GET", "/v1/models")
    assert fake.stats().requests == 2
    assert fake.stats().model_requests == 1


# --- Scripted faults -------------------------------------------------------------------------


def post(client: httpx.Client, fake: FakeOpenAI, body: dict[str, Any] = BODY) -> httpx.Response:
    return client.post(f"{fake.base_url}/responses", json=body)


def test_rate_limited_with_retry_after_headers_and_message(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(
        fo.rate_limited(retry_after=2),
        fo.rate_limited(retry_after_ms=1500, try_again_in=None),
        fo.rate_limited(try_again_in="1.5s", per="requests"),
    )
    seconds, millis, message = post(client, fake), post(client, fake), post(client, fake)

    assert [r.status_code for r in (seconds, millis, message)] == [429, 429, 429]
    assert seconds.headers["retry-after"] == "2"
    assert "retry-after-ms" not in seconds.headers
    assert millis.headers["retry-after-ms"] == "1500"
    assert "retry-after" not in millis.headers
    assert "try again in" not in millis.json()["error"]["message"]
    error = message.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert "Please try again in 1.5s." in error["message"]
    assert "retry-after" not in message.headers
    assert message.headers["x-ratelimit-remaining-requests"] == "0"
    assert post(client, fake).status_code == 200  # the script is spent
    assert fake.stats().scripted == 3


def test_insufficient_quota(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.insufficient_quota())
    response = post(client, fake)
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "insufficient_quota",
        "insufficient_quota",
        None,
    )
    assert "check your plan and billing details" in error["message"]


def test_usage_limit_reached_body_and_headers(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.usage_limit_reached(plan_type="pro", resets_in_seconds=4320, now=1_800_000_000))
    response = client.post(f"{fake.chatgpt_base_url}codex/responses", json=BODY)

    assert response.status_code == 429
    assert response.json() == {
        "error": {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": "pro",
            "resets_at": 1_800_004_320,
            "resets_in_seconds": 4320,
            "eligible_promo": None,
        }
    }
    assert response.headers["x-codex-primary-used-percent"] == "100"
    assert response.headers["x-codex-primary-reset-at"] == "1800004320"
    assert response.headers["x-codex-active-limit"] == "codex"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(fake: FakeOpenAI, client: httpx.Client, status: int) -> None:
    fake.script(fo.server_error(status))
    response = post(client, fake)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_overloaded_503_has_its_code(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.server_error(503, code="server_is_overloaded"))
    assert post(client, fake).json()["error"]["code"] == "server_is_overloaded"


def test_context_length_exceeded(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.context_length_exceeded())
    response = post(client, fake)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "context_length_exceeded",
        "input",
    )


@pytest.mark.parametrize("reason", ["invalid_api_key", "token_expired"])
def test_unauthorized(fake: FakeOpenAI, client: httpx.Client, reason: Any) -> None:
    fake.script(fo.unauthorized(reason))
    response = post(client, fake)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == reason


def test_api_keys_are_enforced_when_configured(client: httpx.Client) -> None:
    with FakeOpenAI.running(api_keys={"sk-good"}) as fake:
        missing = post(client, fake)
        wrong = client.post(
            f"{fake.base_url}/responses", json=BODY, headers={"authorization": "Bearer sk-bad"}
        )
        good = client.post(
            f"{fake.base_url}/responses", json=BODY, headers={"authorization": "Bearer sk-good"}
        )
    assert (missing.status_code, wrong.status_code, good.status_code) == (401, 401, 200)
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-bad" not in wrong.text


def test_captive_portal_is_a_200_with_html(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.captive_portal())
    response = post(client, fake)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<!DOCTYPE html>")


def test_truncated_json_not_streamed(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.truncated_json())
    response = post(client, fake, {**BODY, "stream": False})
    assert response.status_code == 200
    assert response.text.startswith('{"id":"resp_')
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_truncated_json_streamed_cuts_the_completion(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(fo.truncated_json())
    events = sse_events(post(client, fake).text)
    assert json.loads(events[-2][1])["type"] == "response.output_item.done"
    assert events[-1][0] == "response.completed"
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[-1][1])
    assert fake.stats().completed_streams == 0


def test_malformed_data_line_then_the_stream_carries_on(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(fo.malformed(after=3))
    blocks = [b for b in post(client, fake).text.split("\n\n") if b.strip()]

    assert blocks[3] + "\n\n" == fo.MALFORMED_SSE.decode()
    with pytest.raises(json.JSONDecodeError):
        json.loads(blocks[3].removeprefix("data: "))
    rest = [json.loads(b.split("data: ", 1)[1]) for b in blocks[:3] + blocks[4:]]
    assert rest[-1]["type"] == "response.completed"
    assert [p["sequence_number"] for p in rest] == list(range(len(rest)))


@pytest.mark.parametrize("after", [0, 2, 6])
def test_dropped_stream_stops_after_n_events_without_completion(
    fake: FakeOpenAI, client: httpx.Client, after: int
) -> None:
    fake.script(fo.dropped(after=after))
    with client.stream("POST", f"{fake.base_url}/responses", json=BODY) as response:
        assert response.status_code == 200
        blocks, error = read_events_until_error(response)

    assert isinstance(error, httpx.RemoteProtocolError)
    assert len(blocks) == after
    assert all("response.completed" not in b for b in blocks)
    stats = fake.wait_for(lambda s: s.in_flight == 0)
    assert (stats.dropped, stats.disconnects, stats.completed_streams) == (1, 0, 0)
    assert post(client, fake).status_code == 200  # a new connection serves normally


def test_dropped_chat_stream(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.dropped(after=2), path=fo.CHAT_PATH)
    with client.stream("POST", f"{fake.base_url}/chat/completions", json=CHAT_BODY) as response:
        blocks, error = read_events_until_error(response)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert len(blocks) == 2
    assert "[DONE]" not in "".join(blocks)


def test_dropped_before_any_reply_when_not_streamed(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.dropped(after=0))
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, fake, {**BODY, "stream": False})


def test_stalled_stream_stays_silent_until_the_client_goes(fake: FakeOpenAI) -> None:
    fake.script(fo.stalled(after=5))
    timeout = httpx.Timeout(10, read=0.3)
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("POST", f"{fake.base_url}/responses", json=BODY) as response,
    ):
        raw = response.iter_raw()
        buffer = b""
        while buffer.count(b"\n\n") < 5:
            buffer += next(raw)
        assert buffer.count(b"\n\n") == 5
        stats = fake.stats()
        assert (stats.in_flight, stats.disconnects, stats.completed_streams) == (1, 0, 0)
        # Nothing more comes: the next read times out instead of seeing more events or the end.
        with pytest.raises(httpx.ReadTimeout):
            next(raw)
    stats = fake.wait_for(lambda s: s.disconnects == 1)
    assert (stats.in_flight, stats.completed_streams) == (0, 0)


def test_script_per_path_leaves_other_paths_alone(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.server_error(500), path=fo.CHAT_PATH)
    assert post(client, fake).status_code == 200
    assert fake.pending() == 1
    assert client.post(f"{fake.base_url}/chat/completions", json=CHAT_BODY).status_code == 500
    assert fake.pending() == 0


def test_script_times_repeats(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.server_error(500), times=3)
    statuses = [post(client, fake).status_code for _ in range(4)]
    assert statuses == [500, 500, 500, 200]


def test_first_byte_and_delta_delays_hold_the_reply_back(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Reply(first_byte_delay_s=0.2), Reply(delta_delay_s=0.05))
    started = time.monotonic()
    post(client, fake)
    first = time.monotonic() - started
    started = time.monotonic()
    post(client, fake)
    second = time.monotonic() - started
    assert first >= 0.2
    assert second >= 0.05 * len(fo.split_deltas(fo.DEFAULT_REPLY_TEXT))


def test_custom_reply_text_and_deltas(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(Reply(deltas=("a", "b", "c")))
    fake.set_reply(Reply(), text="Default changed.")
    first = [json.loads(d) for _, d in sse_events(post(client, fake).text)]
    second = [json.loads(d) for _, d in sse_events(post(client, fake).text)]
    assert [p["delta"] for p in first if "delta" in p] == ["a", "b", "c"]
    assert second[-1]["response"]["output"][0]["content"][0]["text"] == "Default changed."


# --- Enforced rate limit ---------------------------------------------------------------------


def test_enforced_rpm_answers_429_with_headers_until_the_window_moves(client: httpx.Client) -> None:
    clock = ManualClock()
    with FakeOpenAI.running(rpm_limit=2, clock=clock) as fake:
        fake.script(fo.server_error(500), path=fo.CHAT_PATH)
        first = post(client, fake)
        clock.now += 10
        second = post(client, fake)
        refused = post(client, fake)
        assert fake.stats().rate_limited == 1
        clock.now += 50  # the first request leaves the 60 s window
        admitted = post(client, fake)
        chat = client.post(f"{fake.base_url}/chat/completions", json=CHAT_BODY)
        assert fake.pending() == 1

    assert [first.status_code, second.status_code, admitted.status_code] == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    assert "Please try again in 50s." in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "50"
    assert refused.headers["retry-after-ms"] == "50000"
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    # A refused request does not eat a scripted outcome (the chat 500 was still there);
    # the window held 2 requests again, so chat was refused too.
    assert chat.status_code == 429


def test_enforced_tpm(client: httpx.Client) -> None:
    clock = ManualClock()
    per_request = fo.usage_for(BODY, fo.DEFAULT_REPLY_TEXT).total_tokens
    with FakeOpenAI.running(tpm_limit=per_request * 2, clock=clock) as fake:
        ok = [post(client, fake).status_code for _ in range(2)]
        refused = post(client, fake)
    assert ok == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


# --- Counters and ways to run ----------------------------------------------------------------


@pytest.mark.anyio
async def test_peak_concurrency_and_disconnects_in_a_task_group() -> None:
    fake = FakeOpenAI(reply=Reply(stall_after=4))
    async with anyio.create_task_group() as tg:
        base_url = await tg.start(fake.serve)
        assert base_url == fake.base_url

        async def one(client: httpx.AsyncClient, got_first: anyio.Event) -> None:
            async with client.stream("POST", f"{base_url}/responses", json=BODY) as response:
                async for _ in response.aiter_raw():
                    got_first.set()

        async with httpx.AsyncClient(timeout=10) as client:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as clients:
                    firsts = [anyio.Event() for _ in range(5)]
                    for event in firsts:
                        clients.start_soon(one, client, event)
                    stats = await fake.wait_until(lambda s: s.in_flight == 5)
                    for event in firsts:
                        await event.wait()
                    clients.cancel_scope.cancel()
                stats = await fake.wait_until(lambda s: s.disconnects == 5)
        assert stats.peak_in_flight == 5
        assert stats.in_flight == 0
        assert stats.completed_streams == 0
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_client_cancel_mid_delta_delay_is_a_disconnect() -> None:
    fake = FakeOpenAI(reply=Reply(delta_delay_s=30))
    async with anyio.create_task_group() as tg:
        base_url = await tg.start(fake.serve)
        async with httpx.AsyncClient(timeout=10) as client:
            with anyio.fail_after(10):
                async with client.stream("POST", f"{base_url}/responses", json=BODY) as response:
                    async for chunk in response.aiter_raw():
                        if b"response.content_part.added" in chunk:
                            break
                stats = await fake.wait_until(lambda s: s.disconnects == 1)
        assert stats.in_flight == 0
        tg.cancel_scope.cancel()


def test_reset_forgets_log_and_counters(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.script(fo.server_error(500), fo.server_error(500))
    post(client, fake)
    fake.reset()
    assert fake.requests == []
    assert fake.stats() == fo.Stats()
    assert post(client, fake).status_code == 200


def test_many_concurrent_streams_all_complete() -> None:
    async def main() -> fo.Stats:
        fake = FakeOpenAI(reply=Reply(delta_delay_s=0.001))
        async with anyio.create_task_group() as tg:
            base_url = await tg.start(fake.serve)
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(timeout=10, limits=limits) as client:

                async def one() -> None:
                    response = await client.post(f"{base_url}/responses", json=BODY)
                    assert response.text.count("response.completed") == 2  # event: + type

                async with anyio.create_task_group() as clients:
                    for _ in range(64):
                        clients.start_soon(one)
            tg.cancel_scope.cancel()
        return fake.stats()

    stats = anyio.run(main)
    assert stats.completed_streams == 64
    assert stats.disconnects == 0
    assert 1 <= stats.peak_in_flight <= 64


def test_cli_prints_base_url_and_serves() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "codexd.testing.fake_openai",
            "--port",
            "0",
            "--reply",
            "CLI says hi.",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/v1")
        with httpx.Client(timeout=10) as client:
            obj = client.post(f"{base_url}/responses", json={**BODY, "stream": False}).json()
        assert obj["output"][0]["content"][0]["text"] == "CLI says hi."
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- Pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.012, "12ms"), (1, "1s"), (360, "6m0s"), (2.081, "2s81ms"), (0, "0ms"), (3600, "1h0m0s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert fo.go_duration(seconds) == text


def _parse_go_duration(text: str) -> int:
    import re

    units = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|h|m|s)", text))


@given(st.integers(min_value=0, max_value=10 * 86_400_000))
def test_go_duration_round_trips(millis: int) -> None:
    assert _parse_go_duration(fo.go_duration(millis / 1000)) == millis


@given(st.text())
def test_split_deltas_rejoins(text: str) -> None:
    deltas = fo.split_deltas(text)
    assert "".join(deltas) == text
    assert all(deltas)


@given(st.lists(st.tuples(st.floats(0, 200), st.integers(0, 100)), max_size=30))
def test_rolling_window_wait_makes_room(entries: list[tuple[float, int]]) -> None:
    window = fo.RollingWindow()
    now = 0.0
    for step, tokens in entries:
        now += step
        window.add(now, tokens)
    wait = window.wait_for_room(now, requests_limit=3, tokens_limit=150, tokens=50)
    later = now + wait
    if wait < fo.WINDOW_S:
        assert window.requests(later) < 3
        assert window.tokens(later) + 50 <= 150
