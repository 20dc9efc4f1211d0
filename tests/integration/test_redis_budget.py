"""The shared budget in a real `redis-server` on loopback: daemons sharing it never exceed it."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskGroup

from codexd.limits.budget import BudgetLimits
from codexd.limits.limiter import Limiter, Slot
from codexd.limits.redis import (
    RedisReplyError,
    RedisUnavailable,
    RedisWindow,
    RespConnection,
    parse_redis_url,
)
from tests.conftest import require
from tests.unit.test_limiter import FakeClock

pytestmark = pytest.mark.anyio

StartRedis = Callable[[int], str]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start `redis-server` on a loopback port; returns its URL once it accepts connections."""
    exe = shutil.which("redis-server")
    require(
        exe,
        "needs redis-server (Debian: apt-get install -y redis-server); "
        "the shared budget is tested against a real Redis only",
    )
    assert exe is not None
    procs: list[subprocess.Popen[str]] = []

    def start(port: int) -> str:
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:  # readiness from the server's own log, not a timed wait
            seen.append(line)
            if "Ready to accept connections" in line:
                return f"redis://127.0.0.1:{port}/0"
        pytest.fail("redis-server exited before it was ready:\n" + "".join(seen[-20:]))

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def redis_url(start_redis: StartRedis) -> str:
    return start_redis(free_port())


async def redis_command(url: str, *args: str | int) -> object:
    conn = await RespConnection.open(parse_redis_url(url))
    try:
        return await conn.command(*args)
    finally:
        await conn.aclose()


class Daemon:
    """One daemon's limiter for provider `openai`, with jobs that start and finish at once."""

    def __init__(self, name: str, limiter: Limiter, remote: RedisWindow, clock: FakeClock) -> None:
        self.name = name
        self.limiter = limiter
        self.remote = remote
        self.clock = clock
        self.starts: list[float] = []
        self.slots: list[Slot] = []
        self.holds: dict[int, anyio.Event] = {}

    def submit(self, tg: TaskGroup, client: str, cost: int = 0, *, hold: bool = False) -> None:
        release = anyio.Event()
        self.holds[len(self.holds)] = release
        if not hold:
            release.set()

        async def job() -> None:
            async with self.limiter.acquire(client, cost) as slot:
                self.starts.append(self.clock())
                self.slots.append(slot)
                await release.wait()

        tg.start_soon(job)


@asynccontextmanager
async def daemons(
    url: str, limits: BudgetLimits, n: int = 2, *, server_clock: bool = False
) -> AsyncIterator[tuple[TaskGroup, FakeClock, list[Daemon]]]:
    clock = FakeClock()
    out: list[Daemon] = []
    with anyio.fail_after(20):  # a hang guard only
        async with anyio.create_task_group() as tg:
            for i in range(n):
                remote = RedisWindow(url, "openai", clock=None if server_clock else clock.wall)
                limiter = Limiter(
                    "openai",
                    limits,
                    clock=clock,
                    wall_clock=clock.wall,
                    sleep=anyio.sleep if server_clock else clock.sleep,
                    remote=remote,
                )
                await tg.start(limiter.run)
                out.append(Daemon(f"d{i}", limiter, remote, clock))
            yield tg, clock, out
            tg.cancel_scope.cancel()


async def settle(ds: list[Daemon]) -> None:
    """Every task blocked and no Redis call on the wire."""
    while True:
        await anyio.wait_all_tasks_blocked()
        if not any(d.remote.busy for d in ds):
            return


def max_in_any_window(starts: list[float], window: float = 60.0) -> int:
    return max((sum(t - window < s <= t for s in starts) for t in starts), default=0)


async def test_two_daemons_share_one_request_budget(redis_url: str) -> None:
    async with daemons(redis_url, BudgetLimits(requests_per_minute=5)) as (tg, clock, ds):
        for d in ds:
            for i in range(12):
                d.submit(tg, f"tool{i % 3}")
        per_round: list[int] = []
        for _ in range(6):
            await settle(ds)
            per_round.append(sum(len(d.starts) for d in ds) - sum(per_round))
            await clock.advance(61)
        everything = sorted(s for d in ds for s in d.starts)
        assert len(everything) == 24
        assert max_in_any_window(everything) <= 5
        # and the shared budget is used, not wasted: 5 a window until the work runs out
        assert per_round == [5, 5, 5, 5, 4, 0]
        assert all(d.starts for d in ds)


