"""The job state machine, the bounded event log, fan-out, replay and retention (no sockets)."""

from __future__ import annotations

import re
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexctl.protocol import (
    MAX_SERVER_MESSAGE_BYTES,
    ErrorKind,
    ErrorObject,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobQueued,
    JobRetrying,
    JobStarted,
    Notification,
    RpcError,
)
from codexd.jobs import (
    MAX_KEPT_LINE_BYTES,
    TERMINAL_STATES,
    TRANSITIONS,
    EventLog,
    InvalidTransition,
    Job,
    JobEvent,
    JobLimits,
    JobManager,
    JobState,
    LogEntry,
    UpstreamEvent,
    Usage,
    job_event,
    next_state,
)
from codexd.upstream.client import MAX_REPLY_BYTES

# One event of each kind, as the job log holds them.
EVENTS: dict[str, JobEvent] = {
    "job.queued": JobQueued(position=1),
    "job.started": JobStarted(attempt=1),
    "job.retrying": JobRetrying(
        attempt=2, delay_s=0.2, reason="r", error_kind="server_error", reset_output=False
    ),
    "job.completed": JobCompleted(output_text="", usage=Usage(), cost_usd=0.0, response_id=None),
    "job.failed": JobFailed(error=ErrorObject(code=-32603, message="x")),
    "job.cancelled": JobCancelled(),
    "response.output_text.delta": UpstreamEvent(
        {"type": "response.output_text.delta", "delta": "a"}
    ),
    "response.created": UpstreamEvent({"type": "response.created", "response": {}}),
}
EVENT_TYPES = list(EVENTS)


@given(st.sampled_from(list(JobState)), st.sampled_from(EVENT_TYPES))
def test_every_state_event_pair_is_accepted_or_refused_cleanly(state: JobState, etype: str) -> None:
    try:
        new = next_state(state, EVENTS[etype])
    except InvalidTransition as exc:
        assert state.value in str(exc)
        assert etype in str(exc)
        return
    assert new in JobState
    assert state not in TERMINAL_STATES


def test_terminal_states_have_no_way_out() -> None:
    assert not [k for k in TRANSITIONS if k[0] in TERMINAL_STATES]
    delta = EVENTS["response.output_text.delta"]
    assert next_state(JobState.RUNNING, delta) is JobState.RUNNING
    assert next_state(JobState.RETRYING, EVENTS["job.started"]) is JobState.RUNNING
    with pytest.raises(InvalidTransition):
        next_state(JobState.QUEUED, delta)


# ------------------------------------------------------------------ event log


def delta(text: str) -> UpstreamEvent:
    return UpstreamEvent({"type": "response.output_text.delta", "delta": text})


def texts(entries: Any) -> list[tuple[int, str]]:
    return [(e.seq, e.event.data["delta"]) for e in entries]


def test_log_keeps_first_and_unbroken_tail() -> None:
    log = EventLog(4)
    for i in range(1, 11):
        assert log.append("j", delta(f"e{i}")).seq == i
    assert len(log) == 4
    assert log.oldest_seq == 8
    assert texts(log.replay_from(7)) == [(8, "e8"), (9, "e9"), (10, "e10")]
    assert list(log.replay_from(10)) == []
    with pytest.raises(RpcError) as info:
        log.replay_from(3)
    assert info.value.kind == ErrorKind.REPLAY_UNAVAILABLE
    assert info.value.data.oldest_seq == 8
    with pytest.raises(RpcError):
        log.replay_from(0)
    first, ninth = log.entry_at(1), log.entry_at(9)
    assert first is not None and ninth is not None and log.entry_at(5) is None
    assert texts([first, ninth]) == [(1, "e1"), (9, "e9")]
    # The job/event line a socket subscriber reads: the upstream event's members as they were.
    line = msgspec.json.decode(ninth.line)
    assert line == {
        "jsonrpc": "2.0",
        "method": "job/event",
        "params": {
            "job_id": "j",
            "seq": 9,
            "event": {"type": "response.output_text.delta", "delta": "e9"},
        },
    }


@pytest.mark.parametrize("job_id", ["job_0123456789abcdef", 'a "quoted" id'])
def test_a_log_line_is_the_notification_encoded(job_id: str) -> None:
    """An upstream event's line is spliced from its JSON: byte for byte what encoding the
    `job/event` notification gives, for any text and id."""
    event = UpstreamEvent(
        {"type": "response.output_text.delta", "delta": 'é\n"x"', "sequence_number": 3}
    )
    entry = EventLog(4).append(job_id, event)
    expected = msgspec.json.encode(
        Notification(
            method="job/event",
            params={"job_id": job_id, "seq": 1, "event": msgspec.json.decode(event.raw)},
        )
    )
    assert entry.line == expected + b"\n"
    assert event.delta == 'é\n"x"' and event.sequence_number == 3
    assert event.data == {
        "type": "response.output_text.delta",
        "delta": 'é\n"x"',
        "sequence_number": 3,
    }


@given(st.integers(2, 8), st.integers(0, 30), st.integers(0, 31))
def test_replay_is_exactly_the_missing_events_or_refused(bound: int, n: int, after: int) -> None:
    log = EventLog(bound)
    for i in range(1, n + 1):
        log.append("j", delta(str(i)))
    try:
        got = [entry.seq for entry in log.replay_from(after)]
    except RpcError as exc:
        assert exc.kind == ErrorKind.REPLAY_UNAVAILABLE
        assert exc.data.oldest_seq == log.oldest_seq
        assert exc.data.oldest_seq > after + 1
        return
    assert got == list(range(after + 1, n + 1))


