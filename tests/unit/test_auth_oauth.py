from __future__ import annotations

import json
import urllib.parse

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from codexd.auth.oauth import (
    CLIENT_ID,
    DeviceAuthorized,
    DeviceCode,
    DevicePending,
    OAuthClient,
    OAuthFailure,
    TokenGrant,
    authorize_url,
    parse_code_exchange_response,
    parse_device_code_response,
    parse_device_poll_response,
    parse_refresh_response,
    redirect_uri,
    refresh_request,
    refresh_url,
    revoke_url,
)
from codexd.auth.tokens import Secret

ISSUER = "https://auth.example.test"


def test_authorize_url_has_codexs_parameters_in_order() -> None:
    url = authorize_url(ISSUER, redirect=redirect_uri(1455), code_challenge="ch", state="st")
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ISSUER}/oauth/authorize"
    assert urllib.parse.parse_qsl(parts.query) == [
        ("response_type", "code"),
        ("client_id", "app_EMoamEEZ73f0CkXaXp7hrann"),
        ("redirect_uri", "http://localhost:1455/auth/callback"),
        ("scope", "openid profile email offline_access api.connectors.read api.connectors.invoke"),
        ("code_challenge", "ch"),
        ("code_challenge_method", "S256"),
        ("id_token_add_organizations", "true"),
        ("codex_cli_simplified_flow", "true"),
        ("state", "st"),
        ("originator", "codex_cli_rs"),
    ]
    assert "%20" in parts.query  # spaces percent-encoded, as Codex


def test_override_urls_as_codex() -> None:
    assert refresh_url(ISSUER, {}) == f"{ISSUER}/oauth/token"
    env = {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": "http://127.0.0.1:9/custom/token"}
    assert refresh_url(ISSUER, env) == "http://127.0.0.1:9/custom/token"
    assert revoke_url(ISSUER, env) == "http://127.0.0.1:9/oauth/revoke"
    assert (
        revoke_url(ISSUER, env | {"CODEX_REVOKE_TOKEN_URL_OVERRIDE": "http://x/r"}) == "http://x/r"
    )
    assert revoke_url(ISSUER + "/", {}) == f"{ISSUER}/oauth/revoke"


@pytest.mark.parametrize(
    ("status", "body", "permanent", "code", "start"),
    [
        (
            401,
            b'{"error":{"code":"refresh_token_reused"}}',
            True,
            "refresh_token_reused",
            "Your access token could not be refreshed because your refresh token was already used.",
        ),
        (
            400,
            b'{"error":"refresh_token_expired"}',
            True,
            "refresh_token_expired",
            "Your access token could not be refreshed because your refresh token has expired.",
        ),
        (
            400,
            b'{"code":"REFRESH_TOKEN_INVALIDATED"}',
            True,
            "refresh_token_invalidated",
            "Your access token could not be refreshed because your refresh token was revoked.",
        ),
        (401, b"nope", True, None, "Your access token could not be refreshed. Please log out"),
        (503, b'{"error":{"message":"busy"}}', False, None, "Failed to refresh token: 503: busy"),
        (200, b"[]", False, None, "Failed to refresh token: 200"),
    ],
)
def test_refresh_failures_are_classified_like_codex(
    status: int, body: bytes, permanent: bool, code: str | None, start: str
) -> None:
    result = parse_refresh_response(status, body)
    assert isinstance(result, OAuthFailure)
    assert (result.permanent, result.code) == (permanent, code)
    assert result.message.startswith(start)


def test_a_refresh_answer_may_omit_tokens() -> None:
    grant = parse_refresh_response(200, b'{"access_token":"at-zzz","id_token":7}')
    assert isinstance(grant, TokenGrant)
    assert (
        grant.access_token == Secret("at-zzz")
        and grant.id_token is None
        and grant.refresh_token is None
    )
    assert "zzz" not in repr(grant)


@given(st.integers(100, 599), st.binary(max_size=200))
def test_parsers_never_raise(status: int, body: bytes) -> None:
    parse_refresh_response(status, body)
    parse_code_exchange_response(status, body)
    parse_device_code_response(ISSUER, status, body)
    parse_device_poll_response(status, body)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, {"error": "invalid_request", "error_description": "{echo}"}),
        (503, {"error": {"message": "{echo}", "code": "busy"}}),
        (400, {"error": {"code": "{token}"}}),
        (401, {"error": {"code": "{token}", "message": "{echo}"}}),
    ],
)
def test_refresh_errors_quoting_the_request_back_are_scrubbed(
    status: int, error: dict[str, object]
) -> None:
    """Padded so that the token straddles the 300-character bound, with runs of whitespace."""
    token = Secret("rt_Plain_0123456789ABCdef0123456789")  # codes are lower-cased: scrub first
    req = refresh_request(f"{ISSUER}/oauth/token", token, "unauthorized_recovery")
    echo = "x" * 270 + " refresh_token=\n\n  " + token.reveal()
    body = json.dumps(error).replace("{echo}", echo).replace("{token}", token.reveal())
    result = parse_refresh_response(status, body.encode(), scrubber=req.scrubber)
    assert isinstance(result, OAuthFailure)
    shown = f"{result.message} {result.code}".lower()
    assert token.reveal().lower()[:10] not in shown
    assert len(result.message) < 400


def test_error_detail_never_echoes_a_raw_body() -> None:
    result = parse_code_exchange_response(400, b"code=secret-code&code_verifier=secret-v")
    assert isinstance(result, OAuthFailure) and "secret" not in result.message