async def test_the_servers_clock_rules_by_default(redis_url: str) -> None:
    async with daemons(redis_url, BudgetLimits(requests_per_minute=3), server_clock=True) as (
        tg,
        _,
        ds,
    ):
        for d in ds:
            for _ in range(4):
                d.submit(tg, "tool")
        await settle(ds)
        assert sum(len(d.starts) for d in ds) == 3
        key = ds[0].remote.keys[0]
        assert await redis_command(redis_url, "ZCARD", key) == 3
        ttl = await redis_command(redis_url, "PTTL", key)
        assert isinstance(ttl, int)
        assert 0 < ttl <= 62_000  # the keys expire a little past the window


async def test_tokens_are_shared_and_corrected(redis_url: str) -> None:
    async with daemons(redis_url, BudgetLimits(tokens_per_minute=100)) as (tg, clock, ds):
        a, b = ds
        a.submit(tg, "tool", 80, hold=True)
        await settle(ds)
        b.submit(tg, "tool", 40)
        await settle(ds)
        assert (len(a.starts), len(b.starts)) == (1, 0)
        assert b.limiter.snapshot().budget.queued == 1
        # a's job used far less than its estimate: the shared window learns it, b fits now
        a.slots[0].correct(10)
        await settle(ds)
        assert b.starts == []  # b looks again within a second, not at the window's end
        await clock.advance(1)
        await settle(ds)
        assert len(b.starts) == 1
        tokens = await redis_command(redis_url, "HVALS", a.remote.keys[1])
        assert isinstance(tokens, list)
        assert sorted(tokens) == [b"10", b"40"]  # a's corrected charge, then b's
        a.holds[0].set()


async def test_a_pause_on_one_daemon_holds_the_other(redis_url: str) -> None:
    async with daemons(redis_url, BudgetLimits()) as (tg, clock, ds):
        a, b = ds
        a.limiter.pause(5)  # a 429 with retry-after: 5 seen by daemon a
        await settle(ds)
        b.submit(tg, "tool")
        await settle(ds)
        assert b.starts == []
        assert b.limiter.snapshot().budget.paused_until is not None
        await clock.advance(4.9)
        await settle(ds)
        assert b.starts == []
        await clock.advance(0.1)
        await settle(ds)
        assert len(b.starts) == 1


async def test_falls_back_once_and_rejoins(
    start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    caplog.set_level(logging.WARNING, logger="codexd.limits.limiter")
    async with daemons(url, BudgetLimits(requests_per_minute=2), n=1) as (tg, clock, ds):
        (d,) = ds
        for _ in range(3):
            d.submit(tg, "tool")
        await settle(ds)
        # nobody listens: the local budget still serves, within its own limits
        assert len(d.starts) == 2
        backend = d.limiter.snapshot().backend
        assert backend is not None
        assert backend.connected is False
        assert backend.error
        assert backend.url == url
        await clock.advance(5)  # the retry finds it still away
        await settle(ds)
        down = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(down) == 1

        start_redis(port)
        await clock.advance(5)
        await settle(ds)
        backend = d.limiter.snapshot().backend
        assert backend is not None
        assert backend.connected is True
        assert any("rejoined" in r.getMessage() for r in caplog.records)
        await clock.advance(61)
        await settle(ds)
        assert len(d.starts) == 3
        assert await redis_command(url, "ZCARD", d.remote.keys[0]) == 1


async def test_resp_client_against_the_server(redis_url: str) -> None:
    conn = await RespConnection.open(parse_redis_url(redis_url))
    try:
        assert await conn.command("PING") == b"PONG"
        assert await conn.command("SET", "k", "v") == b"OK"
        assert await conn.command("GET", "k") == b"v"
        assert await conn.command("GET", "missing") is None
        assert await conn.command("RPUSH", "l", "a", "b") == 2
        assert await conn.command("LRANGE", "l", 0, -1) == [b"a", b"b"]
        with pytest.raises(RedisReplyError):
            await conn.command("INCR", "k")
        assert await conn.command("PING") == b"PONG"  # still in step after an error reply
    finally:
        await conn.aclose()
    with pytest.raises(RedisUnavailable):
        await RespConnection.open(parse_redis_url(f"redis://127.0.0.1:{free_port()}/0"))


@pytest.mark.parametrize(
    ("url", "display", "db", "password"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", 0, None),
        ("redis://:s3cret@cache.internal/2", "redis://cache.internal:6379/2", 2, "s3cret"),
        ("rediss://user:pw@r.example:6380", "rediss://r.example:6380/0", 0, "pw"),
        ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3", 3, None),
    ],
)
def test_urls_and_their_display_without_credentials(
    url: str, display: str, db: int, password: str | None
) -> None:
    parsed = parse_redis_url(url)
    assert parsed.display == display
    assert parsed.db == db
    assert parsed.password == password


@pytest.mark.parametrize("url", ["http://x", "redis://", "redis://h/zero", "unix://"])
def test_bad_urls_say_what_is_wrong(url: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)redis|unix"):
        parse_redis_url(url)
