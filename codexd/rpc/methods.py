"""The method table: name → params type → result type → handler.

This one literal table is what the server dispatches from, what `daemon/methods` renders as
JSON Schema, and what `codexctl rpc --list` prints. Params types forbid unknown members, so a
typo is -32602 naming the member, not a silently ignored field.
"""

from __future__ import annotations

from typing import Any, Literal

import anyio
import msgspec

from codexctl.protocol import (
    PROTOCOL_VERSION,
    ClientInfo,
    DaemonStatus,
    ErrorKind,
    InitializeResult,
    JobView,
    ListResult,
    RpcError,
    ServerInfo,
    SubmitResult,
    SubscribeResult,
)
from codexctl.results import (
    AccountInfo,
    ConfigRead,
    ConfigReloadResult,
    Empty,
    LoginCancelResult,
    LoginStartResult,
    LogoutResult,
    MethodInfo,
    ModelsResult,
    RateLimitsResult,
    TokenResult,
    UsageResult,
)
from codexd import __version__
from codexd.config.redact import redact
from codexd.rpc import account_methods as account
from codexd.rpc import job_methods as jobs
from codexd.rpc.server import CallContext, Method, MethodTable
from codexd.usage.ledger import UsageReadParams


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    """Methods that take no params accept `{}` or none at all."""


class InitializeParams(msgspec.Struct, forbid_unknown_fields=True):
    """`initialize`'s params: the client's name and, if it likes, its version."""

    client: ClientInfo


# --------------------------------------------------------------------------- handlers


async def initialize(ctx: CallContext, params: InitializeParams) -> InitializeResult:
    """Optional, and may come at any time: the name given is what this connection's jobs are
    recorded under from then on."""
    ctx.connection.client_name = params.client.name
    ctx.connection.client_version = params.client.version
    return InitializeResult(
        server=ServerInfo(name="codexd", version=__version__), protocol_version=PROTOCOL_VERSION
    )


async def ping(ctx: CallContext, params: NoParams) -> Empty:
    """Answered at once, whatever the daemon is doing: use it to see that one is running."""
    return Empty()


async def status(ctx: CallContext, params: NoParams) -> DaemonStatus:
    """The daemon's state in one object; a daemon that answers it is ready for work."""
    return await ctx.services.status.status()


async def shutdown(ctx: CallContext, params: NoParams) -> Empty:
    """The reply comes first; then the daemon stops accepting jobs (a `job/submit` gets
    `overloaded`), lets running jobs finish for up to `[codexd] drain_timeout_s`, cancels the
    rest and exits."""

    async def stop() -> None:
        ctx.services.request_shutdown()

    ctx.after_reply(stop)
    return Empty()


# --------------------------------------------------------------------------- config, models


async def config_read(ctx: CallContext, params: NoParams) -> ConfigRead:
    """What the daemon reads from config.toml (and the profile in use), as it applies it,
    and the layers it was made from: config.toml, codexd.toml, then the profile file or the
    legacy `[profiles.NAME]` table of the config's `profile`."""
    store = ctx.services.config
    st = store.status()
    snapshot = store.snapshot
    return ConfigRead(
        path=st.path,
        generation=st.generation,
        loaded_at=st.loaded_at,
        error=st.error,
        effective=redact(snapshot),
        layers=list(snapshot.layers),
    )


async def config_reload(ctx: CallContext, params: NoParams) -> ConfigReloadResult:
    """Reads the config files now rather than waiting for the watcher. When config.toml,
    codexd.toml or the profile file of `profile` does not validate, the answer is the error
    `config_invalid`, located by file, line and key, and the config in force stays as it was.
    A profile file that only requests name is not part of this answer: when it has become
    invalid it is reported on its own (`config/invalid`), its requests keep its previous
    config, and the reload of the rest goes on. Running jobs keep the config they started with
    either way."""
    outcome = await ctx.services.reload_config()
    if outcome.error is not None:
        raise outcome.error.to_rpc_error()
    return ConfigReloadResult(generation=outcome.generation, changed=outcome.changed)


class ModelsParams(msgspec.Struct, forbid_unknown_fields=True):
    """`models/list`'s params: `provider` must be a configured provider id."""

    provider: str | None = None


