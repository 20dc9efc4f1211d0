"""The job state machine, the bounded event log, fan-out, replay and retention (no sockets)."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexctl.protocol import (
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
