"""Run one job upstream: admission, credentials, attempts, retries, and the terminal event.

The decisions are pure and live elsewhere (`retry.decide`, `errors.classify_*`, the budget);
this module only sequences them. Every attempt holds a rate-limit slot for as long as its
stream is open; the delay before a retry holds none.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import httpx
import msgspec

from codexctl.protocol import ErrorKind, JobQueued, JobRetrying, JobStarted, RpcError
from codexd import __version__
from codexd.auth.identity import client_headers
from codexd.auth.session import Credentials
from codexd.auth.tokens import Secret
from codexd.config.schema import ConfigSnapshot, ProviderConfig, ProviderRef
from codexd.hop import HOP, HOP_HEADER
from codexd.jobs import Job, JobManager, UpstreamEvent, Usage
from codexd.limits.estimate import estimate_tokens
from codexd.limits.headers import parse_rate_limit_headers
from codexd.limits.limiter import Limiter, Slot
from codexd.limits.plan import Refuse, Wait, blocked_until, gate
from codexd.security.scrub import GENERIC, Scrubber
from codexd.upstream.client import Attempt, new_http_client, new_transport, probe, run_attempt
from codexd.upstream.errors import UpstreamError, usage_limit_reached
from codexd.upstream.plan import PlanTarget, PlanWatch
from codexd.upstream.retry import Attempts, GiveUp, RetryPolicy, decide
from codexd.upstream.wire import (
    RequestDefaults,
    StreamNormalizer,
    StreamResult,
    build_body,
    endpoint_url,
)

log = logging.getLogger("codexd.upstream")

_encoder = msgspec.json.Encoder()
USER_AGENT = f"codexd/{__version__}"  # ChatGPT mode sends Codex's own instead


class CredentialsLike(Protocol):
    @property
    def mode(self) -> str: ...

    def headers(self) -> dict[str, str]: ...


class AuthLike(Protocol):
    async def credentials(self, provider: Any, api: str | None = None) -> Any: ...

    async def refresh(self, reason: Any = ..., *, stale: Any = None) -> Any: ...

    def rejected(self, credentials: Any, provider: Any, status: str) -> str: ...


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What the submit handler resolved for a job: stored on the job, read by the runner."""

    defaults: RequestDefaults
    estimated_tokens: int


@dataclass
class HttpClients:
    """One keep-alive transport per provider for model requests, and httpx clients for
    one-off calls (the OAuth issuer)."""

    transports: dict[str, httpx.AsyncBaseTransport] = field(default_factory=dict)
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def transport(self, provider_id: str) -> httpx.AsyncBaseTransport:
        transport = self.transports.get(provider_id)
        if transport is None:
            transport = self.transports[provider_id] = new_transport()
        return transport

    def get(self, name: str) -> httpx.AsyncClient:
        client = self.clients.get(name)
        if client is None:
            client = self.clients[name] = new_http_client()
        return client

    async def aclose(self) -> None:
        for transport in self.transports.values():
            await transport.aclose()
        for client in self.clients.values():
            await client.aclose()
        self.transports.clear()
        self.clients.clear()


def request_headers(
    cfg: ProviderConfig, credentials: CredentialsLike, env: Mapping[str, str]
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
    }
    if cfg.http_headers:
        headers.update(cfg.http_headers)
    for name, var in (cfg.env_http_headers or {}).items():
        value = env.get(var)
        if value:
            headers[name] = value
    if credentials.mode == "chatgpt":
        headers.update(client_headers(env))  # as Codex sends them, and nothing more
    else:
        headers[HOP_HEADER] = HOP
    headers.update(credentials.headers())
    if not any(name.lower() == "user-agent" for name in headers):
        headers["User-Agent"] = USER_AGENT
    return headers


def get_headers(
    cfg: ProviderConfig, credentials: CredentialsLike, env: Mapping[str, str]
) -> dict[str, str]:
    """The headers of a GET beside the model requests (a key check, the ChatGPT backend's
    usage windows and model list): those of `request_headers`, asking for JSON, no body."""
    headers = request_headers(cfg, credentials, env)
    headers.pop("Content-Type", None)
    headers["Accept"] = "application/json"
    return headers


def conversation_headers(job: Job, credentials: CredentialsLike) -> dict[str, str]:
    """ChatGPT mode: Codex's session and thread ids (the body's prompt_cache_key, else the job)."""
    if credentials.mode != "chatgpt":
        return {}
    key = job.body.get("prompt_cache_key") if isinstance(job.body, dict) else None
    conversation = key if isinstance(key, str) and key else job.id
    return {"session-id": conversation, "thread-id": conversation, "x-client-request-id": job.id}


