from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexctl.results import Credits, LimitWindow, UpstreamLimits, UsageWindow
from codexd.limits.headers import (
    RateLimitHeaders,
    parse_duration,
    parse_rate_limit_headers,
    retry_after_from_message,
    rfc3339,
)

WALL = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def at(offset_s: float) -> str:
    text = rfc3339(WALL + offset_s)
    assert text is not None
    return text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("12ms", 0.012),
        ("2s81ms", 2.081),
        ("1h2m3.5s", 3723.5),
        ("5h50m30ms", 5 * 3600 + 50 * 60 + 0.03),
        ("0s", 0.0),
        ("1.5", 1.5),
        ("7", 7.0),
        ("250us", 0.00025),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "-1s", "1s2", "1 s", "abc", "1e3s", "m5"])
def test_malformed_durations_are_unknown(text: str) -> None:
    assert parse_duration(text) is None


@given(
    h=st.integers(0, 99),
    m=st.integers(0, 59),
    s=st.floats(0, 59.999, allow_nan=False).map(lambda x: round(x, 3)),
    ms=st.integers(0, 999),
)
def test_duration_round_trip(h: int, m: int, s: float, ms: int) -> None:
    text = f"{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


@given(st.text(max_size=30))
def test_parse_duration_never_raises(text: str) -> None:
    result = parse_duration(text)
    assert result is None or result >= 0


