"""sd_notify datagrams and the watchdog, against a datagram socket the test binds."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexd.sdnotify import Notifier, next_ping_deadline, watchdog, watchdog_interval


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    with tempfile.TemporaryDirectory(prefix="cxn-") as d:
        path = str(Path(d) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(5)  # hang guard only
            yield path, sock


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_stopping(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("serving /run/user/1000/codexd/codexd.sock")
    assert received(sock) == ["READY=1", "STATUS=serving /run/user/1000/codexd/codexd.sock"]
    assert notifier.status("2 jobs running")
    assert received(sock) == ["STATUS=2 jobs running"]
    assert notifier.stopping()
    assert received(sock) == ["STOPPING=1"]
    assert notifier.watchdog_ping()
    assert received(sock) == ["WATCHDOG=1"]


def test_reloading_carries_the_monotonic_clock(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({"NOTIFY_SOCKET": path}).reloading()
    first, second = received(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket_address() -> None:
    name = f"codexd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == ["READY=1"]


def test_without_a_manager_everything_is_a_noop(caplog: pytest.LogCaptureFixture) -> None:
    assert not Notifier({}).enabled
    assert not Notifier({}).ready()
    relative = Notifier({"NOTIFY_SOCKET": "notify.sock"})
    assert not relative.enabled
    assert "not an absolute or abstract path" in caplog.text


def test_a_vanished_manager_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert not notifier.ready()
    assert "sd_notify to /nonexistent/notify failed" in caplog.text


# --------------------------------------------------------------------------- watchdog


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"},  # another process's watchdog
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"},
    ],
)
def test_no_watchdog(env: dict[str, str]) -> None:
    assert watchdog_interval(env, pid=7) is None


@given(
    last=st.floats(min_value=0, max_value=1e6),
    interval=st.floats(min_value=1e-3, max_value=1e4),
    lag=st.floats(min_value=0, max_value=1e5),
)
def test_next_ping_is_one_interval_after_the_last_but_never_in_the_past(
    last: float, interval: float, lag: float
) -> None:
    now = last + lag
    deadline = next_ping_deadline(last, interval, now)
    assert deadline >= now
    assert deadline == max(last + interval, now)


@pytest.mark.anyio
async def test_watchdog_task_pings_until_cancelled(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    sock.setblocking(False)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000"}  # a ping every millisecond
    pings = 0
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watchdog, Notifier(env), env)
            while pings < 3:
                await anyio.wait_readable(sock)
                assert sock.recv(4096) == b"WATCHDOG=1"
                pings += 1
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_watchdog_task_returns_without_watchdog_usec(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, _ = notify_socket
    with anyio.fail_after(1):
        await watchdog(Notifier({"NOTIFY_SOCKET": path}), {"NOTIFY_SOCKET": path})
