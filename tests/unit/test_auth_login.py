"""The login callback's pure parts: request line, Codex's callback rules, API key checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexctl.protocol import RpcError
from codexd.auth.login import (
    CallbackCancel,
    CallbackCode,
    CallbackFailure,
    CallbackIgnored,
    interpret_callback,
    parse_request_line,
    validate_api_key,
)
from codexd.auth.tokens import Secret


def test_request_line() -> None:
    assert parse_request_line(b"GET /auth/callback?x=1 HTTP/1.1\r\nHost: a\r\n\r\n") == (
        "GET",
        "/auth/callback?x=1",
    )
    assert parse_request_line(b"hello\r\n\r\n") is None
    assert parse_request_line(b"GET / SPDY/3\r\n\r\n") is None


@given(st.binary(max_size=200))
def test_request_line_never_raises(head: bytes) -> None:
    parsed = parse_request_line(head)
    assert parsed is None or all(isinstance(p, str) for p in parsed)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/auth/callback?code=abc&state=S", CallbackCode(Secret("abc"))),
        ("/auth/callback?code=abc&state=T", CallbackIgnored(400, "State mismatch.")),
        ("/auth/callback?code=abc", CallbackIgnored(400, "State mismatch.")),
        ("/favicon.ico", CallbackIgnored(404, "Not found.")),
        ("/cancel", CallbackCancel()),
        (
            "/auth/callback?state=S",
            CallbackFailure("Missing authorization code. Sign-in could not be completed."),
        ),
        (
            "/auth/callback?state=S&error=access_denied&error_description=No+thanks",
            CallbackFailure("Sign-in failed: No thanks"),
        ),
        (
            "/auth/callback?state=S&error=access_denied"
            "&error_description=missing_codex_entitlement",
            CallbackFailure(
                "Codex is not enabled for your workspace. Contact your workspace administrator "
                "to request access to Codex."
            ),
        ),
    ],
)
def test_callback_rules(target: str, expected: object) -> None:
    assert interpret_callback("GET", target, "S") == expected


def test_only_get() -> None:
    assert interpret_callback("POST", "/auth/callback?code=a&state=S", "S") == CallbackIgnored(
        405, "Method not allowed."
    )


def test_api_key_checks_never_quote_the_key() -> None:
    assert validate_api_key("  sk-abc\n") == "sk-abc"
    for bad in ("", "   ", "sk-a b", "sk-\x00x", "sk-" + "x" * 5000):
        with pytest.raises(RpcError) as info:
            validate_api_key(bad)
        assert info.value.kind == "invalid_params"
        if bad.strip():
            assert bad.strip() not in info.value.message