# ------------------------------------------------------------------ the manager


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


class FakeSub:
    """A subscriber with a buffer of `room` lines, like a connection's outbound stream."""

    def __init__(self, room: int = 10_000) -> None:
        self.room = room
        self.lines: list[bytes] = []
        self.deferred: list[bytes] = []
        self.closed = False

    def deliver(self, entry: LogEntry) -> bool:
        return self.send_nowait(entry.line)

    def send_nowait(self, line: bytes) -> bool:
        if len(self.lines) >= self.room:
            return False
        self.lines.append(line)
        return True

    async def send(self, line: bytes) -> None:
        self.lines.append(line)

    def notify(self, method: str, params: Any) -> bool:
        return True

    def defer(self, line: bytes) -> None:
        self.deferred.append(line)

    def seqs(self) -> list[int]:
        return [msgspec.json.decode(x)["params"]["seq"] for x in self.lines]


def manager(runner: Any, clock: FakeClock | None = None, **limits: Any) -> JobManager:
    return JobManager(runner, limits=lambda: JobLimits(**limits), clock=clock or FakeClock())


def make_job(mgr: JobManager, **kw: Any) -> Job:
    return mgr.create(
        client=kw.get("client", "t"), provider="openai", model="m", api="responses", body={}
    )


@pytest.mark.anyio
async def test_slow_subscriber_is_dropped_and_others_get_everything() -> None:
    gate = anyio.Event()

    async def runner(job: Job, mgr: JobManager) -> None:
        await gate.wait()
        mgr.emit(job, job_event({"type": "job.started", "attempt": 1}))
        for i in range(50):
            mgr.emit(job, job_event({"type": "response.output_text.delta", "delta": str(i % 10)}))
        await mgr.complete(job, output_text="x", usage=Usage(), cost_usd=0.0, response_id="r")

    mgr = manager(runner)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = make_job(mgr)
        fast, slow = FakeSub(), FakeSub(room=5)
        await mgr.stream_to(job, fast, 0)
        await mgr.stream_to(job, slow, 0)
        gate.set()
        await job.finished.wait()
        tg.cancel_scope.cancel()
    assert fast.seqs() == list(range(1, job.log.next_seq))
    assert slow.seqs() == [1, 2, 3, 4, 5]
    dropped = msgspec.json.decode(slow.deferred[0])
    assert dropped == {
        "jsonrpc": "2.0",
        "method": "subscription/dropped",
        "params": {"reason": "slow_consumer", "job_id": job.id, "next_seq": 6},
    }
    assert job.state is JobState.COMPLETED
    assert job.output_text == "x"


@pytest.mark.anyio
async def test_reattach_after_drop_sees_no_gap_or_repeat() -> None:
    async def runner(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, job_event({"type": "job.started", "attempt": 1}))
        for _ in range(20):
            mgr.emit(job, job_event({"type": "response.output_text.delta", "delta": "a"}))
        await mgr.complete(job, output_text="a" * 20, usage=Usage(), cost_usd=0.0, response_id=None)

    mgr = manager(runner)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = make_job(mgr)
        sub = FakeSub(room=7)
        await mgr.stream_to(job, sub, 0)
        await job.finished.wait()
        next_seq = msgspec.json.decode(sub.deferred[0])["params"]["next_seq"]
        again = FakeSub()
        await mgr.stream_to(job, again, next_seq - 1)
        tg.cancel_scope.cancel()
    assert sub.seqs() + again.seqs() == list(range(1, job.log.next_seq))


def test_a_large_event_is_held_and_counted_once() -> None:
    """An event over MAX_KEPT_LINE_BYTES (a whole embeddings reply) never keeps its line:
    every reader gets the same bytes, made anew, and the log counts its JSON once; a small
    event counts its JSON twice (its line may be kept)."""
    vectors = b"x" * MAX_KEPT_LINE_BYTES
    big = UpstreamEvent.from_json(
        "embeddings.result", b'{"type":"embeddings.result","data":"' + vectors + b'"}'
    )
    log = EventLog(4)
    entry = log.append("job_1", big)
    first, second, third = entry.line, entry.line, entry.line
    assert first == second == third and second is not third
    assert msgspec.json.decode(first)["params"]["event"] == msgspec.json.decode(big.raw)
    assert len(big.raw) < entry.nbytes < len(big.raw) + 1024
    small = UpstreamEvent({"type": "response.output_text.delta", "delta": "x" * 1000})
    small_entry = log.append("job_1", small)
    assert small_entry.nbytes > 2 * len(small.raw)
    assert log.nbytes == entry.nbytes + small_entry.nbytes


def test_one_whole_reply_takes_a_quarter_of_the_retained_bytes_at_most() -> None:
    """The bound on a whole reply comes from the bound on what finished jobs keep (so one
    reply never pushes out all the others) and from codexctl's bound on one message (which
    its `job/event` line must pass)."""
    assert MAX_REPLY_BYTES > MAX_KEPT_LINE_BYTES  # such a reply is counted once
    assert JobLimits().max_retained_log_bytes // 4 >= MAX_REPLY_BYTES
    line = LogEntry(
        "job_" + "f" * 32, 10**9, UpstreamEvent.from_json("embeddings.result", b"{}")
    ).line
    assert MAX_REPLY_BYTES + len(line) + 64 < MAX_SERVER_MESSAGE_BYTES


