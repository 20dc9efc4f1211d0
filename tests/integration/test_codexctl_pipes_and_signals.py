"""A closed stdout and SIGINT/SIGTERM, for every codexctl command, against a real daemon.

A reader that goes away (a pager or `head` that quit) ends a command quietly with 141, the
status a shell reports for git or gh; `ask` then cancels its own job, `watch` leaves the job
alone. SIGINT and SIGTERM stop every follower with 130, even when the shell that started it
ignored SIGINT (a background job of a script).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import pytest

from codexctl import Client
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, stalled

# A Responses stream's events up to the second delta ("Hello", " from"); then it stalls.
STALL_AFTER_TWO_DELTAS = 6
GUARD_S = 30  # a hang guard only: every wait below ends on an event


@contextmanager
def codexctl_proc(
    env: dict[str, str], *args: str, stdout: Any = subprocess.PIPE, ignore_sigint: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    def started_in_a_script() -> None:  # as `codexctl ... &` in a shell script starts it
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        preexec_fn=started_in_a_script if ignore_sigint else None,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def read_line(stream: IO[bytes] | None) -> bytes:
    assert stream is not None
    line = stream.readline()
    assert line.endswith(b"\n"), line
    return line


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Its exit status and everything it wrote on stderr."""
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    return proc.wait(timeout=GUARD_S), err


def jobs_by_state(daemon: DaemonProcess) -> dict[str, str]:
    with Client(daemon.socket) as c:
        return {j["id"]: j["state"] for j in c.call("job/list")["jobs"]}


def submit_stalled(daemon: DaemonProcess, fake: FakeOpenAI) -> str:
    fake.script(stalled(STALL_AFTER_TWO_DELTAS))
    with Client(daemon.socket) as c:
        job_id = str(c.call("job/submit", {"body": {"input": "hi"}, "subscribe": False})["job_id"])
    fake.wait_for(lambda s: s.in_flight == 1, timeout=GUARD_S)
    return job_id


# --------------------------------------------------------------------------- a closed stdout


@pytest.mark.parametrize("mode", ["--json", "--stream"])
def test_ask_cancels_its_job_when_the_reader_goes_away(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI, mode: str
) -> None:
    """`ask --json … | head -1`, `ask --stream … | head -c 3`, while the job still runs."""
    fake_openai.script(stalled(STALL_AFTER_TWO_DELTAS))
    with codexctl_proc(upstream_daemon.env, "ask", "hi", mode) as proc:
        assert proc.stdout is not None
        first = read_line(proc.stdout) if mode == "--json" else proc.stdout.read(3)
        assert first.startswith(b'{"job_id"') if mode == "--json" else first == b"Hel"
        fake_openai.wait_for(lambda s: s.in_flight == 1, timeout=GUARD_S)
        proc.stdout.close()  # the reader quits; the job is silent from here on
        code, err = finish(proc)
    assert (code, err) == (141, "")
    fake_openai.wait_for(lambda s: s.disconnects == 1 and s.in_flight == 0, timeout=GUARD_S)
    assert list(jobs_by_state(upstream_daemon).values()) == ["cancelled"]


def test_watch_leaves_the_job_running_when_the_reader_goes_away(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    """`watch --json JOB | head -1`: not watch's job to cancel."""
    job_id = submit_stalled(upstream_daemon, fake_openai)
    with codexctl_proc(upstream_daemon.env, "watch", job_id, "--json") as proc:
        assert b'"job.queued"' in read_line(proc.stdout)
        assert proc.stdout is not None
        proc.stdout.close()
        code, err = finish(proc)
    assert (code, err) == (141, "")
    assert jobs_by_state(upstream_daemon) == {job_id: "running"}
    assert fake_openai.stats().disconnects == 0


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("jobs",),
        ("models",),
        ("rpc", "--list"),
        ("ask", "hi"),
        ("events",),
    ],
    ids=lambda a: " ".join(a),
)
def test_every_command_ends_quietly_when_stdout_is_closed(
    upstream_daemon: DaemonProcess, args: tuple[str, ...]
) -> None:
    """A reader that quit before the command wrote a byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with codexctl_proc(upstream_daemon.env, *args, stdout=write_end) as proc:
            os.close(write_end)
            write_end = -1
            code, err = finish(proc)
    finally:
        if write_end >= 0:
            os.close(write_end)
    assert code == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err in ("", "codexctl: following account, config, ratelimits, jobs; Ctrl-C stops\n")


# --------------------------------------------------------------------------- SIGINT and SIGTERM


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", ["ask", "watch", "events"])
def test_followers_stop_on_sigint_and_sigterm(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI, command: str, signum: int
) -> None:
    """Started as a script's background job (SIGINT ignored on entry), each follower still
    stops with 130; `ask` cancels its job, `watch` leaves it running."""
    job_id = ""
    if command == "ask":
        fake_openai.script(stalled(STALL_AFTER_TWO_DELTAS))
        args: tuple[str, ...] = ("ask", "hi", "--json")
    elif command == "watch":
        job_id = submit_stalled(upstream_daemon, fake_openai)
        args = ("watch", job_id, "--json")
    else:
        args = ("events", "--json")
    with codexctl_proc(upstream_daemon.env, *args, ignore_sigint=True) as proc:
        if command == "events":
            assert proc.stderr is not None
            assert b"Ctrl-C stops" in read_line(proc.stderr)
        else:
            read_line(proc.stdout)  # it follows the job now
            fake_openai.wait_for(lambda s: s.in_flight == 1, timeout=GUARD_S)
        proc.send_signal(signum)
        code, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err
    assert err.endswith(("codexctl: interrupted\n", "cancelled\n"))
    if command == "ask":
        assert err.startswith("codexctl: interrupted; job ") and err.endswith(" cancelled\n")
        fake_openai.wait_for(lambda s: s.disconnects == 1, timeout=GUARD_S)
        assert list(jobs_by_state(upstream_daemon).values()) == ["cancelled"]
    elif command == "watch":
        assert jobs_by_state(upstream_daemon) == {job_id: "running"}
