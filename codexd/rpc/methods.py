"""The method table (SPEC §4): name → params type → result type → handler.

This one literal table is what the server dispatches from, what `daemon/methods` renders as
JSON Schema, and what `codexctl rpc --list` prints. Params types forbid unknown members, so a
typo is -32602 naming the member, not a silently ignored field.
"""

from __future__ import annotations

from typing import Any

import msgspec

from codexctl.protocol import PROTOCOL_VERSION, ClientInfo, InitializeResult, ServerInfo
from codexd import __version__
from codexd.rpc.server import CallContext, Method, MethodTable


class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    """Methods that take no params accept `{}` or none at all."""


class Empty(msgspec.Struct):
    pass


class InitializeParams(msgspec.Struct, forbid_unknown_fields=True):
    client: ClientInfo


class JobCounts(msgspec.Struct):
    queued: int
    running: int
    retained: int


class ConfigStatus(msgspec.Struct):
    path: str
    generation: int
    loaded_at: str
    error: str | None


class AccountSummary(msgspec.Struct):
    mode: str | None
    email: str | None
    plan_type: str | None


class DaemonStatus(msgspec.Struct):
    version: str
    protocol_version: int
    pid: int
    started_at: str
    started_by: str
    uptime_s: float
    socket: str
    codex_home: str
    state_dir: str
    connections: int
    jobs: JobCounts | None
    config: ConfigStatus | None
    account: AccountSummary | None


class MethodInfo(msgspec.Struct):
    name: str
    params_schema: dict[str, Any]
    result_schema: dict[str, Any]
    summary: str


# --------------------------------------------------------------------------- handlers


async def initialize(ctx: CallContext, params: InitializeParams) -> InitializeResult:
    ctx.connection.client_name = params.client.name
    ctx.connection.client_version = params.client.version
    return InitializeResult(
        server=ServerInfo(name="codexd", version=__version__), protocol_version=PROTOCOL_VERSION
    )


async def ping(ctx: CallContext, params: NoParams) -> Empty:
    return Empty()


async def status(ctx: CallContext, params: NoParams) -> DaemonStatus:
    return ctx.daemon.status()


async def shutdown(ctx: CallContext, params: NoParams) -> Empty:
    ctx.after_reply(ctx.daemon.request_shutdown)
    return Empty()


async def methods(ctx: CallContext, params: NoParams) -> list[MethodInfo]:
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
    ]
)