@pytest.mark.anyio
async def test_a_line_is_kept_for_the_readers_after_the_first() -> None:
    """The line made for the second reader is kept: further live subscribers and later
    replays get those very bytes."""

    async def runner(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, job_event({"type": "job.started", "attempt": 1}))
        for _ in range(5):
            mgr.emit(job, job_event({"type": "response.output_text.delta", "delta": "a"}))
        await mgr.complete(job, output_text="a" * 5, usage=Usage(), cost_usd=0.0, response_id=None)

    mgr = manager(runner)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = make_job(mgr)
        live = [FakeSub(), FakeSub(), FakeSub()]
        for sub in live:
            await mgr.stream_to(job, sub, 0)
        await job.finished.wait()
        replayed = FakeSub()
        await mgr.stream_to(job, replayed, 0)
        tg.cancel_scope.cancel()
    assert replayed.seqs() == list(range(1, job.log.next_seq))
    for i, line in enumerate(replayed.lines):
        assert all(sub.lines[i] == line for sub in live)
        # Every reader after the first got the kept bytes, not a copy of their own.
        assert sum(sub.lines[i] is line for sub in live) == 2


@pytest.mark.anyio
async def test_cancel_ends_with_job_cancelled() -> None:
    async def runner(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, job_event({"type": "job.started", "attempt": 1}))
        await anyio.sleep_forever()

    mgr = manager(runner)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = make_job(mgr)
        await anyio.wait_all_tasks_blocked()
        assert job.state is JobState.RUNNING
        mgr.cancel(job)
        mgr.cancel(job)
        await job.finished.wait()
        tg.cancel_scope.cancel()
    assert job.state is JobState.CANCELLED
    entry = job.log.entry_at(job.log.next_seq - 1)
    assert entry is not None
    last = msgspec.json.decode(entry.line)
    assert last["params"]["event"] == {"type": "job.cancelled"}


@pytest.mark.anyio
async def test_the_end_waits_for_on_finishing_and_a_cancel_meanwhile_changes_nothing() -> None:
    recorded: list[tuple[str, JobState, float]] = []
    committed = anyio.Event()

    async def on_finishing(job: Job, state: JobState, finished_at: float) -> None:
        recorded.append((job.id, state, finished_at))
        await committed.wait()  # the ledger's commit

    async def runner(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, job_event({"type": "job.started", "attempt": 1}))
        with pytest.raises(InvalidTransition, match="finish"):
            mgr.emit(
                job, JobCompleted(output_text="", usage=Usage(), cost_usd=0.0, response_id=None)
            )
        await mgr.complete(job, output_text="x", usage=Usage(), cost_usd=0.5, response_id="r")

    mgr = JobManager(runner, limits=JobLimits, clock=FakeClock(), on_finishing=on_finishing)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = make_job(mgr)
        live, late = FakeSub(), FakeSub()
        await mgr.stream_to(job, live, 0)
        await anyio.wait_all_tasks_blocked()
        assert [r[:2] for r in recorded] == [(job.id, JobState.COMPLETED)]
        # Until on_finishing returns nobody sees the end: not live, not replayed, not polled.
        mgr.cancel(job)
        assert job.state is JobState.RUNNING
        assert not job.finished.is_set()
        await mgr.stream_to(job, late, 0)
        assert [msgspec.json.decode(x)["params"]["event"]["type"] for x in live.lines] == [
            "job.started"
        ]
        assert len(late.lines) == 1  # job.started, replayed
        committed.set()
        await job.finished.wait()
        tg.cancel_scope.cancel()
    assert job.state is JobState.COMPLETED
    assert job.finished_at == recorded[0][2]
    for sub in (live, late):
        assert [msgspec.json.decode(x)["params"]["event"]["type"] for x in sub.lines] == [
            "job.started",
            "job.completed",
        ]


@pytest.mark.anyio
async def test_queue_bound_and_draining_refuse_submits() -> None:
    async def runner(job: Job, mgr: JobManager) -> None:
        await anyio.sleep_forever()

    mgr = manager(runner, max_queued_jobs=2)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        first, second = make_job(mgr), make_job(mgr)
        with pytest.raises(RpcError) as info:
            make_job(mgr)
        assert info.value.kind == ErrorKind.OVERLOADED
        assert "max_queued_jobs" in info.value.message
        assert second.state is JobState.QUEUED
        mgr.stop_accepting()
        mgr.cancel(first)
        await first.finished.wait()
        with pytest.raises(RpcError) as info:
            make_job(mgr)
        assert "draining" in info.value.message
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_runner_bug_fails_the_job_not_the_daemon() -> None:
    async def runner(job: Job, mgr: JobManager) -> None:
        raise ValueError("boom")

    mgr = manager(runner)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = make_job(mgr)
        await job.finished.wait()
        tg.cancel_scope.cancel()
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.kind == ErrorKind.INTERNAL_ERROR
    assert "boom" not in job.error.message


