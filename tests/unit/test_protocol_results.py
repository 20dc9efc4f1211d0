"""The results the daemon sends are codexctl's types: one definition of each, both sides.

The method table's result types, and every struct inside them, must be classes of
`codexctl.protocol` or `codexctl.results`, the modules clients decode with. A result type
defined in the daemon again (a second copy of a wire shape, free to drift) fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from msgspec import inspect as mi

from codexctl import protocol, results
from codexd.rpc.methods import TABLE

WIRE_MODULES = {protocol.__name__, results.__name__}


def _structs(t: mi.Type, seen: set[type]) -> Iterator[type]:
    """Every struct class reachable from `t`: itself, its members', items', variants'."""
    if isinstance(t, mi.StructType):
        if t.cls in seen:
            return
        seen.add(t.cls)
        yield t.cls
        for field in t.fields:
            yield from _structs(field.type, seen)
        return
    for attr in ("type", "item_type", "key_type", "value_type"):
        inner = getattr(t, attr, None)
        if isinstance(inner, mi.Type):
            yield from _structs(inner, seen)
    for attr in ("types", "item_types"):
        for inner in getattr(t, attr, ()):
            yield from _structs(inner, seen)


def _result_structs(result_type: Any) -> list[type]:
    return list(_structs(mi.type_info(result_type), set()))


def test_the_walk_finds_nested_structs() -> None:
    found = _result_structs(list[results.MethodInfo])
    assert found == [results.MethodInfo]
    assert {results.ProviderLimits, results.LimitWindow, results.Credits} <= set(
        _result_structs(results.RateLimitsResult)
    )


@pytest.mark.parametrize("method", sorted(TABLE.methods))
def test_every_result_type_is_a_codexctl_type(method: str) -> None:
    found = _result_structs(TABLE.methods[method].result_type)
    assert found, f"{method}'s result is no struct"
    elsewhere = [f"{cls.__module__}.{cls.__qualname__}" for cls in found]
    elsewhere = [name for name in elsewhere if name.rsplit(".", 1)[0] not in WIRE_MODULES]
    assert elsewhere == [], (
        f"{method} sends types defined outside codexctl: define them in codexctl.results "
        "(or codexctl.protocol) and import them in the daemon"
    )


@pytest.mark.parametrize(
    ("method", "result"),
    [
        ("job/submit", protocol.SubmitResult),
        ("job/list", protocol.ListResult),
        ("job/get", protocol.JobView),
        ("job/cancel", protocol.JobView),
        ("job/subscribe", protocol.SubscribeResult),
        ("daemon/status", protocol.DaemonStatus),
        ("account/read", results.AccountInfo),
        ("ratelimits/read", results.RateLimitsResult),
        ("usage/read", results.UsageResult),
        ("daemon/methods", list[results.MethodInfo]),
    ],
)
def test_the_method_table_sends_the_protocol_result_types(method: str, result: type) -> None:
    assert TABLE.methods[method].result_type == result


def test_a_client_decodes_a_status_reply_into_its_type() -> None:
    raw = (
        b'{"version":"0.1.0","protocol_version":1,"pid":7,"started_at":"2026-01-01T00:00:00Z",'
        b'"started_by":"manual","uptime_s":1.5,"socket":"/s","codex_home":"/h","state_dir":"/d",'
        b'"connections":1,"jobs":{"queued":0,"running":1,"retained":2},'
        b'"config":{"path":"/h/config.toml","generation":1,"loaded_at":"x","error":null},'
        b'"account":null,"budget":null}'
    )
    status = msgspec.json.decode(raw, type=protocol.DaemonStatus)
    assert status.jobs == protocol.JobCounts(queued=0, running=1, retained=2)
    assert msgspec.json.decode(msgspec.json.encode(status), type=protocol.DaemonStatus) == status