@dataclass(eq=False)
class _Run:
    """One job's run: what its attempts share, and what they have spent."""

    job: Job
    mgr: JobManager
    snapshot: ConfigSnapshot
    cfg: ProviderConfig
    ref: ProviderRef
    estimated_tokens: int
    policy: RetryPolicy
    limiter: Limiter
    body: bytes
    attempts: Attempts = field(default_factory=Attempts)
    refreshed_after_401: bool = False
    queued_reported: bool = False

    def on_queued(self, position: int) -> None:
        if not self.queued_reported:
            self.queued_reported = True
            self.mgr.emit(self.job, JobQueued(position=position))

    def on_event(self, event: UpstreamEvent) -> None:
        self.mgr.emit(self.job, event)

    def on_batch(self) -> None:
        self.mgr.end_batch(self.job)


@dataclass(frozen=True, slots=True)
class _Completed:
    reply: StreamResult
    usage: Usage
    cost_usd: float


@dataclass(frozen=True, slots=True)
class _Failed:
    error: UpstreamError
    headers: Mapping[str, str]
    credentials: Any
    reset_output: bool  # the failed attempt had streamed some text


class JobRunner:
    def __init__(
        self,
        *,
        auth: AuthLike,
        limiter_for: Callable[[str, ConfigSnapshot], Limiter],
        http: HttpClients,
        price: Callable[[Job, Usage], tuple[float, bool]],
        env: Mapping[str, str] | None = None,
        wall_now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        normalizer_for: Callable[[str, Scrubber], StreamNormalizer] | None = None,
        plan: PlanWatch | None = None,
    ) -> None:
        self._auth = auth
        self._plan = plan
        self._limiter_for = limiter_for
        self._http = http
        self._price = price
        self._env = os.environ if env is None else env
        self._wall_now = wall_now
        self._sleep = sleep
        self._normalizer_for = normalizer_for or default_normalizer

    def _observe(self, limiter: Limiter, scrubber: Scrubber, headers: Mapping[str, str]) -> None:
        limiter.observe(
            parse_rate_limit_headers(headers, wall_now=self._wall_now(), scrubber=scrubber)
        )

    async def __call__(self, job: Job, mgr: JobManager) -> None:
        run = self._prepare(job, mgr)
        refused = await self._plan_gate(run)
        if refused is not None:
            await mgr.fail(job, refused)
            return
        while True:
            # A job ends outside its limiter slot: the terminal event waits for the ledger's
            # commit, which must not hold a concurrency slot another job could use.
            outcome = await self._admitted(run)
            if isinstance(outcome, RpcError):
                await mgr.fail(job, outcome)
                return
            if isinstance(outcome, _Completed):
                await mgr.complete(
                    job,
                    output_text=outcome.reply.output_text,
                    usage=outcome.usage,
                    cost_usd=outcome.cost_usd,
                    response_id=outcome.reply.response_id,
                )
                return
            if not await self._try_again(run, outcome):
                return

    def _prepare(self, job: Job, mgr: JobManager) -> _Run:
        """What every attempt of `job` shares: its provider, policy, limiter and body."""
        snapshot: ConfigSnapshot = job.config
        request: JobRequest = job.request
        cfg = snapshot.providers[job.provider]
        return _Run(
            job=job,
            mgr=mgr,
            snapshot=snapshot,
            cfg=cfg,
            ref=snapshot.provider_ref(job.provider),
            estimated_tokens=request.estimated_tokens,
            policy=RetryPolicy(
                request_max_retries=cfg.request_max_retries,
                stream_max_retries=cfg.stream_max_retries,
                max_retry_wait_s=float(snapshot.codexd.max_retry_wait_s),
            ),
            limiter=self._limiter_for(job.provider, snapshot),
            body=_encoder.encode(build_body(job.api, job.body, request.defaults)),  # type: ignore[arg-type]
        )

    def _plan_target(
        self, snapshot: ConfigSnapshot, provider: str, credentials: CredentialsLike
    ) -> PlanTarget | None:
        """Where the plan's windows are read for `provider`: only with a ChatGPT login, and
        only for a provider whose requests go to the ChatGPT backend."""
        if (
            self._plan is None
            or credentials.mode != "chatgpt"
            or not snapshot.chatgpt_backend(provider)
        ):
            return None
        return PlanTarget(
            snapshot.plan_usage_url(),
            get_headers(snapshot.providers[provider], credentials, self._env),
        )

    async def read_plan(self, provider: str, snapshot: ConfigSnapshot) -> None:
        """Before `ratelimits/read`: with a ChatGPT login, the plan's windows of `provider`,
        read when the last read is older than the interval (as for a job)."""
        if self._plan is None or not snapshot.chatgpt_backend(provider):
            return
        try:
            credentials = await self._auth.credentials(snapshot.provider_ref(provider))
        except RpcError:
            return
        target = self._plan_target(snapshot, provider, credentials)
        if target is not None:
            await self._plan.current(target, self._limiter_for(provider, snapshot))

    async def _plan_gate(self, run: _Run) -> RpcError | None:
        """In ChatGPT mode, before the job queues for a slot: while a plan window is spent the
        job fails at once with `usage_limit_reached` (its reset beyond `max_retry_wait_s`) or
        the provider's budget pauses until the reset; either way nothing goes upstream."""
        if self._plan is None or not run.snapshot.chatgpt_backend(run.job.provider):
            return None
        try:
            credentials = await self._auth.credentials(run.ref)
        except RpcError as err:
            # The job ends with it, as its attempt would have: asking again would find a
            # refresh that already failed and send the stale token.
            return err
        target = self._plan_target(run.snapshot, run.job.provider, credentials)
        if target is None:
            return None
        plan = await self._plan.current(target, run.limiter)
        upstream = run.limiter.upstream
        wall_now = self._wall_now()
        until = blocked_until((upstream.primary, upstream.secondary), wall_now=wall_now)
        decision = gate(until, wall_now=wall_now, max_wait_s=run.policy.max_retry_wait_s)
        if isinstance(decision, Wait):
            log.info(
                "job %s: the ChatGPT plan's usage limit resets in %.0fs; provider %s waits",
                run.job.id,
                decision.delay_s,
                run.job.provider,
            )
            run.limiter.pause(decision.delay_s)
        elif isinstance(decision, Refuse):
            plan_type = plan.plan_type if plan is not None else None
            error = usage_limit_reached(decision.resets_at, plan_type, wall_now)
            log.info("job %s failed: %s (%s)", run.job.id, error.kind, error.message)
            return error.to_rpc_error()
        return None

    async def _admitted(self, run: _Run) -> RpcError | _Completed | _Failed:
        """Admission: wait for a rate-limit slot, then find the credentials and the route and
        make one attempt, all while holding it."""
        job = run.job
        async with run.limiter.acquire(
            job.client, run.estimated_tokens, on_queued=run.on_queued
        ) as slot:
            try:
                credentials = await self._auth.credentials(run.ref, api=job.api)
            except RpcError as err:
                return err
            route = run.snapshot.route(job.provider, chatgpt_auth=credentials.mode == "chatgpt")
            url = endpoint_url(route.base_url, job.api, route.query_params)  # type: ignore[arg-type]
            return await self._attempt(run, slot, credentials, url)

    async def _attempt(
        self, run: _Run, slot: Slot, credentials: CredentialsLike, url: str
    ) -> _Completed | _Failed:
        """One request upstream and its stream, to a reply or a (scrubbed) failure."""
        job = run.job
        run.mgr.emit(job, JobStarted(attempt=run.attempts.made))
        headers = request_headers(run.cfg, credentials, self._env) | conversation_headers(
            job, credentials
        )
        # What upstream says of this attempt never quotes back what it carried.
        scrubber = Scrubber.for_request(headers, url)
        normalizer = self._normalizer_for(job.api, scrubber)
        if not normalizer.streamed:
            headers["Accept"] = "application/json"
        result = await run_attempt(
            self._http.transport(job.provider),
            Attempt(
                url=url,
                headers=headers,
                body=run.body,
                idle_timeout_s=run.cfg.stream_idle_timeout_ms / 1000.0,
                scrubber=scrubber,
            ),
            normalizer,
            run.on_event,
            on_headers=functools.partial(self._observe, run.limiter, scrubber),
            on_batch=run.on_batch,
            wall_now=self._wall_now,
        )
        outcome = result.outcome
        if isinstance(outcome, UpstreamError):
            return _Failed(outcome, result.headers, credentials, bool(normalizer.output_text))
        usage = outcome.usage or Usage()
        if outcome.usage is not None:
            slot.correct(usage.total_tokens)
        cost, estimated = self._price(job, usage)
        job.cost_estimated = estimated
        return _Completed(outcome, usage, cost)

    async def _try_again(self, run: _Run, failed: _Failed) -> bool:
        """After a failed attempt: True to make another, False once the job has failed."""
        recovered = await self._recover_401(run, failed)
        if recovered is not None:
            return recovered
        return await self._retry(run, failed)

    async def _recover_401(self, run: _Run, failed: _Failed) -> bool | None:
        """A ChatGPT login's first 401: refresh the tokens and try again at once, as Codex
        does. None when this is not that case; False when the refresh failed the job."""
        error = failed.error
        if not (
            error.is_unauthorized
            and failed.credentials.mode == "chatgpt"
            and not run.refreshed_after_401
        ):
            return None
        run.refreshed_after_401 = True
        try:
            await self._auth.refresh("unauthorized_recovery", stale=failed.credentials)
        except RpcError as err:
            await run.mgr.fail(run.job, err)
            return False
        run.mgr.emit(run.job, _retrying(run.attempts.made + 1, 0.0, error, failed.reset_output))
        run.attempts = msgspec.structs.replace(
            run.attempts, request_retries=run.attempts.request_retries + 1
        )
        return True

    async def _retry(self, run: _Run, failed: _Failed) -> bool:
        """The retry policy's decision: wait and return True, or fail the job (False)."""
        error = failed.error  # scrubbed inside the attempt, which knew what it sent
        if error.is_unauthorized:
            error = self._name_rejected(error, failed.credentials, run.ref)
        decision = decide(run.attempts, error, failed.headers, self._wall_now(), run.policy)
        if isinstance(decision, GiveUp):
            log.info(
                "job %s failed: %s (%s)", run.job.id, decision.error.kind, decision.error.message
            )
            if decision.error.upstream_code == "usage_limit_reached" and self._plan is not None:
                target = self._plan_target(run.snapshot, run.job.provider, failed.credentials)
                if target is not None:
                    self._plan.limit_reached(target, run.limiter, self._plan.now())
            await run.mgr.fail(run.job, decision.error.to_rpc_error())
            return False
        if error.kind == ErrorKind.RATE_LIMITED and decision.server_requested:
            run.limiter.pause(decision.delay_s)
        run.mgr.emit(
            run.job,
            _retrying(decision.attempt, decision.delay_s, error, failed.reset_output),
        )
        await self._sleep(decision.delay_s)
        run.attempts = decision.attempts
        return True

    async def check_api_key(self, key: Secret, snapshot: ConfigSnapshot) -> UpstreamError | None:
        """`GET {base_url}/models` of the `openai` provider with `key`, through the transport
        and headers its model requests use: None when upstream took the key."""
        cfg = snapshot.providers["openai"]
        credentials = Credentials("api_key", None, key)
        headers = get_headers(cfg, credentials, self._env)
        route = snapshot.route("openai", chatgpt_auth=False)
        url = endpoint_url(route.base_url, "models", route.query_params)
        return await probe(
            self._http.transport("openai"),
            url,
            headers,
            wall_now=self._wall_now,
            scrubber=Scrubber.for_request(headers, url),
        )

    def _name_rejected(
        self, error: UpstreamError, credentials: Any, ref: ProviderRef
    ) -> UpstreamError:
        """A 401 says which credential was refused (the auth session knows where it came
        from) and what to do about that one."""
        status = f"401 {error.upstream_code}" if error.upstream_code else "401"
        message = self._auth.rejected(credentials, ref, status)
        return msgspec.structs.replace(error, message=message)


def _retrying(
    attempt: int, delay_s: float, error: UpstreamError, reset_output: bool
) -> JobRetrying:
    return JobRetrying(
        attempt=attempt,
        delay_s=round(delay_s, 3),
        reason=error.message,
        error_kind=error.kind.value,
        reset_output=reset_output,
    )


def default_normalizer(api: str, scrubber: Scrubber = GENERIC) -> StreamNormalizer:
    if api == "chat":
        from codexd.upstream.chat import ChatStream

        return ChatStream(scrubber=scrubber)
    if api == "embeddings":
        from codexd.upstream.embeddings import EmbeddingsReply

        return EmbeddingsReply(scrubber=scrubber)
    from codexd.upstream.responses import ResponsesStream

    return ResponsesStream(scrubber=scrubber)


def estimate_for(body: Mapping[str, Any], api: str, snapshot: ConfigSnapshot, provider: str) -> int:
    return estimate_tokens(body, api, snapshot.rate_limit(provider).default_output_tokens)
