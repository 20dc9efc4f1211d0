"""`job/*` methods: decode params, call the job service (service/submit.py), encode."""

from __future__ import annotations

from typing import Any, Literal

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
from codexd.jobs import Job
from codexd.rpc.server import CallContext
from codexd.service import SubmitRequest

MAX_LIST_LIMIT = 1000
CANCEL_WAIT_S = 5.0


class SubmitParams(msgspec.Struct, forbid_unknown_fields=True):
    body: dict[str, Any]
    api: Literal["responses", "chat"] | None = None
    provider: str | None = None
    profile: str | None = None
    subscribe: bool = True
    cancel_on_disconnect: bool = False
    client_request_id: str | None = None


class JobIdParams(msgspec.Struct, forbid_unknown_fields=True):
    job_id: str


class ListParams(msgspec.Struct, forbid_unknown_fields=True):
    state: Literal["queued", "running", "retrying", "completed", "failed", "cancelled"] | None = (
        None
    )
    limit: int | None = None


class SubscribeParams(msgspec.Struct, forbid_unknown_fields=True):
    job_id: str
    after_seq: int = 0


class Empty(msgspec.Struct):
    pass


async def submit(ctx: CallContext, params: SubmitParams) -> SubmitResult:
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
    return ctx.services.jobs.get(params.job_id).view()


async def list_jobs(ctx: CallContext, params: ListParams) -> ListResult:
    limit = params.limit if params.limit is not None else 100
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise RpcError(
            ErrorKind.INVALID_PARAMS,
            f"invalid params for job/list: limit must be between 1 and {MAX_LIST_LIMIT} "
            "- at `$.limit`",
        )
    return ListResult(jobs=[j.view() for j in ctx.services.jobs.list(params.state, limit)])


async def subscribe(ctx: CallContext, params: SubscribeParams) -> SubscribeResult:
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
    mgr = ctx.services.jobs.manager
    mgr.unsubscribe(mgr.get(params.job_id), ctx.connection)
    return Empty()


async def cancel(ctx: CallContext, params: JobIdParams) -> JobView:
    jobs = ctx.services.jobs
    job = jobs.get(params.job_id)
    jobs.cancel(job)
    with anyio.move_on_after(CANCEL_WAIT_S):
        await job.finished.wait()
    return job.view()
