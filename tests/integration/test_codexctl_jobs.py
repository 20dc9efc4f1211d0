"""`codexctl ask | submit | watch | cancel | jobs` against a real daemon and the fake upstream."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from typing import Any

from codexctl import Client
from codexctl.client import Notification
from codexctl.commands_jobs import follow, rows_used
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import (
    DEFAULT_REPLY_TEXT,
    FakeOpenAI,
    Reply,
    dropped,
    insufficient_quota,
    stalled,
)

REPLY = DEFAULT_REPLY_TEXT
# A Responses stream's events: created, in_progress, item added, part added, then the deltas;
# dropping after 6 closes it once "Hello" and " from" were sent.
DROP_AFTER_TWO_DELTAS = 6


def codexctl(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --------------------------------------------------------------------------- ask to a pipe


def test_ask_through_a_pipe_prints_exactly_the_reply(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    result = codexctl(
        upstream_daemon.env,
        "ask",
        "Say hello",
        "--system",
        "Be brief.",
        "--reasoning",
        "low",
        "--model",
        "gpt-5-mini",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == REPLY + "\n"
    assert result.stderr == ""
    body = fake_openai.model_requests("/v1/responses")[-1].body
    assert body["input"] == "Say hello"
    assert body["instructions"] == "Be brief."
    assert body["reasoning"]["effort"] == "low"
    assert body["model"] == "gpt-5-mini"


def test_ask_reads_the_prompt_from_stdin_and_speaks_chat(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    result = codexctl(upstream_daemon.env, "ask", "-", stdin="from stdin\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == REPLY + "\n"
    assert fake_openai.model_requests("/v1/responses")[-1].body["input"] == "from stdin\n"

    chat = codexctl(upstream_daemon.env, "ask", "hi", "--api", "chat", "--system", "sys")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == REPLY + "\n"
    messages = fake_openai.model_requests("/v1/chat/completions")[-1].body["messages"]
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
    ]

    empty = codexctl(upstream_daemon.env, "ask", "-", stdin="  \n")
    assert empty.returncode == 2
    assert "prompt is empty" in empty.stderr


def test_ask_json_gives_every_event_as_a_json_line(upstream_daemon: DaemonProcess) -> None:
    result = codexctl(upstream_daemon.env, "ask", "hi", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert lines[0]["event"]["type"] == "job.queued"
    assert lines[-1]["event"]["type"] == "job.completed"
    assert lines[-1]["event"]["output_text"] == REPLY
    assert len({e["job_id"] for e in lines}) == 1


def test_ask_stream_to_a_pipe_announces_a_restart(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    plain = codexctl(upstream_daemon.env, "ask", "hi", "--stream")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == REPLY + "\n"

    fake_openai.script(dropped(DROP_AFTER_TWO_DELTAS))
    result = codexctl(upstream_daemon.env, "ask", "hi", "--stream")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from\n" + REPLY + "\n"
    assert result.stderr.count("\n") == 1
    assert "the stream restarted" in result.stderr


def test_ask_to_a_pipe_after_a_restart_prints_the_reply_once(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(dropped(DROP_AFTER_TWO_DELTAS))
    result = codexctl(upstream_daemon.env, "ask", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == REPLY + "\n"
    assert fake_openai.stats().model_requests == 2


# --------------------------------------------------------------------------- ask on a terminal


class Screen:
    """Just enough of a VT100 to tell what a person would see: text, CR, LF, cursor up (CSI A),
    erase below (CSI J) and to the end of the line (CSI K), with deferred wrapping."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.rows: list[list[str]] = [[]]
        self.row = 0
        self.col = 0

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                m = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])").match(text, i)
                assert m is not None, f"unknown escape at {text[i : i + 8]!r}"
                self.csi(m.group(1), m.group(2))
                i = m.end()
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                while len(self.rows) <= self.row:
                    self.rows.append([])
            else:
                if self.col >= self.columns:
                    self.row += 1
                    self.col = 0
                    while len(self.rows) <= self.row:
                        self.rows.append([])
                line = self.rows[self.row]
                while len(line) < self.col:
                    line.append(" ")
                if self.col < len(line):
                    line[self.col] = ch
                else:
                    line.append(ch)
                self.col += 1
            i += 1

    def csi(self, params: str, final: str) -> None:
        n = int(params) if params else 0
        if final == "A":
            self.row = max(0, self.row - max(n, 1))
        elif final == "J" and n == 0:
            del self.rows[self.row][self.col :]
            del self.rows[self.row + 1 :]
        elif final == "K" and n == 0:
            del self.rows[self.row][self.col :]
        elif final != "m":
            raise AssertionError(f"unexpected escape CSI {params}{final}")

    def lines(self) -> list[str]:
        out = ["".join(r).rstrip() for r in self.rows]
        while out and not out[-1]:
            out.pop()
        return out


