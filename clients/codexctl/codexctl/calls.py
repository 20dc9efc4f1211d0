"""Every typed call, once: its method, its params and the type its result decodes into.

`codexctl.Client` and `codexctl.AsyncClient` both send a `Call` and decode its answer with
`Call.decode`; only the waiting differs. `submit_params` is the one place a prompt becomes a
`job/submit` request (the `codexctl ask` and `submit` commands use it too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack

import msgspec

from codexctl.errors import InternalError
from codexctl.protocol import (
    ClientInfo,
    DaemonStatus,
    InitializeResult,
    JobView,
    ListResult,
    SubmitResult,
    SubscribeResult,
)
from codexctl.results import (
    AccountInfo,
    ConfigRead,
    ConfigReloadResult,
    LoginCancelResult,
    LoginStartResult,
    LogoutResult,
    MethodInfo,
    ModelsResult,
    RateLimitsResult,
    TokenResult,
    UsageResult,
)

T = TypeVar("T")

Api = Literal["responses", "chat", "embeddings"]
JobState = Literal["queued", "running", "retrying", "completed", "failed", "cancelled"]
Topic = Literal["account", "config", "ratelimits", "jobs"]
GroupKey = Literal["model", "client", "provider", "day"]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request: `method`, `params` (None: none sent) and the result's type (None: the
    result is `{}` and the call returns None)."""

    method: str
    params: dict[str, Any] | None
    result: Any

    def decode(self, value: Any) -> T:
        """The result as its type; a reply that does not fit is `InternalError`."""
        if self.result is None:
            if not isinstance(value, dict):
                raise _unexpected(self.method, f"expected an object, got {value!r:.80}")
            return None  # type: ignore[return-value]  # Call[None]
        try:
            decoded: T = msgspec.convert(value, self.result)
        except msgspec.ValidationError as exc:
            raise _unexpected(self.method, str(exc)) from None
        return decoded


def _unexpected(method: str, detail: str) -> InternalError:
    return InternalError(f"unexpected reply from codexd to {method}: {detail}")


def _given(**members: Any) -> dict[str, Any]:
    """The members that are not None (the daemon's defaults apply to the rest)."""
    return {k: v for k, v in members.items() if v is not None}


# --------------------------------------------------------------------------- daemon


def initialize(client: ClientInfo) -> Call[InitializeResult]:
    return Call("initialize", {"client": msgspec.to_builtins(client)}, InitializeResult)


def ping() -> Call[None]:
    return Call("daemon/ping", None, None)


def status() -> Call[DaemonStatus]:
    return Call("daemon/status", None, DaemonStatus)


def shutdown() -> Call[None]:
    return Call("daemon/shutdown", None, None)


def methods() -> Call[list[MethodInfo]]:
    return Call("daemon/methods", None, list[MethodInfo])


# --------------------------------------------------------------------------- account


def account() -> Call[AccountInfo]:
    return Call("account/read", None, AccountInfo)


def refresh_account() -> Call[AccountInfo]:
    return Call("account/refresh", None, AccountInfo)


def login(
    method: Literal["api_key", "browser", "device"], api_key: str | None, verify: bool
) -> Call[LoginStartResult]:
    params: dict[str, Any] = {"method": method}
    if method == "api_key":
        if not api_key:
            raise ValueError("login(method='api_key') needs api_key")
        params.update(api_key=api_key, verify=verify)
    elif api_key is not None:
        raise ValueError(f"api_key is only for method='api_key', not {method!r}")
    return Call("account/login", params, LoginStartResult)


def cancel_login(login_id: str) -> Call[LoginCancelResult]:
    return Call("account/login/cancel", {"login_id": login_id}, LoginCancelResult)


def logout() -> Call[LogoutResult]:
    return Call("account/logout", None, LogoutResult)


# --------------------------------------------------------------------------- config, models


def models(provider: str | None) -> Call[ModelsResult]:
    return Call("models/list", _given(provider=provider), ModelsResult)


def config() -> Call[ConfigRead]:
    return Call("config/read", None, ConfigRead)


def reload_config() -> Call[ConfigReloadResult]:
    return Call("config/reload", None, ConfigReloadResult)


# --------------------------------------------------------------------------- jobs


