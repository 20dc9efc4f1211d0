"""`codexctl start` and `codexctl shutdown`, for machines without a service manager."""

from __future__ import annotations

import contextlib
import os
import socket as sock
import subprocess
import sys


def codexctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_start_status_shutdown(daemon_env: dict[str, str]) -> None:
    started = codexctl(daemon_env, "start")
    assert started.returncode == 0, started.stderr
    assert started.stdout == daemon_env["CODEXD_SOCKET"] + "\n"
    assert "codexd started (pid" in started.stderr
    log = os.path.join(daemon_env["CODEXD_STATE_DIR"], "codexd.log")
    assert os.stat(log).st_mode & 0o777 == 0o600
    try:
        status = codexctl(daemon_env, "status", "--json")
        assert status.returncode == 0
        again = codexctl(daemon_env, "start")
        assert again.returncode == 0
        assert "already running" in again.stderr
    finally:
        stopped = codexctl(daemon_env, "shutdown")
    assert stopped.returncode == 0, stopped.stderr
    assert "codexd stopped" in stopped.stderr
    assert not os.path.exists(daemon_env["CODEXD_SOCKET"])
    assert codexctl(daemon_env, "status").returncode == 3


def test_shutdown_without_a_daemon_says_so_and_exits_0(daemon_env: dict[str, str]) -> None:
    socket = daemon_env["CODEXD_SOCKET"]
    for before in ("no socket directory", "a stale socket"):
        if before == "a stale socket":  # a killed daemon's leftover: nobody listens on it
            os.makedirs(os.path.dirname(socket), mode=0o700)
            with contextlib.closing(sock.socket(sock.AF_UNIX, sock.SOCK_STREAM)) as s:
                s.bind(socket)
        result = codexctl(daemon_env, "shutdown")
        assert (result.returncode, result.stdout) == (0, ""), before
        assert result.stderr == f"codexctl: no codexd is running at {socket}: nothing to stop\n"


def test_start_reports_a_daemon_that_cannot_start(daemon_env: dict[str, str]) -> None:
    with open(os.path.join(daemon_env["CODEX_HOME"], "config.toml"), "w") as f:
        f.write("model = 5\n")
    result = codexctl(daemon_env, "start")
    assert result.returncode == 1
    assert "codexd exited 1" in result.stderr
    assert "config.toml:1: model" in result.stderr