def test_openai_headers_become_windows() -> None:
    parsed = parse_rate_limit_headers(
        {
            "X-RateLimit-Limit-Requests": "60",
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        wall_now=WALL,
    )
    assert parsed.requests == LimitWindow(60, 59, 1.0, at(1))
    assert parsed.tokens == LimitWindow(150000, 149984, 360.0, at(360))
    assert parsed.primary is None
    assert parsed.retry_after_s is None


def test_azure_unknown_values_are_dropped() -> None:
    parsed = parse_rate_limit_headers(
        {"x-ratelimit-limit-tokens": "0", "x-ratelimit-remaining-tokens": "-1"}, wall_now=WALL
    )
    assert parsed.tokens is None
    assert parsed.is_empty()


def test_remaining_above_limit_is_clamped() -> None:
    parsed = parse_rate_limit_headers(
        {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "50"}, wall_now=WALL
    )
    assert parsed.requests == LimitWindow(limit=10, remaining=10)


def test_retry_after_ms_wins_over_retry_after() -> None:
    parsed = parse_rate_limit_headers({"retry-after-ms": "1500", "retry-after": "9"}, wall_now=WALL)
    assert parsed.retry_after_s == 1.5


@pytest.mark.parametrize(
    ("value", "seconds"), [("1", 1.0), ("0.25", 0.25), ("0", 0.0), ("-3", None), ("soon", None)]
)
def test_retry_after_seconds(value: str, seconds: float | None) -> None:
    assert parse_rate_limit_headers({"retry-after": value}, wall_now=WALL).retry_after_s == seconds


def test_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(WALL + 30, UTC)
    header = {"Retry-After": format_datetime(when, usegmt=True)}
    parsed = parse_rate_limit_headers(header, wall_now=WALL)
    assert parsed.retry_after_s == pytest.approx(30)
    past = format_datetime(datetime.fromtimestamp(WALL - 30, UTC), usegmt=True)
    assert parse_rate_limit_headers({"retry-after": past}, wall_now=WALL).retry_after_s == 0.0


def test_chatgpt_429_headers_as_seen_upstream() -> None:
    # The header set of a real ChatGPT-plan 429, in its original letter case.
    parsed = parse_rate_limit_headers(
        {
            "X-Codex-Active-Limit": "premium",
            "X-Codex-Plan-Type": "plus",
            "X-Codex-Primary-Used-Percent": "100",
            "X-Codex-Primary-Window-Minutes": "300",
            "X-Codex-Primary-Reset-After-Seconds": "4000",
            "X-Codex-Primary-Reset-At": str(int(WALL + 3600)),
            "X-Codex-Secondary-Used-Percent": "42.5",
            "X-Codex-Secondary-Window-Minutes": "10080",
            "X-Codex-Secondary-Reset-At": str(int(WALL + 86400)),
            "X-Codex-Primary-Over-Secondary-Limit-Percent": "0",
            "X-Codex-Credits-Has-Credits": "False",
            "X-Codex-Credits-Balance": "0",
            "X-Codex-Credits-Unlimited": "False",
        },
        wall_now=WALL,
    )
    # reset-at (the newer header) wins over reset-after-seconds
    assert parsed.primary == UsageWindow(100.0, 300, "2026-05-01T13:00:00Z")
    assert parsed.secondary == UsageWindow(42.5, 10080, "2026-05-02T12:00:00Z")
    assert parsed.credits == Credits(has_credits=False, unlimited=False, balance="0")
    assert parsed.active_limit == "premium"


def test_chatgpt_reset_after_seconds_when_no_reset_at() -> None:
    parsed = parse_rate_limit_headers(
        {
            "x-codex-primary-used-percent": "8",
            "x-codex-primary-window-minutes": "299",
            "x-codex-primary-reset-after-seconds": "6625",
            "x-codex-credits-unlimited": "1",
        },
        wall_now=WALL,
    )
    assert parsed.primary == UsageWindow(8.0, 299, at(6625))
    assert parsed.credits == Credits(unlimited=True)


def test_an_empty_window_is_not_reported() -> None:
    parsed = parse_rate_limit_headers(
        {"x-codex-primary-used-percent": "0", "x-codex-primary-window-minutes": "0"}, wall_now=WALL
    )
    assert parsed.primary is None
    bad = parse_rate_limit_headers({"x-codex-primary-used-percent": "lots"}, wall_now=WALL)
    assert bad.primary is None


def test_merged_view_keeps_families_the_response_did_not_send() -> None:
    first = parse_rate_limit_headers(
        {"x-ratelimit-remaining-requests": "5", "x-codex-primary-used-percent": "10"}, wall_now=WALL
    )
    second = parse_rate_limit_headers({"x-ratelimit-remaining-requests": "4"}, wall_now=WALL)
    view = second.merged_into(first.merged_into(UpstreamLimits()))
    assert view.requests == LimitWindow(remaining=4)
    assert view.primary == UsageWindow(10.0)


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Rate limit reached for gpt-4o. Please try again in 6.5s. Visit ...", 6.5),
        ("Please try again in 20ms.", 0.02),
        ("Please try again in 1m30s.", 90.0),
        ("try again in 20 seconds", 20.0),
        ("Try again in 2 minutes", 120.0),
        ("You exceeded your current quota", None),
    ],
)
def test_try_again_in_messages(message: str, seconds: float | None) -> None:
    result = retry_after_from_message(message)
    assert result == (pytest.approx(seconds) if seconds is not None else None)


header_names = st.sampled_from(
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "retry-after",
        "retry-after-ms",
        "x-codex-primary-used-percent",
        "x-codex-primary-window-minutes",
        "x-codex-primary-reset-at",
        "x-codex-primary-reset-after-seconds",
        "x-codex-secondary-used-percent",
        "x-codex-credits-has-credits",
        "x-codex-credits-balance",
    ]
)
header_values = st.one_of(
    st.text(max_size=20),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


@given(st.dictionaries(header_names, header_values, max_size=10))
def test_any_header_values_parse_without_raising(headers: dict[str, str]) -> None:
    parsed = parse_rate_limit_headers(headers, wall_now=WALL)
    assert isinstance(parsed, RateLimitHeaders)
    for window in (parsed.requests, parsed.tokens):
        if window is not None:
            assert window.limit is None or window.limit > 0
            assert window.remaining is None or window.remaining >= 0
            assert window.reset_after_s is None or window.reset_after_s >= 0
    assert parsed.retry_after_s is None or parsed.retry_after_s >= 0
