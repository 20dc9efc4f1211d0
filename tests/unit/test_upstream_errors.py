"""Classification of upstream failures into error kinds, with messages a person can act on."""

from __future__ import annotations

import json
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codexctl.protocol import ErrorKind, RpcError
from codexd.security.scrub import Scrubber, scrub
from codexd.upstream.errors import (
    UpstreamError,
    UpstreamFailure,
    classify_http,
    classify_stream_event,
    classify_transport,
    format_duration,
    is_event_stream,
    rfc3339,
    stream_ended_early,
    stream_event_too_large,
    stream_idle_timeout,
    transport_errors,
)

# 2026-11-25 12:53:00 UTC
NOW = datetime(2026, 11, 25, 12, 53, tzinfo=UTC).timestamp()
JSON = {"content-type": "application/json", "x-request-id": "req_123"}


def body(**error: Any) -> bytes:
    return json.dumps({"error": error}).encode()


def test_insufficient_quota_says_where_to_add_credits_and_is_final() -> None:
    err = classify_http(
        429,
        JSON,
        body(
            message="You exceeded your current quota, please check your plan and billing details.",
            type="insufficient_quota",
            param=None,
            code="insufficient_quota",
        ),
        NOW,
    )
    assert err.kind == ErrorKind.QUOTA_EXCEEDED
    assert "add credits at platform.openai.com/account/billing" in err.message
    assert not err.retryable
    assert (err.http_status, err.upstream_code, err.request_id) == (
        429,
        "insufficient_quota",
        "req_123",
    )


def test_usage_limit_names_the_reset_time_and_how_long_until_then() -> None:
    resets = datetime(2026, 11, 25, 14, 5, tzinfo=UTC).timestamp()
    err = classify_http(
        429,
        {"x-request-id": "r"},
        body(
            type="usage_limit_reached",
            message="The usage limit has been reached",
            plan_type="plus",
            resets_at=int(resets),
            resets_in_seconds=4320,
            eligible_promo=None,
        ),
        NOW,
        tz=UTC,
    )
    assert err.kind == ErrorKind.USAGE_LIMIT_REACHED
    assert "resets at 14:05 (in 1h12m)" in err.message
    assert "plus plan" in err.message
    assert err.resets_at == "2026-11-25T14:05:00.000Z"
    assert err.retry_after_s == pytest.approx(4320)
    assert not err.retryable


def test_usage_limit_with_only_resets_in_seconds_and_another_day() -> None:
    err = classify_http(
        429, {}, body(type="usage_limit_reached", resets_in_seconds=2 * 86400 + 3600), NOW, tz=UTC
    )
    assert "resets at 2026-11-27 13:53 (in 2d1h)" in err.message
    assert err.resets_at == "2026-11-27T13:53:00.000Z"


def test_usage_limit_without_a_reset_time() -> None:
    err = classify_http(429, {}, body(type="usage_limit_reached"), NOW)
    assert err.kind == ErrorKind.USAGE_LIMIT_REACHED
    assert "try again later" in err.message
    assert err.resets_at is None


def test_usage_not_included_points_to_the_upgrade() -> None:
    err = classify_http(429, {}, body(type="usage_not_included"), NOW)
    assert err.kind == ErrorKind.USAGE_LIMIT_REACHED
    assert err.upstream_code == "usage_not_included"
    assert "https://chatgpt.com/explore/plus" in err.message
    assert not err.retryable


def test_rate_limit_keeps_the_upstream_message_for_retry_hints() -> None:
    msg = (
        "Rate limit reached for gpt-5 in organization org-AAA on tokens per min (TPM): "
        "Limit 30000, Used 22999, Requested 12528. Please try again in 11.054s."
    )
    err = classify_http(
        429, JSON, body(message=msg, type="tokens", code="rate_limit_exceeded"), NOW
    )
    assert err.kind == ErrorKind.RATE_LIMITED
    assert err.retryable
    assert err.upstream_message == msg
    assert msg in err.message


def test_a_bare_429_is_a_rate_limit() -> None:
    err = classify_http(429, {}, b"", NOW)
    assert err.kind == ErrorKind.RATE_LIMITED
    assert err.message == "rate limited by upstream"