def run_in_pty(env: dict[str, str], *args: str, columns: int = 80) -> tuple[int, str]:
    """Run codexctl with a pseudo-terminal as stdin, stdout and stderr; what it wrote, raw."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode()


def test_ask_on_a_terminal_streams_and_shows_usage(upstream_daemon: DaemonProcess) -> None:
    code, raw = run_in_pty(upstream_daemon.env, "ask", "hi")
    assert code == 0, raw
    screen = Screen(80)
    screen.feed(raw)
    lines = screen.lines()
    assert lines[0] == REPLY
    assert re.fullmatch(r"gpt-5 · 1 in / 8 out tokens · \$0\.000081", lines[1]), lines
    assert len(lines) == 2


def test_ask_on_a_terminal_takes_back_a_restarted_stream(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(dropped(DROP_AFTER_TWO_DELTAS))
    code, raw = run_in_pty(upstream_daemon.env, "ask", "hi")
    assert code == 0, raw
    assert "Hello from" in raw.split("\x1b[J")[0]  # the first attempt was shown, then erased
    screen = Screen(80)
    screen.feed(raw)
    lines = screen.lines()
    assert lines[0].startswith("codexctl: the reply starts over: attempt 2 in ")
    assert lines[-2] == REPLY
    assert sum(line.count("Hello") for line in lines) == 1
    assert lines[-1].startswith("gpt-5 · ")


def test_erasing_a_restart_that_wrapped_lines(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    """A narrow terminal: the first attempt covers several rows, all of them are taken back."""
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    fake_openai.script(Reply(text=text, drop_after=4 + 9), Reply(text=text))
    code, raw = run_in_pty(upstream_daemon.env, "ask", "hi", columns=12)
    assert code == 0, raw
    assert "\x1b[4A\x1b[J" in raw  # five rows shown, the cursor went back up four
    screen = Screen(12)
    screen.feed(raw)
    shown = "".join(screen.lines())
    assert shown.count("alpha") == 1
    assert shown.count("iota") == 1
    assert rows_used("alpha beta gamma delta epsilon zeta eta theta iota", 12) == 5


def test_rows_used_counts_wrapped_and_wide_text() -> None:
    assert rows_used("", 80) == 0
    assert rows_used("x", 80) == 1
    assert rows_used("x" * 80, 80) == 1  # the cursor waits at the margin
    assert rows_used("x" * 81, 80) == 2
    assert rows_used("a\nb\n", 80) == 3
    assert rows_used("界" * 41, 80) == 2


# --------------------------------------------------------------------------- interrupt and errors


def test_ctrl_c_cancels_the_job_and_exits_130(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(stalled(DROP_AFTER_TWO_DELTAS))
    proc = spawn(upstream_daemon.env, "ask", "hi")
    try:
        fake_openai.wait_for(lambda s: s.in_flight == 1, timeout=30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out == ""
    assert err.count("\n") == 1 and "cancelled" in err
    fake_openai.wait_for(lambda s: s.disconnects >= 1 and s.in_flight == 0, timeout=30)
    with Client(upstream_daemon.socket) as c:
        (job,) = c.call("job/list")["jobs"]
        assert job["state"] == "cancelled"
        assert job["id"] in err


def test_quota_failure_exits_5_with_one_line(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(insufficient_quota())
    result = codexctl(upstream_daemon.env, "ask", "hi")
    assert result.returncode == 5
    assert result.stdout == ""
    assert result.stderr.startswith("codexctl: ")
    assert result.stderr.count("\n") == 1
    assert "billing" in result.stderr
    assert fake_openai.stats().model_requests == 1


def test_reasoning_is_checked_against_the_model_catalog(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    env = upstream_daemon.env
    refused = codexctl(env, "ask", "hi", "--model", "gpt-5", "--reasoning", "xhigh")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "'xhigh'" in refused.stderr
    assert "choose one of minimal, low, medium, high" in refused.stderr
    assert refused.stderr.endswith(" - at `$.body.reasoning.effort`\n")
    chat = codexctl(env, "submit", "hi", "--api", "chat", "--model", "gpt-5", "--reasoning", "max")
    assert chat.returncode == 1 and "choose one of minimal, low" in chat.stderr
    assert chat.stderr.endswith(" - at `$.body.reasoning_effort`\n")
    assert fake_openai.stats().model_requests == 0

    dated = codexctl(env, "ask", "hi", "--model", "gpt-5-2025-08-07", "--reasoning", "high")
    assert (dated.returncode, dated.stdout, dated.stderr) == (0, REPLY + "\n", "")

    unknown = codexctl(env, "ask", "hi", "--model", "my-local-model", "--reasoning", "high")
    assert (unknown.returncode, unknown.stdout) == (0, REPLY + "\n")
    assert unknown.stderr == (
        "codexctl: warning: the model catalog does not know my-local-model: "
        "reasoning effort high is sent unchecked\n"
    )
    sent = fake_openai.model_requests()
    assert [r.body["reasoning"]["effort"] for r in sent] == ["high", "high"]


def test_unauthenticated_exits_4(daemon: DaemonProcess) -> None:
    result = codexctl(daemon.env, "ask", "hi")
    assert result.returncode == 4
    assert result.stderr.count("\n") == 1
    assert "codexctl login" in result.stderr


def test_daemon_down_exits_3(daemon_env: dict[str, str]) -> None:
    for args in (("ask", "hi"), ("submit", "hi"), ("jobs",), ("cancel", "job_x")):
        result = codexctl(daemon_env, *args)
        assert result.returncode == 3, args
        assert result.stderr.startswith("codexctl: codexd is not running at ")


# --------------------------------------------------------------------------- submit, watch, cancel


def test_submit_then_watch_and_replay(upstream_daemon: DaemonProcess) -> None:
    env = upstream_daemon.env
    submitted = codexctl(env, "submit", "hi")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert re.fullmatch(r"job_\w+", job_id)

    watched = codexctl(env, "watch", job_id)
    assert watched.returncode == 0, watched.stderr
    assert (watched.stdout, watched.stderr) == (REPLY + "\n", "")  # as ask into a pipe

    listed = codexctl(env, "watch", job_id, "--events")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert re.fullmatch(r"\s+1  job\.queued  position \d+", lines[0])
    assert '  response.output_text.delta  "Hello"' in listed.stdout
    assert re.fullmatch(r"\s+\d+  job\.completed  1 in / 8 out tokens · \$\S+", lines[-1])

    replay = codexctl(env, "watch", job_id, "--after-seq", "10", "--json")
    assert replay.returncode == 0
    events = [json.loads(line) for line in replay.stdout.splitlines()]
    assert events[0]["seq"] == 11
    assert events[-1]["event"]["type"] == "job.completed"

    as_json = codexctl(env, "submit", "hi", "--json")
    assert json.loads(as_json.stdout)["job_id"].startswith("job_")


def test_watch_on_a_terminal_shows_the_reply_as_ask_does(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    """The text as it streams, a restart taken back, then the usage line; no event lines."""
    env = upstream_daemon.env
    fake_openai.script(dropped(DROP_AFTER_TWO_DELTAS))
    job_id = codexctl(env, "submit", "hi").stdout.strip()
    code, raw = run_in_pty(env, "watch", job_id)
    assert code == 0, raw
    screen = Screen(80)
    screen.feed(raw)
    lines = screen.lines()
    assert lines[0].startswith("codexctl: the reply starts over: attempt 2 in ")
    assert lines[-2] == REPLY
    assert sum(line.count("Hello") for line in lines) == 1
    assert re.fullmatch(r"gpt-5 · 1 in / 8 out tokens · \$0\.000081", lines[-1]), lines
    assert "response.output_text.delta" not in raw


def test_cancel_a_running_job_and_list_jobs(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    env = upstream_daemon.env
    done_id = codexctl(env, "submit", "first").stdout.strip()
    assert codexctl(env, "watch", done_id).returncode == 0

    fake_openai.script(stalled(DROP_AFTER_TWO_DELTAS))
    job_id = codexctl(env, "submit", "hi").stdout.strip()
    fake_openai.wait_for(lambda s: s.in_flight == 1, timeout=30)
    cancelled = codexctl(env, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"{job_id} cancelled\n"
    fake_openai.wait_for(lambda s: s.disconnects >= 1, timeout=30)

    again = codexctl(env, "cancel", done_id)
    assert again.stdout == f"{done_id} had already ended: completed\n"

    watched = codexctl(env, "watch", job_id)
    assert watched.returncode == 1
    assert watched.stderr == f"codexctl: job {job_id} was cancelled\n"

    table = codexctl(env, "jobs")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:5] == ["ID", "STATE", "CLIENT", "MODEL", "ATTEMPTS"]
    by_id = {r.split()[0]: r.split() for r in rows}
    assert by_id[job_id][1:5] == ["cancelled", "codexctl", "gpt-5", "1"]
    assert by_id[done_id][1:5] == ["completed", "codexctl", "gpt-5", "1"]
    # columns line up: every row starts its state where the header does
    col = header.index("STATE")
    assert all(r[col - 2 : col] == "  " and r[col] != " " for r in rows)

    only = codexctl(env, "jobs", "--state", "cancelled", "--json")
    assert [j["id"] for j in json.loads(only.stdout)["jobs"]] == [job_id]
    limited = codexctl(env, "jobs", "--limit", "1")
    assert len(limited.stdout.splitlines()) == 2

    unknown = codexctl(env, "cancel", "job_nope")
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1


LOCAL_STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+05:30"


def test_jobs_show_cost_error_kind_and_local_times(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    env = dict(upstream_daemon.env, TZ="IST-5:30")  # a zone with a half-hour offset
    done_id = codexctl(env, "submit", "first").stdout.strip()
    assert codexctl(env, "watch", done_id).returncode == 0
    fake_openai.script(insufficient_quota())
    failed_id = codexctl(env, "submit", "second").stdout.strip()
    assert codexctl(env, "watch", failed_id).returncode == 5

    code, raw = run_in_pty(env, "jobs", columns=160)
    assert code == 0, raw
    screen = Screen(160)
    screen.feed(raw)
    header, *rows = screen.lines()
    assert header.split() == [
        "ID", "STATE", "CLIENT", "MODEL", "ATTEMPTS", "COST", "CREATED", "ERROR"
    ]  # fmt: skip
    by_id = {r.split()[0]: r for r in rows}
    assert re.fullmatch(
        rf"{done_id}\s+completed\s+codexctl\s+gpt-5\s+1\s+\$0\.0000[1-9]\d\s+{LOCAL_STAMP}",
        by_id[done_id],
    )
    assert re.fullmatch(
        rf"{failed_id}\s+failed\s+codexctl\s+gpt-5\s+1\s+-\s+{LOCAL_STAMP}\s+quota_exceeded",
        by_id[failed_id],
    )

    code, raw = run_in_pty(env, "status", columns=160)
    assert code == 0, raw
    status = Screen(160)
    status.feed(raw)
    lines = {line.split()[0]: line for line in status.lines()}
    assert re.search(rf"\(since {LOCAL_STAMP}\)$", lines["uptime"])
    assert re.search(rf", loaded {LOCAL_STAMP}\)$", lines["config"])

    as_json = json.loads(codexctl(env, "jobs", "--json").stdout)
    assert all(j["created_at"].endswith("Z") for j in as_json["jobs"])


# --------------------------------------------------------------------------- re-attaching


class ScriptedClient:
    """Stands in for codexctl.Client: hands out notifications, records calls."""

    def __init__(self, notifications: list[Notification]) -> None:
        self.queue = list(notifications)
        self.calls: list[tuple[str, Any]] = []

    def next_notification(self, timeout: float | None = None) -> Notification:
        return self.queue.pop(0)

    def call(self, method: str, params: Any = None) -> Any:
        self.calls.append((method, params))
        return {}


def event(seq: int, etype: str, job_id: str = "job_a") -> Notification:
    return Notification("job/event", {"job_id": job_id, "seq": seq, "event": {"type": etype}})


def test_follow_reattaches_after_a_dropped_subscription() -> None:
    client = ScriptedClient(
        [
            event(1, "job.queued"),
            event(2, "response.output_text.delta"),
            event(9, "job.started", job_id="job_other"),
            Notification("subscription/dropped", {"job_id": "job_a", "reason": "slow_consumer"}),
            event(2, "response.output_text.delta"),  # replayed: seen already
            event(3, "response.output_text.delta"),
            event(4, "job.completed"),
        ]
    )
    seen: list[int] = []
    terminal = follow(client, "job_a", 0, lambda p: seen.append(p["seq"]))
    assert terminal == {"type": "job.completed"}
    assert seen == [1, 2, 3, 4]
    assert client.calls == [("job/subscribe", {"job_id": "job_a", "after_seq": 2})]
