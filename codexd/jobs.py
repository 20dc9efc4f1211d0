"""Jobs: the state machine, the seq-numbered event log, and subscriptions.

Everything that affects a job's transitions lives in `TRANSITIONS` and `apply()`. The log is
append-only and bounded: past `max_events` the oldest events after the first are dropped
(they are deltas in practice; the first and the terminal event always stay). Subscribers are
connections: live events are fanned out with `send_nowait`, and a connection whose outbound
buffer is full has that subscription dropped with `subscription/dropped {next_seq}`, so one
slow reader never slows the job or the other subscribers. Replays go through the same
connection with backpressure before a subscription turns live.

A terminal event goes through `finish()`, which first awaits `on_finishing` (the daemon commits
the job's ledger row there) and only then applies the event: until it returns nobody, live,
replaying or polling, sees the job finished.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio
import anyio.abc
import msgspec

from codexctl.protocol import (
    TERMINAL_EVENT_TYPES,
    ErrorKind,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobOwnEvent,
    JobQueued,
    JobRetrying,
    JobStarted,
    Notification,
    RpcError,
)
from codexctl.protocol import JobView as JobView  # the wire types live with the client
from codexctl.protocol import Usage as Usage
from codexctl.results import SubscriptionDropped
from codexd.clock import Clock, SystemClock, rfc3339

log = logging.getLogger("codexd.jobs")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

MAX_RETAINED_JOBS: Final = 10_000
# What the event logs of finished jobs may hold in all: past it the oldest finished jobs are
# forgotten before job_retention_s, so memory stays bounded however large the replies are.
MAX_RETAINED_LOG_BYTES: Final = 64 << 20


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES: Final = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
UPSTREAM = "upstream"  # the kind of every upstream event


class UpstreamEvent:
    """An event of the provider's stream, passed through: its `type` and its members' JSON
    (`raw`, encoded once when it is made, which is what subscribers and the gateway send).

    A log holds up to `max_job_log_events` of these per job, so only the JSON is kept; the
    two members read on every event are kept decoded (`delta` of a text delta, and
    `sequence_number`), and `data` decodes the rest when a rarer event needs it.
    """

    __slots__ = ("delta", "raw", "sequence_number", "type")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.type: str = data["type"]
        self.raw: bytes = _encoder.encode(data)
        delta = data.get("delta")
        self.delta: str | None = delta if isinstance(delta, str) else None
        seq = data.get("sequence_number")
        self.sequence_number: int | None = seq if type(seq) is int else None

    @classmethod
    def from_json(cls, type_: str, raw: bytes) -> UpstreamEvent:
        """An event whose JSON object is already made (`type_` its `type` member, the
        first one), such as a whole reply passed through without decoding it."""
        event = cls.__new__(cls)
        event.type = type_
        event.raw = raw
        event.delta = None
        event.sequence_number = None
        return event

    @property
    def data(self) -> dict[str, Any]:
        """All of the event's members (decoded anew on each call)."""
        decoded: dict[str, Any] = _decoder.decode(self.raw)
        return decoded

    def __repr__(self) -> str:
        return f"UpstreamEvent({self.type})"


JobEvent = JobOwnEvent | UpstreamEvent
_TERMINAL: Final = TERMINAL_EVENT_TYPES

_KIND: Final[Mapping[type, str]] = {
    JobQueued: "job.queued",
    JobStarted: "job.started",
    JobRetrying: "job.retrying",
    JobCompleted: "job.completed",
    JobFailed: "job.failed",
    JobCancelled: "job.cancelled",
}
_OWN_TYPES: Final = frozenset(_KIND.values())

_ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)
TRANSITIONS: Final[Mapping[tuple[JobState, str], JobState]] = {
    (JobState.QUEUED, "job.queued"): JobState.QUEUED,
    (JobState.QUEUED, "job.started"): JobState.RUNNING,
    (JobState.RUNNING, UPSTREAM): JobState.RUNNING,
    (JobState.RUNNING, "job.retrying"): JobState.RETRYING,
    (JobState.RETRYING, "job.started"): JobState.RUNNING,
    (JobState.RUNNING, "job.completed"): JobState.COMPLETED,
    **{(s, "job.failed"): JobState.FAILED for s in _ACTIVE},
    **{(s, "job.cancelled"): JobState.CANCELLED for s in _ACTIVE},
}


# The `error` of a cancelled job in `job/get` (-32041).
CANCELLED_ERROR: Final = RpcError(
    ErrorKind.CANCELLED,
    "the job was cancelled (by job/cancel, by its client going away with "
    "cancel_on_disconnect, or by a daemon shutdown); submit it again to retry",
)


class InvalidTransition(Exception):
    pass


def job_event(data: dict[str, Any]) -> JobEvent:
    """An event from its JSON object: one of codexd's own typed (raises msgspec.ValidationError
    when a member is wrong), any other type an upstream event passed through."""
    if data.get("type") in _OWN_TYPES:
        own: JobEvent = msgspec.convert(data, JobOwnEvent)
        return own
    return UpstreamEvent(data)


def event_kind(event: JobEvent) -> str:
    """`job.*` for the job's own events, `upstream` for every upstream one."""
    return _KIND.get(type(event), UPSTREAM)


def event_type(event: JobEvent) -> str:
    """The `type` member the event goes out with."""
    return event.type if isinstance(event, UpstreamEvent) else _KIND[type(event)]


def next_state(state: JobState, event: JobEvent) -> JobState:
    """The state after `event` (pure); raises InvalidTransition and changes nothing
    otherwise."""
    try:
        return TRANSITIONS[(state, event_kind(event))]
    except KeyError:
        raise InvalidTransition(
            f"can't handle event type {event_type(event)!r} when state={state.value}"
        ) from None


# --------------------------------------------------------------------------- wire types


class JobEventParams(msgspec.Struct):
    """`job/event`'s params: the job, the event's seq in the job's log, and the event."""

    job_id: str
    seq: int
    event: Any


def _encode_event_line(job_id: str, seq: int, event: JobOwnEvent) -> bytes:
    buf = bytearray()
    _encoder.encode_into(
        Notification(method="job/event", params=JobEventParams(job_id, seq, event)), buf
    )
    buf += b"\n"
    return bytes(buf)


# What a job event of codexd's own is taken to hold, for the bound on retained log bytes
# (an upstream event counts its JSON; a completion adds its text), and what a `job/event`
# line adds around the event's JSON.
_OWN_EVENT_BYTES: Final = 160
_LINE_BYTES: Final = 96
_MADE_ONCE: Final = b""  # an entry's line was made for one reader and not kept
# An upstream event whose JSON is larger (a whole embeddings reply) never keeps its line: each
# reader gets one made anew, so its bytes are held, and counted, once.
MAX_KEPT_LINE_BYTES: Final = 1 << 20


