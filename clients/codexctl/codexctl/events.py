"""Typed notifications and job events, and the rules for following one job.

The daemon sends notifications (messages without an id). `decode_notification` turns each
into its class: `JobEvent` for `job/event`, `JobCreated`, `JobFinished`, `AccountUpdated`,
`LoginCompleted`, `ConfigReloaded`, `ConfigRejected`, `RateLimitsUpdated`,
`SubscriptionDropped`; a method this client does not know stays a raw `Notification`.
`LoginCompleted`, `ConfigReloaded`, `ConfigRejected` and `SubscriptionDropped` are the very
classes the daemon sends (defined in `codexctl.results`, re-exported here).

A `JobEvent`'s `event` is one of codexd's own (`JobQueued`, `JobStarted`, `JobRetrying`,
`JobCompleted`, `JobFailed`, `JobCancelled`), a text delta (`TextDelta`), a reasoning summary
delta (`ReasoningDelta`), a finished output item (`OutputItemDone`), an embeddings job's
vectors (`EmbeddingsResult`), or any other upstream event as an `UpstreamEvent` with its
`type` and members.

`Follower` holds the rules for following one job (used by the clients and by `codexctl ask`
and `watch`): events in seq order, each once, to the terminal one, and where to re-subscribe
from after a dropped subscription or a lost connection.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import msgspec

from codexctl.protocol import (
    TERMINAL_EVENT_TYPES,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobQueued,
    JobRetrying,
    JobStarted,
    JobView,
)
from codexctl.results import ConfigRejected as ConfigRejected
from codexctl.results import ConfigReloaded as ConfigReloaded
from codexctl.results import EmbeddingsResult as EmbeddingsResult
from codexctl.results import LoginCompleted as LoginCompleted
from codexctl.results import ProviderLimits
from codexctl.results import SubscriptionDropped as SubscriptionDropped

# --------------------------------------------------------------------------- job events

TEXT_DELTA: Final = "response.output_text.delta"
TERMINAL_EVENTS: Final = frozenset(t.__struct_config__.tag for t in TERMINAL_EVENT_TYPES)


class TextDelta(msgspec.Struct, frozen=True, tag=TEXT_DELTA, tag_field="type"):
    """A piece of the reply's text (both wire APIs send text this way)."""

    delta: str


class ReasoningDelta(
    msgspec.Struct, frozen=True, tag="response.reasoning_summary_text.delta", tag_field="type"
):
    """A piece of a reasoning summary."""

    delta: str


class OutputItemDone(
    msgspec.Struct, frozen=True, tag="response.output_item.done", tag_field="type"
):
    """A finished output item (a message, a function call), as the provider sent it."""

    item: dict[str, Any]


class UpstreamEvent(msgspec.Struct, frozen=True):
    """Any other upstream event, passed through: its `type` and all its members (`data`)."""

    type: str
    data: dict[str, Any]


KnownEvent = (
    JobQueued
    | JobStarted
    | JobRetrying
    | JobCompleted
    | JobFailed
    | JobCancelled
    | TextDelta
    | ReasoningDelta
    | OutputItemDone
    | EmbeddingsResult
)
Event = KnownEvent | UpstreamEvent

_KNOWN_TAGS: Final = frozenset(t.__struct_config__.tag for t in typing.get_args(KnownEvent))


def decode_event(event: Any) -> Event:
    """One event member of `job/event` (plain JSON values) as its class."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise msgspec.ValidationError("a job event must be an object with a `type`")
    if event["type"] in _KNOWN_TAGS:
        known: KnownEvent = msgspec.convert(event, KnownEvent)
        return known
    return UpstreamEvent(type=event["type"], data=event)


# --------------------------------------------------------------------------- notifications


class Notification(msgspec.Struct, frozen=True):
    """A notification as it came: its method and params (plain JSON values). The typed
    iterators yield this for a method this client does not know."""

    method: str
    params: Any


class JobEvent(msgspec.Struct, frozen=True):
    """`job/event`: the `seq`-th event of job `job_id` (seq counts from 1, one by one)."""

    method: ClassVar[str] = "job/event"
    job_id: str
    seq: int
    event: Event

    @property
    def terminal(self) -> bool:
        """Whether this is the job's last event (completed, failed or cancelled)."""
        return isinstance(self.event, TERMINAL_EVENT_TYPES)


