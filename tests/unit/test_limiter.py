"""The anyio shell, on a hand-driven clock: no sleeps, only `wait_all_tasks_blocked`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import anyio
import pytest
from anyio.abc import TaskGroup

from codexctl.results import LimitWindow, ProviderLimits, UsageWindow
from codexd.limits.budget import BudgetLimits
from codexd.limits.headers import RateLimitHeaders
from codexd.limits.limiter import Limiter, budget_limits

pytestmark = pytest.mark.anyio

WALL = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Monotonic time that moves only when told; `sleep` wakes when `advance` passes it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleepers: list[tuple[float, anyio.Event]] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL + (self.now - 1000.0)

    async def sleep(self, delay: float) -> None:
        entry = (self.now + delay, anyio.Event())
        self.sleepers.append(entry)
        try:
            await entry[1].wait()
        finally:
            self.sleepers.remove(entry)

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, event in list(self.sleepers):
            if deadline <= self.now:
                event.set()
        await anyio.wait_all_tasks_blocked()


class Harness:
    def __init__(self, tg: TaskGroup, limiter: Limiter, clock: FakeClock) -> None:
        self.tg = tg
        self.limiter = limiter
        self.clock = clock
        self.running: set[str] = set()
        self.started: list[str] = []
        self.positions: dict[str, int] = {}
        self.done: dict[str, anyio.Event] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}

    def submit(self, name: str, client: str = "tool", cost: int = 0) -> None:
        """A job that holds its slot until `finish(name)`."""
        self.done[name] = anyio.Event()
        scope = anyio.CancelScope()
        self.scopes[name] = scope

        def queued(position: int) -> None:
            self.positions[name] = position

        async def job() -> None:
            with scope:
                async with self.limiter.acquire(client, cost, on_queued=queued):
                    self.running.add(name)
                    self.started.append(name)
                    try:
                        await self.done[name].wait()
                    finally:
                        self.running.discard(name)

        self.tg.start_soon(job)

    async def settle(self) -> None:
        await anyio.wait_all_tasks_blocked()

    async def finish(self, name: str) -> None:
        self.done[name].set()
        await self.settle()


@asynccontextmanager
async def harness(
    limits: BudgetLimits,
    *,
    on_change: Callable[[ProviderLimits], None] | None = None,
    run_timer: bool = True,
) -> AsyncIterator[Harness]:
    clock = FakeClock()
    limiter = Limiter(
        "openai",
        limits,
        clock=clock,
        wall_clock=clock.wall,
        sleep=clock.sleep,
        on_change=on_change,
    )
    with anyio.fail_after(5):  # a hang guard, not a timing assertion
        async with anyio.create_task_group() as tg:
            if run_timer:
                await tg.start(limiter.run)
            yield Harness(tg, limiter, clock)
            tg.cancel_scope.cancel()


async def test_free_slot_is_granted_at_once_and_freed_on_exit() -> None:
    async with harness(BudgetLimits(max_concurrency=2)) as h:
        h.submit("a")
        await h.settle()
        assert h.running == {"a"}
        assert h.positions == {"a": 0}
        assert h.limiter.snapshot().budget.in_flight == 1
        await h.finish("a")
        assert h.limiter.snapshot().budget.in_flight == 0


async def test_concurrency_bound_and_release_grants_the_next() -> None:
    async with harness(BudgetLimits(max_concurrency=2)) as h:
        for name in "abc":
            h.submit(name)
        await h.settle()
        assert h.running == {"a", "b"}
        assert h.positions["c"] == 1
        assert h.limiter.snapshot().budget.queued == 1
        await h.finish("a")
        assert h.running == {"b", "c"}


async def test_rolling_window_grants_when_the_clock_rolls() -> None:
    async with harness(BudgetLimits(requests_per_minute=2)) as h:
        for name in "abc":
            h.submit(name)
        await h.settle()
        await h.finish("a")
        await h.finish("b")
        assert h.started == ["a", "b"]  # finishing frees no request start
        await h.clock.advance(60.5)
        assert h.started == ["a", "b"]
        await h.clock.advance(0.5)  # 61 s: the window plus the 1 s margin
        assert h.started == ["a", "b", "c"]


async def test_without_the_timer_only_releases_grant() -> None:
    async with harness(BudgetLimits(requests_per_minute=1), run_timer=False) as h:
        h.submit("a")
        h.submit("b")
        await h.settle()
        await h.finish("a")
        await h.clock.advance(120)
        assert h.started == ["a"]


async def test_a_pause_holds_everyone_until_it_ends() -> None:
    async with harness(BudgetLimits()) as h:
        h.limiter.pause(1.0)  # a 429 with retry-after: 1
        assert h.limiter.snapshot().budget.paused_until == "2026-05-01T12:00:01Z"
        h.submit("a", "one")
        h.submit("b", "two")
        await h.settle()
        await h.clock.advance(0.999)
        assert h.started == []
        await h.clock.advance(0.001)
        assert sorted(h.started) == ["a", "b"]
        assert h.limiter.snapshot().budget.paused_until is None


async def test_cancelling_a_waiter_removes_it_and_moves_the_line() -> None:
    async with harness(BudgetLimits(max_concurrency=1)) as h:
        h.submit("a", "x")
        h.submit("b", "y")
        h.submit("c", "z")
        await h.settle()
        assert (h.positions["b"], h.positions["c"]) == (1, 2)
        h.scopes["b"].cancel()
        await h.settle()
        assert h.limiter.snapshot().budget.queued == 1
        await h.finish("a")
        assert h.started == ["a", "c"]


async def test_cancel_after_grant_before_use_gives_the_slot_back() -> None:
    async with harness(BudgetLimits(max_concurrency=1)) as h:
        h.submit("a")
        h.submit("b")
        h.submit("c")
        await h.settle()
        h.done["a"].set()
        h.scopes["b"].cancel()  # b is granted by a's exit but cancelled before it runs
        await h.settle()
        assert h.started == ["a", "c"]
        assert h.limiter.snapshot().budget.in_flight == 1


async def test_one_job_is_not_starved_by_a_busy_client() -> None:
    async with harness(BudgetLimits(max_concurrency=1)) as h:
        for i in range(20):
            h.submit(f"busy{i}", "busy")
        await h.settle()
        h.submit("lone", "lone")
        await h.settle()
        # busy holds the turn (its next job), then lone: it waits for at most one busy job
        assert h.positions["lone"] == 2
        await h.finish("busy0")
        await h.finish("busy1")
        assert h.running == {"lone"}


async def test_correct_replaces_the_estimate() -> None:
    async with harness(BudgetLimits(tokens_per_minute=1000)) as h:
        async with h.limiter.acquire("tool", 800) as slot:
            assert h.limiter.snapshot().budget.available_tokens == 200
            slot.correct(120)
        assert h.limiter.snapshot().budget.available_tokens == 880


async def test_headers_tighten_the_budget_and_show_upstream() -> None:
    async with harness(BudgetLimits()) as h:
        h.limiter.observe(
            RateLimitHeaders(
                requests=LimitWindow(remaining=1, reset_after_s=5),
                primary=UsageWindow(12.5, 300, "2026-05-01T17:00:00Z"),
            )
        )
        h.submit("a")
        h.submit("b")
        await h.settle()
        assert h.started == ["a"]
        snap = h.limiter.snapshot()
        assert snap.upstream.primary == UsageWindow(12.5, 300, "2026-05-01T17:00:00Z")
        assert snap.upstream.requests == LimitWindow(remaining=1, reset_after_s=5)
        assert snap.budget.available_requests == 0
        await h.clock.advance(5)
        assert h.started == ["a", "b"]


async def test_changes_are_published_once_each() -> None:
    seen: list[ProviderLimits] = []
    async with harness(BudgetLimits(max_concurrency=1), on_change=seen.append) as h:
        h.submit("a")
        await h.settle()
        h.submit("b")
        await h.settle()
        h.limiter.pause(2)
        await h.clock.advance(2)
        await h.finish("a")
        await h.finish("b")
    states = [(s.budget.in_flight, s.budget.queued, s.budget.paused_until) for s in seen]
    assert states == [
        (0, 0, None),  # the timer's first look
        (1, 0, None),
        (1, 1, None),
        (1, 1, "2026-05-01T12:00:02Z"),
        (1, 1, None),  # the pause ended: published by the timer, nothing else changed
        (1, 0, None),  # a left, b entered
        (0, 0, None),
    ]
    assert all(s.provider == "openai" for s in seen)


async def test_a_failing_hook_does_not_break_admission() -> None:
    def broken(_: ProviderLimits) -> None:
        raise RuntimeError("hook bug")

    async with harness(BudgetLimits(), on_change=broken) as h:
        h.submit("a")
        await h.settle()
        assert h.running == {"a"}
        await h.finish("a")


def test_budget_limits_from_config_settings() -> None:
    from codexd.config.schema import RateLimitSettings

    settings = RateLimitSettings(requests_per_minute=500, tokens_per_minute=200000)
    assert budget_limits(settings) == BudgetLimits(500, 200000, 64)
