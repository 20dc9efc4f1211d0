"""Socket activation: placement of LISTEN_* fds, the fd checks, launchd check-in, anyio adoption."""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexd import activation
from codexd.activation import (
    ActivationError,
    activated_sockets,
    from_launchd,
    from_systemd,
    place_systemd_fds,
)
from codexd.paths import StartupError

PID = 4242


def env_for(count: int, names: str | None = None, pid: int = PID) -> dict[str, str]:
    env = {"LISTEN_PID": str(pid), "LISTEN_FDS": str(count), "PATH": "/usr/bin"}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    return env


# --------------------------------------------------------------------------- placement


def test_single_unnamed_fd_is_the_control_socket() -> None:
    assert place_systemd_fds(env_for(1), PID) == {"control": 3}


@pytest.mark.parametrize("name", ["unknown", "", "codexd.socket", "control"])
def test_single_fd_with_default_names_is_control(name: str) -> None:
    assert place_systemd_fds(env_for(1, name), PID) == {"control": 3}


def test_named_pair_in_either_order() -> None:
    assert place_systemd_fds(env_for(2, "control:gateway"), PID) == {"control": 3, "gateway": 4}
    assert place_systemd_fds(env_for(2, "gateway:control"), PID) == {"gateway": 3, "control": 4}


def test_gateway_alone_leaves_control_to_the_daemon() -> None:
    assert place_systemd_fds(env_for(1, "gateway"), PID) == {"gateway": 3}


def test_nothing_for_us() -> None:
    assert place_systemd_fds({}, PID) is None
    assert place_systemd_fds({"LISTEN_FDS": "1"}, PID) is None
    assert place_systemd_fds(env_for(0), PID) is None
    # inherited from an activated parent: not ours
    assert place_systemd_fds(env_for(1, pid=PID + 1), PID) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (env_for(1, "metrics"), "fd 3 named 'metrics'"),
        (env_for(2), "fd 3 named 'unknown'"),
        (env_for(2, "control:control"), "two sockets named 'control' (fds 3 and 4)"),
        (env_for(2, "control"), "names 1 sockets but LISTEN_FDS=2"),
        (env_for(3, "control:gateway:extra"), "fd 5 named 'extra'"),
        ({"LISTEN_PID": "me", "LISTEN_FDS": "1"}, "LISTEN_PID='me' is not a process id"),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "x"}, "LISTEN_FDS='x' is not a count"),
        (env_for(-1), "LISTEN_FDS=-1"),
        (env_for(999), "LISTEN_FDS=999"),
    ],
)
def test_an_fd_that_cannot_be_placed_is_fatal(env: dict[str, str], message: str) -> None:
    with pytest.raises(ActivationError, match=re.escape(message)) as info:
        place_systemd_fds(env, PID)
    assert isinstance(info.value, StartupError)  # `codexd run` exits 1 with the message


@given(
    pid=st.integers(min_value=1, max_value=2**22),
    listen_pid=st.one_of(st.none(), st.text(max_size=8), st.integers(0, 2**22).map(str)),
    fds=st.one_of(st.none(), st.text(max_size=4), st.integers(-2, 20).map(str)),
    names=st.one_of(st.none(), st.text(alphabet="cgontrlaewy:.kus", max_size=24)),
)
def test_placement_is_total(
    pid: int, listen_pid: str | None, fds: str | None, names: str | None
) -> None:
    env: dict[str, str] = {}
    for key, value in (("LISTEN_PID", listen_pid), ("LISTEN_FDS", fds), ("LISTEN_FDNAMES", names)):
        if value is not None:
            env[key] = value
    try:
        placed = place_systemd_fds(env, pid)
    except ActivationError:
        return
    if placed is None:
        return
    # Whatever is accepted names only known sockets, each once, on consecutive fds from 3.
    assert set(placed) <= {"control", "gateway"}
    assert sorted(placed.values()) == list(range(3, 3 + len(placed)))
    assert listen_pid is not None
    assert int(listen_pid) == pid


# --------------------------------------------------------------------------- adoption of real fds


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # sun_path is short (104 bytes on macOS): pytest's tmp_path can be too long.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cxd-") as d:
        yield Path(d)


def listening_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def test_adopts_the_fd_sets_cloexec_and_clears_the_environment(short_tmp: Path) -> None:
    with listening_unix(short_tmp / "s") as original:
        fd = os.dup(original.fileno())
        os.set_inheritable(fd, True)
        env = env_for(1, "control", pid=os.getpid())
        got = from_systemd(env, first_fd=fd)
        try:
            assert got.manager == "systemd"
            assert got.gateway is None
            assert got.control is not None
            assert got.control.fileno() == fd
            assert not os.get_inheritable(fd)
            assert env == {"PATH": "/usr/bin"}
        finally:
            got.close()


