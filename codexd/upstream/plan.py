"""The shell that reads the ChatGPT plan's usage windows (`limits/plan.py` decides the rest).

One `PlanWatch` per daemon: the plan belongs to the login, not to a provider, so every
provider whose requests go to the ChatGPT backend (`ConfigSnapshot.chatgpt_backend`) shares
its reads. Reads happen on demand (a job about to start, when the last read is older than
`POLL_INTERVAL_S`; `PollSchedule` keeps the interval) and after a job ended in
`usage_limit_reached`; they run in the watch's own task (`run`), one at a time, and callers
wait for the one in flight (at most `wait_s`) instead of starting another. Each
successful read goes to the limiters of the providers that asked, which merge it into their
upstream view and publish `ratelimits/updated` when it changed.

A failed read (network, an HTTP error, a body that is not the usage JSON) changes nothing: it
is logged once when the failure starts or changes, and once when reads work again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.abc
import httpx

from codexd.limits.limiter import Limiter
from codexd.limits.plan import (
    MAX_BODY_BYTES,
    POLL_INTERVAL_S,
    PlanUsage,
    PlanUsageError,
    parse_plan_usage,
)
from codexd.limits.poll import PollSchedule
from codexd.security.scrub import Scrubber
from codexd.upstream.client import fetch
from codexd.upstream.errors import UpstreamError

log = logging.getLogger("codexd.upstream")

# How long a job waits for a read in flight before it goes on without it.
DEFAULT_WAIT_S: Final = 5.0
READ_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class PlanTarget:
    """Where to read and with which headers (the login's bearer: never shown)."""

    url: str
    headers: dict[str, str] = field(repr=False)


class PlanWatch:
    def __init__(
        self,
        transport: Callable[[], httpx.AsyncBaseTransport],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_now: Callable[[], float] = time.time,
        interval_s: float = POLL_INTERVAL_S,
        wait_s: float = DEFAULT_WAIT_S,
        timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._wall_now = wall_now
        self._schedule = PollSchedule(interval_s)
        self._wait_s = wait_s
        self._timeout_s = timeout_s
        self._plan: PlanUsage | None = None
        # One entry per provider id that asked: bounded by the configured providers.
        self._limiters: dict[str, Limiter] = {}
        self._want: PlanTarget | None = None
        self._wake = anyio.Event()
        self._in_flight: anyio.Event | None = None
        self._failure: str | None = None

    @property
    def plan(self) -> PlanUsage | None:
        """The last successful read, if any."""
        return self._plan

    def __repr__(self) -> str:
        busy = "reading" if self._in_flight is not None else "idle"
        return f"<PlanWatch {busy}, {self._schedule!r}, failure={self._failure!r}>"

    # ------------------------------------------------------------------ the API

    async def current(self, target: PlanTarget, limiter: Limiter) -> PlanUsage | None:
        """The plan's windows for a job about to start: read first when the last read is
        older than the interval (or wait for the read in flight, at most `wait_s`)."""
        self._limiters[limiter.provider] = limiter
        if self._in_flight is None and self._schedule.due(self._clock()):
            self._start(target)
        in_flight = self._in_flight
        if in_flight is not None:
            with anyio.move_on_after(self._wait_s):
                await in_flight.wait()
        return self._plan

    def limit_reached(self, target: PlanTarget, limiter: Limiter, when: float) -> None:
        """A job ended in `usage_limit_reached` at `when` (the watch's clock): read again,
        unless a read started since (a burst of such jobs costs one read)."""
        self._limiters[limiter.provider] = limiter
        if self._in_flight is None and self._schedule.wanted_since(when):
            self._start(target)

    def now(self) -> float:
        return self._clock()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Make the reads asked for, one at a time; run it in the daemon's task group."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            target, self._want = self._want, None
            try:
                if target is not None:
                    with anyio.move_on_after(self._timeout_s + 1.0):
                        await self._read(target)
            finally:
                done, self._in_flight = self._in_flight, None
                if done is not None:
                    done.set()

    # ------------------------------------------------------------------ inside

    def _start(self, target: PlanTarget) -> None:
        self._schedule.started(self._clock())
        self._in_flight = anyio.Event()
        self._want = target
        self._wake.set()

    async def _read(self, target: PlanTarget) -> None:
        scrubber = Scrubber.for_request(target.headers, target.url)
        got = await fetch(
            self._transport(),
            target.url,
            target.headers,
            limit=MAX_BODY_BYTES + 1,
            timeout_s=self._timeout_s,
            wall_now=self._wall_now,
            scrubber=scrubber,
        )
        if isinstance(got, UpstreamError):
            status = f"HTTP {got.http_status}" if got.http_status else got.kind.value
            self._failed(status, got.message)
            return
        try:
            plan = parse_plan_usage(got, wall_now=self._wall_now(), scrubber=scrubber)
        except PlanUsageError as exc:
            self._failed("bad body", str(exc))
            return
        if self._failure is not None:
            log.info("ratelimits: the ChatGPT plan's usage windows are readable again")
            self._failure = None
        self._plan = plan
        for limiter in self._limiters.values():
            limiter.observe_plan(plan)

    def _failed(self, state: str, detail: str) -> None:
        if state != self._failure:
            log.warning(
                "ratelimits: cannot read the ChatGPT plan's usage windows (%s: %s); jobs go on "
                "without them",
                state,
                detail,
            )
        self._failure = state
