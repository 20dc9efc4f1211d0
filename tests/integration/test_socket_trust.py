"""The client refuses a socket that is not the user's own daemon, before it sends a byte.

Another local user can take the fallback socket directory (`${TMPDIR:-/tmp}/codexd-<uid>/`)
first and listen there. A forked child plants that listener: as `nobody` when the tests run as
root (it keeps root's file access, saved uid 0 then setfsuid(0), so that it can bind inside
the test's private tmp_path; the kernel still reports its effective uid to SO_PEERCRED). It
records every connection and every byte it receives. The real `codexctl` (a subprocess) and
both library clients must refuse with exit 3 / `DaemonUnreachable`, naming the path and why.
The paths come from `$CODEXD_SOCKET` here; the fallback directory goes through the same check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import pwd
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codexctl import AsyncClient, Client, DaemonUnreachable
from tests.conftest import require_root

KEY = "sk-proj-planted-test-key-0001"


def other_user() -> pwd.struct_passwd:
    require_root("to fork a child of another uid")
    return pwd.getpwnam("nobody")


def _serve(conn: socket.socket, answer: bool) -> str:
    """Everything one connection sent; with `answer`, reply `{}` to each request."""
    received = b""
    pending = b""
    conn.settimeout(30)  # a hang guard only: every peer here closes or is answered
    with conn:
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            if not answer:
                break  # the client would wait for a reply for ever: keep what it sent, hang up
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                rid = json.loads(line).get("id")
                if rid is not None:
                    conn.sendall(json.dumps({"jsonrpc": "2.0", "id": rid, "result": {}}).encode())
                    conn.sendall(b"\n")
    return received.decode(errors="replace")


def _plant(path: str, user: pwd.struct_passwd | None, answer: bool, fds: tuple[int, ...]) -> None:
    """The forked child: become `user`, listen at `path`, report what arrived until told."""
    ready_w, stop_r, report_w = fds
    report: list[str] = []
    try:
        if user is not None:
            os.setresgid(user.pw_gid, user.pw_gid, 0)
            os.setresuid(user.pw_uid, user.pw_uid, 0)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.setfsuid(0)
            libc.setfsgid(0)
            assert os.geteuid() == user.pw_uid
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(16)
        os.write(ready_w, b"R")
        while True:
            readable, _, _ = select.select([listener, stop_r], [], [])
            if listener in readable:
                report.append(_serve(listener.accept()[0], answer))
            elif stop_r in readable:
                break
        listener.setblocking(False)
        while True:  # connections still queued when the test was done
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            conn.setblocking(True)
            report.append(_serve(conn, answer))
    except BaseException as exc:  # report, never raise out of a forked test child
        report.append(f"child error: {exc!r}")
    finally:
        os.write(report_w, json.dumps(report).encode())
        os._exit(0)


@contextlib.contextmanager
def planted(
    path: str, user: pwd.struct_passwd | None, *, answer: bool = False
) -> Iterator[list[str]]:
    """A listener at `path` run by `user` (None: our own uid) in a forked child.

    On exit the list it yielded holds what each connection sent, in order ([] when nobody
    connected; "" for a connection that sent nothing)."""
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (ready_r, stop_w, report_r):
            os.close(fd)
        _plant(path, user, answer, (ready_w, stop_r, report_w))
    for fd in (ready_w, stop_r, report_w):
        os.close(fd)
    received: list[str] = []
    try:
        assert os.read(ready_r, 1) == b"R", "the planted listener did not start"
        yield received
    finally:
        os.close(stop_w)
        with os.fdopen(report_r, "rb") as r:
            received.extend(json.loads(r.read()))
        os.waitpid(pid, 0)
        os.close(ready_r)


def codexctl(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def refused(result: subprocess.CompletedProcess[str], sock: str, reason: str) -> None:
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(f"codexctl: refusing to talk to {sock}: {reason}")
    assert result.stderr.count("\n") == 1, result.stderr


def library_refusal(sock: str | None) -> list[str]:
    """What the blocking and the asyncio client say when asked to ping at `sock`."""
    messages = []
    with pytest.raises(DaemonUnreachable) as sync_info, Client(sock, timeout=10) as c:
        c.call("daemon/ping")
    messages.append(str(sync_info.value))

    async def ping() -> None:
        async with AsyncClient(sock) as c:
            await c.call("daemon/ping")

    with pytest.raises(DaemonUnreachable) as async_info:
        asyncio.run(ping())
    messages.append(str(async_info.value))
    return messages


def private_dir(path: Path, mode: int, owner: int | None = None) -> Path:
    path.mkdir()
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return path


def test_socket_in_another_users_directory_is_refused_before_a_byte(
    daemon_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = other_user()
    run_dir = private_dir(tmp_path / "codexd-0", 0o700, owner=nobody.pw_uid)
    sock = str(run_dir / "codexd.sock")
    env = dict(daemon_env, CODEXD_SOCKET=sock)
    monkeypatch.setenv("CODEXD_SOCKET", sock)
    reason = f"its directory {run_dir} belongs to uid {nobody.pw_uid}, not to you (uid 0)"
    with planted(sock, nobody) as received:
        refused(codexctl(env, "login", "--api-key", stdin=KEY + "\n"), sock, reason)
        refused(codexctl(env, "submit", "a secret prompt"), sock, reason)
        for message in library_refusal(None):
            assert message.startswith(f"refusing to talk to {sock}: {reason}")
    assert received == []


def test_socket_in_a_group_writable_directory_is_refused_before_a_byte(
    daemon_env: dict[str, str], tmp_path: Path
) -> None:
    """Ours, but open to writes by others: even an explicit --socket is refused."""
    planter = pwd.getpwnam("nobody") if os.getuid() == 0 else None
    run_dir = private_dir(tmp_path / "shared", 0o770)
    sock = str(run_dir / "codexd.sock")
    reason = (
        f"its directory {run_dir} is writable by group or others (mode 0770), so anyone "
        f"could have put the socket there: run chmod 700 {run_dir}"
    )
    with planted(sock, planter) as received:
        refused(codexctl(dict(daemon_env, CODEXD_SOCKET=sock), "status"), sock, reason)
        # `start` does not take the socket for an absent daemon and start one beside it.
        refused(codexctl(dict(daemon_env, CODEXD_SOCKET=sock), "start"), sock, reason)
        login = codexctl(daemon_env, "--socket", sock, "login", "--api-key", stdin=KEY)
        refused(login, sock, reason)
        for message in library_refusal(sock):
            assert message == f"refusing to talk to {sock}: {reason}"
    assert received == []


def test_listener_of_another_uid_is_refused_after_connect_before_a_byte(
    daemon_env: dict[str, str], tmp_path: Path
) -> None:
    """The directory passes (ours, 0700), so only the peer-uid check can refuse."""
    nobody = other_user()
    run_dir = private_dir(tmp_path / "run", 0o700)
    sock = str(run_dir / "codexd.sock")
    reason = f"the process listening on it runs as uid {nobody.pw_uid}, not as you (uid 0)"
    with planted(sock, nobody) as received:
        refused(codexctl(dict(daemon_env, CODEXD_SOCKET=sock), "submit", "a prompt"), sock, reason)
        refused(codexctl(daemon_env, "--socket", sock, "status"), sock, reason)
        for message in library_refusal(sock):
            assert message.startswith(f"refusing to talk to {sock}: {reason}")
    assert received == ["", "", "", ""], "each client connected, read the uid and hung up"


def test_root_reaches_another_users_daemon_only_at_a_socket_it_names(
    daemon_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = other_user()
    run_dir = private_dir(tmp_path / f"codexd-{nobody.pw_uid}", 0o700, owner=nobody.pw_uid)
    sock = str(run_dir / "codexd.sock")
    reason = f"its directory {run_dir} belongs to uid {nobody.pw_uid}, not to you (uid 0)"
    with planted(sock, nobody, answer=True) as received:
        refused(codexctl(dict(daemon_env, CODEXD_SOCKET=sock), "status"), sock, reason)
        monkeypatch.setenv("CODEXD_SOCKET", sock)
        with pytest.raises(DaemonUnreachable, match="belongs to uid"):
            Client().connect()
        named = codexctl(daemon_env, "--socket", sock, "rpc", "daemon/ping")
        assert named.returncode == 0, named.stderr
        assert json.loads(named.stdout) == {}
        with Client(sock, timeout=10) as c:
            assert c.call("daemon/ping") == {}
    pings: list[Any] = [json.loads(line)["method"] for r in received for line in r.splitlines()]
    assert pings == ["initialize", "daemon/ping", "daemon/ping"]


def test_check_socket_for_other_programs_refuses_the_same(tmp_path: Path) -> None:
    """`codexctl.check_socket`, which docs/gateway.md runs before the SDK connects."""
    from codexctl import check_socket

    run_dir = private_dir(tmp_path / "shared", 0o777)
    sock = str(run_dir / "gateway.sock")
    with planted(sock, None) as received, pytest.raises(DaemonUnreachable) as info:
        check_socket(sock)
    assert str(info.value).startswith(
        f"refusing to talk to {sock}: its directory {run_dir} is writable by group or others "
        "(mode 0777)"
    )
    assert received == []