def test_context_length_exceeded_by_code_on_any_status() -> None:
    for status in (400, 413):
        err = classify_http(
            status,
            JSON,
            body(
                message="Your input exceeds the context window of this model.",
                type="invalid_request_error",
                param="input",
                code="context_length_exceeded",
            ),
            NOW,
        )
        assert err.kind == ErrorKind.CONTEXT_LENGTH_EXCEEDED
        assert "shorten the input" in err.message
        assert not err.retryable


def test_context_length_exceeded_by_message_on_400_without_code() -> None:
    err = classify_http(
        400,
        {},
        body(message="This model's maximum context length is 8192 tokens.", code=None),
        NOW,
    )
    assert err.kind == ErrorKind.CONTEXT_LENGTH_EXCEEDED


def test_other_4xx_is_bad_request_with_the_upstream_message() -> None:
    err = classify_http(
        404,
        JSON,
        body(
            message="The model `gpt-9` does not exist or you do not have access to it.",
            type="invalid_request_error",
            code="model_not_found",
        ),
        NOW,
    )
    assert err.kind == ErrorKind.BAD_REQUEST
    assert "The model `gpt-9` does not exist" in err.message
    assert "404 model_not_found" in err.message
    assert not err.retryable


def test_401_is_an_auth_candidate_and_never_echoes_the_key() -> None:
    # A proxy that quotes the key into every field, request id included.
    key = "sk-proj-abcd0123456789wxyz"
    err = classify_http(
        401,
        {**JSON, "x-request-id": f"req {key}"},
        body(message=f"Incorrect API key provided: {key}.", type=key, code=key),
        NOW,
    )
    assert err.kind == ErrorKind.AUTH_EXPIRED
    assert err.is_unauthorized
    # The job runner then names the credential itself; the code upstream sent is scrubbed.
    assert err.message == (
        "upstream rejected the credentials (401 [redacted]): check the credential in use "
        "(codexctl whoami)"
    )
    assert (err.upstream_code, err.request_id) == ("[redacted]", "req [redacted]")
    assert "sk-" not in repr(err)
    assert not err.retryable


def test_403_is_a_bad_request_and_cloudflare_blocks_are_named() -> None:
    err = classify_http(403, {}, body(message="Project does not have access", code=None), NOW)
    assert err.kind == ErrorKind.BAD_REQUEST
    assert not err.is_unauthorized
    assert "Project does not have access" in err.message
    cf = classify_http(
        403,
        {"content-type": "text/html"},
        b"<html>Sorry, you have been blocked. Cloudflare</html>",
        NOW,
    )
    assert "Cloudflare" in cf.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_a_retryable_upstream_error(status: int) -> None:
    err = classify_http(status, {}, b"<html><body>Bad gateway</body></html>", NOW)
    assert err.kind == ErrorKind.UPSTREAM_ERROR
    assert err.retryable
    assert str(status) in err.message
    assert "<html" not in err.message


def test_503_overloaded_says_so() -> None:
    err = classify_http(503, {}, body(code="server_is_overloaded", message="busy"), NOW)
    assert "at capacity" in err.message


def test_captive_portal_html_on_200_is_named() -> None:
    err = classify_http(
        200,
        {"content-type": "text/html; charset=utf-8"},
        b"<!DOCTYPE html><html><title>Hotel WiFi login</title></html>",
        NOW,
    )
    assert err.kind == ErrorKind.UPSTREAM_ERROR
    assert "HTML page" in err.message
    assert "captive portal" in err.message


def test_is_event_stream() -> None:
    assert is_event_stream({"Content-Type": "text/event-stream; charset=utf-8"})
    assert not is_event_stream({"content-type": "application/json"})
    assert not is_event_stream({})


def test_chatgpt_backend_detail_body_and_plain_text() -> None:
    err = classify_http(400, {}, b'{"detail": "Unsupported model"}', NOW)
    assert "Unsupported model" in err.message
    err = classify_http(418, {}, b"teapot says no", NOW)
    assert "teapot says no" in err.message
    err = classify_http(400, {}, b'{"error": "plain string error"}', NOW)
    assert "plain string error" in err.message


def test_request_id_falls_back_to_x_oai_request_id() -> None:
    assert classify_http(500, {"X-OAI-Request-ID": "oai_1"}, b"", NOW).request_id == "oai_1"


@settings(max_examples=300)
@given(status=st.integers(100, 599), raw=st.binary(max_size=300))
def test_any_body_classifies_without_crashing(status: int, raw: bytes) -> None:
    err = classify_http(status, {}, raw, NOW)
    assert isinstance(err.kind, ErrorKind)
    assert err.message


