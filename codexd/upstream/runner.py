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

from codexctl.protocol import ErrorKind, RpcError
from codexd import __version__
from codexd.auth.identity import client_headers
from codexd.auth.session import Credentials
from codexd.auth.tokens import Secret
from codexd.config.schema import ConfigSnapshot, ProviderConfig
from codexd.jobs import Job, JobManager, Usage
from codexd.limits.estimate import estimate_tokens
from codexd.limits.headers import parse_rate_limit_headers
from codexd.limits.limiter import Limiter
from codexd.scrub import GENERIC, Scrubber
from codexd.upstream.client import Attempt, new_http_client, new_transport, probe, run_attempt
from codexd.upstream.errors import UpstreamError
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
    async def credentials(self, provider: Any) -> Any: ...

    async def refresh(self, reason: Any = ..., *, stale: Any = None) -> Any: ...

    def rejected(self, credentials: Any, provider: Any, status: str) -> str: ...


@dataclass(frozen=True, slots=True)
class ProviderRef:
    """What the auth session needs to know of a provider."""

    id: str
    env_key: str | None
    requires_openai_auth: bool


def provider_ref(provider_id: str, cfg: ProviderConfig) -> ProviderRef:
    env_key = cfg.env_key
    if provider_id == "openai" and env_key is None:
        env_key = "OPENAI_API_KEY"
    return ProviderRef(provider_id, env_key, cfg.requires_openai_auth or provider_id == "openai")


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
        headers.update(client_headers(env))
    headers.update(credentials.headers())
    if not any(name.lower() == "user-agent" for name in headers):
        headers["User-Agent"] = USER_AGENT
    return headers


def conversation_headers(job: Job, credentials: CredentialsLike) -> dict[str, str]:
    """ChatGPT mode: Codex's session and thread ids (the body's prompt_cache_key, else the job)."""
    if credentials.mode != "chatgpt":
        return {}
    key = job.body.get("prompt_cache_key") if isinstance(job.body, dict) else None
    conversation = key if isinstance(key, str) and key else job.id
    return {"session-id": conversation, "thread-id": conversation, "x-client-request-id": job.id}


