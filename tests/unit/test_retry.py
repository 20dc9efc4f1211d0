"""The retry policy: one row per case, exact attempt counts, injected randomness."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codexctl.protocol import ErrorKind
from codexd.upstream.errors import (
    UpstreamError,
    classify_http,
    classify_stream_event,
    classify_transport,
    stream_ended_early,
    stream_idle_timeout,
)
from codexd.upstream.retry import (
    Attempts,
    GiveUp,
    Retry,
    RetryPolicy,
    backoff_s,
    decide,
    parse_retry_after,
    parse_try_again_in,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
HALF = RetryPolicy(random=lambda: 0.5)  # jitter factor exactly 1.0


def http(status: int, **error: Any) -> UpstreamError:
    return classify_http(status, {}, json.dumps({"error": error}).encode(), NOW)


def run(
    failures: list[tuple[UpstreamError, Mapping[str, str]]], policy: RetryPolicy
) -> tuple[int, list[Retry], UpstreamError | None]:
    """Feed failures in order as if each attempt failed with the next one; stop at a give-up.

    Returns (attempts made, the retries, the final error or None when failures ran out
    and the next attempt would succeed)."""
    attempts = Attempts()
    retries: list[Retry] = []
    for error, headers in failures:
        decision = decide(attempts, error, headers, NOW, policy)
        if isinstance(decision, GiveUp):
            return attempts.made, retries, decision.error
        retries.append(decision)
        attempts = decision.attempts
    return attempts.made, retries, None


def test_three_500s_with_two_retries_give_up_after_three_attempts() -> None:
    policy = RetryPolicy(request_max_retries=2, random=lambda: 0.5)
    made, retries, final = run([(http(500), {})] * 5, policy)
    assert made == 3
    assert [r.attempt for r in retries] == [2, 3]
    assert [r.delay_s for r in retries] == pytest.approx([0.2, 0.4])
    assert final is not None
    assert final.kind == ErrorKind.UPSTREAM_ERROR
    assert final.message.endswith("(gave up after 3 attempts)")


def test_two_500s_then_success_with_two_retries() -> None:
    made, retries, final = run([(http(500), {})] * 2, RetryPolicy(request_max_retries=2))
    assert (made, len(retries), final) == (3, 2, None)


def test_zero_retries_fails_at_once() -> None:
    made, _, final = run([(http(502), {})], RetryPolicy(request_max_retries=0))
    assert made == 1
    assert final is not None
    assert final.message.endswith("(gave up after 1 attempt)")


@pytest.mark.parametrize(
    "error",
    [
        http(429, type="insufficient_quota", code="insufficient_quota"),
        http(429, type="usage_limit_reached", resets_in_seconds=60),
        http(429, type="usage_not_included"),
        http(400, type="invalid_request_error", code="context_length_exceeded"),
        http(400, message="Unsupported parameter: 'temperature'", code="unsupported_parameter"),
        http(404, code="model_not_found"),
        http(401, code="invalid_api_key"),
        http(403),
        http(422),
        classify_stream_event(
            {"type": "response.failed", "response": {"error": {"code": "insufficient_quota"}}}
        ),
    ],
    ids=lambda e: f"{e.http_status}-{e.upstream_code}",
)
def test_never_retried(error: UpstreamError) -> None:
    made, retries, final = run([(error, {"retry-after": "1"})] * 3, HALF)
    assert (made, retries) == (1, [])
    assert final == error


def test_usage_limit_is_never_retried_even_with_a_short_reset() -> None:
    error = http(429, type="usage_limit_reached", resets_in_seconds=1)
    assert isinstance(decide(Attempts(), error, {}, NOW, HALF), GiveUp)


# --------------------------------------------------------------------------- the delay


def test_retry_after_ms_wins() -> None:
    d = decide(Attempts(), http(429), {"retry-after-ms": "1500", "retry-after": "9"}, NOW, HALF)
    assert isinstance(d, Retry)
    assert d.delay_s == pytest.approx(1.5)
    assert d.server_requested


def test_retry_after_seconds_and_float() -> None:
    for value, expected in (("2", 2.0), ("0.25", 0.25), ("0", 0.0)):
        d = decide(Attempts(), http(429), {"Retry-After": value}, NOW, HALF)
        assert isinstance(d, Retry)
        assert d.delay_s == pytest.approx(expected)


def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    d = decide(Attempts(), http(503), {"retry-after": when}, NOW, HALF)
    assert isinstance(d, Retry)
    assert d.delay_s == pytest.approx(30)


def test_try_again_in_the_message() -> None:
    msg = (
        "Rate limit reached for gpt-5 on tokens per min (TPM). Please try again in 1.5s. Visit ..."
    )
    d = decide(Attempts(), http(429, message=msg, code="rate_limit_exceeded"), {}, NOW, HALF)
    assert isinstance(d, Retry)
    assert d.delay_s == pytest.approx(1.5)
    ms = http(429, message="Please try again in 6ms.", code="rate_limit_exceeded")
    d = decide(Attempts(), ms, {}, NOW, HALF)
    assert isinstance(d, Retry)
    assert d.delay_s == pytest.approx(0.006)


def test_headers_win_over_the_message() -> None:
    err = http(429, message="try again in 30s", code="rate_limit_exceeded")
    d = decide(Attempts(), err, {"retry-after": "2"}, NOW, HALF)
    assert isinstance(d, Retry)
    assert d.delay_s == 2


def test_backoff_when_upstream_gives_no_hint() -> None:
    delays = [backoff_s(n, HALF) for n in range(1, 9)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 8.0, 8.0])
    low = RetryPolicy(random=lambda: 0.0)
    high = RetryPolicy(random=lambda: 1.0)
    assert backoff_s(1, low) == pytest.approx(0.18)
    assert backoff_s(1, high) == pytest.approx(0.22)
    assert backoff_s(1000, high) == pytest.approx(8.8)
    d = decide(Attempts(request_retries=2), http(500), {}, NOW, HALF)
    assert isinstance(d, Retry)
    assert d.delay_s == pytest.approx(0.8)
    assert not d.server_requested


def test_a_wait_beyond_max_retry_wait_fails_now_with_retry_after() -> None:
    policy = RetryPolicy(max_retry_wait_s=120, random=lambda: 0.5)
    d = decide(Attempts(), http(429), {"retry-after": "300"}, NOW, policy)
    assert isinstance(d, GiveUp)
    assert d.error.kind == ErrorKind.RATE_LIMITED
    assert d.error.retry_after_s == 300
    assert "wait 5m" in d.error.message
    assert "max_retry_wait_s (2m)" in d.error.message
    assert "(in 5m)" in d.error.message


def test_still_rate_limited_after_the_retries_keeps_the_last_retry_after() -> None:
    policy = RetryPolicy(request_max_retries=2, random=lambda: 0.5)
    made, retries, final = run([(http(429), {"retry-after": "1"})] * 3, policy)
    assert made == 3
    assert [r.delay_s for r in retries] == [1, 1]
    assert final is not None
    assert final.kind == ErrorKind.RATE_LIMITED
    assert final.retry_after_s == 1
    assert final.to_rpc_error().code == -32020


# --------------------------------------------------------------------------- two counters


def test_stream_drops_count_against_stream_max_retries() -> None:
    policy = RetryPolicy(request_max_retries=0, stream_max_retries=3, random=lambda: 0.5)
    made, retries, final = run([(stream_ended_early(), {})] * 10, policy)
    assert made == 4
    assert retries[-1].attempts == Attempts(request_retries=0, stream_retries=3)
    assert final is not None
    assert final.kind == ErrorKind.STREAM_ERROR
    assert final.message.endswith("(gave up after 4 attempts)")


def test_idle_timeouts_and_mid_stream_transport_errors_are_stream_retries() -> None:
    errors = [
        stream_idle_timeout(300),
        classify_transport(httpx.ReadError("reset"), in_stream=True),
        classify_stream_event(
            {"type": "response.failed", "response": {"error": {"code": "server_error"}}}
        ),
    ]
    attempts = Attempts()
    for err in errors:
        d = decide(attempts, err, {}, NOW, HALF)
        assert isinstance(d, Retry)
        attempts = d.attempts
    assert attempts == Attempts(request_retries=0, stream_retries=3)


def test_the_counters_are_separate() -> None:
    policy = RetryPolicy(request_max_retries=1, stream_max_retries=1, random=lambda: 0.5)
    connect = classify_transport(httpx.ConnectError("[Errno 111] Connection refused"))
    made, retries, final = run(
        [(http(500), {}), (stream_ended_early(), {}), (connect, {}), (http(500), {})], policy
    )
    # 500 → retry (request 1/1); drop → retry (stream 1/1); connect error → request budget spent
    assert made == 3
    assert [r.attempts for r in retries] == [Attempts(1, 0), Attempts(1, 1)]
    assert final is not None
    assert final.kind == ErrorKind.UPSTREAM_ERROR


def test_stream_retries_use_backoff_from_their_own_count() -> None:
    d = decide(Attempts(request_retries=3, stream_retries=0), stream_ended_early(), {}, NOW, HALF)
    assert isinstance(d, Retry)
    assert d.delay_s == pytest.approx(0.2)


def test_rate_limit_in_the_stream_honours_try_again_in() -> None:
    err = classify_stream_event(
        {
            "type": "response.failed",
            "response": {
                "error": {"code": "rate_limit_exceeded", "message": "Please try again in 2s"}
            },
        }
    )
    d = decide(Attempts(), err, {}, NOW, HALF)
    assert isinstance(d, Retry)
    assert (d.delay_s, d.attempts) == (2.0, Attempts(stream_retries=1))


# --------------------------------------------------------------------------- parsing


def test_parse_retry_after_rejects_garbage() -> None:
    assert parse_retry_after({}, NOW) is None
    assert parse_retry_after({"retry-after": "soon"}, NOW) is None
    assert parse_retry_after({"retry-after": "nan"}, NOW) is None
    assert parse_retry_after({"retry-after-ms": "inf", "retry-after": "3"}, NOW) == 3
    assert parse_retry_after({"retry-after": "-5"}, NOW) == 0
    past = format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)
    assert parse_retry_after({"retry-after": past}, NOW) == 0


def test_parse_try_again_in_variants() -> None:
    assert parse_try_again_in("Please try again in 11.054s.") == pytest.approx(11.054)
    assert parse_try_again_in("please TRY AGAIN IN 20 seconds") == 20
    assert parse_try_again_in("try again in 1 second") == 1
    assert parse_try_again_in("try again in 250ms") == pytest.approx(0.25)
    assert parse_try_again_in("try again later") is None
    assert parse_try_again_in(None) is None


@settings(max_examples=300)
@given(
    kinds=st.lists(st.sampled_from(["500", "429", "drop", "connect"]), max_size=40),
    r=st.integers(0, 6),
    s=st.integers(0, 6),
    rnd=st.floats(0, 1),
    retry_after=st.none() | st.floats(0, 500),
)
def test_attempts_are_bounded_and_delays_are_sane(
    kinds: list[str], r: int, s: int, rnd: float, retry_after: float | None
) -> None:
    policy = RetryPolicy(request_max_retries=r, stream_max_retries=s, random=lambda: rnd)
    errors = {
        "500": http(500),
        "429": http(429),
        "drop": stream_ended_early(),
        "connect": classify_transport(httpx.ConnectError("refused")),
    }
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    made, retries, final = run([(errors[k], headers) for k in kinds], policy)
    assert made <= 1 + r + s
    assert made == 1 + len(retries)
    for retry in retries:
        assert 0 <= retry.delay_s <= max(policy.max_retry_wait_s, policy.backoff_max_s * 1.1)
    if final is not None and retry_after is not None:
        assert final.retry_after_s == pytest.approx(retry_after)


# --------------------------------------------------------------------------- edges (mutation)


def test_a_retry_carries_the_error_that_caused_it() -> None:
    error = http(500)
    d = decide(Attempts(), error, {}, NOW, HALF)
    assert isinstance(d, Retry)
    assert d.error == error


def test_a_wait_of_exactly_max_retry_wait_s_is_still_waited_for() -> None:
    policy = RetryPolicy(max_retry_wait_s=120, random=lambda: 0.5)
    d = decide(Attempts(), http(429), {"retry-after": "120"}, NOW, policy)
    assert isinstance(d, Retry)
    assert d.delay_s == 120


def test_an_error_marked_not_retryable_is_not_retried_whatever_its_kind() -> None:
    for kind in (ErrorKind.RATE_LIMITED, ErrorKind.UPSTREAM_ERROR, ErrorKind.STREAM_ERROR):
        error = UpstreamError(kind=kind, message="no", retryable=False)
        assert decide(Attempts(), error, {}, NOW, HALF) == GiveUp(error)


def test_giving_up_without_a_new_hint_keeps_the_errors_own_retry_after() -> None:
    error = UpstreamError(
        kind=ErrorKind.RATE_LIMITED, message="slow down", retryable=True, retry_after_s=7.0
    )
    d = decide(Attempts(request_retries=4), error, {}, NOW, HALF)
    assert isinstance(d, GiveUp)
    assert d.error.retry_after_s == 7.0
    assert d.error.message == "slow down (gave up after 5 attempts)"


def test_retry_after_ms_below_a_second_is_kept_as_is() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}, NOW) == pytest.approx(0.25)
    assert parse_retry_after({"retry-after-ms": "-3"}, NOW) == 0
