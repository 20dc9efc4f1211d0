"""Faults the OS and the network really produce, each with what the user sees and proof that
nothing is lost: a full disk under auth.json and under the ledger (a tiny tmpfs), stderr on
/dev/full, the state dir deleted while running, an upstream that resets, stalls before its
headers or does not resolve, SIGKILL in the middle of a job, and wall-clock jumps.

Upstream faults that the fake scripts (truncated JSON, a captive portal's 200 HTML, drops,
stalls mid-stream) are in test_job_faults.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codexctl import Client, RpcError
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, Reply, stalled
from tests.conftest import write_config

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}
API_KEY_1 = "sk-first-key-0000000000000000000000"
API_KEY_2 = "sk-second-key-111111111111111111111"


def run_job(c: Client, **params: Any) -> tuple[str, list[dict[str, Any]]]:
    params.setdefault("body", {"input": "hi"})
    job_id = c.call("job/submit", params)["job_id"]
    events: list[dict[str, Any]] = []
    while True:
        n = c.next_notification(timeout=60)
        assert n is not None, f"no terminal event for {job_id}: {events}"
        if n.method == "job/event" and n.params["job_id"] == job_id:
            events.append(n.params["event"])
            if n.params["event"]["type"] in TERMINAL:
                return job_id, events


def requests_in_ledger(c: Client) -> int:
    return int(c.call("usage/read")["total"]["requests"])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ----------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def tiny_fs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(mode=0o700, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system holding `directory`; returns the filler file (remove it to free)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)
    return filler


def test_disk_full_under_auth_json_keeps_the_old_login(
    daemon_env: dict[str, str], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    home = Path(daemon_env["CODEX_HOME"])
    with tiny_fs(home, "64k"):
        write_config(
            daemon_env,
            f'openai_base_url = "{fake_openai.base_url}"\nmodel = "gpt-5"\n'
            'cli_auth_credentials_store = "file"\n',
        )
        with DaemonProcess(daemon_env) as d, Client(d.socket) as c:
            c.call("events/subscribe", {"topics": ["account"]})
            c.call("account/login", {"method": "api_key", "api_key": API_KEY_1})
            done = wait_login(c)
            assert done["success"] is True
            before = (home / "auth.json").read_bytes()
            filler = fill(home)
            c.call("account/login", {"method": "api_key", "api_key": API_KEY_2})
            failed = wait_login(c)
            # The user is told, in words, and the old login is whole and still in use.
            assert failed["success"] is False
            assert "no space left" in failed["error"].lower(), failed
            assert "codexctl login" in failed["error"]
            assert API_KEY_2 not in msgspec.json.encode(failed).decode()
            assert (home / "auth.json").read_bytes() == before
            assert not [p for p in os.listdir(home) if p.startswith(".auth-")]  # no temp left
            _, events = run_job(c)
            assert events[-1]["type"] == "job.completed"
            assert fake_openai.model_requests()[-1].headers["authorization"].endswith(API_KEY_1)
            filler.unlink()
            c.call("account/login", {"method": "api_key", "api_key": API_KEY_2})
            assert wait_login(c)["success"] is True
            assert "could not be saved" in d.stderr()


def wait_login(c: Client) -> dict[str, Any]:
    while True:
        n = c.next_notification(timeout=30)
        assert n is not None, "no account/login_completed"
        if n.method == "account/login_completed":
            params: dict[str, Any] = n.params
            return params


def test_disk_full_under_the_ledger_loses_no_row(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    state = Path(upstream_env["CODEXD_STATE_DIR"])
    with tiny_fs(state, "1m"):
        with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
            assert run_job(c)[1][-1]["type"] == "job.completed"
            assert requests_in_ledger(c) == 1
            filler = fill(state)
            for _ in range(3):
                # The client's job is untouched by the ledger's trouble.
                assert run_job(c)[1][-1]["type"] == "job.completed"
            wait_for(lambda: "usage ledger" in d.stderr(), 10, "the ledger's complaint")
            log = d.stderr()
            assert "full" in log and "free disk space" in log
            assert requests_in_ledger(c) == 1  # nothing could be written yet ...
            filler.unlink()
            # ... and once there is room again, every finished job is in the ledger.
            wait_for(lambda: requests_in_ledger(c) == 4, 30, "the ledger to catch up")
            assert "writing again" in d.stderr()
        with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
            assert requests_in_ledger(c) == 4  # and it is on disk


def test_stderr_on_dev_full_does_not_stop_the_daemon(upstream_env: dict[str, str]) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with (
        DaemonProcess(upstream_env, stderr_path="/dev/full", args=["--log-level", "debug"]) as d,
        Client(d.socket) as c,
    ):
        for _ in range(3):
            assert run_job(c)[1][-1]["type"] == "job.completed"
        assert c.call("daemon/status")["jobs"]["running"] == 0


# ----------------------------------------------------------------------------- state dir gone


def test_state_dir_deleted_while_running(upstream_env: dict[str, str]) -> None:
    state = upstream_env["CODEXD_STATE_DIR"]
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        assert run_job(c)[1][-1]["type"] == "job.completed"
        assert requests_in_ledger(c) == 1
        shutil.rmtree(state)
        # The daemon keeps serving; the jobs after the loss are recorded in a new ledger.
        assert run_job(c)[1][-1]["type"] == "job.completed"
        assert run_job(c)[1][-1]["type"] == "job.completed"
        wait_for(lambda: requests_in_ledger(c) == 2, 20, "a new ledger with the new jobs")
        log = d.stderr()
        assert "deleted" in log and state in log  # reported, with where
        assert os.stat(state).st_mode & 0o777 == 0o700
        assert os.stat(os.path.join(state, "usage.sqlite3")).st_mode & 0o777 == 0o600
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        assert requests_in_ledger(c) == 2


# ----------------------------------------------------------------------------- the network


class ResettingServer:
    """Accepts TCP connections and resets each at once (SO_LINGER 0): what a crashing proxy
    or a firewall sends."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def provider_env(env: dict[str, str], base_url: str, fake: FakeOpenAI, extra: str = "") -> None:
    write_config(
        env,
        f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n'
        "[model_providers.x]\n"
        f'name = "x"\nbase_url = "{base_url}"\nenv_key = "FAKE_KEY"\n'
        "request_max_retries = 2\nstream_max_retries = 1\nstream_idle_timeout_ms = 400\n" + extra,
    )


