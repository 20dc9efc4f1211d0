"""A ChatGPT plan's usage windows, as values (no I/O): parse, when to read, whether to block.

In ChatGPT mode the plan's limits (a 5-hour and a weekly window, credits) are read from the
backend's usage endpoint (`GET {chatgpt_base_url}/wham/usage`, see
`ConfigSnapshot.plan_usage_url`), as Codex reads them (codex-rs backend-client,
`get_rate_limits_many`). Its body:

    {"plan_type": "plus",
     "rate_limit": {"allowed": true, "limit_reached": false,
                    "primary_window": {"used_percent": 8, "limit_window_seconds": 18000,
                                       "reset_after_seconds": 6625, "reset_at": 1761548349},
                    "secondary_window": {...}},
     "credits": {"has_credits": false, "unlimited": false, "balance": "0"}}

Every member may be missing or null; a window is kept when it says how much is used.
`window_minutes` is `ceil(limit_window_seconds / 60)`; `reset_at` is epoch seconds (else
`reset_after_seconds` from the time the body arrived).

The rules:

- When to read: at most once per `POLL_INTERVAL_S`, on demand (`PollSchedule`,
  limits/poll.py); a job that ended in `usage_limit_reached` asks for one more read
  (`PollSchedule.wanted_since`), which later asks share.
- `blocked_until` + `gate`: while a window is spent (at 100 %) and its reset is known and
  ahead, the provider's jobs wait for the reset when it is within `max_retry_wait_s`, else fail
  at once. Nothing else blocks: not a spent window whose reset is unknown, and not the body's
  own `limit_reached: true` / `allowed: false` without a spent window (`allowed: false` may
  mean the plan does not include Codex, which no reset fixes); upstream's own error then says
  what is wrong and when.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Final

import msgspec

from codexctl.results import Credits, UpstreamLimits, UsageWindow
from codexd.limits.headers import rfc3339
from codexd.security.scrub import GENERIC, Scrubber

# The one home of "the plan is read at most once a minute".
POLL_INTERVAL_S: Final = 60.0
# The body is a few hundred bytes; anything much larger is not the usage endpoint.
MAX_BODY_BYTES: Final = 64 * 1024
SPENT_PERCENT: Final = 100.0


class PlanUsageError(ValueError):
    """The body is not the usage endpoint's JSON."""


# --------------------------------------------------------------------------- the body


class _Window(msgspec.Struct):
    used_percent: float | None = None
    limit_window_seconds: float | None = None
    reset_after_seconds: float | None = None
    reset_at: float | None = None


class _RateLimit(msgspec.Struct):
    # Typed to know the body, but not acted on: only a spent window gates (see the module).
    allowed: bool | None = None
    limit_reached: bool | None = None
    primary_window: _Window | None = None
    secondary_window: _Window | None = None


class _Credits(msgspec.Struct):
    has_credits: bool | None = None
    unlimited: bool | None = None
    balance: str | float | None = None


class _Body(msgspec.Struct):
    plan_type: str | None = None
    rate_limit: _RateLimit | None = None
    credits: _Credits | None = None


_decoder = msgspec.json.Decoder(_Body)


class PlanUsage(msgspec.Struct, frozen=True):
    """One read of the usage endpoint."""

    plan_type: str | None = None
    primary: UsageWindow | None = None
    secondary: UsageWindow | None = None
    credits: Credits | None = None

    def merged_into(self, previous: UpstreamLimits) -> UpstreamLimits:
        """The upstream view after this read: what it carries replaces what headers said
        before it (the newer information wins); the `x-ratelimit-*` families stay."""
        return msgspec.structs.replace(
            previous,
            primary=self.primary or previous.primary,
            secondary=self.secondary or previous.secondary,
            credits=self.credits or previous.credits,
        )