def test_environment_is_cleared_even_when_not_for_us() -> None:
    env = env_for(1, pid=os.getpid() + 1)
    assert from_systemd(env) == activation.NOTHING
    assert env == {"PATH": "/usr/bin"}


def test_rejects_a_socket_that_is_not_listening(short_tmp: Path) -> None:
    with listening_unix(short_tmp / "s"), socket.socket(socket.AF_UNIX) as client:
        client.connect(str(short_tmp / "s"))
        fd = os.dup(client.fileno())
        try:
            with pytest.raises(ActivationError, match="not listening"):
                from_systemd(env_for(1, pid=os.getpid()), first_fd=fd)
        finally:
            os.close(fd)


def test_rejects_a_tcp_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as tcp:
        fd = os.dup(tcp.fileno())
        try:
            with pytest.raises(ActivationError, match="needs a listening Unix stream socket"):
                from_systemd(env_for(1, pid=os.getpid()), first_fd=fd)
        finally:
            os.close(fd)


def test_rejects_a_file_and_a_closed_fd(short_tmp: Path) -> None:
    with open(short_tmp / "f", "w") as f:
        fd = os.dup(f.fileno())
        try:
            with pytest.raises(ActivationError, match=f"fd {fd} \\(control\\)"):
                from_systemd(env_for(1, pid=os.getpid()), first_fd=fd)
        finally:
            os.close(fd)
    with pytest.raises(ActivationError, match="not usable"):
        from_systemd(env_for(1, pid=os.getpid()), first_fd=fd)  # closed above


@pytest.mark.anyio
async def test_adopted_fd_serves_a_connection_made_before_adoption_with_anyio(
    short_tmp: Path,
) -> None:
    path = short_tmp / "codexd.sock"
    original = listening_unix(path)
    fd = os.dup(original.fileno())
    original.close()  # only the "passed" fd is left, as in the activated daemon
    # The first client connects before the daemon adopted anything: its connection waits in
    # the backlog and must be served.
    early = await anyio.connect_unix(str(path))
    await early.send(b'{"ping":1}\n')

    got = from_systemd(env_for(1, "control", pid=os.getpid()), first_fd=fd)
    assert got.control is not None
    listener = await anyio.abc.SocketListener.from_socket(got.control)
    async with listener, early:
        with anyio.fail_after(5):
            conn = await listener.accept()
            async with conn:
                line = await conn.receive()
                await conn.send(b"pong " + line)
            assert await early.receive() == b'pong {"ping":1}\n'


# --------------------------------------------------------------------------- launchd logic


def fake_launchd(table: dict[str, tuple[int, list[int]]]) -> activation.LaunchActivate:
    def activate(name: str) -> tuple[int, list[int]]:
        return table.get(name, (errno.ENOENT, []))

    return activate


def test_launchd_not_a_job() -> None:
    got = from_launchd(fake_launchd({"control": (errno.ESRCH, [])}))
    assert got == activation.NOTHING


def test_launchd_control_socket(short_tmp: Path) -> None:
    with listening_unix(short_tmp / "s") as original:
        fd = os.dup(original.fileno())
        got = from_launchd(fake_launchd({"control": (0, [fd])}))
        try:
            assert got.manager == "launchd"
            assert got.control is not None
            assert got.control.fileno() == fd
            assert got.gateway is None
        finally:
            got.close()


def test_launchd_two_fds_for_one_name_is_fatal(short_tmp: Path) -> None:
    with listening_unix(short_tmp / "a") as a, listening_unix(short_tmp / "b") as b:
        fds = [os.dup(a.fileno()), os.dup(b.fileno())]
        with pytest.raises(ActivationError, match="2 sockets for 'control'"):
            from_launchd(fake_launchd({"control": (0, fds)}))
        for fd in fds:  # closed by from_launchd
            with pytest.raises(OSError, match="Bad file descriptor"):
                os.fstat(fd)


def test_launchd_other_errors_are_fatal() -> None:
    with pytest.raises(ActivationError, match="launch_activate_socket\\('control'\\) failed"):
        from_launchd(fake_launchd({"control": (errno.EPERM, [])}))


def test_entry_point_prefers_systemd_and_asks_launchd_only_on_macos() -> None:
    def must_not_be_called(name: str) -> tuple[int, list[int]]:
        raise AssertionError(name)

    assert activated_sockets({}, PID, platform="linux", launch_activate=must_not_be_called) == (
        activation.NOTHING
    )
    asked: list[str] = []

    def not_a_job(name: str) -> tuple[int, list[int]]:
        asked.append(name)
        return errno.ESRCH, []

    assert activated_sockets({}, PID, platform="darwin", launch_activate=not_a_job) == (
        activation.NOTHING
    )
    assert asked == ["control"]


@pytest.mark.skipif(sys.platform != "darwin", reason="launch_activate_socket exists only on macOS")
def test_real_launch_activate_socket_outside_launchd_reports_not_a_job() -> None:
    assert from_launchd() == activation.NOTHING
