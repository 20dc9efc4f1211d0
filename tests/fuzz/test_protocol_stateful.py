"""Stateful fuzzing of the control socket against one real daemon and the fake upstream.

Hypothesis interleaves connect / submit / subscribe / unsubscribe / cancel / pause (stop
reading) / resume / disconnect across several raw NDJSON connections, with a random upstream
fault behind each job. Every message a connection receives is checked as it arrives:

- a `job/event` only arrives for a subscription the connection holds, and its seq is exactly
  the next one (no gap, no repeat) from the subscription's start;
- after a terminal event, nothing more for that subscription; every subscriber of a job sees
  the same terminal event, and the job's full log (replayed at the end) holds exactly one, last;
- a dropped subscription is told (`subscription/dropped`) with `next_seq` = the first event it
  missed, and re-attaching from there loses nothing;
- replies come before the notifications they cause.

After every run all connections close and the daemon must be back to its resting state
(`daemon/status.connections`, no job running); after all runs its file descriptors (except the
bounded upstream keep-alive pool) are exactly what they were, and RSS growth stays small.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from codexctl import Client
from codexd.eventloop import ENV_VAR as EVENT_LOOP_VAR
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import (
    FakeOpenAI,
    Reply,
    captive_portal,
    dropped,
    server_error,
    stalled,
    truncated_json,
)
from tests.conftest import write_config
from tests.fuzz.conftest import PROTOCOL_EXAMPLES
from tests.fuzz.procfs import FdCensus, fd_census, rss_kib

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(600)]

TERMINAL = frozenset({"job.completed", "job.failed", "job.cancelled"})
MAX_PEERS = 5
FLOOD_DELTAS = 6000  # more events than a connection's outbound buffer and socket hold
REPLY_TIMEOUT_S = 10.0
RETENTION_S = 3
ROUNDS = 3
# Upstream keep-alive connections the daemon may keep (httpx's pool per provider).
MAX_TCP_POOL = 64

stats = {"examples": 0, "steps": 0, "jobs": 0, "events": 0, "drops": 0, "reattached": 0}


class ProtocolViolation(AssertionError):
    pass


@dataclass
class Sub:
    """One connection's subscription to one job, as the client sees it."""

    next_seq: int
    done: bool = False  # saw the terminal event
    dropped: bool = False
    gone: bool = False  # unsubscribed


@dataclass
class JobModel:
    job_id: str
    terminal: str | None = None  # the terminal event type some subscriber saw
    terminal_seq: int | None = None