@settings(max_examples=300)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["error", "message", "code", "type", "resets_at", "detail", "x"]),
                inner,
                max_size=4,
            )
        ),
        max_leaves=10,
    ),
    status=st.sampled_from([400, 401, 429, 500]),
)
def test_any_json_body_classifies_without_crashing(doc: Any, status: int) -> None:
    assert classify_http(status, {}, json.dumps(doc).encode(), NOW).message


# --------------------------------------------------------------------------- in-stream failures


def test_response_failed_with_server_error_is_retryable_in_stream() -> None:
    err = classify_stream_event(
        {
            "type": "response.failed",
            "sequence_number": 5,
            "response": {
                "id": "resp_1",
                "status": "failed",
                "error": {"code": "server_error", "message": "The server had an error"},
            },
        }
    )
    assert err.kind == ErrorKind.UPSTREAM_ERROR
    assert err.retryable
    assert err.in_stream
    assert err.upstream_code == "server_error"
    assert "The server had an error" in err.message


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        ("insufficient_quota", ErrorKind.QUOTA_EXCEEDED, False),
        ("context_length_exceeded", ErrorKind.CONTEXT_LENGTH_EXCEEDED, False),
        ("usage_not_included", ErrorKind.USAGE_LIMIT_REACHED, False),
        ("rate_limit_exceeded", ErrorKind.RATE_LIMITED, True),
        ("invalid_prompt", ErrorKind.BAD_REQUEST, False),
        ("something_new", ErrorKind.UPSTREAM_ERROR, True),
    ],
)
def test_response_failed_codes(code: str, kind: ErrorKind, retryable: bool) -> None:
    err = classify_stream_event(
        {"type": "response.failed", "response": {"error": {"code": code, "message": "m"}}}
    )
    assert (err.kind, err.retryable, err.upstream_code) == (kind, retryable, code)


def test_error_event_with_members_at_the_top_and_nested() -> None:
    top = classify_stream_event(
        {"type": "error", "code": "rate_limit_exceeded", "message": "try again in 20ms"}
    )
    assert top.kind == ErrorKind.RATE_LIMITED
    assert top.upstream_message == "try again in 20ms"
    nested = classify_stream_event(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": "context_length_exceeded"},
        }
    )
    assert nested.kind == ErrorKind.CONTEXT_LENGTH_EXCEEDED


def test_chat_error_chunk() -> None:
    err = classify_stream_event({"error": {"message": "overloaded", "type": "server_error"}})
    assert err.kind == ErrorKind.UPSTREAM_ERROR
    assert "overloaded" in err.message


def test_usage_limit_in_stream_uses_now() -> None:
    err = classify_stream_event(
        {"type": "error", "error": {"type": "usage_limit_reached", "resets_in_seconds": 60}},
        NOW,
        tz=UTC,
    )
    assert "resets at 12:54 (in 1m)" in err.message


def test_stream_failures_are_stream_errors() -> None:
    for err in (stream_ended_early(), stream_idle_timeout(300), stream_event_too_large(1024)):
        assert err.kind == ErrorKind.STREAM_ERROR
        assert err.retryable
        assert err.in_stream
    assert "5m" in stream_idle_timeout(300).message
    assert "1024 bytes" in stream_event_too_large(1024).message


# --------------------------------------------------------------------------- transport


def _request() -> httpx.Request:
    return httpx.Request("POST", "https://api.openai.com/v1/responses")


def _wrapped(exc_type: type[httpx.TransportError], cause: BaseException, text: str) -> Exception:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise exc_type(text, request=_request()) from inner
    except httpx.TransportError as exc:
        return exc


def test_dns_failure() -> None:
    exc = _wrapped(
        httpx.ConnectError, socket.gaierror(-2, "Name or service not known"), "[Errno -2] ..."
    )
    err = classify_transport(exc)
    assert err.kind == ErrorKind.UPSTREAM_ERROR
    assert err.retryable
    assert err.message.startswith("cannot resolve api.openai.com")


def test_dns_failure_detected_by_text_alone() -> None:
    exc = httpx.ConnectError("[Errno -3] Temporary failure in name resolution")
    assert classify_transport(exc).message.startswith("cannot resolve upstream")


