"""The method table is the protocol's method list: nothing extra, nothing missing."""

from __future__ import annotations

import typing

import msgspec
import pytest

from codexctl.protocol import ErrorKind, RpcError
from codexd.rpc.envelope import Rejected, parse_request
from codexd.rpc.methods import TABLE, describe

PROTOCOL_METHODS = {
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
    assert set(TABLE.methods) <= PROTOCOL_METHODS


def test_no_spec_method_is_missing() -> None:
    assert PROTOCOL_METHODS - set(TABLE.methods) == set()


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


# ------------------------------------------------------------------ params that do not decode

BAD_PARAMS = [
    # Invalid UTF-8 inside a string member: msgspec 0.23 raises DecodeError here, earlier
    # releases UnicodeDecodeError. Both must be a parse error, never an internal error.
    (b'{"job_id":"\xc3"}', "parse_error"),
    (b'{"job_id":"\xff\xfe"}', "parse_error"),
    (b'{"job_id":"a', "parse_error"),  # truncated
    (b'{"job_id":1}', "invalid_params"),
    (b'{"job_id":"x","extra":true}', "invalid_params"),
    (b"[" * 5000 + b"]" * 5000, "invalid_params"),  # an array is refused before decoding
    (b'{"job_id":' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_params"),  # wrong type first
]


@pytest.mark.parametrize(("raw", "kind"), BAD_PARAMS)
def test_params_that_do_not_decode_are_a_precise_error(raw: bytes, kind: str) -> None:
    method = TABLE.methods["job/get"]
    with pytest.raises(RpcError) as info:
        TABLE.decode_params(method, msgspec.Raw(raw))
    assert info.value.kind == ErrorKind(kind)
    assert info.value.message.startswith(("parse error", "invalid params"))


@pytest.mark.parametrize(
    "line",
    [
        b'{"id":1,"method":"daemon/ping","x":"\xff"}',  # in an unknown top-level member
        b'{"id":1,"method":"job/get","params":{"job_id":"\xc3"}}',  # inside params (Raw)
        b'{"id":1,"method":"daemon/ping","params":{},"\xc3\xa9\xff":1}',  # in a member name
    ],
)
def test_invalid_utf8_anywhere_in_a_line_is_a_parse_error(line: bytes) -> None:
    rejected = parse_request(line)
    assert isinstance(rejected, Rejected)
    assert rejected.error.kind == ErrorKind.PARSE_ERROR
    assert "UTF-8" in rejected.error.message


def test_valid_utf8_beyond_ascii_is_accepted() -> None:
    env = parse_request('{"id":1,"method":"daemon/ping","x":"héllo ✓"}'.encode())
    assert not isinstance(env, Rejected)
    assert env.method == "daemon/ping"
