"""Soak: a real daemon in ChatGPT mode under continuous load, faults and config edits.

20 clients submit jobs without pause; a random mix of the fake upstream's faults is scripted
all along; some streams are cancelled, others unsubscribed and re-attached from the last seq
seen; config.toml is rewritten every few seconds; the access token lives 6 minutes, so the
daemon refreshes it about once a minute (refresh window: 5 minutes). RSS and open file
descriptors are sampled every few seconds. At the end:

- every job reached a terminal state, and each client saw its seqs without gap or repeat;
- the ledger holds one row per job that started, and its completed rows match the jobs that
  completed and the streams the fake finished (a cancel racing the last event aside);
- file descriptors other than the upstream keep-alive pool are back where they started, RSS is
  flat (second half against the first), and no log line says ERROR without a cause.

    .venv/bin/python bench/soak.py [--seconds 600] [--clients 20]

tests/soak/test_soak.py runs it for 60 seconds in `make test`.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

if __name__ == "__main__":  # run as a script: the repository root holds `tests`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from codexctl import Client, RpcError
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_issuer import FakeIssuer
from codexd.testing.fake_openai import (
    FakeOpenAI,
    Reply,
    captive_portal,
    dropped,
    rate_limited,
    server_error,
    stalled,
    truncated_json,
)
from tests.fuzz.procfs import fd_census, rss_kib

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}
ACCESS_TTL_S = 360.0
# Short, so that memory reaches its steady state within the run; each client sees its own
# job's terminal event, so nothing needs a job to be retained for the final checks.
RETENTION_S = 20
WARM_UP_CLIENT = "soak-warm-up"  # its one job is not part of the run's accounts
SAMPLE_EVERY_S = 2.0
CONFIG_EVERY_S = 3.0
FAULT_EVERY_S = 0.25

FAULTS: dict[str, Any] = {
    "dropped": lambda: dropped(random.randint(2, 8)),
    "stalled": lambda: stalled(random.randint(2, 6)),
    "server_error": lambda: server_error(random.choice([500, 502, 503])),
    "captive_portal": captive_portal,
    "truncated_json": truncated_json,
    "rate_limited": lambda: rate_limited(retry_after_ms=50, try_again_in=None),
    "slow": lambda: Reply(delta_delay_s=0.05),
    "long": lambda: Reply(deltas=tuple(f" w{i}" for i in range(400))),
}


@dataclass
class JobRecord:
    job_id: str
    client: int
    terminal: str | None = None
    started: bool = False
    action: str = "watch"
    seq_problems: list[str] = field(default_factory=list)


@dataclass
class SoakReport:
    seconds: float
    jobs: list[JobRecord]
    faults: Counter[str]
    config_edits: int
    refreshes: int
    ledger_rows: dict[str, int]
    started_jobs: int
    fake_completed: int
    rss_curve: list[int]
    fd_curve: list[int]
    fds_before: int
    fds_after: int
    error_lines: list[str]
    problems: list[str]

    def text(self) -> str:
        states = Counter(j.terminal for j in self.jobs)
        actions = Counter(j.action for j in self.jobs)
        return "\n".join(
            [
                f"soak {self.seconds:.0f}s: {len(self.jobs)} jobs {dict(states)}",
                f"  actions {dict(actions)}",
                f"  faults injected {sum(self.faults.values())} {dict(self.faults)}",
                f"  config edits {self.config_edits}, token refreshes {self.refreshes}",
                f"  ledger rows {self.ledger_rows}, jobs that started {self.started_jobs}, "
                f"fake completed streams {self.fake_completed}",
                f"  RSS KiB every {SAMPLE_EVERY_S:g}s: {self.rss_curve}",
                f"  fds (all) every {SAMPLE_EVERY_S:g}s: {self.fd_curve}",
                f"  non-TCP fds before/after: {self.fds_before} -> {self.fds_after}",
                f"  ERROR lines {len(self.error_lines)}",
                *(f"  problem: {p}" for p in self.problems),
            ]
        )


def soak_config(fake: FakeOpenAI, generation: int) -> str:
    verbosity = ["low", "medium", "high"][generation % 3]
    return (
        f'model = "gpt-5"\nmodel_provider = "soak"\nmodel_verbosity = "{verbosity}"\n'
        f'chatgpt_base_url = "{fake.chatgpt_base_url}"\n'
        f"# generation {generation}\n"
        "[codexd]\n"
        f'auth_issuer = "{fake.issuer.origin}"\n'
        f"job_retention_s = {RETENTION_S}\n"
        "[model_providers.soak]\n"
        f'name = "soak"\nbase_url = "{fake.origin}/backend-api/codex"\n'
        "requires_openai_auth = true\n"
        "request_max_retries = 2\nstream_max_retries = 2\nstream_idle_timeout_ms = 500\n"
    )


class Soak:
    def __init__(
        self, seconds: float, clients: int, workdir: str, access_ttl_s: float = ACCESS_TTL_S
    ) -> None:
        self.seconds = seconds
        self.access_ttl_s = access_ttl_s
        self.clients = clients
        self.workdir = workdir
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.jobs: list[JobRecord] = []
        self.faults: Counter[str] = Counter()
        self.config_edits = 0
        self.rss: list[int] = []
        self.fds: list[int] = []
        self.warm_streams = 0
        self.errors: list[str] = []

    # -- workers ---------------------------------------------------------------------

    def client_loop(self, index: int, socket_path: str) -> None:
        rng = random.Random(index)
        try:
            with Client(socket_path, timeout=60) as c:
                c.call("initialize", {"client": {"name": f"soak-{index}"}})
                while not self.stop.is_set():
                    self.one_job(c, index, rng)
        except Exception as exc:  # reported, not raised: the other clients go on
            with self.lock:
                self.errors.append(f"client {index}: {type(exc).__name__}: {exc}")

    def one_job(self, c: Client, index: int, rng: random.Random) -> None:
        action = rng.choice(["watch"] * 5 + ["cancel", "reattach"])
        job_id = c.call("job/submit", {"body": {"input": f"soak {index}"}})["job_id"]
        record = JobRecord(job_id, index, action=action)
        with self.lock:
            self.jobs.append(record)
        last = 0
        acted = False
        while True:
            n = c.next_notification(timeout=60)
            if n is None:
                record.seq_problems.append(f"no event for 60s after seq {last}")
                return
            p = n.params if isinstance(n.params, dict) else {}
            if n.method == "subscription/dropped" and p.get("job_id") == job_id:
                c.call("job/subscribe", {"job_id": job_id, "after_seq": p["next_seq"] - 1})
                continue
            if n.method != "job/event" or p.get("job_id") != job_id:
                continue
            if p["seq"] != last + 1:
                record.seq_problems.append(f"seq {p['seq']} after {last}")
            last = p["seq"]
            etype = p["event"]["type"]
            record.started |= etype == "job.started"
            if etype in TERMINAL:
                record.terminal = etype
                return
            if not acted and last >= 3:
                acted = True
                if action == "cancel":
                    c.call("job/cancel", {"job_id": job_id})
                elif action == "reattach":
                    c.call("job/unsubscribe", {"job_id": job_id})
                    # Events sent before the unsubscribe reply may still be in our queue.
                    while True:
                        extra = c.next_notification(timeout=0)
                        if extra is None:
                            break
                        q = extra.params if isinstance(extra.params, dict) else {}
                        if extra.method == "job/event" and q.get("job_id") == job_id:
                            if q["seq"] != last + 1:
                                record.seq_problems.append(f"seq {q['seq']} after {last}")
                            last = q["seq"]
                            record.started |= q["event"]["type"] == "job.started"
                            if q["event"]["type"] in TERMINAL:
                                record.terminal = q["event"]["type"]
                                return
                    c.call("job/subscribe", {"job_id": job_id, "after_seq": last})

    def warm_up(self, socket_path: str) -> None:
        """One job to its end and into the ledger before the descriptors are counted, so the
        count starts with what the daemon opens on first use (the ledger's files, the
        watchers) and compares like with like."""
        with Client(socket_path, timeout=60) as c:
            c.call("initialize", {"client": {"name": WARM_UP_CLIENT}})
            job_id = c.call("job/submit", {"body": {"input": "warm-up"}})["job_id"]
            while True:
                n = c.next_notification(timeout=60)
                assert n is not None, "no event from the warm-up job for 60 s"
                p = n.params if isinstance(n.params, dict) else {}
                if p.get("job_id") == job_id and p["event"]["type"] in TERMINAL:
                    break
            deadline = time.monotonic() + 30
            while c.call("usage/read", {})["total"]["requests"] < 1:
                assert time.monotonic() < deadline, "the warm-up job never reached the ledger"
                c.call("daemon/ping")

    def fault_loop(self, fake: FakeOpenAI) -> None:
        rng = random.Random(99)
        while not self.stop.wait(FAULT_EVERY_S):
            if fake.pending() < 5:
                name = rng.choice(sorted(FAULTS))
                fake.script(FAULTS[name]())
                with self.lock:
                    self.faults[name] += 1

    def config_loop(self, env: dict[str, str], fake: FakeOpenAI) -> None:
        path = os.path.join(env["CODEX_HOME"], "config.toml")
        while not self.stop.wait(CONFIG_EVERY_S):
            self.config_edits += 1
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(soak_config(fake, self.config_edits))
            os.replace(tmp, path)

    def sample_loop(self, pid: int) -> None:
        while True:
            self.rss.append(rss_kib(pid))
            self.fds.append(fd_census(pid).total)
            if self.stop.wait(SAMPLE_EVERY_S):
                return

    # -- the run ---------------------------------------------------------------------

    def run(self) -> SoakReport:
        home = os.path.join(self.workdir, "home")
        os.makedirs(home, mode=0o700, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
        env.pop("NOTIFY_SOCKET", None)
        env.update(
            CODEXD_SOCKET=os.path.join(self.workdir, "run", "codexd.sock"),
            CODEXD_STATE_DIR=os.path.join(self.workdir, "state"),
            CODEX_HOME=home,
        )
        stderr_path = os.path.join(self.workdir, "codexd.log")
        issuer = FakeIssuer(access_ttl_s=self.access_ttl_s)
        with FakeOpenAI.running(issuer=issuer, reply=Reply(delta_delay_s=0.005)) as fake:
            with open(os.path.join(home, "config.toml"), "w") as f:
                f.write(soak_config(fake, 0))
            _write_login(home, issuer, self.access_ttl_s)
            with DaemonProcess(env, stderr_path=stderr_path) as daemon:
                assert daemon.proc is not None
                pid = daemon.proc.pid
                self.warm_up(daemon.socket)
                self.warm_streams = fake.stats().completed_streams
                fds_before = fd_census(pid).non_tcp
                threads = [
                    threading.Thread(target=self.client_loop, args=(i, daemon.socket))
                    for i in range(self.clients)
                ]
                threads += [
                    threading.Thread(target=self.fault_loop, args=(fake,)),
                    threading.Thread(target=self.config_loop, args=(env, fake)),
                    threading.Thread(target=self.sample_loop, args=(pid,)),
                ]
                started = time.monotonic()
                for t in threads:
                    t.start()
                self.stop.wait(self.seconds)
                self.stop.set()
                fake.clear_script()
                for t in threads:
                    t.join(120)
                elapsed = time.monotonic() - started
                report = self.check(daemon, fake, elapsed, fds_before, pid)
            with open(stderr_path) as f:
                log = f.read()
        report.error_lines = [line for line in log.splitlines() if " ERROR " in line]
        report.problems += log_problems(log)
        report.problems += self.ledger_problems(env, report)
        return report

    def check(
        self, daemon: DaemonProcess, fake: FakeOpenAI, elapsed: float, fds_before: int, pid: int
    ) -> SoakReport:
        problems = list(self.errors)
        started_jobs = 0
        with Client(daemon.socket, timeout=60) as c:
            for record in self.jobs:
                if record.terminal is None:
                    problems.append(f"{record.job_id}: its client saw no terminal event")
                started_jobs += record.started
                problems += [f"{record.job_id}: {p}" for p in record.seq_problems]
                try:
                    job = c.call("job/get", {"job_id": record.job_id})
                except RpcError as exc:
                    if exc.kind != "not_found":  # past job_retention_s is fine
                        problems.append(f"{record.job_id}: job/get {exc.kind}")
                    continue
                if "job." + job["state"] != record.terminal:
                    problems.append(f"{record.job_id}: saw {record.terminal}, is {job['state']}")
            status = c.call("daemon/status")
            if status["jobs"]["queued"] or status["jobs"]["running"]:
                problems.append(f"jobs still active: {status['jobs']}")
        refreshes = sum(
            1
            for r in fake.issuer.requests
            if r.path == "/oauth/token" and r.params.get("grant_type") == "refresh_token"
        )
        # Connections their clients closed are released when the daemon reads the EOF: give
        # it the moment (bounded) before comparing; a leak never settles.
        settle_until = time.monotonic() + 10.0
        while (fds_after := fd_census(pid).non_tcp) != fds_before and (
            time.monotonic() < settle_until
        ):
            time.sleep(0.05)
        if fds_after != fds_before:
            problems.append(f"non-TCP file descriptors {fds_before} -> {fds_after}")
        # Flat once warm: the last third against the middle one (the first third ramps up as
        # retention, the rate window and the pools fill).
        third = len(self.rss) // 3
        if third >= 3:
            middle = statistics.median(self.rss[third : 2 * third])
            last = statistics.median(self.rss[2 * third :])
            # A one-minute run is still warming up (first token refresh, code paths hit for
            # the first time, the 61 s rate window filling): its thirds may differ by ~15%
            # without a leak. Over ten minutes the allocator creep that codexd/allocator.py
            # stops (middle third ~315 MB, last ~371 MB) stands out against 5%.
            tolerance = 1.05 if elapsed >= 300 else 1.15
            if last > middle * tolerance + 8 * 1024:
                problems.append(f"RSS grew: median {middle:.0f} KiB -> {last:.0f} KiB")
        expected_refreshes = int(elapsed // (self.access_ttl_s - 300)) - 1
        if refreshes < max(expected_refreshes, 0):
            problems.append(f"{refreshes} token refreshes in {elapsed:.0f}s")
        return SoakReport(
            seconds=elapsed,
            jobs=self.jobs,
            faults=self.faults,
            config_edits=self.config_edits,
            refreshes=refreshes,
            ledger_rows={},
            started_jobs=started_jobs,
            fake_completed=fake.stats().completed_streams - self.warm_streams,
            rss_curve=self.rss,
            fd_curve=self.fds,
            fds_before=fds_before,
            fds_after=fds_after,
            error_lines=[],
            problems=problems,
        )

    def ledger_problems(self, env: dict[str, str], report: SoakReport) -> list[str]:
        """After the daemon stopped (its ledger flushed): one row per started job."""
        path = os.path.join(env["CODEXD_STATE_DIR"], "usage.sqlite3")
        with sqlite3.connect(path) as db:
            rows = dict(
                db.execute(
                    "SELECT status, count(*) FROM usage WHERE client != ? GROUP BY status",
                    (WARM_UP_CLIENT,),
                )
            )
        report.ledger_rows = rows
        problems = []
        if sum(rows.values()) != report.started_jobs:
            problems.append(f"ledger rows {rows} but {report.started_jobs} jobs started")
        completed = sum(1 for j in report.jobs if j.terminal == "job.completed")
        cancelled = sum(1 for j in report.jobs if j.terminal == "job.cancelled")
        if rows.get("completed", 0) != completed:
            problems.append(f"ledger completed {rows.get('completed', 0)}, jobs {completed}")
        if not completed <= report.fake_completed <= completed + cancelled:
            problems.append(
                f"fake completed {report.fake_completed} streams for {completed} completed jobs"
            )
        return problems


_CAUSED = re.compile(r":\s*\S")


def log_problems(log: str) -> list[str]:
    """A traceback is a bug; an ERROR line must say why (`...: cause`)."""
    problems = []
    if "Traceback" in log:
        problems.append("a traceback in the log")
    for line in log.splitlines():
        if " ERROR " in line:
            message = line.split(" ERROR ", 1)[1].split(":", 1)[-1]
            if not _CAUSED.search(message):
                problems.append(f"an ERROR without a cause: {line}")
    return problems


def _write_login(home: str, issuer: FakeIssuer, access_ttl_s: float) -> None:
    from datetime import UTC, datetime

    from codexd.auth.authfile import AuthDocument, auth_file_path, write_auth_file
    from codexd.auth.tokens import Secret

    tokens = issuer.issue_tokens(access_ttl_s=access_ttl_s)
    doc = AuthDocument.chatgpt_login(
        id_token=Secret(tokens.id_token),
        access_token=Secret(tokens.access_token),
        refresh_token=Secret(tokens.refresh_token),
        api_key=None,
        now=datetime.now(UTC),
    )
    write_auth_file(auth_file_path(home), doc)


def run_soak(
    seconds: float,
    clients: int = 20,
    workdir: str | None = None,
    access_ttl_s: float = ACCESS_TTL_S,
) -> SoakReport:
    """Run the soak; `access_ttl_s` - 300 s is the interval between token refreshes."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="codexd-soak-") as tmp:
            return Soak(seconds, clients, tmp, access_ttl_s).run()
    return Soak(seconds, clients, workdir, access_ttl_s).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    report = run_soak(args.seconds, args.clients)
    print(report.text())
    raise SystemExit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