def test_connection_reset_fails_after_the_retries_and_is_recorded(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    server = ResettingServer()
    try:
        provider_env(upstream_env, server.url, fake_openai)
        with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
            job_id, events = run_job(c, provider="x")
            error = events[-1]["error"]
            assert error["data"]["kind"] == "upstream_error"
            assert error["data"]["retryable"] is True
            assert "connection" in error["message"].lower()
            assert server.accepted == 3  # request_max_retries = 2
            assert c.call("job/get", {"job_id": job_id})["attempts"] == 3
            # A failed job that started is still in the ledger (status failed).
            assert requests_in_ledger(c) == 1
    finally:
        server.close()


def test_dns_failure_names_the_host(upstream_env: dict[str, str], fake_openai: FakeOpenAI) -> None:
    provider_env(upstream_env, "http://no-such-host.invalid/v1", fake_openai)
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        _, events = run_job(c, provider="x")
        error = events[-1]["error"]
        assert events[-1]["type"] == "job.failed"
        assert error["data"]["kind"] == "upstream_error"
        assert "no-such-host.invalid" in error["message"], error["message"]
        assert c.call("daemon/status")["jobs"]["running"] == 0


def test_headers_slower_than_the_idle_timeout(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    """An upstream that accepts and then says nothing for longer than
    stream_idle_timeout_ms before its headers: each attempt gives up after the timeout, the
    job ends after request_max_retries, and the user is told who was silent."""
    provider_env(upstream_env, fake_openai.base_url, fake_openai)
    # Longer than the test may run: the job can only end because the daemon gave up waiting.
    fake_openai.script(Reply(first_byte_delay_s=3600.0), times=3)
    with DaemonProcess(upstream_env) as d, Client(d.socket) as c:
        job_id, events = run_job(c, provider="x")
        assert events[-1]["type"] == "job.failed", events
        error = events[-1]["error"]
        assert error["data"]["kind"] == "upstream_error", error
        assert "127.0.0.1 did not answer in time" in error["message"], error["message"]
        assert [e["attempt"] for e in events if e["type"] == "job.started"] == [1, 2, 3]
        assert c.call("job/get", {"job_id": job_id})["state"] == "failed"
    # Each attempt reached the fake and none was answered: the daemon gave up on all three.
    stats = fake_openai.stats()
    assert stats.model_requests == 3
    assert stats.completed_streams == stats.completed_replies == 0


# ----------------------------------------------------------------------------- SIGKILL


def test_sigkill_during_a_job_then_restart(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    state = upstream_env["CODEXD_STATE_DIR"]
    d = DaemonProcess(upstream_env).start()
    try:
        with Client(d.socket) as c:
            c.call("account/login", {"method": "api_key", "api_key": API_KEY_1})
            for _ in range(2):
                assert run_job(c)[1][-1]["type"] == "job.completed"
            assert requests_in_ledger(c) == 2
            fake_openai.script(stalled(3))
            lost = c.call("job/submit", {"body": {"input": "hi"}})["job_id"]
            fake_openai.wait_for(lambda s: s.in_flight == 1)
        d.kill()  # SIGKILL
        assert d.proc is not None and d.proc.returncode == -signal.SIGKILL
    finally:
        d.close()
    # On disk: a sound ledger with exactly the finished jobs, a parseable auth.json.
    with sqlite3.connect(os.path.join(state, "usage.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM usage").fetchone() == (2,)
    auth = msgspec.json.decode(Path(upstream_env["CODEX_HOME"], "auth.json").read_bytes())
    assert auth["OPENAI_API_KEY"] == API_KEY_1
    with DaemonProcess(upstream_env) as d2, Client(d2.socket, timeout=10) as c:
        for method in ("job/get", "job/subscribe", "job/cancel"):
            with pytest.raises(RpcError) as info:
                c.call(method, {"job_id": lost})
            assert info.value.kind == "not_found"
            assert "codexctl jobs" in info.value.message
        assert requests_in_ledger(c) == 2
        assert run_job(c)[1][-1]["type"] == "job.completed"
        assert requests_in_ledger(c) == 3


# ----------------------------------------------------------------------------- clock jumps
#
# Intervals (rate windows, job retention, retry and idle timers) run on the monotonic clock;
# the wall clock only stamps results. Token expiry is the exception by nature: a JWT's `exp`
# is wall time, so a wall jump can only cause an early refresh (forward) or a 401 answered by
# one refresh (backward), never a failure. Each part gets a wall clock that jumps.


class JumpingClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall_now = 1_800_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_now


DAY = 86_400.0


def test_rate_budget_ignores_wall_clock_jumps() -> None:
    from codexd.limits.budget import BudgetLimits
    from codexd.limits.limiter import Limiter

    clock = JumpingClock()
    limiter = Limiter(
        "openai",
        BudgetLimits(requests_per_minute=2),
        clock=clock.monotonic,
        wall_clock=clock.wall,
    )
    budget = limiter.budget
    for ticket in (1, 2):
        assert budget.can_admit(0, clock.mono).ok
        budget.admit(ticket, 0, clock.mono)
        budget.release(ticket, clock.mono)
    for jump in (+DAY, -2 * DAY, +365 * DAY):
        clock.wall_now += jump
        blocked = budget.can_admit(0, clock.mono)
        assert not blocked.ok and blocked.reason == "requests"
        assert blocked.at is not None and 60 <= blocked.at - clock.mono <= 61
        assert limiter.snapshot().budget.available_requests == 0
    clock.mono -= 30  # a monotonic source that steps back is held, never frees the window early
    assert not budget.can_admit(0, clock.mono).ok
    clock.mono += 30 + 61
    assert budget.can_admit(0, clock.mono).ok


@pytest.mark.anyio
async def test_job_retention_ignores_wall_clock_jumps() -> None:
    import anyio

    from codexd.jobs import JobLimits, JobManager, Usage

    clock = JumpingClock()

    async def runner(job: Any, mgr: JobManager) -> None:
        mgr.emit(job, {"type": "job.started", "attempt": 1})
        await mgr.complete(job, output_text="ok", usage=Usage(), cost_usd=0.0, response_id=None)

    mgr = JobManager(runner, limits=lambda: JobLimits(job_retention_s=900.0), clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = mgr.create(client="t", provider="openai", model="m", api="responses", body={})
        with anyio.fail_after(5):
            await job.finished.wait()
        for jump in (+10 * DAY, -20 * DAY):
            clock.wall_now += jump
            mgr.expire(clock.monotonic())
            assert mgr.get(job.id) is job  # still retained: 0 s of monotonic time passed
        clock.mono += 899
        mgr.expire(clock.monotonic())
        assert mgr.get(job.id) is job
        clock.mono += 2
        mgr.expire(clock.monotonic())
        with pytest.raises(RpcError) as info:
            mgr.get(job.id)
        assert info.value.kind == "not_found"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_token_expiry_across_wall_clock_jumps(tmp_path: Path) -> None:
    from codexd.auth.tokens import Secret
    from tests.unit.test_auth_session import Clock, FakeIssuer, make_session, write_doc
    from tests.unit.test_auth_support import chatgpt_doc, make_tokens

    clock = Clock()
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    clock.now -= DAY  # backward: the token just looks fresher; used as is, nothing refreshed
    assert (await session.credentials()).bearer == Secret(tokens["access_token"])
    assert issuer.calls == 0
    clock.now += DAY + 2 * 3600  # forward past `exp`: exactly one refresh, shared
    import anyio

    results: list[Any] = []
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(lambda: _append(results, session.credentials()))
    assert issuer.calls == 1
    new = issuer.issued[0]["access_token"]
    assert {r.bearer for r in results} == {Secret(new)}
    clock.now -= 3 * DAY  # and back again: the new token stays in use
    assert (await session.credentials()).bearer == Secret(new)
    assert issuer.calls == 1


async def _append(results: list[Any], awaitable: Any) -> None:
    results.append(await awaitable)
