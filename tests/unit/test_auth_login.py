"""The login callback's pure parts: request line, Codex's callback rules, API key checks."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexctl.protocol import ErrorKind, RpcError
from codexd.auth.authfile import AuthDocument
from codexd.auth.login import (
    CallbackCancel,
    CallbackCode,
    CallbackFailure,
    CallbackIgnored,
    LoginManager,
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


# ---------------------------------------------------------------------- checking an API key


class _Stored:
    def __init__(self) -> None:
        self.docs: list[AuthDocument] = []

    async def save_login(self, doc: AuthDocument) -> None:
        self.docs.append(doc)


def _failed(kind: ErrorKind, status: int | None) -> RpcError:
    data = {"http_status": status} if status is not None else {}
    return RpcError(kind, f"upstream said {status}", **data)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "refused_as"),
    [
        (None, None),
        (_failed(ErrorKind.AUTH_EXPIRED, 401), "unauthenticated"),
        (_failed(ErrorKind.BAD_REQUEST, 403), None),  # a key not allowed to list models
        (_failed(ErrorKind.RATE_LIMITED, 429), None),
        (_failed(ErrorKind.UPSTREAM_ERROR, 503), "upstream_error"),
        (_failed(ErrorKind.UPSTREAM_ERROR, None), "upstream_error"),  # no answer at all
    ],
    ids=["2xx", "401", "403", "429", "503", "unreachable"],
)
async def test_a_checked_api_key_is_refused_only_on_401_or_without_an_answer(
    answer: RpcError | None, refused_as: str | None
) -> None:
    stored = _Stored()

    async def check(key: Secret) -> RpcError | None:
        assert key.reveal() == "sk-checked"
        return answer

    finished = anyio.Event()
    manager = LoginManager(
        session=lambda: stored,
        oauth=lambda: None,  # never called for an API key
        on_finished=lambda login: finished.set(),
        check_api_key=check,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        try:
            login = await manager.start("api_key", api_key="sk-checked", verify=True)
        except RpcError as exc:
            assert exc.kind == refused_as
            assert "was not stored" in exc.message and "sk-checked" not in exc.message
        else:
            assert refused_as is None
            LoginManager.announce(login)
            await finished.wait()
            assert [d.api_key for d in stored.docs] == [Secret("sk-checked")]
        tg.cancel_scope.cancel()
    if refused_as is not None:
        assert stored.docs == []