def test_retention_by_time_and_count() -> None:
    clock = FakeClock()

    async def runner(job: Job, mgr: JobManager) -> None:
        await mgr.finish(job, JobFailed(error=ErrorObject(code=-32603, message="x")))

    mgr = manager(runner, clock, job_retention_s=10, max_retained_jobs=3)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(mgr.run)
            jobs = []
            for _ in range(5):
                job = make_job(mgr)
                await job.finished.wait()
                clock.now += 1
                jobs.append(job)
            # The count bound keeps the newest three; time has not expired any of them.
            assert mgr.expire(clock.now) == jobs[2].finished_mono + 10
            assert sorted(mgr.jobs) == sorted(j.id for j in jobs[2:])
            clock.now += 100
            assert mgr.expire(clock.now) is None
            assert mgr.jobs == {}
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_retention_by_total_log_bytes() -> None:
    """Finished jobs' logs are bounded in bytes too: the oldest go first, before their time."""
    clock = FakeClock()

    async def runner(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, job_event({"type": "job.queued", "position": 0}))
        mgr.emit(job, job_event({"type": "job.started", "attempt": 1}))
        mgr.emit(job, job_event({"type": "response.output_text.delta", "delta": "x" * 1000}))
        await mgr.complete(
            job, output_text="x" * 1000, usage=Usage(), cost_usd=0.0, response_id=None
        )

    mgr = manager(runner, clock, job_retention_s=3600, max_retained_log_bytes=10_000)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(mgr.run)
            jobs = []
            for _ in range(6):
                job = make_job(mgr)
                await job.finished.wait()
                jobs.append(job)
            per_job = jobs[0].log.nbytes
            # Each 1000-character text twice (in the event and in its job/event line, which a
            # socket subscriber's replay keeps), plus the envelopes.
            assert 4000 < per_job < 10_000
            assert mgr.expire(clock.now) is not None  # retention time is far away
            kept = [j for j in jobs if j.id in mgr.jobs]
            assert kept == jobs[-len(kept) :]  # the newest are kept, the oldest forgotten
            assert len(kept) * per_job <= 10_000 < (len(kept) + 1) * per_job
            tg.cancel_scope.cancel()

    anyio.run(main)


# ------------------------------------------------------------------ edges found by `make mutate`


class Steps:
    """A runner that plays each job's `body["steps"]`: events (or their JSON objects) to emit
    or finish, and `anyio.Event`s to wait for; then it waits to be cancelled unless the job
    ended."""

    def __init__(self) -> None:
        self.task_names: list[str] = []

    async def __call__(self, job: Job, mgr: JobManager) -> None:
        for step in job.body.get("steps", []):
            if isinstance(step, anyio.Event):
                await step.wait()
                continue
            event = job_event(step) if isinstance(step, dict) else step
            if isinstance(event, (JobCompleted, JobFailed, JobCancelled)):
                await mgr.finish(job, event)
            else:
                mgr.emit(job, event)
        if not job.is_terminal:
            await anyio.sleep_forever()


def submit(mgr: JobManager, *steps: Any, client: str = "c", request_id: str | None = None) -> Job:
    return mgr.create(
        client=client,
        provider="openai",
        model="m",
        api="responses",
        body={"steps": list(steps)},
        client_request_id=request_id,
    )


def events(sub: FakeSub) -> list[dict[str, Any]]:
    return [msgspec.json.decode(x)["params"]["event"] for x in sub.lines]


def entry_line(log: EventLog, seq: int) -> bytes:
    entry = log.entry_at(seq)
    assert entry is not None
    return entry.line


WALL0 = 1_700_001_000.0  # FakeClock().wall()
STARTED = {"type": "job.started", "attempt": 1}


def retrying(attempt: int, *, reset_output: bool = False) -> JobRetrying:
    return JobRetrying(
        attempt=attempt,
        delay_s=0.5,
        reason="upstream 503",
        error_kind="upstream_error",
        reset_output=reset_output,
    )


def test_an_event_log_needs_room_for_the_first_and_the_last_event() -> None:
    with pytest.raises(ValueError) as info:
        EventLog(1)
    assert str(info.value) == "max_events must be at least 2 (the first and the last event)"


def test_event_log_counts_events_and_bytes_and_replays_exactly() -> None:
    log = EventLog(3)
    assert (len(log), log.nbytes, log.oldest_seq, log.entry_at(1)) == (0, 0, 1, None)
    assert list(log.replay_from(0)) == []
    entries = [log.append("j", delta(text)) for text in ("aa", "bbb", "cccc")]
    assert (len(log), log.oldest_seq) == (3, 2)
    assert log.nbytes == sum(e.nbytes for e in entries) > 0
    assert texts(log.replay_from(0)) == [(1, "aa"), (2, "bbb"), (3, "cccc")]
    # A negative after_seq means from the start.
    assert texts(log.replay_from(-5)) == [(1, "aa"), (2, "bbb"), (3, "cccc")]
    assert log.entry_at(4) is None
    entries.append(log.append("j", delta("ddddd")))  # seq 2 goes; seq 1 is kept apart
    assert (len(log), log.oldest_seq) == (3, 3)
    assert log.nbytes == entries[0].nbytes + entries[2].nbytes + entries[3].nbytes
    with pytest.raises(RpcError) as info:
        log.replay_from(0)
    assert info.value.message == (
        "the job's log no longer holds those events: subscribe with after_seq ≥ 2 "
        "(the log keeps the newest events)"
    )
    assert info.value.data.oldest_seq == 3
    assert texts(log.replay_from(2)) == [(3, "cccc"), (4, "ddddd")]


@pytest.mark.anyio
async def test_job_events_are_job_event_notifications() -> None:
    mgr = manager(Steps())
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        go = anyio.Event()
        job = submit(mgr, go, STARTED)
        sub = FakeSub()
        await mgr.stream_to(job, sub, 0)
        go.set()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert msgspec.json.decode(sub.lines[0]) == {
        "jsonrpc": "2.0",
        "method": "job/event",
        "params": {"job_id": job.id, "seq": 1, "event": STARTED},
    }