async def models_list(ctx: CallContext, params: ModelsParams) -> ModelsResult:
    """The bundled catalog, with the provider's own model list (under a ChatGPT login, when
    `provider`, else the active provider, sends its requests to the ChatGPT backend: context
    windows and reasoning levels, never prices), `model_catalog_json` and `[codexd.prices]`
    applied. The list is read again at most every five minutes, in the background: a call
    answers at once with the last list read (only a daemon's very first call waits for the
    first read, briefly). An unknown `provider` is `invalid_params`, naming the known
    ones."""
    snapshot = ctx.services.config.snapshot
    if params.provider is not None and params.provider not in snapshot.providers:
        known = ", ".join(sorted(snapshot.providers))
        raise RpcError(
            ErrorKind.INVALID_PARAMS,
            f"invalid params for models/list: unknown provider {params.provider!r} "
            f"(known: {known}) - at `$.provider`",
        )
    await ctx.services.catalogs.refresh(snapshot, params.provider or snapshot.model_provider)
    catalog = ctx.services.catalogs.catalog(snapshot)
    return ModelsResult(models=catalog.list_models(), default_price=catalog.default_price_info())


# --------------------------------------------------------------------------- events, limits, usage


class EventsParams(msgspec.Struct, forbid_unknown_fields=True):
    """`events/subscribe`'s params: the topics to follow."""

    topics: list[Literal["account", "config", "ratelimits", "jobs"]]


async def events_subscribe(ctx: CallContext, params: EventsParams) -> Empty:
    """From the reply on, this connection receives the notifications of these topics (added to
    the ones it follows already) until it closes. A connection that reads too slowly loses a
    topic with `subscription/dropped` and may subscribe again."""
    ctx.services.events.subscribe(ctx.connection, list(params.topics))
    return Empty()


class RateLimitsParams(msgspec.Struct, forbid_unknown_fields=True):
    """`ratelimits/read`'s params: one provider id, or every configured provider when left
    out."""

    provider: str | None = None


async def ratelimits_read(ctx: CallContext, params: RateLimitsParams) -> RateLimitsResult:
    """The budget codexd shares between all clients of a provider, and what the provider's
    own rate-limit headers (and, with a ChatGPT login, the plan's windows, read first when
    the last read is over a minute old) said last. An unknown `provider` is
    `invalid_params`."""
    services = ctx.services
    snapshot = services.config.snapshot
    ids = [params.provider] if params.provider else sorted(snapshot.providers)
    for pid in ids:
        if pid not in snapshot.providers:
            raise RpcError(
                ErrorKind.INVALID_PARAMS,
                f"invalid params for ratelimits/read: unknown provider {pid!r} - at `$.provider`",
            )
    for pid in ids:  # the providers that share a ChatGPT plan share one read
        await services.read_plan(pid, snapshot)
    return RateLimitsResult(
        providers=[services.limiters.limiter_for(p, snapshot).snapshot() for p in ids]
    )


async def usage_read(ctx: CallContext, params: UsageReadParams) -> UsageResult:
    """Sums over the usage ledger, which keeps one record per finished job that went upstream,
    across restarts. Rows come one per distinct value of the `group_by` keys, sorted by them
    (without `group_by`, one row for everything). A job whose final event the caller has seen
    is already counted."""
    ledger = ctx.services.ledger
    since, until = params.time_range(None)
    # Read your own writes: a job whose job.completed the caller has seen is counted. Bounded,
    # so a ledger stuck on a full disk still answers with what it has.
    with anyio.move_on_after(2.0):
        await ledger.flush()
    return await ledger.read(since, until, params.group_by)


# --------------------------------------------------------------------------- account


async def account_read(ctx: CallContext, params: NoParams) -> AccountInfo:
    """Which credential the daemon uses and where it comes from; never the secret itself."""
    return ctx.services.accounts.info()


async def account_refresh(ctx: CallContext, params: NoParams) -> AccountInfo:
    """Refreshes the ChatGPT tokens now. Callers at the same time share one refresh. A refresh
    token the issuer no longer takes is `auth_expired`: log in again."""
    return await ctx.services.accounts.refresh()


async def account_logout(ctx: CallContext, params: NoParams) -> LogoutResult:
    """Revokes a ChatGPT login's tokens upstream when it can, then deletes the stored
    credentials (auth.json or the keyring entry). An API key from the daemon's environment is
    not stored, so it stays in use."""
    return LogoutResult(revoked=await ctx.services.accounts.logout())


class TokenParams(msgspec.Struct, forbid_unknown_fields=True):
    """`gateway/token`'s params: `rotate` replaces the token (the old one stops working)."""

    rotate: bool = False


async def gateway_token(ctx: CallContext, params: TokenParams) -> TokenResult:
    """The gateway's bearer token, made on first use and kept in the state dir. Only the
    control socket answers this (its peer is checked to be the user); the gateway never
    shows its own token."""
    tokens = ctx.services.tokens
    return TokenResult(token=tokens.rotate() if params.rotate else tokens.current())


async def methods(ctx: CallContext, params: NoParams) -> list[MethodInfo]:
    """The method table the daemon dispatches from, in its order, with JSON Schemas made from
    the very types it decodes params and encodes results with."""
    return describe(TABLE)