def test_connection_refused_tls_and_timeouts() -> None:
    refused = _wrapped(
        httpx.ConnectError, ConnectionRefusedError(111, "refused"), "All connection attempts failed"
    )
    assert "refused" in classify_transport(refused).message
    tls = _wrapped(
        httpx.ConnectError,
        ssl.SSLCertVerificationError("certificate verify failed: self-signed certificate"),
        "bad cert",
    )
    assert "TLS certificate" in classify_transport(tls).message
    assert "timed out connecting" in classify_transport(httpx.ConnectTimeout("t")).message
    assert "did not answer" in classify_transport(httpx.ReadTimeout("t")).message
    closed = classify_transport(httpx.RemoteProtocolError("Server disconnected"))
    assert "closed the connection" in closed.message
    assert not closed.in_stream


def test_drops_after_the_stream_started_are_stream_errors() -> None:
    for exc in (
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ReadError("connection reset"),
        httpx.ReadTimeout("timed out"),
    ):
        err = classify_transport(exc, in_stream=True)
        assert err.kind == ErrorKind.STREAM_ERROR
        assert err.in_stream
        assert err.message.startswith("stream disconnected before completion")


def test_transport_errors_context_manager_maps_and_chains() -> None:
    with pytest.raises(UpstreamFailure) as info, transport_errors(in_stream=True):
        raise httpx.ReadError("reset by peer")
    assert info.value.error.kind == ErrorKind.STREAM_ERROR
    assert isinstance(info.value.__cause__, httpx.ReadError)
    with pytest.raises(ValueError, match="not ours"), transport_errors():
        raise ValueError("not ours")


def test_unsupported_protocol_is_a_config_problem() -> None:
    err = classify_transport(
        httpx.UnsupportedProtocol("Request URL is missing an 'http://' prefix")
    )
    assert err.kind == ErrorKind.BAD_REQUEST
    assert "base_url" in err.message


# --------------------------------------------------------------------------- values


def test_to_rpc_error_carries_the_data_members() -> None:
    err = classify_http(429, JSON, body(type="usage_limit_reached", resets_in_seconds=60), NOW)
    rpc = err.to_rpc_error()
    assert isinstance(rpc, RpcError)
    assert rpc.code == -32022
    assert rpc.data.kind == "usage_limit_reached"
    assert rpc.data.retryable is False
    assert rpc.data.http_status == 429
    assert rpc.data.request_id == "req_123"
    assert rpc.data.upstream_code == "usage_limit_reached"
    assert rpc.data.resets_at == "2026-11-25T12:54:00.000Z"
    assert rpc.data.retry_after_s == pytest.approx(60)


def test_upstream_error_is_frozen() -> None:
    err = stream_ended_early()
    with pytest.raises(AttributeError):
        err.kind = ErrorKind.BAD_REQUEST  # type: ignore[misc]
    assert isinstance(err, UpstreamError)


def test_scrub_removes_credentials() -> None:
    text = scrub(
        "key sk-proj-AbC123xyz789 token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig "
        "header Authorization: Bearer abcdefgh12345678"
    )
    assert "sk-proj" not in text
    assert "eyJ" not in text
    assert "abcdefgh12345678" not in text
    assert len(scrub("x" * 5000)) == 500


def test_formatting_helpers() -> None:
    assert rfc3339(0.1234) == "1970-01-01T00:00:00.123Z"
    assert [format_duration(s) for s in (0, 45, 61, 3600, 4320, 90000, 172800)] == [
        "0s",
        "45s",
        "2m",
        "1h",
        "1h12m",
        "1d1h",
        "2d",
    ]


def test_json_on_200_names_what_came_and_what_upstream_said() -> None:
    err = classify_http(200, JSON, body(message="proxy says hello"), NOW)
    assert err.kind == ErrorKind.UPSTREAM_ERROR
    assert "200 with application/json instead of an event stream: proxy says hello" in err.message


@pytest.mark.parametrize("padding", [4076, 4084, 4090])
def test_a_sent_value_straddling_the_shown_length_leaves_no_piece_behind(padding: int) -> None:
    # Whitespace collapses, so a secret far into the body lands inside what is shown; it must
    # be cut from the whole body first, not from a prefix that ends inside it.
    secret = "customSecretValue0123456789abcdef"
    scrubber = Scrubber.for_request({"X-Api-Key": secret}, "https://up.example/v1/responses")
    body = b" " * padding + secret.encode()
    err = classify_http(500, {"content-type": "text/plain"}, body, 0.0, scrubber=scrubber)
    assert "customSecret" not in repr(err)
    assert "[redacted]" in err.message