@pytest.mark.anyio
async def test_a_job_is_created_with_what_was_submitted() -> None:
    created: list[Job] = []
    finished: list[Job] = []
    clock = FakeClock()
    mgr = JobManager(
        Steps(),
        limits=JobLimits,
        clock=clock,
        on_created=created.append,
        on_finished=finished.append,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = mgr.create(
            client="cli",
            provider="azure",
            model="gpt",
            api="chat",
            body={"steps": [{"type": "job.cancelled"}]},
            config="snapshot",
            request="resolved",
            client_request_id="r-1",
        )
        await job.finished.wait()
        tg.cancel_scope.cancel()
    assert (job.client, job.provider, job.model, job.api) == ("cli", "azure", "gpt", "chat")
    assert (job.config, job.request, job.client_request_id) == ("snapshot", "resolved", "r-1")
    assert job.body == {"steps": [{"type": "job.cancelled"}]}
    assert (job.created_at, job.created_mono) == (clock.wall(), clock.monotonic())
    assert re.fullmatch(r"job_[0-9a-f]{16}", job.id)
    assert mgr.get(job.id) is job
    assert created == finished == [job]


@pytest.mark.anyio
async def test_jobs_are_found_by_client_request_id_until_forgotten() -> None:
    clock = FakeClock()
    mgr = manager(Steps(), clock, job_retention_s=10)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        old = submit(mgr, {"type": "job.cancelled"}, request_id="same")
        await old.finished.wait()
        assert mgr.find_by_request_id("c", "same") is old
        assert mgr.find_by_request_id("other-client", "same") is None
        assert mgr.find_by_request_id("c", "unknown") is None
        clock.now += 5
        new = submit(mgr, request_id="same")  # a new submission reusing the id
        assert mgr.find_by_request_id("c", "same") is new
        assert mgr.expire(old.finished_mono + 10) is None  # exactly at its retention end
        assert old.id not in mgr.jobs
        assert mgr.find_by_request_id("c", "same") is new
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_get_names_an_unknown_job() -> None:
    mgr = manager(Steps())
    with pytest.raises(RpcError) as info:
        mgr.get("job_nope")
    assert info.value.kind == ErrorKind.NOT_FOUND
    assert info.value.message == (
        "no job 'job_nope': it never existed, or it finished more than job_retention_s ago "
        "(codexctl jobs lists the known ones)"
    )


@pytest.mark.anyio
async def test_submits_are_refused_before_the_manager_runs_after_it_and_while_draining() -> None:
    mgr = manager(Steps(), max_queued_jobs=1)
    for _ in range(2):
        with pytest.raises(RpcError) as info:
            submit(mgr)
        assert (info.value.kind, info.value.message) == (
            ErrorKind.OVERLOADED,
            "codexd is not ready to take jobs yet",
        )
        async with anyio.create_task_group() as tg:
            await tg.start(mgr.run)
            submit(mgr)
            with pytest.raises(RpcError) as info:
                submit(mgr)
            assert info.value.message == (
                "too many queued jobs (1, [codexd] max_queued_jobs = 1): retry later"
            )
            for job in mgr.active():
                mgr.cancel(job)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    mgr.stop_accepting()
    assert mgr.accepting is False
    with pytest.raises(RpcError) as info:
        submit(mgr)
    assert info.value.message == (
        "codexd is draining (shutting down): submit again once it has restarted"
    )


@pytest.mark.anyio
async def test_counts_and_active_sort_jobs_by_state() -> None:
    mgr = manager(Steps())
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        hold = anyio.Event()
        queued = [submit(mgr, hold) for _ in range(2)]
        running = [
            submit(mgr, STARTED),
            submit(mgr, STARTED, retrying(2)),
        ]
        done = [submit(mgr, {"type": "job.cancelled"}) for _ in range(2)]
        await anyio.wait_all_tasks_blocked()
        assert mgr.counts() == (2, 2, 2)
        assert set(mgr.active()) == set(queued + running)
        assert all(j.is_terminal for j in done)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_queue_bound_counts_only_jobs_still_queued() -> None:
    mgr = manager(Steps(), max_queued_jobs=3)
    queued = {"type": "job.queued", "position": 0}
    delta = {"type": "response.output_text.delta", "delta": "x"}
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        go = anyio.Event()
        submit(mgr, queued, go, STARTED, delta, delta, delta)
        submit(mgr, queued, anyio.Event())
        submit(mgr, queued, anyio.Event())
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(RpcError):
            submit(mgr)
        go.set()  # the first one starts: one place frees, and only one
        await anyio.wait_all_tasks_blocked()
        submit(mgr, queued, anyio.Event())
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(RpcError):
            submit(mgr)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_jobs_view_follows_it_from_queued_to_completed() -> None:
    clock = FakeClock()
    mgr = manager(Steps(), clock)
    go, end = anyio.Event(), anyio.Event()
    delta = {"type": "response.output_text.delta"}
    steps = [
        go,
        {"type": "job.started", "attempt": 3},
        delta | {"delta": "a"},
        delta,  # no text: nothing added
        delta | {"delta": "b"},
        end,
        JobCompleted(output_text="ab", usage=Usage(), cost_usd=0.0, response_id=None),
    ]
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = submit(mgr, *steps)
        await anyio.wait_all_tasks_blocked()
        assert msgspec.to_builtins(job.view()) == {
            "id": job.id,
            "state": "queued",
            "client": "c",
            "provider": "openai",
            "model": "m",
            "api": "responses",
            "created_at": "2023-11-14T22:30:00.000Z",
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "output_text": "",
            "usage": None,
            "cost_usd": None,
            "error": None,
        }
        assert job.view(with_output=False).output_text is msgspec.UNSET
        clock.now += 2
        go.set()
        await anyio.wait_all_tasks_blocked()
        view = job.view()
        assert (view.state, view.attempts, view.output_text) == ("running", 3, "ab")
        assert view.started_at == "2023-11-14T22:30:02.000Z"
        assert view.error is None
        assert repr(job) == f"<Job {job.id} running attempts=3 events=4 subscribers=0+0>"
        clock.now += 3
        end.set()
        await job.finished.wait()
        tg.cancel_scope.cancel()
    view = job.view()
    assert (view.state, view.output_text) == ("completed", "ab")
    assert view.started_at == "2023-11-14T22:30:02.000Z"
    assert view.finished_at == "2023-11-14T22:30:05.000Z"


@pytest.mark.anyio
async def test_attempts_restarts_and_retries_with_or_without_a_reset() -> None:
    clock = FakeClock()
    mgr = manager(Steps(), clock)
    delta = {"type": "response.output_text.delta", "delta": "x"}
    go = anyio.Event()
    steps = [
        {"type": "job.started", "attempt": 1},
        delta,
        retrying(2),
        go,
        {"type": "job.started", "attempt": 2},
        delta,
        retrying(3, reset_output=True),
        {"type": "job.started", "attempt": 7},
        delta | {"delta": "y"},
    ]
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = submit(mgr, *steps)
        await anyio.wait_all_tasks_blocked()
        # Without a reset, the text of a failed attempt stays.
        assert (job.attempts, job.text_so_far(), job.state) == (1, "x", JobState.RETRYING)
        clock.now += 10
        go.set()
        await anyio.wait_all_tasks_blocked()
        assert (job.attempts, job.text_so_far(), job.state) == (7, "y", JobState.RUNNING)
        assert job.started_at == WALL0  # the first start, not the last
        assert job.error is None
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_emit_and_finish_refuse_each_others_events() -> None:
    mgr = manager(Steps())
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = submit(mgr, anyio.Event())
        with pytest.raises(InvalidTransition) as info:
            mgr.emit(
                job, JobCompleted(output_text="", usage=Usage(), cost_usd=0.0, response_id=None)
            )
        assert str(info.value) == "'job.completed' ends the job: send it with finish()"
        with pytest.raises(InvalidTransition) as info:
            await mgr.finish(job, JobStarted(attempt=1))  # type: ignore[arg-type]
        assert str(info.value) == "'job.started' does not end the job: send it with emit()"
        assert job.state is JobState.QUEUED
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_finishing_records_the_state_and_wall_time_before_the_event() -> None:
    recorded: list[tuple[Job, JobState, float]] = []

    async def on_finishing(job: Job, state: JobState, finished_at: float) -> None:
        recorded.append((job, state, finished_at))

    async def runner(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, JobStarted(attempt=1))
        await mgr.complete(
            job,
            output_text="done",
            usage=Usage(input_tokens=3, output_tokens=4, total_tokens=7),
            cost_usd=0.25,
            response_id="resp_1",
        )

    mgr = JobManager(runner, limits=JobLimits, clock=FakeClock(), on_finishing=on_finishing)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = submit(mgr)
        await job.finished.wait()
        tg.cancel_scope.cancel()
    assert recorded == [(job, JobState.COMPLETED, WALL0)]
    assert job.finished_at == WALL0
    view = job.view()
    assert (view.usage, view.cost_usd) == (
        Usage(input_tokens=3, output_tokens=4, total_tokens=7),
        0.25,
    )
    assert (job.usage, job.cost_usd, job.output_text) == (
        Usage(input_tokens=3, output_tokens=4, total_tokens=7),
        0.25,
        "done",
    )
    last = msgspec.json.decode(entry_line(job.log, job.log.next_seq - 1))
    assert last["params"]["event"] == {
        "type": "job.completed",
        "output_text": "done",
        "usage": {
            "input_tokens": 3,
            "cached_input_tokens": 0,
            "output_tokens": 4,
            "reasoning_tokens": 0,
            "total_tokens": 7,
        },
        "cost_usd": 0.25,
        "response_id": "resp_1",
    }


@pytest.mark.anyio
async def test_failed_and_cancelled_jobs_carry_their_error() -> None:
    error = RpcError(ErrorKind.UPSTREAM_ERROR, "upstream said no", http_status=503)

    async def fails(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, JobStarted(attempt=1))
        await mgr.fail(job, error)

    async def cancelled_after_an_error(job: Job, mgr: JobManager) -> None:
        job.error = error
        await mgr.finish(job, JobCancelled())

    views = {}
    for name, runner in (
        ("failed", fails),
        ("cancelled", Steps()),
        ("cancelled after an error", cancelled_after_an_error),
    ):
        mgr = manager(runner)
        async with anyio.create_task_group() as tg:
            await tg.start(mgr.run)
            job = submit(mgr, {"type": "job.cancelled"})
            await job.finished.wait()
            tg.cancel_scope.cancel()
        views[name] = job
    failed = views["failed"]
    assert failed.view().error == error.to_object()
    last = msgspec.json.decode(entry_line(failed.log, failed.log.next_seq - 1))
    assert last["params"]["event"] == {
        "type": "job.failed",
        "error": msgspec.to_builtins(error.to_object()),
    }
    cancelled = views["cancelled"].view().error
    assert cancelled is not None and cancelled.code == -32041
    assert views["cancelled after an error"].view().error == error.to_object()


@pytest.mark.anyio
async def test_a_runner_that_raises_or_returns_early_fails_its_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def raises(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, JobStarted(attempt=1))
        raise ValueError("boom")

    async def returns(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, JobStarted(attempt=1))

    failed: dict[Any, Job] = {}
    messages: dict[Any, str] = {}
    for runner in (raises, returns):
        mgr = manager(runner)
        async with anyio.create_task_group() as tg:
            await tg.start(mgr.run)
            job = submit(mgr)
            with anyio.fail_after(5):
                await job.finished.wait()
            tg.cancel_scope.cancel()
        assert job.state is JobState.FAILED
        assert job.error is not None and job.error.kind == ErrorKind.INTERNAL_ERROR
        failed[runner], messages[runner] = job, job.error.message
    assert messages == {
        raises: "internal error while running the job: this is a bug in codexd; "
        "the daemon log has the details",
        returns: "the job ended without a result: this is a bug in codexd",
    }
    [record] = [r for r in caplog.records if r.name == "codexd.jobs"]
    assert record.getMessage() == f"job {failed[raises].id}: internal error"
    assert record.exc_info is not None


@pytest.mark.anyio
async def test_a_dropped_subscriber_is_dropped_once_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="codexd.jobs")
    mgr = manager(Steps())
    delta = {"type": "response.output_text.delta", "delta": "x"}
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        go = anyio.Event()
        job = submit(mgr, go, STARTED, delta, delta, delta)
        slow, fine = FakeSub(room=2), FakeSub()
        await mgr.stream_to(job, slow, 0)
        await mgr.stream_to(job, fine, 0)
        go.set()
        await anyio.wait_all_tasks_blocked()
        assert events(fine) == [STARTED, delta, delta, delta]
        tg.cancel_scope.cancel()
    assert len(slow.lines) == 2
    assert [msgspec.json.decode(x)["params"]["next_seq"] for x in slow.deferred] == [3]
    assert [r.getMessage() for r in caplog.records if r.name == "codexd.jobs"] == [
        f"job {job.id}: dropped a slow subscriber at seq 3"
    ]


