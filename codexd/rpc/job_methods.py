"""`job/*` methods (SPEC §4): submit-time checks, then the job manager does the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

from codexctl.protocol import ErrorKind, RpcError
from codexd.jobs import TERMINAL_STATES, Job, JobState, JobView
from codexd.rpc.server import CallContext
from codexd.upstream.runner import JobRequest, estimate_for
from codexd.upstream.wire import RequestDefaults

if TYPE_CHECKING:
    from codexd.daemon import Daemon

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


class SubmitResult(msgspec.Struct):
    job_id: str
    state: str


class JobIdParams(msgspec.Struct, forbid_unknown_fields=True):
    job_id: str


class ListParams(msgspec.Struct, forbid_unknown_fields=True):
    state: Literal["queued", "running", "retrying", "completed", "failed", "cancelled"] | None = (
        None
    )
    limit: int | None = None


class ListResult(msgspec.Struct):
    jobs: list[JobView]


class SubscribeParams(msgspec.Struct, forbid_unknown_fields=True):
    job_id: str
    after_seq: int = 0


class SubscribeResult(msgspec.Struct):
    job_id: str
    next_seq: int


class Empty(msgspec.Struct):
    pass


def _invalid(member: str, message: str) -> RpcError:
    return RpcError(
        ErrorKind.INVALID_PARAMS, f"invalid params for job/submit: {message} - at `{member}`"
    )


def _check_body(body: dict[str, Any], api: str) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid("$.body.model", "Expected `str`")
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _invalid("$.body.messages", "a chat request needs a non-empty `messages` array")
    else:
        inp = body.get("input")
        if not isinstance(inp, str | list) or not inp:
            raise _invalid(
                "$.body.input", "a responses request needs `input` (a string or an array)"
            )


def prepare_job(daemon: Daemon, params: SubmitParams) -> dict[str, Any]:
    """Resolve provider, api, model and defaults from the config snapshot in force."""
    snapshot = daemon.config.snapshot
    try:
        selection = snapshot.selection(params.profile or None)
    except KeyError:
        known = ", ".join(sorted(snapshot.profiles)) or "none"
        raise _invalid(
            "$.profile", f"unknown profile {params.profile!r} (known: {known})"
        ) from None
    profile_name = selection.profile
    provider_id = params.provider or selection.model_provider
    provider = snapshot.providers.get(provider_id)
    if provider is None:
        known = ", ".join(sorted(snapshot.providers))
        raise _invalid("$.provider", f"unknown provider {provider_id!r} (known: {known})")
    api = params.api or provider.wire_api
    _check_body(params.body, api)
    catalog = daemon.catalog()
    model = params.body.get("model") or selection.model or catalog.default_model
    defaults = RequestDefaults(
        model=model,
        reasoning_effort=selection.model_reasoning_effort,
        reasoning_summary=selection.model_reasoning_summary,
        verbosity=selection.model_verbosity,
        model_params=msgspec.to_builtins(snapshot.model_params),
    )
    estimate = estimate_for(params.body, api, snapshot, provider_id)
    return {
        "provider": provider_id,
        "api": api,
        "model": model,
        "config": snapshot,
        "request": JobRequest(defaults=defaults, estimated_tokens=estimate),
        "profile": profile_name,
    }


async def submit(ctx: CallContext, params: SubmitParams) -> SubmitResult:
    daemon = ctx.daemon
    conn = ctx.connection
    client = conn.client_name
    if params.client_request_id is not None:
        existing = daemon.jobs.find_by_request_id(client, params.client_request_id)
        if existing is not None:
            if params.subscribe:
                _subscribe_after_reply(ctx, existing, 0)
            return SubmitResult(job_id=existing.id, state=existing.state.value)
    prep = prepare_job(daemon, params)
    await daemon.check_submit(client, prep)
    job = daemon.jobs.create(
        client=client,
        provider=prep["provider"],
        model=prep["model"],
        api=prep["api"],
        body=params.body,
        config=prep["config"],
        request=prep["request"],
        client_request_id=params.client_request_id,
    )
    if params.cancel_on_disconnect:
        # Held by the connection only while the job runs (see Daemon._job_finished), so a
        # long-lived connection does not keep every job it ever submitted alive.
        job.cancel_with = conn
        conn.jobs_to_cancel.add(job)
    if params.subscribe:
        _subscribe_after_reply(ctx, job, 0)
    return SubmitResult(job_id=job.id, state=job.state.value)


def _subscribe_after_reply(ctx: CallContext, job: Job, after_seq: int) -> None:
    daemon = ctx.daemon
    conn = ctx.connection
    token = daemon.jobs.claim(job, conn)

    async def stream() -> None:
        await daemon.jobs.stream_to(job, conn, after_seq, token)

    ctx.after_reply(stream)


async def get(ctx: CallContext, params: JobIdParams) -> JobView:
    return ctx.daemon.jobs.get(params.job_id).view()


async def list_jobs(ctx: CallContext, params: ListParams) -> ListResult:
    limit = params.limit if params.limit is not None else 100
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise RpcError(
            ErrorKind.INVALID_PARAMS,
            f"invalid params for job/list: limit must be between 1 and {MAX_LIST_LIMIT} "
            "- at `$.limit`",
        )
    jobs = sorted(ctx.daemon.jobs.jobs.values(), key=lambda j: j.created_at, reverse=True)
    if params.state is not None:
        jobs = [j for j in jobs if j.state.value == params.state]
    return ListResult(jobs=[j.view() for j in jobs[:limit]])


async def subscribe(ctx: CallContext, params: SubscribeParams) -> SubscribeResult:
    mgr = ctx.daemon.jobs
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
    mgr = ctx.daemon.jobs
    mgr.unsubscribe(mgr.get(params.job_id), ctx.connection)
    return Empty()


async def cancel(ctx: CallContext, params: JobIdParams) -> JobView:
    mgr = ctx.daemon.jobs
    job = mgr.get(params.job_id)
    mgr.cancel(job)
    with anyio.move_on_after(CANCEL_WAIT_S):
        await job.finished.wait()
    return job.view()


__all__ = ["TERMINAL_STATES", "JobState"]
