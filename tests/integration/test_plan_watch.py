"""`PlanWatch`, the shell that reads the plan's usage windows, against the fake on loopback
with a clock driven by hand: one read per interval however many jobs ask, one more after a
usage limit, and a failure logged once per failure state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from codexd.limits.budget import BudgetLimits
from codexd.limits.limiter import Limiter
from codexd.testing.fake_openai import PLAN_USAGE_PATH, FakeOpenAI, RawReply, plan_usage
from codexd.upstream.client import new_transport
from codexd.upstream.plan import PlanTarget, PlanWatch

pytestmark = pytest.mark.anyio


@dataclass
class Rig:
    fake: FakeOpenAI
    watch: PlanWatch
    limiter: Limiter
    target: PlanTarget
    now: list[float]

    async def ask(self, times: int = 1) -> None:
        async with anyio.create_task_group() as jobs:
            for _ in range(times):
                jobs.start_soon(self.watch.current, self.target, self.limiter)

    @property
    def reads(self) -> int:
        return self.fake.stats().plan_usage_reads


@asynccontextmanager
async def running() -> AsyncIterator[Rig]:
    fake = FakeOpenAI()
    now = [1000.0]
    transport = new_transport()
    try:
        with anyio.fail_after(30):  # a hang guard only
            async with anyio.create_task_group() as tg:
                await tg.start(fake.serve)
                watch = PlanWatch(lambda: transport, clock=lambda: now[0])
                await tg.start(watch.run)
                target = PlanTarget(fake.origin + PLAN_USAGE_PATH, {"Authorization": "Bearer sk-t"})
                yield Rig(fake, watch, Limiter("openai", BudgetLimits()), target, now)
                tg.cancel_scope.cancel()
    finally:
        await transport.aclose()


async def test_many_callers_share_one_read_per_minute() -> None:
    async with running() as rig:
        await _many_callers(rig)


async def _many_callers(rig: Rig) -> None:
    await rig.ask(25)
    assert rig.reads == 1
    primary = rig.limiter.upstream.primary
    assert primary is not None and primary.used_percent == 12.0
    rig.now[0] += 59.9
    await rig.ask(25)
    assert rig.reads == 1
    rig.now[0] += 0.1
    rig.fake.set_plan_usage(plan_usage(primary_used_percent=55))
    await rig.ask(25)
    assert rig.reads == 2
    primary = rig.limiter.upstream.primary
    assert primary is not None and primary.used_percent == 55.0
    (request, _) = rig.fake.plan_usage_requests()
    assert request.headers["authorization"] == "Bearer sk-t"


async def test_a_usage_limit_asks_for_one_more_read_for_the_whole_burst() -> None:
    async with running() as rig:
        await _burst(rig)


async def _burst(rig: Rig) -> None:
    await rig.ask()
    rig.now[0] += 5
    limited_at = rig.watch.now()
    for _ in range(30):
        rig.watch.limit_reached(rig.target, rig.limiter, limited_at)
    await rig.ask()  # waits for the read in flight
    assert rig.reads == 2
    rig.watch.limit_reached(rig.target, rig.limiter, limited_at)
    await rig.ask()
    assert rig.reads == 2


async def test_a_failure_is_logged_once_per_state(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="codexd.upstream")
    async with running() as rig:
        await _failures(rig, caplog)


async def _failures(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "usage windows" in r.getMessage()]

    async def read_next_minute() -> None:
        rig.now[0] += 60
        await rig.ask(3)

    rig.fake.set_plan_usage(RawReply(500, b'{"error": {"message": "boom"}}'))
    await read_next_minute()
    await read_next_minute()
    assert len(said()) == 1 and "HTTP 500" in said()[0]
    rig.fake.set_plan_usage(RawReply(200, b"<html>hotel wifi</html>", content_type="text/html"))
    await read_next_minute()
    await read_next_minute()
    assert len(said()) == 2 and "bad body" in said()[1]
    assert rig.watch.plan is None and rig.limiter.upstream.primary is None
    rig.fake.set_plan_usage(None)
    await read_next_minute()
    await read_next_minute()
    assert len(said()) == 3 and "readable again" in said()[2]
    assert rig.watch.plan is not None and rig.limiter.upstream.primary is not None
    assert rig.reads == 6