@pytest.mark.anyio
async def test_a_replay_waits_for_room_then_turns_live() -> None:
    mgr = manager(Steps())
    delta = {"type": "response.output_text.delta", "delta": "x"}
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        go = anyio.Event()
        job = submit(mgr, STARTED, delta, delta, delta, go, delta)
        await anyio.wait_all_tasks_blocked()
        sub = FakeSub(room=1)  # every line after the first goes through send()
        assert mgr.check_replay(job, 1) == job.log.next_seq == 5
        await mgr.stream_to(job, sub, 1)
        assert sub.seqs() == [2, 3, 4]
        assert sub in job.live and sub not in job.replaying
        go.set()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert sub.seqs() == [2, 3, 4]  # the live event did not fit: dropped
    assert [msgspec.json.decode(x)["params"]["next_seq"] for x in sub.deferred] == [5]


@pytest.mark.anyio
async def test_a_replay_past_what_the_log_holds_is_a_drop() -> None:
    mgr = manager(Steps(), max_job_log_events=3)
    delta = {"type": "response.output_text.delta", "delta": "x"}
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = submit(mgr, STARTED, delta, delta, delta, delta)
        await anyio.wait_all_tasks_blocked()
        sub = FakeSub()
        await mgr.stream_to(job, sub, 1)  # seq 2 is gone
        tg.cancel_scope.cancel()
    assert sub.lines == []
    assert [msgspec.json.decode(x)["params"] for x in sub.deferred] == [
        {"reason": "slow_consumer", "job_id": job.id, "next_seq": 2}
    ]
    assert sub not in job.live and sub not in job.replaying