def _window(raw: _Window | None, wall_now: float) -> UsageWindow | None:
    if raw is None or raw.used_percent is None or not math.isfinite(raw.used_percent):
        return None
    minutes: int | None = None
    seconds = raw.limit_window_seconds
    if seconds is not None and math.isfinite(seconds) and seconds > 0:
        minutes = math.ceil(seconds / 60)
    resets_at: str | None = None
    if raw.reset_at is not None and math.isfinite(raw.reset_at) and raw.reset_at > 0:
        resets_at = rfc3339(raw.reset_at)
    elif (
        raw.reset_after_seconds is not None
        and math.isfinite(raw.reset_after_seconds)
        and raw.reset_after_seconds >= 0
    ):
        resets_at = rfc3339(wall_now + raw.reset_after_seconds)
    return UsageWindow(
        used_percent=max(0.0, raw.used_percent), window_minutes=minutes, resets_at=resets_at
    )


def _credits(raw: _Credits | None, scrubber: Scrubber) -> Credits | None:
    if raw is None:
        return None
    balance = raw.balance
    if isinstance(balance, float):
        balance = f"{balance:f}".rstrip("0").rstrip(".") if math.isfinite(balance) else None
    balance = scrubber.word(balance)
    if raw.has_credits is None and raw.unlimited is None and not balance:
        return None
    return Credits(has_credits=raw.has_credits, unlimited=raw.unlimited, balance=balance)


def parse_plan_usage(
    body: bytes, *, wall_now: float, scrubber: Scrubber = GENERIC
) -> PlanUsage:
    """The usage endpoint's body as our types; `PlanUsageError` when it is not that JSON
    (not JSON, not an object, a member of the wrong type). `wall_now` (epoch s) is when it
    arrived; text kept from it passes `scrubber`."""
    if len(body) > MAX_BODY_BYTES:
        raise PlanUsageError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        parsed = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise PlanUsageError(f"unexpected usage body: {exc}") from None
    except msgspec.DecodeError:
        raise PlanUsageError("the usage body is not JSON") from None
    rate = parsed.rate_limit or _RateLimit()
    return PlanUsage(
        plan_type=scrubber.word(parsed.plan_type),
        primary=_window(rate.primary_window, wall_now),
        secondary=_window(rate.secondary_window, wall_now),
        credits=_credits(parsed.credits, scrubber),
    )


# --------------------------------------------------------------------------- the gate


class Pass(msgspec.Struct, frozen=True):
    """Nothing is spent: the job goes on."""


class Wait(msgspec.Struct, frozen=True):
    """A window is spent and resets within `max_retry_wait_s`: pause for `delay_s`."""

    delay_s: float
    resets_at: float


class Refuse(msgspec.Struct, frozen=True):
    """A window is spent until `resets_at` (epoch s), beyond `max_retry_wait_s`."""

    resets_at: float


PASS: Final = Pass()
GateDecision = Pass | Wait | Refuse


def epoch_of(resets_at: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 time of ours (`...Z`); None when absent or unreadable."""
    if not resets_at:
        return None
    try:
        return datetime.fromisoformat(resets_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def blocked_until(windows: Iterable[UsageWindow | None], *, wall_now: float) -> float | None:
    """When the plan lets requests through again (epoch s), or None when it does now.

    Spent windows (at 100 %) block until the latest of their resets; a window below 100 %, or
    one whose reset is unknown or past, blocks nothing."""
    spent: list[float] = []
    for window in windows:
        if window is None or window.used_percent < SPENT_PERCENT:
            continue
        reset = epoch_of(window.resets_at)
        if reset is not None and reset > wall_now:
            spent.append(reset)
    return max(spent) if spent else None


def gate(until: float | None, *, wall_now: float, max_wait_s: float) -> GateDecision:
    """Pass, wait for the reset (when within `max_wait_s`), or refuse until it."""
    if until is None or until <= wall_now:
        return PASS
    delay = until - wall_now
    if delay <= max_wait_s:
        return Wait(delay_s=delay, resets_at=until)
    return Refuse(resets_at=until)
