"""A job's reply as text: `Reply` (what `ask` returns) and `Stream` (what `stream` yields).

A stream yields the reply's text as `str` pieces, in order. When the daemon retries a job
whose reply had started (`job.retrying` with `reset_output`), the text so far is void and
the next attempt's text starts from the beginning: the stream then yields a `Reset` before
the new text. A caller that shows text as it comes takes back what it showed; one that only
collects it starts over. After the last piece, `stream.reply` holds the whole `Reply`: the
final text, its token usage, its cost and the job id. A job that fails raises its error
kind's class (`RateLimited`, `QuotaExceeded`, …); a cancelled job raises `Cancelled`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec

from codexctl.errors import DaemonUnreachable, job_error
from codexctl.events import JobEvent, TextDelta
from codexctl.protocol import JobCancelled, JobCompleted, JobFailed, JobRetrying, RpcError, Usage


class Reply(msgspec.Struct, frozen=True):
    """A completed job's reply: its `text`, token `usage`, `cost_usd`, and its `job_id`
    (for `job(job_id)` or the usage ledger); `response_id` is the provider's, when it gave
    one."""

    job_id: str
    text: str
    usage: Usage
    cost_usd: float
    response_id: str | None = None


class Reset(msgspec.Struct, frozen=True):
    """The reply starts over: forget the text received so far (the daemon is retrying the
    job, `attempt` is the attempt that follows, `reason` why)."""

    attempt: int
    reason: str


class ReplyAssembler:
    """Turns a job's events into text pieces and `Reset`s, and keeps the reply (the rule
    both `Stream` and `AsyncStream` follow)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.parts: list[str] = []
        self.reply: Reply | None = None

    def feed(self, note: JobEvent) -> str | Reset | None:
        """The piece to hand on for this event, if any; raises when the job did not complete."""
        event = note.event
        if isinstance(event, TextDelta):
            if not event.delta:
                return None
            self.parts.append(event.delta)
            return event.delta
        if isinstance(event, JobRetrying):
            if not event.reset_output:
                return None
            self.parts.clear()
            return Reset(attempt=event.attempt, reason=event.reason)
        if isinstance(event, JobCompleted):
            self.reply = Reply(
                job_id=self.job_id,
                text=event.output_text if isinstance(event.output_text, str) else "",
                usage=event.usage,
                cost_usd=event.cost_usd,
                response_id=event.response_id,
            )
        elif isinstance(event, JobFailed):
            raise job_error(self.job_id, event.error)
        elif isinstance(event, JobCancelled):
            raise job_error(self.job_id, None)
        return None

    @property
    def text(self) -> str:
        return self.reply.text if self.reply is not None else "".join(self.parts)


class _StreamBase:
    def __init__(self, job_id: str) -> None:
        self._assembler = ReplyAssembler(job_id)

    @property
    def job_id(self) -> str:
        """The job's id (it is submitted before the stream is returned)."""
        return self._assembler.job_id

    @property
    def text(self) -> str:
        """The text of the current attempt so far; the whole reply once it completed."""
        return self._assembler.text

    @property
    def done(self) -> bool:
        """Whether the job completed (and `reply` is there)."""
        return self._assembler.reply is not None

    @property
    def reply(self) -> Reply:
        """The whole reply, with usage and cost; there once the stream is exhausted."""
        if self._assembler.reply is None:
            raise RuntimeError("the reply is not complete yet: iterate the stream to its end")
        return self._assembler.reply

    @property
    def usage(self) -> Usage:
        """The reply's token usage (once the stream is exhausted)."""
        return self.reply.usage

    @property
    def cost_usd(self) -> float:
        """What the reply cost, in USD (once the stream is exhausted)."""
        return self.reply.cost_usd


class Stream(_StreamBase):
    """A job's text as it arrives: iterate it for `str` pieces and `Reset` markers; then
    `reply` (with `usage` and `cost_usd`) is there. One pass only.

    Used as a context manager, leaving the block before the job completed cancels the job.
    """

    def __init__(self, client: Any, job_id: str, events: Iterator[JobEvent]) -> None:
        super().__init__(job_id)
        self._client = client
        self._events = events

    def __iter__(self) -> Iterator[str | Reset]:
        for note in self._events:
            piece = self._assembler.feed(note)
            if piece is not None:
                yield piece

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self.done or isinstance(exc, RpcError):  # the job has ended
            return
        if exc is None:
            self.cancel()
            return
        with contextlib.suppress(RpcError, DaemonUnreachable):  # keep the error in flight
            self.cancel()

    def cancel(self) -> None:
        """Cancel the job (nothing happens when it has already ended)."""
        self._client.cancel(self.job_id)


class AsyncStream(_StreamBase):
    """`Stream` for asyncio: `async for piece in stream`, `async with` to cancel on leaving."""

    def __init__(self, client: Any, job_id: str, events: AsyncIterator[JobEvent]) -> None:
        super().__init__(job_id)
        self._client = client
        self._events = events

    async def __aiter__(self) -> AsyncIterator[str | Reset]:
        async for note in self._events:
            piece = self._assembler.feed(note)
            if piece is not None:
                yield piece

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self.done or isinstance(exc, RpcError):  # the job has ended
            return
        if exc is None:
            await self.cancel()
            return
        with contextlib.suppress(RpcError, DaemonUnreachable):  # keep the error in flight
            await self.cancel()

    async def cancel(self) -> None:
        """Cancel the job (nothing happens when it has already ended)."""
        await self._client.cancel(self.job_id)
