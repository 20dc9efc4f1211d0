"""The method table is SPEC §4's method list: nothing extra, nothing missing."""

from __future__ import annotations

import typing

import msgspec

from codexd.rpc.methods import TABLE, describe

SPEC_METHODS = {
    "initialize",
    "daemon/ping",
    "daemon/status",
    "daemon/shutdown",
    "daemon/methods",
    "account/read",
    "account/login",
    "account/login/cancel",
    "account/logout",
    "account/refresh",
    "models/list",
    "config/read",
    "config/reload",
    "job/submit",
    "job/get",
    "job/list",
    "job/subscribe",
    "job/unsubscribe",
    "job/cancel",
    "ratelimits/read",
    "usage/read",
    "events/subscribe",
    "gateway/token",
}


def test_every_method_is_a_spec_method() -> None:
    assert set(TABLE.methods) <= SPEC_METHODS


def test_no_spec_method_is_missing() -> None:
    assert SPEC_METHODS - set(TABLE.methods) == set()


def test_every_method_has_schemas_and_a_summary() -> None:
    for info in describe(TABLE):
        assert info.summary, info.name
        assert isinstance(info.params_schema, dict)
        assert isinstance(info.result_schema, dict)
        msgspec.json.encode(info)


def test_params_types_refuse_unknown_members() -> None:
    for method in TABLE.methods.values():
        members = typing.get_args(method.params_type) or (method.params_type,)
        for member in members:  # a tagged union (account/login) checks each variant
            config = getattr(member, "__struct_config__", None)
            assert config is not None, method.name
            assert config.forbid_unknown_fields, (method.name, member)