@pytest.mark.anyio
async def test_a_newer_subscription_or_a_closed_connection_ends_a_replay() -> None:
    mgr = manager(Steps())
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = submit(mgr, STARTED, anyio.Event())
        await anyio.wait_all_tasks_blocked()
        sub = FakeSub()
        older = mgr.claim(job, sub)
        newer = mgr.claim(job, sub)
        await mgr.stream_to(job, sub, 0, older)
        assert sub.lines == [] and sub not in job.live
        assert job.replaying[sub] is newer
        await mgr.stream_to(job, sub, 0, newer)
        assert sub.seqs() == [1] and sub in job.live and sub not in job.replaying
        # subscribing again stops the live feed until the new replay is done
        mgr.claim(job, sub)
        assert sub not in job.live
        closed = FakeSub()
        closed.closed = True
        await mgr.stream_to(job, closed, 0)
        assert closed.lines == [] and closed not in job.live and closed not in job.replaying
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_unsubscribing_and_forgetting_a_connection_stop_its_events() -> None:
    mgr = manager(Steps())
    delta = {"type": "response.output_text.delta", "delta": "x"}
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        go = anyio.Event()
        first, second = submit(mgr, go, STARTED), submit(mgr, go, STARTED)
        a, b = FakeSub(), FakeSub()
        for job in (first, second):
            await mgr.stream_to(job, a, 0)
            await mgr.stream_to(job, b, 0)
        replaying, unsubscribed = FakeSub(), FakeSub()
        mgr.claim(first, replaying)
        token = mgr.claim(first, unsubscribed)
        mgr.unsubscribe(first, unsubscribed)
        await mgr.stream_to(first, unsubscribed, 0, token)  # its replay stops before a line
        assert unsubscribed.lines == [] and unsubscribed not in first.live
        mgr.unsubscribe(first, a)
        mgr.forget_subscriber(b)
        mgr.forget_subscriber(replaying)
        assert first.live == set() and second.live == {a}
        assert first.replaying == {} == second.replaying
        go.set()
        await anyio.wait_all_tasks_blocked()
        mgr.emit(second, delta)
        assert events(a) == [STARTED, delta]  # the second job's only
        assert b.lines == []
        tg.cancel_scope.cancel()


