"""The real daemon under service-manager conditions: socket activation,
readiness, reload notifications, and the drain on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codexctl import Client, RpcError
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, Reply, stalled
from tests.conftest import LineConn, require, write_config

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """Unix socket paths must stay short (108 bytes): pytest's tmp_path can be too long."""
    d = tempfile.mkdtemp(prefix="cxd-")
    os.chmod(d, 0o700)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_socket_activation_serves_the_first_connection(short_tmp: Path) -> None:
    require(SOCKET_ACTIVATE, "needs systemd-socket-activate (apt-get install systemd)")
    assert SOCKET_ACTIVATE is not None
    run_dir = short_tmp / "run"
    run_dir.mkdir(mode=0o700)
    sock_path = run_dir / "codexd.sock"
    home = short_tmp / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "NOTIFY", "LISTEN"))}
    env.update(
        CODEXD_SOCKET=str(sock_path),
        CODEXD_STATE_DIR=str(short_tmp / "state"),
        CODEX_HOME=str(home),
    )
    notify_path = short_tmp / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(30)  # a hang guard, not a wait for time to pass
        passthrough = [
            f"-E{k}" for k in ("CODEXD_SOCKET", "CODEXD_STATE_DIR", "CODEX_HOME", "PATH")
        ]
        proc = subprocess.Popen(
            [SOCKET_ACTIVATE, "-l", str(sock_path), f"-ENOTIFY_SOCKET={notify_path}",
             *passthrough, sys.executable, "-m", "codexd", "run"],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            assert "Listening on" in proc.stderr.readline()
            # The first client connects before the daemon runs; its request is served.
            started = time.perf_counter()
            conn = LineConn(str(sock_path), timeout=30)
            reply = conn.call("daemon/status")
            first_answer_s = time.perf_counter() - started
            status = reply["result"]
            assert isinstance(status, dict)
            assert status["started_by"] == "socket_activation"
            assert status["socket"] == str(sock_path)
            fields: list[str] = []
            while "READY=1" not in fields:
                fields += notify.recv(4096).decode().split("\n")
            conn.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            # The socket belongs to the service manager: the daemon leaves it in place.
            assert sock_path.exists()
            print(f"first client byte to answer under socket activation: {first_answer_s:.3f}s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_readiness_and_reload_notifications(daemon_env: dict[str, str]) -> None:
    with DaemonProcess(daemon_env) as d:
        assert "READY=1" in d.notify_messages
        write_config(daemon_env, 'model = "gpt-5-mini"\n')
        d.signal(signal.SIGHUP)
        reloading = d.wait_for("RELOADING=1", 10)
        assert any(f.startswith("MONOTONIC_USEC=") for f in reloading)
        d.wait_for("READY=1", 10)
        with Client(d.socket) as c:
            assert c.call("config/read")["effective"]["model"] == "gpt-5-mini"


def _slow_daemon_env(upstream_env: dict[str, str], drain_timeout_s: int) -> dict[str, str]:
    path = os.path.join(upstream_env["CODEX_HOME"], "config.toml")
    with open(path, "a") as f:
        f.write(f"\n[codexd]\ndrain_timeout_s = {drain_timeout_s}\n")
    return upstream_env


def _wait_in_flight(fake: FakeOpenAI) -> None:
    fake.wait_for(lambda s: s.in_flight >= 1, timeout=20)


def test_sigterm_lets_a_running_job_finish(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    env = _slow_daemon_env(upstream_env, 30)
    fake_openai.script(Reply(deltas=("a", "b", "c"), first_byte_delay_s=1.0))
    with DaemonProcess(env) as d, Client(d.socket) as c:
        job = c.call("job/submit", {"body": {"input": "slow"}, "subscribe": False})
        _wait_in_flight(fake_openai)
        d.signal(signal.SIGTERM)
        d.wait_for("STOPPING=1", 10)
        with pytest.raises(RpcError) as info:
            Client(d.socket).call("job/submit", {"body": {"input": "late"}})
        assert info.value.kind == "overloaded"
        assert "draining" in info.value.message
        state = c.call("job/get", {"job_id": job["job_id"]})["state"]
        assert state in ("running", "completed")
        assert d.proc is not None
        assert d.proc.wait(30) == 0
        assert not os.path.exists(d.socket)


def test_sigterm_cancels_what_outlives_the_drain_timeout(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    env = _slow_daemon_env(upstream_env, 1)
    fake_openai.script(stalled(3))
    with DaemonProcess(env) as d, Client(d.socket) as c:
        c.call("job/submit", {"body": {"input": "forever"}})
        _wait_in_flight(fake_openai)
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        cancelled = False
        while not cancelled:
            n = c.next_notification(timeout=20)
            assert n is not None, "no job.cancelled before the daemon stopped"
            cancelled = n.method == "job/event" and n.params["event"]["type"] == "job.cancelled"
        assert d.proc is not None
        assert d.proc.wait(20) == 0
        assert time.monotonic() - started < 1 + 1 + 5  # drain_timeout_s + 1 s, with slack
    fake_openai.wait_for(lambda s: s.disconnects >= 1, timeout=10)


def test_second_sigterm_stops_at_once(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    env = _slow_daemon_env(upstream_env, 60)
    fake_openai.script(stalled(3))
    with DaemonProcess(env) as d, Client(d.socket) as c:
        c.call("job/submit", {"body": {"input": "forever"}, "subscribe": False})
        _wait_in_flight(fake_openai)
        d.signal(signal.SIGTERM)
        d.wait_for("STOPPING=1", 10)
        d.signal(signal.SIGTERM)
        assert d.proc is not None
        assert d.proc.wait(10) == 0


def test_daemon_shutdown_method_drains(daemon_env: dict[str, str]) -> None:
    with DaemonProcess(daemon_env) as d:
        with Client(d.socket) as c:
            assert c.call("daemon/shutdown") == {}
        assert d.proc is not None
        assert d.proc.wait(20) == 0
        assert "STOPPING=1" in d.wait_for_all()