def request_body(
    prompt: str,
    *,
    api: Api | None = None,
    model: str | None = None,
    system: str | None = None,
    reasoning: str | None = None,
) -> dict[str, Any]:
    """The OpenAI request body for a prompt: a Responses body, or a Chat one for `api="chat"`."""
    body: dict[str, Any]
    if api == "chat":
        messages = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        body = {"messages": messages}
        if reasoning:
            body["reasoning_effort"] = reasoning
    else:
        body = {"input": prompt}
        if system:
            body["instructions"] = system
        if reasoning:
            body["reasoning"] = {"effort": reasoning}
    if model:
        body["model"] = model
    return body


class SubmitOptions(TypedDict, total=False):
    """The options of `submit`, `ask` and `stream` (all optional; None is left out).

    - `model`: the model (default: config.toml's, else the catalog's default)
    - `system`: system instructions
    - `reasoning`: reasoning effort, e.g. "low" or "high" (checked against the model)
    - `api`: "responses" or "chat" (default: the provider's wire API); "embeddings" with a
      `body` of OpenAI's embeddings request (`model`, `input`)
    - `provider`: a provider id of config.toml; `profile`: a profile, its file
      `$CODEX_HOME/NAME.config.toml` laid over config.toml (else its `[profiles.NAME]`)
    - `cancel_on_disconnect`: cancel the job when this connection closes (default False:
      the job runs on, and `events(job_id)` can re-attach to it)
    - `client_request_id`: an id of yours; submitting it again (from the same client name,
      while the job is retained) returns the existing job instead of sending again
    """

    model: str | None
    system: str | None
    reasoning: str | None
    api: Api | None
    provider: str | None
    profile: str | None
    cancel_on_disconnect: bool
    client_request_id: str | None


def submit_params(
    prompt: str | None = None,
    *,
    body: dict[str, Any] | None = None,
    subscribe: bool = True,
    **options: Unpack[SubmitOptions],
) -> dict[str, Any]:
    """`job/submit`'s params: from a prompt (with `model`, `system`, `reasoning`), or from a
    whole OpenAI request `body` of your own."""
    api = options.get("api")
    model, system, reasoning = options.get("model"), options.get("system"), options.get("reasoning")
    provider, profile = options.get("provider"), options.get("profile")
    client_request_id = options.get("client_request_id")
    if body is None:
        if prompt is None:
            raise TypeError("submit needs a prompt or a body")
        body = request_body(prompt, api=api, model=model, system=system, reasoning=reasoning)
    elif prompt is not None or model or system or reasoning:
        raise TypeError("pass a prompt (with model, system, reasoning) or a whole body, not both")
    params: dict[str, Any] = {"body": body, "subscribe": subscribe}
    params.update(_given(api=api or None, provider=provider or None, profile=profile or None))
    if options.get("cancel_on_disconnect"):
        params["cancel_on_disconnect"] = True
    if client_request_id is not None:
        params["client_request_id"] = client_request_id
    return params


def submit(params: dict[str, Any]) -> Call[SubmitResult]:
    return Call("job/submit", params, SubmitResult)


def job(job_id: str) -> Call[JobView]:
    return Call("job/get", {"job_id": job_id}, JobView)


def jobs(state: JobState | None, limit: int | None) -> Call[ListResult]:
    return Call("job/list", _given(state=state, limit=limit), ListResult)


def subscribe(job_id: str, after_seq: int) -> Call[SubscribeResult]:
    return Call("job/subscribe", {"job_id": job_id, "after_seq": after_seq}, SubscribeResult)


def unsubscribe(job_id: str) -> Call[None]:
    return Call("job/unsubscribe", {"job_id": job_id}, None)


def cancel(job_id: str) -> Call[JobView]:
    return Call("job/cancel", {"job_id": job_id}, JobView)


# --------------------------------------------------------------------------- limits, usage, …


def limits(provider: str | None) -> Call[RateLimitsResult]:
    return Call("ratelimits/read", _given(provider=provider), RateLimitsResult)


def usage(since: str | None, until: str | None, group_by: Iterable[GroupKey]) -> Call[UsageResult]:
    params = _given(since=since, until=until)
    keys = list(group_by)
    if keys:
        params["group_by"] = keys
    return Call("usage/read", params, UsageResult)


def gateway_token(rotate: bool) -> Call[TokenResult]:
    return Call("gateway/token", {"rotate": True} if rotate else None, TokenResult)


def subscribe_events(topics: Iterable[Topic]) -> Call[None]:
    return Call("events/subscribe", {"topics": list(topics)}, None)
