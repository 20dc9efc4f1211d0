"""The anyio shell around a provider's `Budget` and `FairQueue`.

    async with limiter.acquire(client, cost, on_queued=emit_position) as slot:
        ...stream the request...
        slot.correct(usage.total_tokens)

Every decision is the pure core's, taken synchronously on each change (enqueue, release,
cancel, pause, headers, config); the shell only wakes waiters. Each ticket waits on its own
`anyio.Event`; a cancelled waiter takes its ticket out of the queue (or gives back a slot it
was granted but never used) and the next ones are granted at once. Time-driven grants (the
window rolling, a pause ending) come from one task, `run()`, that sleeps until one deadline:
the turn-holder's earliest admission, or the end of a pause or server cap. Its clock and
sleep are injected so tests drive time by hand.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Final, Protocol

import anyio
from anyio.abc import TaskStatus

from codexctl.results import BackendStatus, ProviderLimits, UpstreamLimits
from codexd.limits.budget import DEFAULT_MARGIN_S, Budget, BudgetLimits
from codexd.limits.fairqueue import FairQueue
from codexd.limits.headers import RateLimitHeaders
from codexd.limits.plan import PlanUsage
from codexd.limits.redis import RedisUnavailable, RedisWindow

log = logging.getLogger(__name__)

# A deadline the core says has come but that still grants nothing (float rounding) must not
# spin the timer: it waits at least this long before looking again.
MIN_TIMER_S: Final = 0.001
DEFAULT_RECONNECT_S: Final = 5.0
# Waiting on the shared token window, look again at least this often: a correction made by
# another daemon frees tokens without telling us.
REMOTE_TOKEN_POLL_S: Final = 1.0
# Corrections and pauses waiting to reach Redis; past this the oldest are dropped (a lost
# correction only leaves the shared window a little more conservative or generous).
MAX_PENDING_REMOTE: Final = 1024


class RateLimitSettingsLike(Protocol):
    @property
    def requests_per_minute(self) -> int | None: ...
    @property
    def tokens_per_minute(self) -> int | None: ...
    @property
    def max_concurrency(self) -> int: ...


def budget_limits(settings: RateLimitSettingsLike) -> BudgetLimits:
    """`[codexd.rate_limits.ID]` (config.schema.RateLimitSettings) → the budget's limits."""
    return BudgetLimits(
        requests_per_minute=settings.requests_per_minute,
        tokens_per_minute=settings.tokens_per_minute,
        max_concurrency=settings.max_concurrency,
    )


class Slot:
    """A granted admission; freed when the `acquire` block exits."""

    __slots__ = ("_limiter", "cost", "ticket")

    def __init__(self, limiter: Limiter, ticket: Hashable, cost: int) -> None:
        self._limiter = limiter
        self.ticket = ticket
        self.cost = cost

    def correct(self, actual_tokens: int) -> None:
        """Replace the estimate by the real usage (call before the block exits)."""
        self._limiter._correct(self.ticket, actual_tokens)

    def __repr__(self) -> str:
        return f"<Slot {self.ticket!r} cost={self.cost} provider={self._limiter.provider!r}>"


