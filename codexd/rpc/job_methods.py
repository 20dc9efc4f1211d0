"""`job/*` methods: decode params, call the job service (service/submit.py), encode."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
import msgspec

from codexctl.protocol import (
    ErrorKind,
    JobView,
    ListResult,
    RpcError,
    SubmitResult,
    SubscribeResult,
)
from codexctl.results import Empty
from codexd.jobs import Job
from codexd.rpc.server import CallContext
from codexd.service import SubmitRequest

MAX_LIST_LIMIT = 1000
CANCEL_WAIT_S = 5.0


class SubmitParams(msgspec.Struct, forbid_unknown_fields=True):
    """`job/submit`'s params."""

    body: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="An OpenAI request body for the wire API (`input` for Responses, "
            "`messages` for Chat Completions, `model` and `input` for embeddings: the "
            "config's `model` is a text model, so an embeddings body must name its own). "
            "Members it leaves out (`model`, reasoning effort, `[model_params]`) come from "
            "the config (not for embeddings); `stream` is always on upstream (embeddings are "
            "not streamed); members codexd does not know are passed on."
        ),
    ]
    api: Annotated[
        Literal["responses", "chat", "embeddings"] | None,
        msgspec.Meta(
            description="The wire API; null: the provider's `wire_api`. `embeddings` needs "
            "an API key (not the ChatGPT login)."
        ),
    ] = None
    provider: Annotated[
        str | None,
        msgspec.Meta(description="A provider id; null: the config's `model_provider`."),
    ] = None
    profile: Annotated[
        str | None,
        msgspec.Meta(description="A config profile to apply; null: the config's `profile`."),
    ] = None
    subscribe: Annotated[
        bool,
        msgspec.Meta(description="Send the job's events to this connection as `job/event`s."),
    ] = True
    cancel_on_disconnect: Annotated[
        bool, msgspec.Meta(description="Cancel the job when this connection closes.")
    ] = False
    client_request_id: Annotated[
        str | None,
        msgspec.Meta(
            description="An id of the client's choosing: submitting it again (same client "
            "name, while the job is retained) returns the existing job instead of a new one."
        ),
    ] = None


class JobIdParams(msgspec.Struct, forbid_unknown_fields=True):
    """The job a method is about."""

    job_id: str


class ListParams(msgspec.Struct, forbid_unknown_fields=True):
    """`job/list`'s params: only jobs in `state`, at most `limit` of them (1 to 1000; 100
    when left out)."""

    state: Literal["queued", "running", "retrying", "completed", "failed", "cancelled"] | None = (
        None
    )
    limit: int | None = None


class SubscribeParams(msgspec.Struct, forbid_unknown_fields=True):
    """`job/subscribe`'s params: replay the events whose seq is greater than `after_seq`
    (0: all of them)."""

    job_id: str
    after_seq: int = 0


async def submit(ctx: CallContext, params: SubmitParams) -> SubmitResult:
    """Creates a job and returns at once, before anything goes upstream. What can be known now
    is the error of this call, and then no job exists: invalid params, an unknown provider or
    profile, no credentials (`unauthenticated`, also for embeddings when the credential in use
    is the ChatGPT login: they need an API key), a spending cap (`budget_exceeded`), a full
    queue or a draining daemon (`overloaded`). Anything later (upstream errors, a failed
    refresh) ends the job with `job.failed`. With `subscribe`, the job's events follow this
    reply on the same connection, from seq 1."""
    request = SubmitRequest(
        body=params.body,
        client=ctx.connection.client_name,
        api=params.api,
        provider=params.provider,
        profile=params.profile,
        client_request_id=params.client_request_id,
        cancel_on_disconnect=params.cancel_on_disconnect,
    )
    job = await ctx.services.jobs.submit(request, owner=ctx.connection)
    if params.subscribe:
        _subscribe_after_reply(ctx, job, 0)
    return SubmitResult(job_id=job.id, state=job.state.value)


def _subscribe_after_reply(ctx: CallContext, job: Job, after_seq: int) -> None:
    mgr = ctx.services.jobs.manager
    conn = ctx.connection
    token = mgr.claim(job, conn)

    async def stream() -> None:
        await mgr.stream_to(job, conn, after_seq, token)

    ctx.after_reply(stream)


async def get(ctx: CallContext, params: JobIdParams) -> JobView:
    """A job, running or finished. A job finished longer ago than `[codexd] job_retention_s` is
    forgotten: `not_found`."""
    return ctx.services.jobs.get(params.job_id).view()


async def list_jobs(ctx: CallContext, params: ListParams) -> ListResult:
    """The jobs the daemon still holds, of every client."""
    limit = params.limit if params.limit is not None else 100
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise RpcError(
            ErrorKind.INVALID_PARAMS,
            f"invalid params for job/list: limit must be between 1 and {MAX_LIST_LIMIT} "
            "- at `$.limit`",
        )
    return ListResult(jobs=[j.view() for j in ctx.services.jobs.list(params.state, limit)])


async def subscribe(ctx: CallContext, params: SubscribeParams) -> SubscribeResult:
    """Follows a job from this connection, running or finished: after the reply come the
    logged events with a seq above `after_seq`, then the live ones, up to the final event.
    An `after_seq` past the job's last event is `invalid_params`; one older than the
    bounded log still holds is `replay_unavailable`, with `data.oldest_seq`. Use it to attach
    to a job another connection submitted, or to resume after a dropped connection."""
    mgr = ctx.services.jobs.manager
    job = mgr.get(params.job_id)
    if params.after_seq < 0:
        raise RpcError(
            ErrorKind.INVALID_PARAMS,
            "invalid params for job/subscribe: after_seq must be ≥ 0 - at `$.after_seq`",
        )
    if params.after_seq >= job.log.next_seq:
        raise RpcError(
            ErrorKind.INVALID_PARAMS,
            f"invalid params for job/subscribe: after_seq {params.after_seq} is past the job's "
            f"last event (seq {job.log.next_seq - 1}) - at `$.after_seq`",
        )
    next_seq = mgr.check_replay(job, params.after_seq)
    _subscribe_after_reply(ctx, job, params.after_seq)
    return SubscribeResult(job_id=job.id, next_seq=next_seq)


async def unsubscribe(ctx: CallContext, params: JobIdParams) -> Empty:
    """No more `job/event`s of this job on this connection; the job itself goes on."""
    mgr = ctx.services.jobs.manager
    mgr.unsubscribe(mgr.get(params.job_id), ctx.connection)
    return Empty()


async def cancel(ctx: CallContext, params: JobIdParams) -> JobView:
    """Cancels the job and closes its upstream stream; its subscribers get `job.cancelled`.
    Waits briefly for the job to end and returns it. Cancelling a finished job changes
    nothing and returns it as it is."""
    jobs = ctx.services.jobs
    job = jobs.get(params.job_id)
    jobs.cancel(job)
    with anyio.move_on_after(CANCEL_WAIT_S):
        await job.finished.wait()
    return job.view()
