"""A provider's rate-limit budget as a pure rolling window; time is an argument.

Rules, all at once:

- at most `requests_per_minute` request starts and `tokens_per_minute` tokens in ANY rolling
  window. Each admission is logged with its time and expires exactly `window_s` later; there
  is no bucket that refills to a full burst, so the second after a burst is never a second
  burst (what strict servers answer with 429s);
- at most `max_concurrency` admitted and not yet released;
- nothing while paused (a 429 with Retry-After pauses the whole provider);
- no more than the server last said was left (`x-ratelimit-remaining-*`) until its reset.

Safety margin: the window is `60 s + margin_s` (default 1 s) instead of 60 s. A request we
start at t and one at t + 60 can reach the server less than 60 s apart when their network
latencies differ; the margin absorbs that jitter for a cost of 1/61 of the allowed rate.

Tokens: a job is charged its estimate (`estimate.estimate_tokens`) when admitted, and
`correct()` replaces the estimate by the real usage while that charge is still in the window.
A cost above `tokens_per_minute` is charged as the whole minute (otherwise it could never
run; upstream decides whether it is too large).

Memory is bounded: the request log holds at most `requests_per_minute` entries (an admission
needs a free place), the token log at most `min(requests_per_minute, MAX_TOKEN_LOG)` entries
(when it is full the new charge is merged into the newest entry and that entry's time moves
to now: charges then expire a little later than they could, never earlier), and the in-flight
map at most `max_concurrency` tickets.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Final, Literal

import msgspec

from codexctl.results import BudgetSnapshot, LimitWindow
from codexd.limits.headers import RateLimitHeaders, rfc3339

WINDOW_S: Final = 60.0
DEFAULT_MARGIN_S: Final = 1.0
MAX_TOKEN_LOG: Final = 4096
DEFAULT_MAX_CONCURRENCY: Final = 64
# Float slack when re-checking a refill deadline computed by division.
_EPS: Final = 1e-6

Ticket = Hashable
Reason = Literal[
    "ok", "paused", "concurrency", "requests", "tokens", "upstream_requests", "upstream_tokens"
]


class BudgetError(ValueError):
    """A caller broke the protocol (admitting what `can_admit` refused, a duplicate ticket)."""


class BudgetLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[codexd.rate_limits.ID]` as the budget needs it; None means no client-side cap."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive integer (or left out for no cap)")
        if self.max_concurrency <= 0:
            raise ValueError("max_concurrency must be a positive integer")


class Admission(msgspec.Struct, frozen=True):
    """`ok`, or why not and the earliest monotonic time it could be (None: when a slot frees)."""

    ok: bool
    at: float | None = None
    reason: Reason = "ok"


ADMIT: Final = Admission(True)


class _Charge:
    """Tokens charged at `time`; `expired` once the window has moved past it."""

    __slots__ = ("expired", "time", "tokens")

    def __init__(self, time: float, tokens: int) -> None:
        self.time = time
        self.tokens = tokens
        self.expired = False


class _Grant:
    __slots__ = ("cap_epoch", "charge", "charged")

    def __init__(self, charge: _Charge | None, charged: int, cap_epoch: int) -> None:
        self.charge = charge
        self.charged = charged
        self.cap_epoch = cap_epoch


class _ServerCap:
    """What the server said is left until its reset, refilling linearly to its limit.

    OpenAI's `x-ratelimit-reset-*` is the time until the limit is back to its full value; with
    the limit known, the refill rate is (limit - remaining) / reset. Past the reset the cap is
    gone and only the configured window applies.
    """

    __slots__ = ("limit", "observed_at", "remaining", "reset_at", "used")

    def __init__(self, window: LimitWindow, now: float) -> None:
        assert window.remaining is not None
        assert window.reset_after_s is not None
        self.limit = window.limit
        self.remaining = window.remaining
        self.observed_at = now
        self.reset_at = now + window.reset_after_s
        self.used = 0

    def _rate(self) -> float:
        span = self.reset_at - self.observed_at
        if self.limit is None or self.limit <= self.remaining or span <= 0:
            return 0.0
        return (self.limit - self.remaining) / span

    def available(self, now: float) -> int | None:
        if now >= self.reset_at:
            return None
        refilled = self.remaining + self._rate() * (now - self.observed_at)
        if self.limit is not None:
            refilled = min(refilled, self.limit)
        return math.floor(refilled + _EPS) - self.used

    def earliest(self, cost: int, now: float) -> float | None:
        """None when `cost` fits now, else when it will (at the latest, the reset)."""
        if self.limit is not None:
            cost = min(cost, self.limit)
        available = self.available(now)
        if available is None or available >= cost:
            return None
        rate = self._rate()
        if rate <= 0:
            return self.reset_at
        when = self.observed_at + (cost + self.used - self.remaining) / rate
        return min(max(when, now), self.reset_at)


class Budget:
    """One provider's budget; see the module docstring for the rules."""

    def __init__(self, limits: BudgetLimits, *, margin_s: float = DEFAULT_MARGIN_S) -> None:
        if margin_s < 0:
            raise ValueError("margin_s must not be negative")
        self._window = WINDOW_S + margin_s
        self._limits = limits
        self._starts: deque[float] = deque()
        self._charges: deque[_Charge] = deque()
        self._window_tokens = 0
        self._in_flight: dict[Ticket, _Grant] = {}
        self._paused_until = -math.inf
        self._request_cap: _ServerCap | None = None
        self._token_cap: _ServerCap | None = None
        self._cap_epoch = 0
        self._last_now = -math.inf

    # ------------------------------------------------------------------ reading

    @property
    def limits(self) -> BudgetLimits:
        return self._limits

    @property
    def window_s(self) -> float:
        return self._window

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def paused_until(self) -> float | None:
        """The monotonic end of the current pause, if one was ever set (may be past)."""
        return self._paused_until if self._paused_until > -math.inf else None

    def is_paused(self, now: float) -> bool:
        return now < self._paused_until

    def holds(self, ticket: Ticket) -> bool:
        return ticket in self._in_flight

    def __repr__(self) -> str:
        lim = self._limits
        return (
            f"<Budget rpm={lim.requests_per_minute} tpm={lim.tokens_per_minute} "
            f"in_flight={len(self._in_flight)}/{lim.max_concurrency} "
            f"window_requests={len(self._starts)} window_tokens={self._window_tokens}>"
        )

    # ------------------------------------------------------------------ deciding

    def charge_for(self, cost: int) -> int:
        """The tokens an admission of `cost` is charged (clamped to [0, tokens_per_minute])."""
        cost = max(0, int(cost))
        tpm = self._limits.tokens_per_minute
        return min(cost, tpm) if tpm is not None else cost

    def can_admit(self, cost: int, now: float) -> Admission:
        now = self._advance(now)
        if len(self._in_flight) >= self._limits.max_concurrency:
            return Admission(False, None, "concurrency")
        charge = self.charge_for(cost)
        request_cap, token_cap = self._request_cap, self._token_cap
        waits: tuple[tuple[Reason, float | None], ...] = (
            ("paused", self._paused_until if now < self._paused_until else None),
            ("requests", self._requests_free_at()),
            ("tokens", self._tokens_free_at(charge)),
            ("upstream_requests", request_cap.earliest(1, now) if request_cap else None),
            ("upstream_tokens", token_cap.earliest(charge, now) if token_cap else None),
        )
        blocked: Admission | None = None
        for reason, at in waits:
            if at is not None and (blocked is None or blocked.at is None or at > blocked.at):
                blocked = Admission(False, at, reason)
        return blocked or ADMIT

    def _requests_free_at(self) -> float | None:
        rpm = self._limits.requests_per_minute
        if rpm is None or len(self._starts) < rpm:
            return None
        return self._starts[len(self._starts) - rpm] + self._window

    def _tokens_free_at(self, charge: int) -> float | None:
        tpm = self._limits.tokens_per_minute
        if tpm is None or self._window_tokens + charge <= tpm:
            return None
        excess = self._window_tokens + charge - tpm
        for entry in self._charges:
            excess -= entry.tokens
            if excess <= 0:
                return entry.time + self._window
        return self._charges[-1].time + self._window if self._charges else None

    # ------------------------------------------------------------------ changing

    def admit(self, ticket: Ticket, cost: int, now: float) -> None:
        """Start `ticket`; raises `BudgetError` unless `can_admit(cost, now)` says yes."""
        if ticket in self._in_flight:
            raise BudgetError(f"ticket {ticket!r} is already admitted")
        decision = self.can_admit(cost, now)
        if not decision.ok:
            raise BudgetError(f"cannot admit now: {decision.reason}")
        now = self._last_now
        charge = self.charge_for(cost)
        if self._limits.requests_per_minute is not None:
            self._starts.append(now)
        entry: _Charge | None = None
        if self._limits.tokens_per_minute is not None:
            bound = min(self._limits.requests_per_minute or MAX_TOKEN_LOG, MAX_TOKEN_LOG)
            if len(self._charges) >= bound:
                entry = self._charges[-1]
                entry.time = now
                entry.tokens += charge
            else:
                entry = _Charge(now, charge)
                self._charges.append(entry)
            self._window_tokens += charge
        if self._request_cap is not None:
            self._request_cap.used += 1
        if self._token_cap is not None:
            self._token_cap.used += charge
        self._in_flight[ticket] = _Grant(entry, charge, self._cap_epoch)

    def release(self, ticket: Ticket, now: float) -> bool:
        """Free the ticket's concurrency slot (its window charges stay); False if unknown."""
        self._advance(now)
        return self._in_flight.pop(ticket, None) is not None

    def correct(self, ticket: Ticket, actual_tokens: int) -> bool:
        """Replace the ticket's estimate by its real usage; False if it is no longer held."""
        grant = self._in_flight.get(ticket)
        if grant is None:
            return False
        delta = max(0, int(actual_tokens)) - grant.charged
        grant.charged += delta
        entry = grant.charge
        if entry is not None and not entry.expired:
            applied = max(delta, -entry.tokens)
            entry.tokens += applied
            self._window_tokens += applied
        if self._token_cap is not None and grant.cap_epoch == self._cap_epoch:
            self._token_cap.used = max(0, self._token_cap.used + delta)
        return True

    def pause_until(self, until: float) -> None:
        """No admission before `until` (monotonic); a shorter pause never shortens a longer one."""
        if until > self._paused_until:
            self._paused_until = until

    def observe_headers(self, headers: RateLimitHeaders, now: float) -> None:
        """Tighten to what the server says is left until its reset (families it did not send
        keep their previous cap); a `retry_after_s` in the headers is NOT a pause by itself:
        only a 429 is, and the caller decides that with `pause_until`."""
        now = self._advance(now)
        changed = False
        for family, attr in ((headers.requests, "_request_cap"), (headers.tokens, "_token_cap")):
            if (
                family is not None
                and family.remaining is not None
                and family.reset_after_s is not None
            ):
                setattr(self, attr, _ServerCap(family, now))
                changed = True
        if changed:
            self._cap_epoch += 1

    def reconfigure(self, limits: BudgetLimits) -> None:
        """New limits from a reloaded config; the window history is kept."""
        if limits.requests_per_minute is None:
            self._starts.clear()
        if limits.tokens_per_minute is None or self._limits.tokens_per_minute is None:
            for entry in self._charges:
                entry.expired = True
            self._charges.clear()
            self._window_tokens = 0
        self._limits = limits

    # ------------------------------------------------------------------ time

    def _advance(self, now: float) -> float:
        """Drop what the window has passed; a clock that steps back is held at its last value."""
        if now < self._last_now:
            now = self._last_now
        self._last_now = now
        window = self._window
        starts = self._starts
        while starts and starts[0] + window <= now:
            starts.popleft()
        charges = self._charges
        while charges and charges[0].time + window <= now:
            entry = charges.popleft()
            entry.expired = True
            self._window_tokens -= entry.tokens
        for attr in ("_request_cap", "_token_cap"):
            cap = getattr(self, attr)
            if cap is not None and now >= cap.reset_at:
                setattr(self, attr, None)
        return now

    def next_change(self, now: float) -> float | None:
        """The next time a pause or a server cap ends (the window rolling is not counted: it
        changes the availability at every expiry), for the shell to publish a snapshot."""
        now = self._advance(now)
        times = [
            t
            for t in (
                self._paused_until if self._paused_until > now else None,
                self._request_cap.reset_at if self._request_cap else None,
                self._token_cap.reset_at if self._token_cap else None,
            )
            if t is not None
        ]
        return min(times) if times else None

    # ------------------------------------------------------------------ reporting

    def available_requests(self, now: float) -> int | None:
        now = self._advance(now)
        values: list[int] = []
        if self._limits.requests_per_minute is not None:
            values.append(max(0, self._limits.requests_per_minute - len(self._starts)))
        if self._request_cap is not None:
            cap = self._request_cap.available(now)
            if cap is not None:
                values.append(max(0, cap))
        return min(values) if values else None

    def available_tokens(self, now: float) -> int | None:
        now = self._advance(now)
        values: list[int] = []
        if self._limits.tokens_per_minute is not None:
            values.append(max(0, self._limits.tokens_per_minute - self._window_tokens))
        if self._token_cap is not None:
            cap = self._token_cap.available(now)
            if cap is not None:
                values.append(max(0, cap))
        return min(values) if values else None

    def snapshot(self, now: float, *, wall_now: float, queued: int = 0) -> BudgetSnapshot:
        """The `ratelimits/read` budget; `wall_now` (epoch s) turns the pause into RFC 3339."""
        now = self._advance(now)
        paused: str | None = None
        if now < self._paused_until:
            paused = rfc3339(wall_now + (self._paused_until - now))
        return BudgetSnapshot(
            requests_per_minute=self._limits.requests_per_minute,
            tokens_per_minute=self._limits.tokens_per_minute,
            max_concurrency=self._limits.max_concurrency,
            available_requests=self.available_requests(now),
            available_tokens=self.available_tokens(now),
            in_flight=len(self._in_flight),
            queued=queued,
            paused_until=paused,
        )