class LogEntry:
    """One event of a job's log. Its `job/event` line is made when a socket subscriber needs
    it (an upstream event's JSON is spliced in as it is) and kept once a second one does, so
    N subscribers and every later replay cost two encodings at most; nothing is made at all
    when only the gateway reads the job (it translates the typed event)."""

    __slots__ = ("_line", "event", "job_id", "seq")

    def __init__(self, job_id: str, seq: int, event: JobEvent) -> None:
        self.job_id = job_id
        self.seq = seq
        self.event = event
        self._line: bytes | None = None

    @property
    def nbytes(self) -> int:
        """What the entry may come to hold, its line included (counted whether it is made
        or not, so a finished job's share of the retained bytes never changes)."""
        event = self.event
        if isinstance(event, UpstreamEvent):
            return (2 if self._keeps_line() else 1) * len(event.raw) + _LINE_BYTES
        if isinstance(event, JobCompleted) and isinstance(event.output_text, str):
            return 2 * len(event.output_text) + _OWN_EVENT_BYTES + _LINE_BYTES
        return _OWN_EVENT_BYTES + _LINE_BYTES

    @property
    def line(self) -> bytes:
        line = self._line
        if line:
            return line
        made = self._encode()
        # Kept from the second reader on: a job read by one socket subscriber (the usual
        # case) holds no second copy of its events' JSON; a large event never keeps one.
        self._line = made if line is not None and self._keeps_line() else _MADE_ONCE
        return made

    def _keeps_line(self) -> bool:
        event = self.event
        return not (isinstance(event, UpstreamEvent) and len(event.raw) > MAX_KEPT_LINE_BYTES)

    def _encode(self) -> bytes:
        event = self.event
        if isinstance(event, UpstreamEvent):
            # The same bytes as encoding the Notification (a test holds them equal).
            return b"".join(
                (
                    b'{"method":"job/event","params":{"job_id":',
                    _encoder.encode(self.job_id),
                    b',"seq":',
                    str(self.seq).encode(),
                    b',"event":',
                    event.raw,
                    b'},"jsonrpc":"2.0"}\n',
                )
            )
        return _encode_event_line(self.job_id, self.seq, event)


# --------------------------------------------------------------------------- the event log


class EventLog:
    """Seq-numbered, append-only, bounded. Holds the first event and an unbroken tail."""

    __slots__ = ("_first", "_max_events", "_tail", "nbytes", "next_seq")

    def __init__(self, max_events: int) -> None:
        if max_events < 2:
            raise ValueError("max_events must be at least 2 (the first and the last event)")
        self._max_events = max_events
        self._first: LogEntry | None = None
        self._tail: deque[LogEntry] = deque()
        self.next_seq = 1
        self.nbytes = 0  # about what the entries hold, for the bound on what finished jobs keep

    def append(self, job_id: str, event: JobEvent) -> LogEntry:
        entry = LogEntry(job_id, self.next_seq, event)
        self.next_seq += 1
        self.nbytes += entry.nbytes
        if entry.seq == 1:
            self._first = entry
        else:
            self._tail.append(entry)
            if len(self._tail) + 1 > self._max_events:
                self.nbytes -= self._tail.popleft().nbytes
        return entry

    @property
    def oldest_seq(self) -> int:
        """The first seq of the unbroken tail (seq 1 is kept apart)."""
        return self._tail[0].seq if self._tail else self.next_seq

    def __len__(self) -> int:
        return (1 if self._first is not None else 0) + len(self._tail)

    def replay_from(self, after_seq: int) -> Iterator[LogEntry]:
        """Events with seq > after_seq; raises RpcError replay_unavailable if some are gone."""
        if after_seq < 0:
            after_seq = 0
        if after_seq >= 1 and after_seq + 1 < self.oldest_seq:
            raise self._unavailable()
        if after_seq == 0 and self.oldest_seq > 2:
            raise self._unavailable()
        return self._iter(after_seq)

    def _iter(self, after_seq: int) -> Iterator[LogEntry]:
        if after_seq == 0 and self._first is not None:
            yield self._first
        for entry in self._tail:
            if entry.seq > after_seq:
                yield entry

    def entry_at(self, seq: int) -> LogEntry | None:
        if seq == 1:
            return self._first
        if self._tail and self._tail[0].seq <= seq:
            index = seq - self._tail[0].seq
            if index < len(self._tail):
                return self._tail[index]
        return None

    def _unavailable(self) -> RpcError:
        return RpcError(
            ErrorKind.REPLAY_UNAVAILABLE,
            f"the job's log no longer holds those events: subscribe with after_seq ≥ "
            f"{self.oldest_seq - 1} (the log keeps the newest events)",
            oldest_seq=self.oldest_seq,
        )


# --------------------------------------------------------------------------- subscribers


