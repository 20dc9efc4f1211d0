"""The library client following jobs: re-attaching after a lost connection, streaming text
through a restart, and raising a job's error as its kind's class.

A lost connection is made real: the client talks to the daemon through a socket proxy that
the test cuts (both directions closed, as a daemon going away closes them), mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from codexctl import (
    AsyncClient,
    Client,
    JobCompleted,
    JobEvent,
    JobStarted,
    RateLimited,
    Reset,
    RpcError,
    TextDelta,
)
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, Reply, dropped, rate_limited
from tests.integration._client import daemon_env_at

WORDS = " ".join(f"word{i}" for i in range(40))
# A reply slow enough that the cut comes while it streams: 40 deltas, 20 ms apart.
SLOW = Reply(text=WORDS, delta_delay_s=0.02)
# A Responses stream's events: created, in_progress, item added, part added, then the deltas;
# dropping after 6 closes it once two deltas were sent.
DROP_AFTER_TWO_DELTAS = 6


class CuttableProxy:
    """A Unix socket in front of the daemon's; `cut()` closes every connection through it."""

    def __init__(self, path: str, target: str) -> None:
        self.path = path
        self.target = target
        self.accepted = 0
        self._lock = threading.Lock()
        self._live: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(8)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.target)
            with self._lock:
                self.accepted += 1
                self._live += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self._lock:
            live, self._live = self._live, []
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.running(reply=SLOW, reply_text=WORDS) as fake:
        yield fake


@pytest.fixture
def daemon(tmp_path: Path, fake: FakeOpenAI) -> Iterator[DaemonProcess]:
    env = daemon_env_at(tmp_path, fake, "[codexd]\nmax_retry_wait_s = 30\n")
    with DaemonProcess(env) as proc:
        yield proc


@pytest.fixture
def proxy(tmp_path: Path, daemon: DaemonProcess) -> Iterator[CuttableProxy]:
    run = tmp_path / "proxy"
    run.mkdir(mode=0o700)
    p = CuttableProxy(os.path.join(run, "codexd.sock"), daemon.socket)
    yield p
    p.close()


def _assert_whole(events: list[JobEvent]) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert events[-1].terminal and isinstance(events[-1].event, JobCompleted)
    text = "".join(e.event.delta for e in events if isinstance(e.event, TextDelta))
    assert text == WORDS == events[-1].event.output_text


def test_events_reattach_after_the_connection_is_cut(
    daemon: DaemonProcess, proxy: CuttableProxy
) -> None:
    with Client(daemon.socket) as submitter:
        job_id = submitter.submit("Say many words").job_id
    events: list[JobEvent] = []
    cut_at = None
    with Client(proxy.path) as c:
        for event in c.events(job_id):
            events.append(event)
            if cut_at is None and isinstance(event.event, TextDelta):
                cut_at = event.seq
                proxy.cut()  # more deltas come while the client is away
    assert proxy.accepted == 2, "the client did not reconnect"
    assert cut_at is not None and events[-1].seq > cut_at + 1
    _assert_whole(events)
    assert any(isinstance(e.event, JobStarted) for e in events)


def test_async_events_reattach_after_the_connection_is_cut(
    daemon: DaemonProcess, proxy: CuttableProxy
) -> None:
    async def main() -> tuple[list[JobEvent], int | None]:
        async with AsyncClient(daemon.socket) as submitter:
            job_id = (await submitter.submit("Say many words")).job_id
        events: list[JobEvent] = []
        cut_at = None
        async with AsyncClient(proxy.path) as c:
            async for event in c.events(job_id):
                events.append(event)
                if cut_at is None and isinstance(event.event, TextDelta):
                    cut_at = event.seq
                    proxy.cut()
        return events, cut_at

    events, cut_at = asyncio.run(main())
    assert proxy.accepted == 2, "the client did not reconnect"
    assert cut_at is not None and events[-1].seq > cut_at + 1
    _assert_whole(events)


def test_stream_survives_a_cut_and_ends_with_usage_and_cost(
    daemon: DaemonProcess, proxy: CuttableProxy
) -> None:
    pieces: list[str | Reset] = []
    with Client(proxy.path) as c:
        stream = c.stream("Say many words")
        for piece in stream:
            if not pieces:
                proxy.cut()
            pieces.append(piece)
        reply = stream.reply
    assert proxy.accepted == 2
    assert "".join(p for p in pieces if isinstance(p, str)) == WORDS == reply.text
    assert reply.usage.output_tokens > 0 and reply.cost_usd > 0
    assert reply.job_id == stream.job_id


def test_stream_marks_a_restart_with_reset(daemon: DaemonProcess, fake: FakeOpenAI) -> None:
    fake.script(Reply(text=WORDS, drop_after=DROP_AFTER_TWO_DELTAS))
    with Client(daemon.socket) as c:
        stream = c.stream("Say many words")
        pieces = list(stream)
    resets = [i for i, p in enumerate(pieces) if isinstance(p, Reset)]
    assert len(resets) == 1, pieces
    before, after = pieces[: resets[0]], pieces[resets[0] + 1 :]
    assert before == ["word0", " word1"]
    assert "".join(str(p) for p in after) == WORDS == stream.text == stream.reply.text
    assert stream.reply.cost_usd > 0


def test_ask_returns_the_reply(daemon: DaemonProcess, fake: FakeOpenAI) -> None:
    fake.script(dropped(after=DROP_AFTER_TWO_DELTAS))
    with Client(daemon.socket) as c:
        reply = c.ask("Say many words", model="gpt-5")
        job = c.job(reply.job_id)
    assert reply.text == WORDS == job.output_text
    assert job.attempts == 2
    assert job.usage == reply.usage and job.cost_usd == reply.cost_usd


def test_a_429_raises_rate_limited_with_retry_after(
    daemon: DaemonProcess, fake: FakeOpenAI
) -> None:
    fake.script(rate_limited(retry_after=600, try_again_in=None))
    with Client(daemon.socket) as c, pytest.raises(RateLimited) as info:
        c.ask("hi")
    err = info.value
    assert isinstance(err, RpcError) and err.kind == "rate_limited" and err.code == -32020
    assert err.retry_after_s == 600
    assert err.retryable is True


def test_async_ask_raises_the_kinds_class(daemon: DaemonProcess, fake: FakeOpenAI) -> None:
    fake.script(rate_limited(retry_after=600, try_again_in=None))

    async def main() -> None:
        async with AsyncClient(daemon.socket) as c:
            await c.ask("hi")

    with pytest.raises(RateLimited) as info:
        asyncio.run(main())
    assert info.value.retry_after_s == 600
