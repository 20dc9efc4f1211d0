"""The retry policy as one pure function: what to do after a failed attempt.

Request-level failures (429 `rate_limit_exceeded`, 5xx, connection errors before the stream
starts) spend `request_max_retries`; failures after the stream started (drops, idle timeouts,
a `response.failed` mid-stream) spend `stream_max_retries`. The two counters are separate and
never reset, so a job makes at most 1 + request_max_retries + stream_max_retries attempts.

Delay, first that applies: `retry-after-ms`, `retry-after` (seconds or an HTTP date), "try
again in Xs|Xms" in upstream's message, else exponential backoff with jitter. Backoff numbers
are Codex CLI's (200 ms × 2^(n−1) × U(0.9, 1.1)), capped at the OpenAI
SDK's 8 s ceiling so that a large retry count cannot mean hours.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

import msgspec

from codexctl.protocol import ErrorKind
from codexd.upstream.errors import (
    NEVER_RETRIED_CODES,
    UpstreamError,
    format_at,
    format_duration,
    lower_headers,
)

# Codex's pattern (sse/responses.rs::try_parse_retry_after), seconds or milliseconds.
_TRY_AGAIN: Final = re.compile(r"(?i)try again in\s*(\d+(?:\.\d+)?)\s*(ms|s|seconds?)\b")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    request_max_retries: int = 4
    stream_max_retries: int = 5
    max_retry_wait_s: float = 120.0
    backoff_base_s: float = 0.2
    backoff_factor: float = 2.0
    backoff_max_s: float = 8.0
    jitter: tuple[float, float] = (0.9, 1.1)
    random: Callable[[], float] = random.random


class Attempts(msgspec.Struct, frozen=True):
    """Retries spent so far, per counter."""

    request_retries: int = 0
    stream_retries: int = 0

    @property
    def made(self) -> int:
        """Attempts made so far (the first attempt is not a retry)."""
        return 1 + self.request_retries + self.stream_retries


class Retry(msgspec.Struct, frozen=True):
    """Wait `delay_s`, then make attempt number `attempt` (for `job.retrying`)."""

    delay_s: float
    attempts: Attempts
    error: UpstreamError
    server_requested: bool

    @property
    def attempt(self) -> int:
        return self.attempts.made


class GiveUp(msgspec.Struct, frozen=True):
    """Fail the job with `error`."""

    error: UpstreamError


RetryDecision = Retry | GiveUp


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds upstream asks us to wait, from `retry-after-ms` or `retry-after`, or None."""
    h = lower_headers(headers)
    ms = _number(h.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000.0)
    value = h.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def parse_try_again_in(message: str | None) -> float | None:
    """ "Please try again in 11.054s" → 11.054; "in 6ms" → 0.006."""
    if not message:
        return None
    m = _TRY_AGAIN.search(message)
    if m is None:
        return None
    value = float(m.group(1))
    return value / 1000.0 if m.group(2).lower() == "ms" else value


def requested_wait_s(error: UpstreamError, headers: Mapping[str, str], now: float) -> float | None:
    """The wait upstream asked for, by any of its means; the rate budget pauses for it too."""
    wait = parse_retry_after(headers, now)
    if wait is None:
        wait = parse_try_again_in(error.upstream_message)
    return wait


def backoff_s(retry_number: int, policy: RetryPolicy) -> float:
    """Delay before retry number `retry_number` (1-based) when upstream gave no hint."""
    exponent = min(retry_number - 1, 64)
    base = min(policy.backoff_base_s * policy.backoff_factor**exponent, policy.backoff_max_s)
    low, high = policy.jitter
    return base * (low + (high - low) * policy.random())


def is_retryable(error: UpstreamError) -> bool:
    if error.upstream_code in NEVER_RETRIED_CODES:
        return False
    return error.retryable and error.kind in (
        ErrorKind.RATE_LIMITED,
        ErrorKind.UPSTREAM_ERROR,
        ErrorKind.STREAM_ERROR,
    )


def decide(
    attempts: Attempts,
    error: UpstreamError,
    headers: Mapping[str, str],
    now: float,
    policy: RetryPolicy,
) -> RetryDecision:
    """After the attempt that failed with `error` (`headers`: its response's, or empty).

    `now` is the wall clock in UNIX seconds (for HTTP-date `retry-after`).
    """
    if not is_retryable(error):
        return GiveUp(error)
    in_stream = error.in_stream or error.kind == ErrorKind.STREAM_ERROR
    spent = attempts.stream_retries if in_stream else attempts.request_retries
    limit = policy.stream_max_retries if in_stream else policy.request_max_retries
    wait = requested_wait_s(error, headers, now)

    if spent >= limit:
        return GiveUp(_exhausted(error, attempts.made, wait))
    if wait is not None and wait > policy.max_retry_wait_s:
        return GiveUp(_wait_too_long(error, wait, now, policy))
    if in_stream:
        nxt = msgspec.structs.replace(attempts, stream_retries=spent + 1)
    else:
        nxt = msgspec.structs.replace(attempts, request_retries=spent + 1)
    delay = wait if wait is not None else backoff_s(spent + 1, policy)
    return Retry(delay_s=delay, attempts=nxt, error=error, server_requested=wait is not None)


def _exhausted(error: UpstreamError, made: int, wait: float | None) -> UpstreamError:
    plural = "attempt" if made == 1 else "attempts"
    return msgspec.structs.replace(
        error,
        message=f"{error.message} (gave up after {made} {plural})",
        retry_after_s=wait if wait is not None else error.retry_after_s,
    )


def _wait_too_long(
    error: UpstreamError, wait: float, now: float, policy: RetryPolicy
) -> UpstreamError:
    limit = format_duration(policy.max_retry_wait_s)
    return msgspec.structs.replace(
        error,
        message=(
            f"{error.message}; upstream asks to wait {format_duration(wait)}, longer than "
            f"max_retry_wait_s ({limit}): try again at {format_at(now + wait, now)}"
        ),
        retry_after_s=wait,
    )


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