class JobCreated(msgspec.Struct, frozen=True):
    """`job/created` (topic `jobs`): a job was submitted; `job` has no `output_text`."""

    method: ClassVar[str] = "job/created"
    job: JobView


class JobFinished(msgspec.Struct, frozen=True):
    """`job/finished` (topic `jobs`): a job ended; `job` has no `output_text`."""

    method: ClassVar[str] = "job/finished"
    job: JobView


class AccountUpdated(msgspec.Struct, frozen=True):
    """`account/updated` (topic `account`): the login changed (as `status().account`)."""

    method: ClassVar[str] = "account/updated"
    mode: str | None
    email: str | None
    plan_type: str | None


class RateLimitsUpdated(ProviderLimits, frozen=True, omit_defaults=True):
    """`ratelimits/updated` (topic `ratelimits`): one provider's limits changed."""

    method: ClassVar[str] = "ratelimits/updated"


TypedNotification = (
    JobEvent
    | JobCreated
    | JobFinished
    | AccountUpdated
    | LoginCompleted
    | ConfigReloaded
    | ConfigRejected
    | RateLimitsUpdated
    | SubscriptionDropped
    | Notification
)

_BY_METHOD: Final[dict[str, type[Any]]] = {
    cls.method: cls
    for cls in (
        JobCreated,
        JobFinished,
        AccountUpdated,
        LoginCompleted,
        ConfigReloaded,
        ConfigRejected,
        RateLimitsUpdated,
        SubscriptionDropped,
    )
}


def decode_notification(note: Notification) -> TypedNotification:
    """A raw notification as its class; raises `msgspec.ValidationError` when a known
    method's params do not fit."""
    if note.method == JobEvent.method:
        params = note.params
        if not isinstance(params, dict):
            raise msgspec.ValidationError("job/event params must be an object")
        return JobEvent(
            job_id=msgspec.convert(params.get("job_id"), str),
            seq=msgspec.convert(params.get("seq"), int),
            event=decode_event(params.get("event")),
        )
    cls = _BY_METHOD.get(note.method)
    if cls is None:
        return note
    typed: TypedNotification = msgspec.convert(note.params, cls)
    return typed


# --------------------------------------------------------------------------- following a job


class Step(enum.Enum):
    """What a follower makes of one notification."""

    SKIP = "skip"  # not this job's, or an event already seen
    EVENT = "event"  # the next event: hand it on
    RESUBSCRIBE = "resubscribe"  # the subscription was dropped: subscribe after `last`


class Follower:
    """The rules for following one job: each event once, in seq order, to the terminal one.

    Feed it every notification; it keeps `last`, the seq of the last event handed on, and
    `done` once that was the terminal one. After a dropped subscription, or on a new
    connection, subscribe again with `after_seq=last`: the daemon replays what came since,
    so nothing is missed and nothing is seen twice.
    """

    def __init__(self, job_id: str, after_seq: int = 0) -> None:
        self.job_id = job_id
        self.last = after_seq
        self.done = False

    def feed(self, note: Notification) -> Step:
        params = note.params if isinstance(note.params, dict) else {}
        if params.get("job_id") != self.job_id or self.done:
            return Step.SKIP
        if note.method == SubscriptionDropped.method:
            return Step.RESUBSCRIBE
        if note.method != JobEvent.method:
            return Step.SKIP
        seq = params.get("seq", 0)
        if not isinstance(seq, int) or seq <= self.last:
            return Step.SKIP
        self.last = seq
        event = params.get("event")
        if isinstance(event, dict) and event.get("type") in TERMINAL_EVENTS:
            self.done = True
        return Step.EVENT


# Re-attaching: try to connect again for this long, waiting between tries from the first
# delay, doubling up to the last (a socket-activated daemon answers at once; a restarting one
# takes a moment).
REATTACH_TIMEOUT_S: Final = 30.0
_FIRST_DELAY_S: Final = 0.05
_MAX_DELAY_S: Final = 1.0


def reconnect_delays(timeout: float = REATTACH_TIMEOUT_S) -> Iterator[float]:
    """The waits between attempts to reconnect: they add up to at most `timeout`."""
    left, delay = timeout, _FIRST_DELAY_S
    while left > 0:
        wait = min(delay, left)
        yield wait
        left -= wait
        delay = min(delay * 2, _MAX_DELAY_S)
