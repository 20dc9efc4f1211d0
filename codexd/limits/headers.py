"""Rate-limit facts from upstream response headers, as values (no I/O).

- OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; resets are Go durations
  ("1s", "6m0s", "20ms", "2s81ms", "1h2m3.5s"). Azure sends -1/0 for "unknown": such values
  are dropped, never trusted.
- `retry-after-ms` wins over `retry-after` (seconds or an HTTP date), as in the OpenAI SDK.
- ChatGPT (Codex backend): `x-codex-{primary,secondary}-{used-percent,window-minutes,reset-at,
  reset-after-seconds}` and `x-codex-credits-{has-credits,unlimited,balance}`. A window is
  reported only when its used percent parses and it says something (used, window or reset),
  as Codex does.

Reset times are turned into RFC 3339 UTC strings with the wall clock the caller passes in;
`reset_after_s` stays relative so the budget can use it with its monotonic clock.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import msgspec

from codexctl.results import Credits, LimitWindow, UpstreamLimits, UsageWindow
from codexd.security.scrub import GENERIC, Scrubber

# --------------------------------------------------------------------------- values
# The windows and credits themselves are the wire types of `ratelimits/read` (codexctl.results).


class RateLimitHeaders(msgspec.Struct, frozen=True):
    """Everything rate-limit related in one response's headers."""

    requests: LimitWindow | None = None
    tokens: LimitWindow | None = None
    primary: UsageWindow | None = None
    secondary: UsageWindow | None = None
    credits: Credits | None = None
    retry_after_s: float | None = None
    active_limit: str | None = None

    def is_empty(self) -> bool:
        return self == _EMPTY

    def merged_into(self, previous: UpstreamLimits) -> UpstreamLimits:
        """The upstream view after this response: families it carries replace the old ones."""
        return UpstreamLimits(
            requests=self.requests or previous.requests,
            tokens=self.tokens or previous.tokens,
            primary=self.primary or previous.primary,
            secondary=self.secondary or previous.secondary,
            credits=self.credits or previous.credits,
        )


_EMPTY: Final = RateLimitHeaders()

# --------------------------------------------------------------------------- scalars

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_DURATION_FULL: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))+")
_UNIT_SECONDS: Final[Mapping[str, float]] = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
_NUMBER: Final = re.compile(r"\d+(?:\.\d+)?")
# A day is far beyond any per-minute reset; a longer value is noise, not a fact to wait on.
_MAX_RESET_S: Final = 7 * 24 * 3600.0
_TRY_AGAIN: Final = re.compile(
    r"try again in\s+((?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))+|\d+(?:\.\d+)?)"
    r"(?:\s*(seconds?|secs?|minutes?|mins?|milliseconds?))?",
    re.IGNORECASE,
)


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration ("6m0s", "2s81ms") or a bare number of seconds; else None."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        seconds = float(text)
    elif _DURATION_FULL.fullmatch(text):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    else:
        return None
    return seconds if math.isfinite(seconds) else None


def retry_after_from_message(message: str) -> float | None:
    """The delay in an error message such as "Please try again in 6.5s" (or "in 20 seconds")."""
    match = _TRY_AGAIN.search(message)
    if match is None:
        return None
    amount, unit = match.group(1), (match.group(2) or "").lower()
    if unit.startswith("milli"):
        seconds: float | None = float(amount) / 1000.0
    elif unit.startswith("min"):
        seconds = float(amount) * 60.0
    else:
        seconds = parse_duration(amount)
    if seconds is None or not math.isfinite(seconds):
        return None
    return seconds


def rfc3339(epoch_s: float) -> str | None:
    """`2026-05-01T12:00:00Z`, or None for a time no calendar can hold."""
    try:
        second = math.floor(epoch_s)
    except (OverflowError, ValueError):
        return None
    return _rfc3339_second(second)