class Subscriber(Protocol):
    """What a job needs of a connection (rpc.server.Connection satisfies it)."""

    closed: bool

    def deliver(self, entry: LogEntry) -> bool:
        """A live job event; False when there is no room (the subscription is dropped)."""
        ...

    def send_nowait(self, line: bytes) -> bool: ...

    async def send(self, line: bytes) -> None: ...

    def notify(self, method: str, params: Any) -> bool: ...

    def defer(self, line: bytes) -> None: ...


def dropped_line(job_id: str, next_seq: int) -> bytes:
    buf = bytearray()
    params = SubscriptionDropped(reason="slow_consumer", job_id=job_id, next_seq=next_seq)
    _encoder.encode_into(Notification(method="subscription/dropped", params=params), buf)
    buf += b"\n"
    return bytes(buf)


# --------------------------------------------------------------------------- the job


@dataclass(eq=False)
class Job:
    id: str
    client: str
    provider: str
    model: str
    api: str
    body: dict[str, Any]
    created_at: float
    created_mono: float
    log: EventLog
    config: Any = None  # the config snapshot taken when the job was created
    request: Any = None  # what the submit handler resolved (model, defaults, estimate)
    cost_estimated: bool = False
    state: JobState = JobState.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    finished_mono: float | None = None
    attempts: int = 0
    output_parts: list[str] = field(default_factory=list)
    output_text: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    error: RpcError | None = None
    client_request_id: str | None = None
    cancel_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancel_requested: bool = False
    live: set[Subscriber] = field(default_factory=set)
    # Each subscription being replayed, with the token of its claim: a newer claim (a second
    # job/subscribe) or an unsubscribe ends the older replay before it sends another line.
    replaying: dict[Subscriber, object] = field(default_factory=dict)
    finished: anyio.Event = field(default_factory=anyio.Event)
    # Called when the runner has emitted all that upstream sent so far (see `end_batch`).
    batch_ends: list[Callable[[], None]] = field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def text_so_far(self) -> str:
        return self.output_text if self.output_text is not None else "".join(self.output_parts)

    def _output_view(self) -> str | None:
        """`output_text` of `job/get`: null once a job completed without text (embeddings)."""
        if self.state is JobState.COMPLETED and self.output_text is None:
            return None
        return self.text_so_far()

    def view(self, *, with_output: bool = True) -> JobView:
        return JobView(
            id=self.id,
            state=self.state.value,
            client=self.client,
            provider=self.provider,
            model=self.model,
            api=self.api,
            created_at=rfc3339(self.created_at),
            started_at=rfc3339(self.started_at) if self.started_at else None,
            finished_at=rfc3339(self.finished_at) if self.finished_at else None,
            attempts=self.attempts,
            output_text=self._output_view() if with_output else msgspec.UNSET,
            usage=self.usage,
            cost_usd=self.cost_usd,
            error=self.error.to_object() if self.error else None,
        )

    def __repr__(self) -> str:
        return (
            f"<Job {self.id} {self.state.value} attempts={self.attempts} "
            f"events={self.log.next_seq - 1} subscribers={len(self.live)}+{len(self.replaying)}>"
        )