def test_retention_by_bytes_is_exact_at_the_bound() -> None:
    clock = FakeClock()

    async def main(limit_jobs: int) -> list[Job]:
        # Every job's log has the same size: measure one, then allow `limit_jobs` of them.
        probe = manager(Steps(), clock)
        async with anyio.create_task_group() as tg:
            await tg.start(probe.run)
            sample = submit(probe, {"type": "job.cancelled"})
            await sample.finished.wait()
            tg.cancel_scope.cancel()
        per_job = sample.log.nbytes
        mgr = manager(
            Steps(), clock, job_retention_s=3600, max_retained_log_bytes=limit_jobs * per_job
        )
        jobs = []
        async with anyio.create_task_group() as tg:
            await tg.start(mgr.run)
            for _ in range(4):
                job = submit(mgr, {"type": "job.cancelled"})
                await job.finished.wait()
                await anyio.wait_all_tasks_blocked()
                jobs.append(job)
            tg.cancel_scope.cancel()
        return [j for j in jobs if j.id in mgr.jobs]

    assert len(anyio.run(main, 1)) == 1
    assert len(anyio.run(main, 2)) == 2


@pytest.mark.anyio
async def test_the_reaper_forgets_finished_jobs_at_once_with_zero_retention() -> None:
    mgr = manager(Steps(), job_retention_s=0)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        for _ in range(2):
            job = submit(mgr, {"type": "job.cancelled"})
            await job.finished.wait()
            await anyio.wait_all_tasks_blocked()
            assert mgr.jobs == {}
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_live_subscribers_are_those_of_unfinished_jobs() -> None:
    """What shutdown waits on: every subscriber, live or replaying, of a job not finished."""
    mgr = manager(Steps())
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        go = anyio.Event()
        running, done = (
            submit(mgr, STARTED, go),
            submit(mgr, STARTED, go, {"type": "job.cancelled"}),
        )
        await anyio.wait_all_tasks_blocked()
        live, replaying, of_done = FakeSub(), FakeSub(), FakeSub()
        await mgr.stream_to(running, live, 0)
        mgr.claim(running, replaying)
        await mgr.stream_to(done, of_done, 0)
        assert mgr.live_subscribers() == {live, replaying, of_done}
        go.set()
        await done.finished.wait()
        assert mgr.live_subscribers() == {live, replaying}
        tg.cancel_scope.cancel()


class TickingClock(FakeClock):
    """A clock that moves `step` seconds each time it is read: a daemon that is slow (or
    suspended) between two readings."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step
        self.readings = 0

    def monotonic(self) -> float:
        self.readings += 1
        self.now += self.step
        return self.now

    async def settled(self) -> None:
        """Until every task is blocked and a round of the event loop read the clock no more
        (a task may look blocked with a cancellation on its way to it)."""
        while True:
            readings = self.readings
            await anyio.wait_all_tasks_blocked()
            await anyio.lowlevel.checkpoint()
            await anyio.wait_all_tasks_blocked()
            if self.readings == readings:
                return


@pytest.mark.anyio
async def test_a_retention_that_ends_while_the_reaper_looks_ends_at_once() -> None:
    """The reaper reads the clock to find the next deadline and again to time its sleep: a
    deadline already past at the second reading is not slept on, not even briefly."""
    # The job finishes at t; the reaper's next reading is t + 6 (the job has 4 s left) and
    # the one after, which times its sleep, t + 12: the job is due.
    clock = TickingClock(step=6.0)
    mgr = manager(Steps(), clock, job_retention_s=10)
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = submit(mgr, {"type": "job.cancelled"})
        await job.finished.wait()
        await clock.settled()
        assert job.id not in mgr.jobs
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_the_reaper_forgets_a_finished_job_once_its_retention_has_passed() -> None:
    mgr = JobManager(Steps(), limits=lambda: JobLimits(job_retention_s=0.01))
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        job = submit(mgr, {"type": "job.cancelled"})
        await job.finished.wait()
        # A test about time: the reaper's own timer (a real 10 ms), not a wake-up, must do
        # it. Forgetting a job sets no event, so look until it is gone, bounded.
        with anyio.fail_after(5):
            while job.id in mgr.jobs:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_completed_jobs_text_counts_toward_the_retained_bytes() -> None:
    text = "x" * 10_000

    async def runner(job: Job, mgr: JobManager) -> None:
        mgr.emit(job, JobStarted(attempt=1))
        await mgr.complete(job, output_text=text, usage=Usage(), cost_usd=0.0, response_id=None)

    # A completion holds its text twice (in the event and in its job/event line once made):
    # room for one job's, not for two jobs'. Were the text left out, or counted once, both
    # jobs would fit.
    mgr = manager(runner, job_retention_s=3600, max_retained_log_bytes=3 * len(text))
    async with anyio.create_task_group() as tg:
        await tg.start(mgr.run)
        jobs = []
        for _ in range(2):
            job = submit(mgr)
            await job.finished.wait()
            await anyio.wait_all_tasks_blocked()
            jobs.append(job)
        assert list(mgr.jobs) == [jobs[1].id]
        tg.cancel_scope.cancel()


def test_an_upstream_event_keeps_only_a_text_delta_and_an_integer_sequence_number() -> None:
    """What the job's text and the gateway's stream position are taken from."""
    odd = UpstreamEvent(
        {"type": "response.output_text.delta", "delta": {"text": "a"}, "sequence_number": "7"}
    )
    assert (odd.delta, odd.sequence_number) == (None, None)
    assert (
        UpstreamEvent({"type": "response.created", "sequence_number": True}).sequence_number is None
    )
    fine = UpstreamEvent({"type": "response.output_text.delta", "delta": "a", "sequence_number": 7})
    assert (fine.delta, fine.sequence_number) == ("a", 7)