class Peer:
    """A raw NDJSON connection that checks every message against the model as it arrives."""

    def __init__(self, path: str, model: Model, name: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.model = model
        self.name = name
        self.buf = b""
        self.ids = iter(range(1, 1 << 30))
        self.subs: dict[str, Sub] = {}
        self.replies: dict[int, dict[str, Any]] = {}
        self.on_reply: dict[int, Any] = {}
        self.paused = False
        self.closed = False

    def __repr__(self) -> str:
        return self.name

    # -- reading ----------------------------------------------------------------------

    def _handle(self, line: bytes) -> None:
        msg = msgspec.json.decode(line)
        if "id" in msg and ("result" in msg or "error" in msg):
            # Acted on at once: the notifications the call causes follow in the same read.
            callback = self.on_reply.pop(msg["id"], None)
            if callback is not None:
                callback(msg)
            self.replies[msg["id"]] = msg
            return
        method, params = msg.get("method"), msg.get("params", {})
        if method == "job/event":
            self.model.on_event(self, params)
        elif method == "subscription/dropped":
            self.model.on_dropped(self, params)
        elif method == "job/finished":
            self.model.on_finished(params["job"])
        elif method == "job/created":
            pass
        else:
            raise ProtocolViolation(f"{self}: unexpected message {msg}")

    def _feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if line:
                self._handle(line)

    def drain(self) -> int:
        """Read whatever has arrived, without waiting."""
        if self.closed:
            return 0
        self.sock.setblocking(False)
        got = 0
        try:
            while True:
                try:
                    data = self.sock.recv(1 << 20)
                except BlockingIOError:
                    break
                if not data:
                    raise ProtocolViolation(f"{self}: the daemon closed the connection")
                got += len(data)
                self._feed(data)
        finally:
            self.sock.setblocking(True)
        return got

    def read_until(self, done: Any, timeout: float = REPLY_TIMEOUT_S) -> None:
        self.sock.settimeout(timeout)
        while not done():
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                raise ProtocolViolation(f"{self}: nothing arrived in {timeout}s") from None
            if not data:
                raise ProtocolViolation(f"{self}: the daemon closed the connection")
            self._feed(data)

    def call(self, method: str, params: dict[str, Any], on_reply: Any = None) -> dict[str, Any]:
        rid = next(self.ids)
        if on_reply is not None:
            self.on_reply[rid] = on_reply
        self.sock.sendall(
            msgspec.json.encode({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            + b"\n"
        )
        self.read_until(lambda: rid in self.replies)
        return self.replies.pop(rid)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


@dataclass
class Model:
    jobs: dict[str, JobModel] = field(default_factory=dict)
    finished: dict[str, str] = field(default_factory=dict)  # job/finished seen: id -> state

    def on_finished(self, job: dict[str, Any]) -> None:
        if job["id"] in self.finished:
            raise ProtocolViolation(f"job/finished twice for {job['id']}")
        if job["state"] not in {"completed", "failed", "cancelled"}:
            raise ProtocolViolation(f"job/finished in state {job['state']}")
        self.finished[job["id"]] = job["state"]

    def on_event(self, peer: Peer, params: dict[str, Any]) -> None:
        job_id, seq, etype = params["job_id"], params["seq"], params["event"]["type"]
        stats["events"] += 1
        sub = peer.subs.get(job_id)
        if sub is None or sub.gone or sub.dropped:
            raise ProtocolViolation(f"{peer}: event {seq} {etype} of {job_id} with no subscription")
        if sub.done:
            raise ProtocolViolation(f"{peer}: event {seq} {etype} of {job_id} after its terminal")
        if seq != sub.next_seq:
            raise ProtocolViolation(f"{peer}: {job_id} seq {seq}, expected {sub.next_seq}")
        sub.next_seq += 1
        if etype in TERMINAL:
            sub.done = True
            job = self.jobs[job_id]
            if job.terminal is None:
                job.terminal, job.terminal_seq = etype, seq
            elif (job.terminal, job.terminal_seq) != (etype, seq):
                raise ProtocolViolation(
                    f"{job_id}: terminal {etype}@{seq} here, {job.terminal}@{job.terminal_seq} "
                    "elsewhere"
                )
        elif self.jobs[job_id].terminal_seq is not None and seq > self.jobs[job_id].terminal_seq:
            raise ProtocolViolation(f"{job_id}: event {seq} after the terminal one")

    def on_dropped(self, peer: Peer, params: dict[str, Any]) -> None:
        job_id = params.get("job_id")
        sub = peer.subs.get(job_id) if job_id else None
        if sub is None or sub.gone or sub.dropped or sub.done:
            raise ProtocolViolation(f"{peer}: dropped notice for no live subscription: {params}")
        if params.get("reason") != "slow_consumer" or params.get("next_seq") != sub.next_seq:
            raise ProtocolViolation(f"{peer}: drop {params}, but the next seq was {sub.next_seq}")
        sub.dropped = True
        stats["drops"] += 1


# ------------------------------------------------------------------------------------ fixture


@dataclass
class Rig:
    daemon: DaemonProcess
    fake: FakeOpenAI


FAULTS = {
    "none": None,
    "dropped": dropped(3),
    "stalled": stalled(2),
    "server_error": server_error(500),
    "captive_portal": captive_portal(),
    "truncated": truncated_json(),
    "slow": Reply(delta_delay_s=0.02),
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("protocol")
    home = tmp / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
    env.pop("NOTIFY_SOCKET", None)
    if EVENT_LOOP_VAR in os.environ:  # the loop `make test` runs this pass on
        env[EVENT_LOOP_VAR] = os.environ[EVENT_LOOP_VAR]
    env.update(
        CODEXD_SOCKET=str(tmp / "run" / "codexd.sock"),
        CODEXD_STATE_DIR=str(tmp / "state"),
        CODEX_HOME=str(home),
        FAKE_KEY="sk-fuzz-0000",
    )
    with FakeOpenAI.running(reply=Reply(delta_delay_s=0.002)) as fake:
        write_config(
            env,
            f'model = "gpt-5"\nmodel_provider = "fake"\n'
            "[model_providers.fake]\n"
            f'name = "fake"\nbase_url = "{fake.base_url}"\nenv_key = "FAKE_KEY"\n'
            "request_max_retries = 1\nstream_max_retries = 1\nstream_idle_timeout_ms = 300\n"
            f"[codexd]\njob_retention_s = {RETENTION_S}\n",
        )
        with DaemonProcess(env) as daemon:
            yield Rig(daemon, fake)


# ------------------------------------------------------------------------------------ machine


class ProtocolMachine(RuleBasedStateMachine):
    rig: ClassVar[Rig]

    peers = Bundle("peers")
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.open: list[Peer] = []
        self.counter = 0
        self.control = Peer(self.rig.daemon.socket, self.model, "control")
        assert self.control.call("events/subscribe", {"topics": ["jobs"]}).get("result") == {}
        stats["examples"] += 1

    def _peer(self) -> Peer:
        self.counter += 1
        p = Peer(self.rig.daemon.socket, self.model, f"peer{self.counter}")
        self.open.append(p)
        return p

    @initialize(target=peers)
    def first_peer(self) -> Peer:
        return self._peer()

    @precondition(lambda self: len([p for p in self.open if not p.closed]) < MAX_PEERS)
    @rule(target=peers)
    def connect(self) -> Peer:
        return self._peer()

    @rule(
        target=jobs,
        peer=peers,
        subscribe=st.booleans(),
        cancel_on_disconnect=st.booleans(),
        fault=st.sampled_from(sorted(FAULTS)),
        flood=st.booleans(),
    )
    def submit(
        self, peer: Peer, subscribe: bool, cancel_on_disconnect: bool, fault: str, flood: bool
    ) -> Any:
        if peer.closed:
            return multiple()
        outcome = FAULTS[fault]
        if flood:
            outcome = Reply(deltas=("x",) * FLOOD_DELTAS)
        if outcome is not None:
            self.rig.fake.script(outcome)

        def submitted(reply: dict[str, Any]) -> None:
            assert "result" in reply, reply
            job_id = reply["result"]["job_id"]
            self.model.jobs[job_id] = JobModel(job_id)
            if subscribe:
                peer.subs[job_id] = Sub(next_seq=1)

        reply = peer.call(
            "job/submit",
            {
                "body": {"input": "hi"},
                "subscribe": subscribe,
                "cancel_on_disconnect": cancel_on_disconnect,
            },
            submitted,
        )
        stats["jobs"] += 1
        return reply["result"]["job_id"]

    @rule(peer=peers, job_id=jobs, after=st.sampled_from(["zero", "one", "resume", "latest"]))
    def subscribe(self, peer: Peer, job_id: str, after: str) -> None:
        if peer.closed:
            return
        old = peer.subs.get(job_id)
        if after == "resume" and old is not None:
            after_seq = old.next_seq - 1
            stats["reattached"] += old.dropped
        elif after == "latest":
            after_seq = max([s.next_seq - 1 for p in self.open for s in p.subs.values()] + [0])
        else:
            after_seq = 0 if after == "zero" else 1

        def subscribed(reply: dict[str, Any]) -> None:
            if "result" in reply:
                end = self.model.jobs[job_id].terminal_seq
                # From past the terminal event nothing more can come.
                peer.subs[job_id] = Sub(after_seq + 1, done=end is not None and after_seq >= end)

        reply = peer.call("job/subscribe", {"job_id": job_id, "after_seq": after_seq}, subscribed)
        if "error" in reply:
            kind = reply["error"]["data"]["kind"]
            # An after_seq beyond the log is refused precisely; nothing else may fail.
            assert kind in ("replay_unavailable", "invalid_params"), reply
            return
        assert reply["result"]["next_seq"] >= after_seq + 1, reply

    @rule(peer=peers, job_id=jobs)
    def unsubscribe(self, peer: Peer, job_id: str) -> None:
        if peer.closed:
            return

        def unsubscribed(reply: dict[str, Any]) -> None:
            if job_id in peer.subs:
                peer.subs[job_id].gone = True

        reply = peer.call("job/unsubscribe", {"job_id": job_id}, unsubscribed)
        assert reply.get("result") == {}, reply

    @rule(peer=peers, job_id=jobs)
    def cancel(self, peer: Peer, job_id: str) -> None:
        if peer.closed:
            return
        reply = peer.call("job/cancel", {"job_id": job_id})
        assert reply["result"]["state"] in {"completed", "failed", "cancelled"}, reply

    @rule(peer=peers)
    def pause(self, peer: Peer) -> None:
        peer.paused = True

    @rule(peer=peers)
    def resume(self, peer: Peer) -> None:
        peer.paused = False
        peer.drain()

    @rule(peer=consumes(peers))
    def disconnect(self, peer: Peer) -> None:
        peer.close()

    @invariant()
    def read_what_arrived(self) -> None:
        stats["steps"] += 1
        for p in [*self.open, self.control]:
            if not p.paused:
                p.drain()

    def teardown(self) -> None:
        try:
            self._settle_and_check()
        finally:
            for p in [*self.open, self.control]:
                p.close()
        control = Peer(self.rig.daemon.socket, Model(), "status")
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while True:
            status = control.call("daemon/status", {})["result"]
            jobs = status["jobs"]
            if status["connections"] == 1 and jobs["queued"] == jobs["running"] == 0:
                break
            if time.monotonic() > deadline:
                raise ProtocolViolation(f"the daemon did not come back to rest: {status}")
            time.sleep(0.02)
        control.close()

    def _settle_and_check(self) -> None:
        control = self.control
        # Every job ends, told once on the `jobs` topic.
        control.read_until(lambda: set(self.model.jobs) <= set(self.model.finished))
        for job_id, job in self.model.jobs.items():
            # The whole log, replayed: seqs 1..n, exactly one terminal event, the last; a job
            # already past job_retention_s is gone (not_found), its job/finished was seen.
            reply = control.call(
                "job/subscribe",
                {"job_id": job_id, "after_seq": 0},
                lambda r, j=job_id: control.subs.__setitem__(j, Sub(next_seq=1)),
            )
            if "error" in reply:
                assert reply["error"]["data"]["kind"] == "not_found", reply
                continue
            sub = control.subs[job_id]
            control.read_until(lambda s=sub: s.done or s.dropped)
            if sub.dropped:
                # The control connection reads all the time: a drop here is possible only
                # while it replays a huge log; the job must still end, seen via job/get.
                sub.gone = True
            control.call(
                "job/unsubscribe",
                {"job_id": job_id},
                lambda r, s=sub: setattr(s, "gone", True),
            )
            assert job.terminal is not None or sub.dropped
            if job.terminal is not None:
                assert job.terminal == "job." + self.model.finished[job_id], job_id
        # Every subscriber still attached gets the rest, up to the terminal event or a drop.
        for p in self.open:
            if p.closed:
                continue
            p.paused = False
            for job_id, s in p.subs.items():
                end = self.model.jobs[job_id].terminal_seq if job_id in self.model.jobs else None
                if end is not None and s.next_seq > end:
                    s.done = True
            pending = [s for s in p.subs.values() if not (s.done or s.dropped or s.gone)]
            p.read_until(lambda pending=pending: all(s.done or s.dropped for s in pending))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_protocol_interleavings_keep_every_promise(rig: Rig) -> None:
    pid = rig.daemon.proc.pid  # type: ignore[union-attr]
    ProtocolMachine.rig = rig
    run = settings(
        max_examples=PROTOCOL_EXAMPLES,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    # A first round warms up what the daemon keeps for good (pools, caches, imports); then
    # rounds of the same size: a leak grows RSS every round, allocator slack levels off.
    run_state_machine_as_test(ProtocolMachine, settings=settings(run, max_examples=2))
    # One job through upstream for certain: uvloop (libuv) opens one /dev/null of its own
    # with the loop's first outgoing connection and keeps it; that is not a leak.
    with Client(rig.daemon.socket) as client:
        assert client.ask("warm-up").text
    wait_until_nothing_retained(rig, connections=1)
    fds_before = fd_census(pid)
    curve = [rss_kib(pid)]
    for _ in range(ROUNDS):
        run_state_machine_as_test(ProtocolMachine, settings=run)
        wait_until_nothing_retained(rig)
        curve.append(rss_kib(pid))
    # A connection its client has closed is released when the daemon reads the EOF: give it
    # the moment (bounded) before the census compares; a leak never settles.
    deadline = time.monotonic() + 10.0
    while (fds_after := fd_census(pid)).other - fds_before.other and time.monotonic() < deadline:
        time.sleep(0.05)
    print(
        f"\nprotocol fuzz: {stats}; fds {fds_before.total} -> {fds_after.total} "
        f"(tcp {fds_before.tcp} -> {fds_after.tcp}); RSS KiB by round {curve}"
    )
    assert_no_fd_left(fds_before, fds_after)
    assert stats["jobs"] > 0 and stats["events"] > 0
    # A leak grows RSS in every round; allocator slack swings both ways (a 7-round run of
    # random examples went 68, 82, 100, 94, 91, 107, 106 MiB with nothing retained). So the
    # last round is compared with the highest earlier one, not the first: a peak that fell
    # back is not counted, and a steady leak still shows as the last round's rise.
    first_growth = curve[1] - curve[0]
    last_round = curve[-1] - max(curve[1:-1])
    assert last_round * (ROUNDS - 1) <= max(first_growth, 24 * 1024), curve


def wait_until_nothing_retained(rig: Rig, *, connections: int | None = None) -> None:
    """Until no finished job is retained and, with `connections`, the daemon holds only that
    many control connections (this one included): a client that just closed is released when
    the daemon reads its EOF."""
    status = Peer(rig.daemon.socket, Model(), "status")
    deadline = time.monotonic() + RETENTION_S + REPLY_TIMEOUT_S
    try:
        while True:
            now = status.call("daemon/status", {})["result"]
            if not now["jobs"]["retained"] and connections in (None, now["connections"]):
                break
            assert time.monotonic() < deadline, f"still retained or connected: {now}"
            time.sleep(0.1)
    finally:
        status.close()


def assert_no_fd_left(before: FdCensus, after: FdCensus) -> None:
    """Nothing of any kind is held now that was not held before the rounds (one held then
    and closed since, such as an upstream connection being torn down, is no leak)."""
    assert not after.other - before.other, (before.other, after.other)
    assert after.tcp <= MAX_TCP_POOL, after