Runner = Callable[["Job", "JobManager"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobLimits:
    max_queued_jobs: int = 1000
    job_retention_s: float = 900.0
    max_job_log_events: int = 100_000
    max_retained_jobs: int = MAX_RETAINED_JOBS
    max_retained_log_bytes: int = MAX_RETAINED_LOG_BYTES


class JobManager:
    """Owns every job: creation, events, fan-out, cancellation, retention.

    Jobs run in the manager's task group, not the submitting connection's, so a client can
    drop and re-attach. `on_finishing(job, terminal_state, finished_at)` is awaited, shielded
    from cancellation, before a terminal event is applied: it must bound its own wait.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        limits: Callable[[], JobLimits],
        clock: Clock | None = None,
        on_created: Callable[[Job], None] | None = None,
        on_finishing: Callable[[Job, JobState, float], Awaitable[None]] | None = None,
        on_finished: Callable[[Job], None] | None = None,
    ) -> None:
        self._runner = runner
        self._limits = limits
        self._clock = clock or SystemClock()
        self._on_created = on_created
        self._on_finishing = on_finishing
        self._on_finished = on_finished
        self.jobs: dict[str, Job] = {}
        self._by_request_id: dict[tuple[str, str], str] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._accepting = True
        self._reaper_wakeup = anyio.Event()
        self._finished_order: deque[Job] = deque()  # finish order = expiry order
        self._reaper_idle = True
        self._retained_bytes = 0  # event-log bytes held by finished jobs
        self._queued = 0  # jobs in state queued, kept as they change (submit checks it)

    # ---------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._reaper)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    def stop_accepting(self) -> None:
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    def active(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.is_terminal]

    def counts(self) -> tuple[int, int, int]:
        queued = running = retained = 0
        for j in self.jobs.values():
            if j.state is JobState.QUEUED:
                queued += 1
            elif j.is_terminal:
                retained += 1
            else:
                running += 1
        return queued, running, retained

    # ---------------------------------------------------------------- submit

    def find_by_request_id(self, client: str, client_request_id: str) -> Job | None:
        job_id = self._by_request_id.get((client, client_request_id))
        return self.jobs.get(job_id) if job_id else None

    def create(
        self,
        *,
        client: str,
        provider: str,
        model: str,
        api: str,
        body: dict[str, Any],
        config: Any = None,
        request: Any = None,
        client_request_id: str | None = None,
    ) -> Job:
        """Create a job and start it; raises RpcError overloaded when it cannot be taken."""
        if not self._accepting:
            raise RpcError(
                ErrorKind.OVERLOADED,
                "codexd is draining (shutting down): submit again once it has restarted",
            )
        if self._tg is None:
            raise RpcError(ErrorKind.OVERLOADED, "codexd is not ready to take jobs yet")
        limits = self._limits()
        queued = self._queued
        if queued >= limits.max_queued_jobs:
            raise RpcError(
                ErrorKind.OVERLOADED,
                f"too many queued jobs ({queued}, [codexd] max_queued_jobs = "
                f"{limits.max_queued_jobs}): retry later",
            )
        now = self._clock.wall()
        job = Job(
            id="job_" + secrets.token_hex(8),
            client=client,
            provider=provider,
            model=model,
            api=api,
            body=body,
            created_at=now,
            created_mono=self._clock.monotonic(),
            log=EventLog(limits.max_job_log_events),
            config=config,
            request=request,
            client_request_id=client_request_id,
        )
        self.jobs[job.id] = job
        self._queued += 1
        if client_request_id is not None:
            self._by_request_id[(client, client_request_id)] = job.id
        if self._on_created:
            self._on_created(job)
        self._tg.start_soon(self._run_job, job, name=f"job {job.id}")
        return job

    async def _run_job(self, job: Job) -> None:
        try:
            with job.cancel_scope:
                await self._runner(job, self)
        except Exception:
            log.exception("job %s: internal error", job.id)
            if not job.is_terminal:
                await self.fail(
                    job,
                    RpcError(
                        ErrorKind.INTERNAL_ERROR,
                        "internal error while running the job: this is a bug in codexd; "
                        "the daemon log has the details",
                    ),
                )
        finally:
            if not job.is_terminal:
                if job.cancel_requested or job.cancel_scope.cancel_called:
                    await self.finish(job, JobCancelled())
                else:
                    await self.fail(
                        job,
                        RpcError(
                            ErrorKind.INTERNAL_ERROR,
                            "the job ended without a result: this is a bug in codexd",
                        ),
                    )

    # ---------------------------------------------------------------- events

    def emit(self, job: Job, event: JobEvent) -> int:
        """Apply one event that does not end the job (those go through `finish()`)."""
        if type(event) is UpstreamEvent:  # the clock is read only for events that record it
            return self._apply(job, event, 0.0)
        if isinstance(event, _TERMINAL):
            raise InvalidTransition(f"{event_type(event)!r} ends the job: send it with finish()")
        return self._apply(job, event, self._clock.wall())

    async def finish(self, job: Job, event: JobCompleted | JobFailed | JobCancelled) -> int:
        """Apply a terminal event once `on_finishing` has returned (the job's ledger row is
        committed then), so no subscriber, replay or job/get sees the end before it is
        recorded. The wait is shielded: a cancel arriving meanwhile cannot turn a job that
        is being recorded as completed into a cancelled one."""
        if not isinstance(event, _TERMINAL):
            raise InvalidTransition(
                f"{event_type(event)!r} does not end the job: send it with emit()"
            )
        state = next_state(job.state, event)
        finished_at = self._clock.wall()
        if self._on_finishing is not None:
            with anyio.CancelScope(shield=True):
                await self._on_finishing(job, state, finished_at)
        return self._apply(job, event, finished_at)

    def _apply(self, job: Job, event: JobEvent, now: float) -> int:
        """Check the transition, log the event, update the job, fan it out. `now` (wall
        clock) is read only by job.started and the terminal events."""
        new_state = next_state(job.state, event)
        if isinstance(event, UpstreamEvent):
            if event.delta is not None and event.type == "response.output_text.delta":
                job.output_parts.append(event.delta)
        elif isinstance(event, JobStarted):
            job.attempts = event.attempt
            if job.started_at is None:
                job.started_at = now
        elif isinstance(event, JobRetrying):
            if event.reset_output:
                job.output_parts.clear()
        elif isinstance(event, JobCompleted):
            text = event.output_text
            job.output_text = text if isinstance(text, str) else None
            job.output_parts.clear()
        elif isinstance(event, JobCancelled) and job.error is None:
            job.error = CANCELLED_ERROR
        if job.state is JobState.QUEUED and new_state is not JobState.QUEUED:
            self._queued -= 1
        job.state = new_state
        entry = job.log.append(job.id, event)
        seq = entry.seq
        self._fan_out(job, entry)
        if job.is_terminal:
            job.finished_at = now
            job.finished_mono = self._clock.monotonic()
            job.finished.set()
            self._finished_order.append(job)
            self._retained_bytes += job.log.nbytes
            if self._on_finished:
                self._on_finished(job)
            if self._reaper_idle or self._over_retention_bounds(self._limits()):
                self._reaper_wakeup.set()
        return seq

    async def complete(
        self,
        job: Job,
        *,
        output_text: str | None,
        usage: Usage,
        cost_usd: float,
        response_id: str | None,
    ) -> None:
        """`output_text` None: a reply with no text (embeddings); the event leaves it out."""
        job.usage = usage
        job.cost_usd = cost_usd
        await self.finish(
            job,
            JobCompleted(
                output_text=msgspec.UNSET if output_text is None else output_text,
                usage=usage,
                cost_usd=cost_usd,
                response_id=response_id,
            ),
        )

    async def fail(self, job: Job, error: RpcError) -> None:
        job.error = error
        await self.finish(job, JobFailed(error=error.to_object()))

    def end_batch(self, job: Job) -> None:
        """The runner has emitted every event of what upstream sent so far and is about to
        wait for more: a reader that writes events as they come (the gateway) writes the
        batch now, in one piece, instead of once per event or after a task switch."""
        for end in job.batch_ends:
            end()

    def _fan_out(self, job: Job, entry: LogEntry) -> None:
        dropped = [sub for sub in job.live if not sub.deliver(entry)]
        if not dropped:
            return
        seq = entry.seq
        for sub in dropped:
            job.live.discard(sub)
            if not sub.closed:
                log.info("job %s: dropped a slow subscriber at seq %d", job.id, seq)
                sub.defer(dropped_line(job.id, seq))

    # ---------------------------------------------------------------- subscriptions

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise RpcError(
                ErrorKind.NOT_FOUND,
                f"no job {job_id!r}: it never existed, or it finished more than "
                "job_retention_s ago (codexctl jobs lists the known ones)",
            )
        return job

    def check_replay(self, job: Job, after_seq: int) -> int:
        """Validate a subscription's start; returns next_seq (raises replay_unavailable)."""
        job.log.replay_from(after_seq)
        return job.log.next_seq

    def claim(self, job: Job, sub: Subscriber) -> object:
        """Make `sub`'s next subscription to `job` the only one: any earlier one, live or still
        replaying, stops now. Returns the token `stream_to` runs under."""
        token = object()
        job.live.discard(sub)
        job.replaying[sub] = token
        return token

    async def stream_to(
        self, job: Job, sub: Subscriber, after_seq: int, token: object | None = None
    ) -> None:
        """Replay events after `after_seq` with backpressure, then turn live.

        The switch to live happens with no await between the last replayed event and joining
        the live set, so nothing is missed or sent twice. `token` comes from `claim()`, taken
        when the subscription was decided (before its reply); without one it is claimed now.
        """
        if token is None:
            token = self.claim(job, sub)
        try:
            cursor = after_seq
            while True:
                if sub.closed or job.replaying.get(sub) is not token:
                    return
                if cursor + 1 >= job.log.next_seq:
                    del job.replaying[sub]
                    job.live.add(sub)
                    return
                entry = job.log.entry_at(cursor + 1)
                if entry is None:
                    # The bounded log moved past us while we replayed: same as a slow consumer.
                    sub.defer(dropped_line(job.id, cursor + 1))
                    return
                # Wait for room only when the buffer is full: a replay then costs one
                # scheduling round per buffer's worth of lines, not one per line.
                line = entry.line
                if not sub.send_nowait(line):
                    await sub.send(line)
                cursor += 1
        finally:
            if job.replaying.get(sub) is token:
                del job.replaying[sub]

    def unsubscribe(self, job: Job, sub: Subscriber) -> None:
        job.live.discard(sub)
        job.replaying.pop(sub, None)

    def live_subscribers(self) -> set[Subscriber]:
        """Subscribers of jobs that have not finished (they still expect events)."""
        subs: set[Subscriber] = set()
        for job in self.jobs.values():
            if not job.is_terminal:
                subs.update(job.live)
                subs.update(job.replaying)
        return subs

    def forget_subscriber(self, sub: Subscriber) -> None:
        for job in self.jobs.values():
            job.live.discard(sub)
            job.replaying.pop(sub, None)

    # ---------------------------------------------------------------- cancel

    def cancel(self, job: Job) -> None:
        """Idempotent. Cancelling the scope closes the upstream stream at once."""
        if job.is_terminal:
            return
        job.cancel_requested = True
        job.cancel_scope.cancel()

    # ---------------------------------------------------------------- retention

    def expire(self, now: float) -> float | None:
        """Forget finished jobs past retention (and the oldest past the count bound);
        returns the next deadline, or None when nothing is waiting to expire."""
        limits = self._limits()
        order = self._finished_order
        while order:
            oldest = order[0]
            assert oldest.finished_mono is not None
            deadline = oldest.finished_mono + limits.job_retention_s
            if deadline > now and not self._over_retention_bounds(limits):
                return deadline
            order.popleft()
            self._retained_bytes -= oldest.log.nbytes
            self._forget(oldest)
        return None

    def _over_retention_bounds(self, limits: JobLimits) -> bool:
        return (
            len(self._finished_order) > limits.max_retained_jobs
            or self._retained_bytes > limits.max_retained_log_bytes
        )

    def _forget(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.client_request_id is not None:
            key = (job.client, job.client_request_id)
            if self._by_request_id.get(key) == job.id:
                del self._by_request_id[key]

    async def _reaper(self) -> None:
        while True:
            self._reaper_wakeup = anyio.Event()
            deadline = self.expire(self._clock.monotonic())
            self._reaper_idle = deadline is None
            with anyio.move_on_after(
                None if deadline is None else max(0.0, deadline - self._clock.monotonic())
            ):
                await self._reaper_wakeup.wait()