def base_url_for(provider_id: str, snapshot: ConfigSnapshot, mode: str) -> str:
    """Where requests for `provider_id` go under a login of `mode`: the config's one rule."""
    return snapshot.base_url_for(provider_id, chatgpt_auth=mode == "chatgpt")


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
    ) -> None:
        self._auth = auth
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
        snapshot: ConfigSnapshot = job.config
        request: JobRequest = job.request
        cfg = snapshot.providers[job.provider]
        ref = provider_ref(job.provider, cfg)
        policy = RetryPolicy(
            request_max_retries=cfg.request_max_retries,
            stream_max_retries=cfg.stream_max_retries,
            max_retry_wait_s=float(snapshot.codexd.max_retry_wait_s),
        )
        limiter = self._limiter_for(job.provider, snapshot)
        body = _encoder.encode(build_body(job.api, job.body, request.defaults))  # type: ignore[arg-type]
        attempts = Attempts()
        refreshed_after_401 = False
        queued_reported = False

        def on_queued(position: int) -> None:
            nonlocal queued_reported
            if not queued_reported:
                queued_reported = True
                mgr.emit(job, {"type": "job.queued", "position": position})

        def on_event(event: dict[str, Any]) -> None:
            mgr.emit(job, event)

        # A job ends outside its limiter slot: the terminal event waits for the ledger's
        # commit, which must not hold a concurrency slot another job could use.
        failure: RpcError | None = None
        reply: StreamResult | None = None
        while True:
            async with limiter.acquire(
                job.client, request.estimated_tokens, on_queued=on_queued
            ) as slot:
                try:
                    credentials = await self._auth.credentials(ref)
                    url = endpoint_url(
                        base_url_for(job.provider, snapshot, credentials.mode),
                        job.api,  # type: ignore[arg-type]
                        cfg.query_params,
                    )
                except RpcError as err:
                    failure = err
                    break
                mgr.emit(job, {"type": "job.started", "attempt": attempts.made})
                headers = request_headers(cfg, credentials, self._env) | conversation_headers(
                    job, credentials
                )
                # What upstream says of this attempt never quotes back what it carried.
                scrubber = Scrubber.for_request(headers, url)
                normalizer = self._normalizer_for(job.api, scrubber)
                result = await run_attempt(
                    self._http.transport(job.provider),
                    Attempt(
                        url=url,
                        headers=headers,
                        body=body,
                        idle_timeout_s=cfg.stream_idle_timeout_ms / 1000.0,
                        scrubber=scrubber,
                    ),
                    normalizer,
                    on_event,
                    on_headers=functools.partial(self._observe, limiter, scrubber),
                    wall_now=self._wall_now,
                )
                outcome = result.outcome
                if not isinstance(outcome, UpstreamError):
                    usage = _job_usage(outcome.usage)
                    if outcome.usage is not None:
                        slot.correct(usage.total_tokens)
                    cost, estimated = self._price(job, usage)
                    job.cost_estimated = estimated
                    reply = outcome
                    break
            error = outcome  # scrubbed inside the attempt, which knew what it sent
            if error.is_unauthorized and credentials.mode == "chatgpt" and not refreshed_after_401:
                refreshed_after_401 = True
                try:
                    await self._auth.refresh("unauthorized_recovery", stale=credentials)
                except RpcError as err:
                    await mgr.fail(job, err)
                    return
                mgr.emit(
                    job, _retrying(attempts.made + 1, 0.0, error, bool(normalizer.output_text))
                )
                attempts = msgspec.structs.replace(
                    attempts, request_retries=attempts.request_retries + 1
                )
                continue
            if error.is_unauthorized:
                error = self._name_rejected(error, credentials, ref)
            decision = decide(attempts, error, result.headers, self._wall_now(), policy)
            if isinstance(decision, GiveUp):
                log.info(
                    "job %s failed: %s (%s)", job.id, decision.error.kind, decision.error.message
                )
                await mgr.fail(job, decision.error.to_rpc_error())
                return
            if error.kind == ErrorKind.RATE_LIMITED and decision.server_requested:
                limiter.pause(decision.delay_s)
            mgr.emit(
                job,
                _retrying(decision.attempt, decision.delay_s, error, bool(normalizer.output_text)),
            )
            await self._sleep(decision.delay_s)
            attempts = decision.attempts
        if reply is None:
            assert failure is not None
            await mgr.fail(job, failure)
            return
        await mgr.complete(
            job,
            output_text=reply.output_text,
            usage=usage,
            cost_usd=cost,
            response_id=reply.response_id,
        )

    async def check_api_key(self, key: Secret, snapshot: ConfigSnapshot) -> UpstreamError | None:
        """`GET {base_url}/models` of the `openai` provider with `key`, through the transport
        and headers its model requests use: None when upstream took the key."""
        cfg = snapshot.providers["openai"]
        credentials = Credentials("api_key", None, key)
        headers = request_headers(cfg, credentials, self._env)
        headers.pop("Content-Type", None)
        headers["Accept"] = "application/json"
        url = endpoint_url(
            base_url_for("openai", snapshot, credentials.mode), "models", cfg.query_params
        )
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
) -> dict[str, Any]:
    return {
        "type": "job.retrying",
        "attempt": attempt,
        "delay_s": round(delay_s, 3),
        "reason": error.message,
        "error_kind": error.kind.value,
        "reset_output": reset_output,
    }


def _job_usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        total_tokens=usage.total_tokens,
    )


def default_normalizer(api: str, scrubber: Scrubber = GENERIC) -> StreamNormalizer:
    if api == "chat":
        from codexd.upstream.chat import ChatStream

        return ChatStream(scrubber=scrubber)
    from codexd.upstream.responses import ResponsesStream

    return ResponsesStream(scrubber=scrubber)


def estimate_for(body: Mapping[str, Any], api: str, snapshot: ConfigSnapshot, provider: str) -> int:
    return estimate_tokens(body, api, snapshot.rate_limit(provider).default_output_tokens)
