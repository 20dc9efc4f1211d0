"""Embeddings' pure parts: the token estimate, the reply as job events and its cost, the
request body, the gateway's reply, the fake's vectors, and the credential rule."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codexctl.events import EmbeddingsResult, decode_event
from codexctl.protocol import ErrorKind, JobCompleted, RpcError, Usage
from codexd.auth.session import OPENAI
from codexd.config.schema import Price
from codexd.gateway.translate import EmbeddingsJSON
from codexd.jobs import UpstreamEvent, job_event
from codexd.limits.estimate import embedding_input_tokens, estimate_tokens
from codexd.testing import fake_openai as fo
from codexd.upstream.embeddings import EmbeddingsReply
from codexd.upstream.wire import RequestDefaults, StreamResult, build_body, endpoint_url
from codexd.usage.catalog import FALLBACK_PRICE
from codexd.usage.cost import cost_usd
from tests.unit.test_auth_session import Clock, FakeIssuer, make_session, write_doc
from tests.unit.test_auth_support import chatgpt_doc, make_tokens

UPSTREAM = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 0, "embedding": [0.25, -0.5]},
        {"object": "embedding", "index": 1, "embedding": "AACAPgAAAL8="},
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 7, "total_tokens": 7},
}


# --------------------------------------------------------------------------- the estimate


@pytest.mark.parametrize(
    ("inp", "tokens"),
    [
        ("abcdefghi", 3),  # ceil(9 / 4)
        (["abcd", "efghi"], 3),  # characters of all the strings, then / 4
        ([11, 12, 13, 14, 15], 5),  # one token array: its length
        ([[1, 2], [3, 4, 5]], 5),  # token arrays: their lengths summed
        ("", 0),
    ],
)
def test_the_estimate_is_the_input_tokens(inp: Any, tokens: int) -> None:
    body = {"model": "m", "input": inp}
    assert embedding_input_tokens(body) == tokens
    # No output tokens: neither default_output_tokens nor an output cap counts.
    assert estimate_tokens({**body, "max_tokens": 900}, "embeddings", 4096) == tokens
    assert estimate_tokens(body, "responses", 4096) == 4096


# --------------------------------------------------------------------------- reply and cost


def test_the_reply_is_one_event_with_every_member_and_input_only_usage() -> None:
    reply = EmbeddingsReply()
    (event,) = reply.feed_body(msgspec.json.encode({**UPSTREAM, "extra": {"kept": True}}))
    assert isinstance(event, UpstreamEvent)
    assert event.type == "embeddings.result"
    assert event.raw.startswith(b'{"type":"embeddings.result",')
    assert event.data == {"type": "embeddings.result", **UPSTREAM, "extra": {"kept": True}}
    assert reply.finish() == StreamResult(
        output_text=None,
        usage=Usage(input_tokens=7, output_tokens=0, total_tokens=7),
        response_id=None,
    )
    # A socket client decodes it into the one wire type.
    typed = decode_event(msgspec.json.decode(event.raw))
    assert isinstance(typed, EmbeddingsResult)
    assert typed.data[0].embedding == [0.25, -0.5] and typed.data[1].embedding == "AACAPgAAAL8="


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"object": "list"}', b'{"data": {"0": []}}']
)
def test_a_malformed_reply_is_a_retryable_request_failure(body: bytes) -> None:
    reply = EmbeddingsReply()
    assert reply.feed_body(body) == []
    outcome = reply.finish()
    assert not isinstance(outcome, StreamResult)
    assert outcome.kind == ErrorKind.UPSTREAM_ERROR
    assert outcome.retryable and not outcome.in_stream
    assert "malformed reply" in outcome.message


def test_the_vectors_pass_through_as_their_bytes_came() -> None:
    """The reply's bytes are kept as they came (numbers as upstream wrote them, spacing,
    members codexd does not know), behind the event's `type`: the vectors are not decoded
    and encoded again."""
    body = (
        b' \n{ "object": "list", "data": [{"object": "embedding", "index": 0,'
        b' "embedding": [1.50000, -2e-3]}], "model": "m", "usage": {"prompt_tokens": 4,'
        b' "total_tokens": 4}, "extra": null}'
    )
    reply = EmbeddingsReply()
    (event,) = reply.feed_body(body)
    assert isinstance(event, UpstreamEvent)
    assert event.raw == b'{"type":"embeddings.result", "object"' + body.split(b'"object"', 1)[1]
    finished = reply.finish()
    assert isinstance(finished, StreamResult) and finished.usage is not None
    assert finished.usage.input_tokens == 4
    typed = decode_event(msgspec.json.decode(event.raw))
    assert isinstance(typed, EmbeddingsResult) and typed.data[0].embedding == [1.5, -0.002]
    # The gateway sends upstream's object back byte for byte.
    tr = EmbeddingsJSON()
    tr.feed(event)
    assert tr.body() == b"{" + body.split(b"{", 1)[1]


def test_upstreams_own_type_member_gives_way_to_the_events() -> None:
    reply = EmbeddingsReply()
    (event,) = reply.feed_body(msgspec.json.encode({"type": "other", **UPSTREAM}))
    assert event.raw.startswith(b'{"type":"embeddings.result",')
    assert event.data == {"type": "embeddings.result", **UPSTREAM}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({**UPSTREAM, "model": None}, "$.model"),
        ({"object": "list", "data": [], "usage": None}, "model"),
        ({**UPSTREAM, "data": [{"embedding": [0.5]}]}, "index"),
        ({**UPSTREAM, "data": [{"index": 0, "embedding": 0.5}]}, "index 0 is neither"),
        ({**UPSTREAM, "data": [{"index": 3, "embedding": {"x": 1}}]}, "index 3 is neither"),
    ],
)
def test_a_reply_of_the_wrong_shape_is_malformed(body: dict[str, Any], detail: str) -> None:
    reply = EmbeddingsReply()
    assert reply.feed_body(msgspec.json.encode(body)) == []
    outcome = reply.finish()
    assert not isinstance(outcome, StreamResult)
    assert outcome.kind == ErrorKind.UPSTREAM_ERROR and outcome.retryable
    assert "malformed reply" in outcome.message and detail in outcome.message


def test_the_cost_is_the_input_at_the_input_price() -> None:
    usage = EmbeddingsReply()
    usage.feed_body(msgspec.json.encode({**UPSTREAM, "usage": {"prompt_tokens": 2_000_000}}))
    result = usage.finish()
    assert isinstance(result, StreamResult) and result.usage is not None
    priced = Price(input=0.02, cached_input=0.02, output=0.0)
    assert cost_usd(result.usage, priced, FALLBACK_PRICE) == (pytest.approx(0.04), False)
    cost, estimated = cost_usd(result.usage, None, FALLBACK_PRICE)
    assert cost == pytest.approx(2 * FALLBACK_PRICE.input) and estimated is True


def test_a_completion_without_text_leaves_output_text_out() -> None:
    done = JobCompleted(usage=Usage(input_tokens=3), cost_usd=0.0, response_id=None)
    encoded = msgspec.json.decode(msgspec.json.encode(done))
    assert "output_text" not in encoded and encoded["type"] == "job.completed"


# --------------------------------------------------------------------------- the request


def test_the_body_goes_as_it_is_to_the_embeddings_endpoint() -> None:
    body = {"model": "text-embedding-3-large", "input": ["a"], "dimensions": 256, "user": "u"}
    defaults = RequestDefaults(
        model="gpt-5", reasoning_effort="high", model_params={"temperature": 0.2}
    )
    assert build_body("embeddings", body, defaults) == body
    assert endpoint_url("https://api.example/v1/", "embeddings", {"api-version": "2"}) == (
        "https://api.example/v1/embeddings?api-version=2"
    )


# --------------------------------------------------------------------------- the gateway


def test_the_gateway_sends_the_providers_object_as_it_came() -> None:
    tr = EmbeddingsJSON()
    reply = EmbeddingsReply()
    (event,) = reply.feed_body(msgspec.json.encode(UPSTREAM))
    for e in [{"type": "job.queued", "position": 0}, {"type": "job.started", "attempt": 1}]:
        assert tr.feed(job_event(e)) == b""
    assert tr.feed(event) == b""
    done = JobCompleted(usage=Usage(input_tokens=7, total_tokens=7), cost_usd=0.0, response_id=None)
    tr.feed(done)
    assert tr.done and tr.error is None and not tr.stream
    assert tr.body() == msgspec.json.encode(UPSTREAM)


def test_a_failed_embeddings_job_is_an_openai_error() -> None:
    tr = EmbeddingsJSON()
    error = RpcError(ErrorKind.RATE_LIMITED, "rate limited by upstream", retry_after_s=3.0)
    tr.feed(job_event({"type": "job.failed", "error": msgspec.to_builtins(error.to_object())}))
    assert tr.done and tr.error is not None and tr.error.status == 429
    assert ("retry-after", "3") in tr.error.headers


# --------------------------------------------------------------------------- the fake


def test_the_fakes_vectors_are_unit_float32_and_base64_says_the_same() -> None:
    body: dict[str, Any] = {"model": "m", "input": ["x", [1, 2, 3]], "dimensions": 40}
    floats = fo.embeddings_reply(body, "m")
    packed = fo.embeddings_reply({**body, "encoding_format": "base64"}, "m")
    assert floats["usage"] == {"prompt_tokens": 1 + 3, "total_tokens": 4}
    assert [d["index"] for d in floats["data"]] == [0, 1]
    for as_floats, as_base64 in zip(floats["data"], packed["data"], strict=True):
        vector = as_floats["embedding"]
        assert len(vector) == 40
        assert sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-5)
        raw = base64.b64decode(as_base64["embedding"])
        assert list(struct.unpack("<40f", raw)) == vector
    assert floats["data"][0]["embedding"] != floats["data"][1]["embedding"]
    assert fo.embeddings_reply(body, "m") == floats  # deterministic


# --------------------------------------------------------------------------- credentials


@pytest.mark.anyio
async def test_only_an_api_key_reaches_embeddings(tmp_path: Path) -> None:
    clock = Clock()
    write_doc(tmp_path, chatgpt_doc(make_tokens(exp=clock() + 3600)))
    chatgpt = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    assert chatgpt.check_credentials(OPENAI, "responses") is None
    refused = chatgpt.check_credentials(OPENAI, "embeddings")
    assert refused is not None and refused.kind == ErrorKind.UNAUTHENTICATED
    assert refused.message.startswith(
        "embeddings need an API key, but provider openai uses the ChatGPT login (ChatGPT serves "
        "no embeddings): run codexctl login --api-key"
    )
    # At run time too: a login made after the submit cannot send the job to ChatGPT.
    with pytest.raises(RpcError) as info:
        await chatgpt.credentials(OPENAI, api="embeddings")
    assert info.value.message == refused.message

    with_key = await make_session(
        tmp_path,
        FakeIssuer(clock, set()),
        clock,
        env={"OPENAI_API_KEY": "sk-env"},
        forced_login_method="api",
    )
    assert with_key.check_credentials(OPENAI, "embeddings") is None
    assert (await with_key.credentials(OPENAI, api="embeddings")).mode == "api_key"