def test_device_code_parsing() -> None:
    code = parse_device_code_response(
        ISSUER, 200, b'{"device_auth_id":"d1","usercode":"ABCD-EFGH","interval":"7"}'
    )
    assert code == DeviceCode("d1", "ABCD-EFGH", 7.0, f"{ISSUER}/codex/device")
    missing = parse_device_code_response(ISSUER, 404, b"")
    assert isinstance(missing, OAuthFailure) and "not enabled" in missing.message
    assert parse_device_poll_response(403, b"") == DevicePending()
    assert parse_device_poll_response(400, b'{"error":"authorization_pending"}') == DevicePending()
    assert parse_device_poll_response(400, b'{"error":"slow_down"}') == DevicePending(
        slow_down=True
    )
    expired = parse_device_poll_response(400, b'{"error":"expired_token"}')
    assert isinstance(expired, OAuthFailure) and expired.permanent
    done = parse_device_poll_response(
        200, b'{"authorization_code":"c","code_verifier":"v","code_challenge":"ch"}'
    )
    assert isinstance(done, DeviceAuthorized) and done.authorization_code == Secret("c")


# ---------------------------------------------------------------------- the httpx shell


@pytest.mark.anyio
async def test_refresh_posts_codexs_json_to_the_override_url() -> None:
    override = "http://127.0.0.1:1/override/token"
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(override).respond(
            200, json={"access_token": "new-at", "refresh_token": "new-rt"}
        )
        async with httpx.AsyncClient() as http:
            client = OAuthClient(http, ISSUER, {"CODEX_REFRESH_TOKEN_URL_OVERRIDE": override})
            grant = await client.refresh(Secret("old-rt"), "proactive_expiry")
    assert isinstance(grant, TokenGrant) and grant.refresh_token == Secret("new-rt")
    sent = json.loads(route.calls.last.request.content)
    assert sent == {
        "client_id": CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_reason": "proactive_expiry",
        "refresh_token": "old-rt",
    }


@pytest.mark.anyio
async def test_a_connection_failure_is_a_transient_value() -> None:
    with respx.mock() as mock:
        mock.post(f"{ISSUER}/oauth/token").mock(side_effect=httpx.ConnectError("refused"))
        async with httpx.AsyncClient() as http:
            result = await OAuthClient(http, ISSUER).refresh(Secret("rt"), "unauthorized_recovery")
    assert isinstance(result, OAuthFailure) and not result.permanent
    assert "auth.example.test" in result.message


@pytest.mark.anyio
async def test_code_exchange_and_api_key_exchange_are_form_posts() -> None:
    with respx.mock() as mock:
        route = mock.post(f"{ISSUER}/oauth/token")
        route.side_effect = [
            httpx.Response(200, json={"id_token": "i", "access_token": "a", "refresh_token": "r"}),
            httpx.Response(200, json={"access_token": "sk-exchanged"}),
        ]
        async with httpx.AsyncClient() as http:
            client = OAuthClient(http, ISSUER)
            grant = await client.exchange_code(
                Secret("the-code"), redirect=redirect_uri(1457), code_verifier=Secret("ver")
            )
            key = await client.exchange_api_key(Secret("i"))
    first, second = (urllib.parse.parse_qs(c.request.content.decode()) for c in route.calls)
    assert first == {
        "grant_type": ["authorization_code"],
        "code": ["the-code"],
        "redirect_uri": ["http://localhost:1457/auth/callback"],
        "client_id": [CLIENT_ID],
        "code_verifier": ["ver"],
    }
    assert second["grant_type"] == ["urn:ietf:params:oauth:grant-type:token-exchange"]
    assert second["requested_token"] == ["openai-api-key"]
    assert second["subject_token_type"] == ["urn:ietf:params:oauth:token-type:id_token"]
    assert isinstance(grant, TokenGrant) and key == Secret("sk-exchanged")


@pytest.mark.anyio
async def test_revoke_sends_the_refresh_token_with_the_client_id() -> None:
    with respx.mock() as mock:
        route = mock.post(f"{ISSUER}/oauth/revoke").respond(200)
        async with httpx.AsyncClient() as http:
            ok = await OAuthClient(http, ISSUER).revoke(
                refresh_token=Secret("rt"), access_token=Secret("at")
            )
    assert ok
    assert json.loads(route.calls.last.request.content) == {
        "token": "rt",
        "token_type_hint": "refresh_token",
        "client_id": CLIENT_ID,
    }


@pytest.mark.anyio
async def test_device_flow_polls_until_authorized() -> None:
    with respx.mock() as mock:
        mock.post(f"{ISSUER}/api/accounts/deviceauth/usercode").respond(
            200, json={"device_auth_id": "d1", "user_code": "UC", "interval": "0"}
        )
        poll = mock.post(f"{ISSUER}/api/accounts/deviceauth/token")
        poll.side_effect = [
            httpx.Response(403),
            httpx.Response(404),
            httpx.Response(200, json={"authorization_code": "c", "code_verifier": "v"}),
        ]
        async with httpx.AsyncClient() as http:
            client = OAuthClient(http, ISSUER)
            code = await client.start_device_code()
            assert isinstance(code, DeviceCode) and code.user_code == "UC"
            result = await client.wait_for_device_code(code)
    assert isinstance(result, DeviceAuthorized)
    assert poll.call_count == 3
    assert json.loads(poll.calls.last.request.content) == {
        "device_auth_id": "d1",
        "user_code": "UC",
    }