class Limiter:
    def __init__(
        self,
        provider: str,
        limits: BudgetLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        on_change: Callable[[ProviderLimits], None] | None = None,
        watched: Callable[[], bool] = lambda: True,
        margin_s: float = DEFAULT_MARGIN_S,
        remote: RedisWindow | None = None,
        reconnect_s: float = DEFAULT_RECONNECT_S,
    ) -> None:
        self._provider = provider
        self._budget = Budget(limits, margin_s=margin_s)
        self._queue = FairQueue(self._budget, name=provider)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._on_change = on_change
        # Whether anyone listens for changes now: building a snapshot to compare costs more
        # than the admission itself, so it is skipped while nobody would be told.
        self._watched = watched
        self._tickets = itertools.count(1)
        self._waiters: dict[Hashable, anyio.Event] = {}
        self._upstream = UpstreamLimits()
        self._last_published: ProviderLimits | None = None
        self._wake = anyio.Event()
        self._armed: float = math.inf
        self._remote = remote
        self._reconnect_s = reconnect_s
        self._remote_error: str | None = None
        self._retry_at = -math.inf
        self._remote_charges: dict[Hashable, tuple[int, int]] = {}
        self._pending: deque[Callable[[RedisWindow], Awaitable[None]]] = deque(
            maxlen=MAX_PENDING_REMOTE
        )

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def budget(self) -> Budget:
        return self._budget

    def __repr__(self) -> str:
        return (
            f"<Limiter {self._provider!r}: {self._budget.in_flight} in flight, "
            f"{len(self._queue)} queued>"
        )

    # ------------------------------------------------------------------ the API

    @asynccontextmanager
    async def acquire(
        self, client: str, cost: int, *, on_queued: Callable[[int], None] | None = None
    ) -> AsyncIterator[Slot]:
        """Wait fairly for a slot of `cost` tokens; the slot is freed when the block exits.

        `on_queued(position)` is called once, before any wait: 0 when granted at once, else the
        1-based place in line (for `job.queued`). The line has no bound of its own: jobs are
        counted against `max_queued_jobs` when they are submitted (`JobManager.create`).
        """
        ticket = next(self._tickets)
        event = anyio.Event()
        self._queue.push(ticket, client, cost)
        self._waiters[ticket] = event
        try:
            self._update()
            if on_queued is not None:
                on_queued(self._queue.position(ticket) or 0)
            if not event.is_set():  # granted at once: no trip through the event loop
                await event.wait()
            yield Slot(self, ticket, cost)
        finally:
            del self._waiters[ticket]
            if not self._queue.remove(ticket):
                self._budget.release(ticket, self._clock())
                self._remote_charges.pop(ticket, None)
            self._update()

    def pause(self, seconds: float) -> None:
        """A 429 with Retry-After: no admission for anyone for `seconds`."""
        if seconds > 0:
            self._budget.pause_until(self._clock() + seconds)
            if self._using_remote:
                self._pending.append(lambda remote: remote.pause(seconds))
            self._update()

    def observe(self, headers: RateLimitHeaders) -> None:
        """A response's rate-limit headers: tighten the budget, remember the upstream view."""
        if headers.is_empty():
            return
        self._budget.observe_headers(headers, self._clock())
        self._upstream = headers.merged_into(self._upstream)
        self._update()

    def observe_plan(self, plan: PlanUsage) -> None:
        """A read of the ChatGPT plan's windows: it replaces what headers said before it."""
        self._upstream = plan.merged_into(self._upstream)
        self._update()

    @property
    def upstream(self) -> UpstreamLimits:
        """What the server told us last (headers and the plan's windows, newest first)."""
        return self._upstream

    def reconfigure(self, limits: BudgetLimits) -> None:
        self._budget.reconfigure(limits)
        self._update()

    def snapshot(self) -> ProviderLimits:
        budget = self._budget.snapshot(
            self._clock(), wall_now=self._wall_clock(), queued=len(self._queue)
        )
        backend: BackendStatus | None = None
        if self._remote is not None:
            backend = BackendStatus(
                kind="redis",
                url=self._remote.display,
                connected=self._remote_error is None,
                error=self._remote_error,
            )
        return ProviderLimits(
            provider=self._provider, budget=budget, upstream=self._upstream, backend=backend
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The one timer: grants what time allows and publishes pause/cap ends. Run it in the
        daemon's task group; without it, only releases and arrivals grant. With a Redis
        backend every admission goes through this task, one script call each."""
        task_status.started()
        try:
            while True:
                self._wake = anyio.Event()
                now = self._clock()
                if self._remote is not None:
                    delay = await self._remote_step(self._remote)
                    deadline = None if delay is None else self._clock() + delay
                else:
                    self._grant(now)
                    deadline = self._deadline(now)
                self._publish()
                self._armed = deadline if deadline is not None else math.inf
                if deadline is None:
                    await self._wake.wait()
                else:
                    await self._sleep_or_wake(max(deadline - self._clock(), MIN_TIMER_S))
        finally:
            if self._remote is not None:
                with anyio.CancelScope(shield=True):
                    await self._remote.aclose()

    # ------------------------------------------------------------------ inside

    def _correct(self, ticket: Hashable, actual_tokens: int) -> None:
        if not self._budget.correct(ticket, actual_tokens):
            return
        charged = self._remote_charges.get(ticket)
        if charged is not None and self._using_remote:
            bucket, tokens = charged
            actual = max(0, int(actual_tokens))
            self._remote_charges[ticket] = (bucket, actual)
            window_s = self._budget.window_s
            delta = actual - tokens
            if delta:
                self._pending.append(lambda remote: remote.correct(window_s, bucket, delta))
        self._update()

    @property
    def _using_remote(self) -> bool:
        return self._remote is not None and self._remote_error is None

    def _fall_back(self, error: RedisUnavailable) -> None:
        if self._remote_error is None:
            assert self._remote is not None
            log.warning(
                "ratelimits: provider %s: the shared budget at %s is unreachable (%s); using "
                "this daemon's local budget until it returns",
                self._provider,
                self._remote.display,
                error,
            )
        self._remote_error = str(error) or "unreachable"
        self._retry_at = self._clock() + self._reconnect_s
        self._pending.clear()
        self._remote_charges.clear()

    async def _remote_step(self, remote: RedisWindow) -> float | None:
        """Admit through Redis while it answers, else locally; the delay until the next look."""
        if self._remote_error is not None and self._clock() >= self._retry_at:
            try:
                await remote.ping()
            except RedisUnavailable:
                self._retry_at = self._clock() + self._reconnect_s
            else:
                log.warning(
                    "ratelimits: provider %s: the shared budget at %s is back; rejoined",
                    self._provider,
                    remote.display,
                )
                self._remote_error = None
        if self._remote_error is None:
            try:
                return await self._remote_admissions(remote)
            except RedisUnavailable as exc:
                self._fall_back(exc)
        now = self._clock()
        self._grant(now)
        deadline = min(self._deadline(now) or math.inf, self._retry_at)
        return deadline - now

    async def _remote_admissions(self, remote: RedisWindow) -> float | None:
        while self._pending:
            await self._pending.popleft()(remote)
        while True:
            now = self._clock()
            head = self._queue.head()
            if head is None:
                change = self._budget.next_change(now)
                return None if change is None else change - now
            cost = head[1]
            local = self._budget.can_admit(cost, now)
            if not local.ok:
                return None if local.at is None else local.at - now
            limits = self._budget.limits
            decision = await remote.admit(limits, self._budget.window_s, cost)
            now = self._clock()
            if not decision.ok:
                if decision.paused:
                    self._budget.pause_until(now + decision.wait_s)
                    return decision.wait_s
                if limits.tokens_per_minute is not None:
                    # another daemon's correction can free tokens early: look again soon
                    return min(decision.wait_s, REMOTE_TOKEN_POLL_S)
                return decision.wait_s
            # A ticket cancelled during the call leaves an unused start in the shared
            # window: conservative, and rare.
            if self._queue.head() == head and self._budget.can_admit(cost, now).ok:
                for granted in self._queue.grant(now, limit=1):
                    self._remote_charges[granted] = (decision.bucket, self._budget.charge_for(cost))
                    self._waiters[granted].set()
                self._publish()

    def _deadline(self, now: float) -> float | None:
        times = [
            t
            for t in (self._queue.next_deadline(now), self._budget.next_change(now))
            if t is not None
        ]
        return min(times) if times else None

    def _update(self) -> None:
        """After any change: grant who can run now, re-arm the timer if it must fire sooner,
        and publish the snapshot if it changed. Never awaits. With Redis in use the timer
        task decides instead: it is woken."""
        if self._using_remote:
            self._wake.set()
            self._publish()
            return
        now = self._clock()
        self._grant(now)
        deadline = self._deadline(now)
        if deadline is not None and deadline < self._armed:
            self._armed = deadline
            self._wake.set()
        self._publish()

    def _grant(self, now: float) -> None:
        for ticket in self._queue.grant(now):
            self._waiters[ticket].set()

    def _publish(self) -> None:
        if self._on_change is None or not self._watched():
            return
        snapshot = self.snapshot()
        if snapshot == self._last_published:
            return
        self._last_published = snapshot
        try:
            self._on_change(snapshot)
        except Exception:
            log.exception("ratelimits: the change hook of provider %s failed", self._provider)

    async def _sleep_or_wake(self, delay: float) -> None:
        async with anyio.create_task_group() as tg:

            async def timer() -> None:
                await self._sleep(delay)
                tg.cancel_scope.cancel()

            tg.start_soon(timer)
            await self._wake.wait()
            tg.cancel_scope.cancel()