def describe(table: MethodTable) -> list[MethodInfo]:
    out = []
    for m in table.methods.values():
        out.append(
            MethodInfo(
                name=m.name,
                params_schema=_schema(m.params_type),
                result_schema=_schema(m.result_type),
                summary=m.summary,
            )
        )
    return out


_schema_cache: dict[Any, dict[str, Any]] = {}


def _schema(tp: Any) -> dict[str, Any]:
    cached = _schema_cache.get(tp)
    if cached is None:
        cached = _schema_cache[tp] = msgspec.json.schema(tp)
    return cached


TABLE = MethodTable(
    [
        Method(
            "initialize",
            InitializeParams,
            InitializeResult,
            initialize,
            "Name this client for usage accounting; returns the server's version.",
            inline=True,
        ),
        Method("daemon/ping", NoParams, Empty, ping, "Liveness; the cheapest call.", inline=True),
        Method(
            "daemon/status",
            NoParams,
            DaemonStatus,
            status,
            "Version, uptime, socket, config, account and job counts.",
            inline=True,
        ),
        Method(
            "daemon/shutdown",
            NoParams,
            Empty,
            shutdown,
            "Drain and stop the daemon.",
            inline=True,
        ),
        Method(
            "daemon/methods",
            NoParams,
            list[MethodInfo],
            methods,
            "This table, with JSON Schemas of every method's params and result.",
            inline=True,
        ),
        Method(
            "account/read", NoParams, AccountInfo, account_read, "Who is logged in.", inline=True
        ),
        Method(
            "account/refresh",
            NoParams,
            AccountInfo,
            account_refresh,
            "Refresh the ChatGPT login now (single-flight).",
        ),
        Method(
            "account/login",
            account.LoginParams,  # type: ignore[arg-type]  # a tagged union of Structs
            LoginStartResult,
            account.account_login,
            "Log in (api_key, browser or device); the end is account/login_completed.",
        ),
        Method(
            "account/login/cancel",
            account.LoginCancelParams,
            LoginCancelResult,
            account.account_login_cancel,
            "Cancel a login in progress.",
            inline=True,
        ),
        Method(
            "account/logout",
            NoParams,
            LogoutResult,
            account_logout,
            "Revoke upstream when possible, then delete the stored credentials.",
        ),
        Method(
            "models/list",
            ModelsParams,
            ModelsResult,
            models_list,
            "The model catalog with context windows, reasoning levels and prices.",
            inline=True,
        ),
        Method(
            "config/read",
            NoParams,
            ConfigRead,
            config_read,
            "The effective config (secrets redacted), its generation and last error.",
            inline=True,
        ),
        Method(
            "config/reload",
            NoParams,
            ConfigReloadResult,
            config_reload,
            "Re-read config.toml now; an invalid file is config_invalid and changes nothing.",
        ),
        Method(
            "job/submit",
            jobs.SubmitParams,
            SubmitResult,
            jobs.submit,
            "Send a model request; its events follow on this connection unless subscribe=false.",
        ),
        Method("job/get", jobs.JobIdParams, JobView, jobs.get, "One job.", inline=True),
        Method(
            "job/list",
            jobs.ListParams,
            ListResult,
            jobs.list_jobs,
            "Known jobs, newest first.",
            inline=True,
        ),
        Method(
            "job/subscribe",
            jobs.SubscribeParams,
            SubscribeResult,
            jobs.subscribe,
            "Replay a job's events after after_seq, then follow it live.",
        ),
        Method(
            "job/unsubscribe",
            jobs.JobIdParams,
            Empty,
            jobs.unsubscribe,
            "Stop following a job.",
            inline=True,
        ),
        Method(
            "job/cancel",
            jobs.JobIdParams,
            JobView,
            jobs.cancel,
            "Cancel a job (idempotent); closes its upstream stream.",
        ),
        Method(
            "ratelimits/read",
            RateLimitsParams,
            RateLimitsResult,
            ratelimits_read,
            "Each provider's shared budget and the upstream rate-limit headers last seen.",
            inline=True,
        ),
        Method(
            "usage/read",
            UsageReadParams,
            UsageResult,
            usage_read,
            "Usage and cost from the ledger, optionally grouped.",
        ),
        Method(
            "gateway/token",
            TokenParams,
            TokenResult,
            gateway_token,
            "The gateway's bearer token for TCP (rotate=true replaces it).",
        ),
        Method(
            "events/subscribe",
            EventsParams,
            Empty,
            events_subscribe,
            "Follow daemon notifications by topic: account, config, ratelimits, jobs.",
            inline=True,
        ),
    ]
)