@functools.lru_cache(maxsize=64)
def _rfc3339_second(second: int) -> str | None:
    # Every response's rate-limit headers name a reset time; formatting one costs more than
    # parsing the rest, and consecutive responses name the same few seconds.
    try:
        return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None


def _int(text: str | None, *, positive: bool) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        try:
            as_float = float(text.strip())
        except ValueError:
            return None
        if not math.isfinite(as_float) or as_float != int(as_float):
            return None
        value = int(as_float)
    if value < 0 or (positive and value == 0):
        return None
    return value


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bool(text: str | None) -> bool | None:
    if text is None:
        return None
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    return None


def _reset(seconds: float | None) -> float | None:
    if seconds is None or seconds < 0 or seconds > _MAX_RESET_S:
        return None
    return seconds


# --------------------------------------------------------------------------- families


def _limit_window(h: Mapping[str, str], kind: str, wall_now: float) -> LimitWindow | None:
    limit = _int(h.get(f"x-ratelimit-limit-{kind}"), positive=True)
    remaining = _int(h.get(f"x-ratelimit-remaining-{kind}"), positive=False)
    reset_text = h.get(f"x-ratelimit-reset-{kind}")
    reset = _reset(parse_duration(reset_text)) if reset_text is not None else None
    if limit is None and remaining is None and reset is None:
        return None
    if limit is not None and remaining is not None and remaining > limit:
        remaining = limit
    return LimitWindow(
        limit=limit,
        remaining=remaining,
        reset_after_s=reset,
        resets_at=rfc3339(wall_now + reset) if reset is not None else None,
    )


def _usage_window(h: Mapping[str, str], prefix: str, wall_now: float) -> UsageWindow | None:
    used = _float(h.get(f"{prefix}-used-percent"))
    if used is None:
        return None
    window = _int(h.get(f"{prefix}-window-minutes"), positive=False)
    resets_at: str | None = None
    reset_at = _float(h.get(f"{prefix}-reset-at"))
    if reset_at is not None and reset_at > 0:
        resets_at = rfc3339(reset_at)
    else:
        after = _reset(_float(h.get(f"{prefix}-reset-after-seconds")))
        if after is not None:
            resets_at = rfc3339(wall_now + after)
    if used == 0 and not window and resets_at is None:
        return None
    return UsageWindow(used_percent=used, window_minutes=window, resets_at=resets_at)


def _credits(h: Mapping[str, str], scrubber: Scrubber) -> Credits | None:
    has = _bool(h.get("x-codex-credits-has-credits"))
    unlimited = _bool(h.get("x-codex-credits-unlimited"))
    balance = scrubber.word(h.get("x-codex-credits-balance"))
    if has is None and unlimited is None and not balance:
        return None
    return Credits(has_credits=has, unlimited=unlimited, balance=balance)


def _retry_after(h: Mapping[str, str], wall_now: float) -> float | None:
    ms = _float(h.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000.0
    text = h.get("retry-after")
    if text is None:
        return None
    seconds = _float(text)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - wall_now)


def parse_rate_limit_headers(
    headers: Mapping[str, str], *, wall_now: float, scrubber: Scrubber = GENERIC
) -> RateLimitHeaders:
    """Read every rate-limit header of one response; unknown or malformed values become None.

    `headers` may be any mapping (an `httpx.Headers`, a dict in any letter case);
    `wall_now` is the wall clock (epoch seconds) when the response arrived. The values kept
    as text pass `scrubber` (what the request carried).
    """
    h = {k.lower(): v for k, v in headers.items()}
    return RateLimitHeaders(
        requests=_limit_window(h, "requests", wall_now),
        tokens=_limit_window(h, "tokens", wall_now),
        primary=_usage_window(h, "x-codex-primary", wall_now),
        secondary=_usage_window(h, "x-codex-secondary", wall_now),
        credits=_credits(h, scrubber),
        retry_after_s=_retry_after(h, wall_now),
        active_limit=scrubber.word(h.get("x-codex-active-limit")),
    )
