"""The fake OAuth issuer, driven with real httpx over loopback."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx
import pytest

from codexd.testing import fake_issuer as fi
from codexd.testing.fake_issuer import CLIENT_ID, FakeIssuer
from codexd.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(30)

REDIRECT = "http://localhost:1455/auth/callback"
REUSED_BODY = {
    "error": {
        "message": "Your refresh token has already been used to generate a new access token."
        " Please try signing in again.",
        "type": "invalid_request_error",
        "param": None,
        "code": "refresh_token_reused",
    }
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def issuer() -> Iterator[FakeIssuer]:
    with FakeIssuer.running() as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, follow_redirects=False) as c:
        yield c


def authorize_params(verifier: str, redirect_uri: str = REDIRECT, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": redirect_uri,
        "scope": "openid profile email offline_access",
        "code_challenge": fi.pkce_challenge(verifier),
        "code_challenge_method": "S256",
        "id_token_add_organizations": "true",
        "codex_cli_simplified_flow": "true",
        "state": "state-123",
        "originator": "codex_cli_rs",
        **extra,
    }


def login(client: httpx.Client, issuer: FakeIssuer) -> dict[str, Any]:
    """The browser PKCE flow as Codex runs it; returns the token response."""
    verifier = fi.b64url(secrets.token_bytes(64))
    response = client.get(f"{issuer.origin}/oauth/authorize", params=authorize_params(verifier))
    assert response.status_code == 302
    code = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]
    token = client.post(
        f"{issuer.origin}/oauth/token",
        content=urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": CLIENT_ID,
                "code_verifier": verifier,
            }
        ),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert token.status_code == 200, token.text
    result: dict[str, Any] = token.json()
    return result


def refresh(client: httpx.Client, issuer: FakeIssuer, token: str) -> httpx.Response:
    return client.post(
        f"{issuer.origin}/oauth/token",
        json={"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": token},
    )


# --- Browser login ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", [1455, 1457])
def test_authorize_redirects_back_with_code_and_state(
    issuer: FakeIssuer, client: httpx.Client, port: int
) -> None:
    redirect = f"http://localhost:{port}/auth/callback"
    response = client.get(
        f"{issuer.origin}/oauth/authorize", params=authorize_params("v" * 64, redirect)
    )

    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect
    query = parse_qs(location.query)
    assert query["state"] == ["state-123"]
    assert query["code"][0]
    assert issuer.stats().authorizations == 1


@pytest.mark.parametrize(
    "redirect",
    [
        "http://localhost:1456/auth/callback",
        "http://127.0.0.1:1455/auth/callback",
        "http://localhost:1455/other",
        "https://evil.example/auth/callback",
    ],
)
def test_authorize_refuses_unregistered_redirect_uris(
    issuer: FakeIssuer, client: httpx.Client, redirect: str
) -> None:
    response = client.get(
        f"{issuer.origin}/oauth/authorize", params=authorize_params("v" * 64, redirect)
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert issuer.stats().authorizations == 0


def test_authorize_refuses_wrong_client_and_missing_pkce(
    issuer: FakeIssuer, client: httpx.Client
) -> None:
    wrong_client = {**authorize_params("v" * 64), "client_id": "app_other"}
    no_pkce = {k: v for k, v in authorize_params("v" * 64).items() if k != "code_challenge"}
    for params in (wrong_client, no_pkce):
        assert client.get(f"{issuer.origin}/oauth/authorize", params=params).status_code == 400


def test_denied_authorize_redirects_with_the_error(
    issuer: FakeIssuer, client: httpx.Client
) -> None:
    issuer.deny_next_authorize("access_denied", "missing_codex_entitlement")
    response = client.get(f"{issuer.origin}/oauth/authorize", params=authorize_params("v" * 64))
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query == {
        "error": ["access_denied"],
        "error_description": ["missing_codex_entitlement"],
        "state": ["state-123"],
    }


def test_code_exchange_gives_tokens_with_codex_claims(
    issuer: FakeIssuer, client: httpx.Client
) -> None:
    before = int(time.time())
    tokens = login(client, issuer)

    assert set(tokens) >= {"id_token", "access_token", "refresh_token"}
    for jwt in (tokens["id_token"], tokens["access_token"]):
        assert all(jwt.split("."))
        assert len(jwt.split(".")) == 3
    id_claims = fi.jwt_claims(tokens["id_token"])
    assert id_claims["email"] == issuer.email
    auth = id_claims[fi.AUTH_CLAIM]
    assert auth["chatgpt_plan_type"] == "plus"
    assert auth["chatgpt_account_id"] == issuer.account_id
    assert auth["chatgpt_user_id"] == issuer.user_id
    access = fi.jwt_claims(tokens["access_token"])
    assert before + 3600 <= access["exp"] <= int(time.time()) + 3600
    assert issuer.access_token_failure(tokens["access_token"]) is None
    assert issuer.stats().code_exchanges == 1


def test_code_is_single_use_and_needs_the_right_verifier(
    issuer: FakeIssuer, client: httpx.Client
) -> None:
    verifier = "a" * 64
    response = client.get(f"{issuer.origin}/oauth/authorize", params=authorize_params(verifier))
    code = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "code_verifier": "b" * 64,
    }
    wrong = client.post(f"{issuer.origin}/oauth/token", data=form)
    again = client.post(f"{issuer.origin}/oauth/token", data={**form, "code_verifier": verifier})

    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert again.status_code == 400  # the failed attempt burnt the code
    assert issuer.stats().code_exchanges == 0


# --- Refresh ---------------------------------------------------------------------------------


def test_refresh_rotates_and_a_reused_token_gets_the_real_401(
    issuer: FakeIssuer, client: httpx.Client
) -> None:
    first = login(client, issuer)
    rotated = refresh(client, issuer, first["refresh_token"])
    reused = refresh(client, issuer, first["refresh_token"])

    assert rotated.status_code == 200
    new = rotated.json()
    assert set(new) == {"id_token", "access_token", "refresh_token"}
    assert new["refresh_token"] != first["refresh_token"]
    assert new["access_token"] != first["access_token"]
    assert reused.status_code == 401
    assert reused.json() == REUSED_BODY
    assert issuer.refresh_token_state(first["refresh_token"]) == "spent"
    assert issuer.refresh_token_state(new["refresh_token"]) == "live"
    stats = issuer.stats()
    assert (stats.refresh_attempts, stats.refreshes, stats.reuses) == (2, 1, 1)
    assert refresh(client, issuer, new["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        (FakeIssuer.expire_refresh_token, "refresh_token_expired"),
        (FakeIssuer.invalidate_refresh_token, "refresh_token_invalidated"),
    ],
)
def test_expired_and_invalidated_refresh_tokens(
    issuer: FakeIssuer, client: httpx.Client, spoil: Any, code: str
) -> None:
    tokens = issuer.issue_tokens()
    spoil(issuer, tokens.refresh_token)
    response = refresh(client, issuer, tokens.refresh_token)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    assert issuer.stats().reuses == 0


def test_unknown_refresh_token_is_refused(issuer: FakeIssuer, client: httpx.Client) -> None:
    response = refresh(client, issuer, "rt_never_issued")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "refresh_token_invalidated"


def test_reuse_can_revoke_the_whole_family(client: httpx.Client) -> None:
    with FakeIssuer.running(revoke_family_on_reuse=True) as issuer:
        tokens = issuer.issue_tokens()
        newer = refresh(client, issuer, tokens.refresh_token).json()["refresh_token"]
        other_login = issuer.issue_tokens()
        assert refresh(client, issuer, tokens.refresh_token).status_code == 401
        dead = refresh(client, issuer, newer)
        alive = refresh(client, issuer, other_login.refresh_token)
    assert dead.json()["error"]["code"] == "refresh_token_invalidated"
    assert alive.status_code == 200


@pytest.mark.anyio
async def test_concurrent_refreshes_of_one_token_spend_it_once() -> None:
    issuer = FakeIssuer()
    async with anyio.create_task_group() as tg:
        origin = await tg.start(issuer.serve)
        tokens = issuer.issue_tokens()
        issuer.hold_refreshes()
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=10) as client:

            async def one() -> None:
                response = await client.post(
                    f"{origin}/oauth/token",
                    json={
                        "client_id": CLIENT_ID,
                        "grant_type": "refresh_token",
                        "refresh_token": tokens.refresh_token,
                    },
                )
                statuses.append(response.status_code)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as clients:
                    for _ in range(20):
                        clients.start_soon(one)
                    await issuer.wait_until(lambda s: s.refreshes_in_flight == 20)
                    assert statuses == []
                    issuer.release_refreshes()
        tg.cancel_scope.cancel()

    assert sorted(statuses) == [200] + [401] * 19
    stats = issuer.stats()
    assert (stats.refreshes, stats.reuses, stats.refresh_attempts) == (1, 19, 20)
    assert stats.refreshes_in_flight == 0
    assert stats.peak_concurrent_refreshes == 20


def test_held_refreshes_released_from_another_thread(client: httpx.Client) -> None:
    with FakeIssuer.running() as issuer:
        tokens = issuer.issue_tokens()
        issuer.hold_refreshes()
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(refresh, client, issuer, tokens.refresh_token)
            issuer.wait_for(lambda s: s.refreshes_in_flight == 1)
            assert not pending.done()
            issuer.release_refreshes()
            assert pending.result(timeout=10).status_code == 200


def test_scripted_transient_failure_spends_nothing(
    issuer: FakeIssuer, client: httpx.Client
) -> None:
    tokens = issuer.issue_tokens()
    issuer.script(fi.transient_failure(503), grant_type="refresh_token")
    failed = refresh(client, issuer, tokens.refresh_token)
    retried = refresh(client, issuer, tokens.refresh_token)
    assert failed.status_code == 503
    assert retried.status_code == 200
    assert issuer.stats().scripted == 1


# --- Token exchange, revoke, device code -----------------------------------------------------


def test_id_token_exchange_gives_an_api_key(issuer: FakeIssuer, client: httpx.Client) -> None:
    tokens = issuer.issue_tokens()
    form = {
        "grant_type": fi.TOKEN_EXCHANGE_GRANT,
        "client_id": CLIENT_ID,
        "requested_token": "openai-api-key",
        "subject_token": tokens.id_token,
        "subject_token_type": fi.ID_TOKEN_TYPE,
    }
    good = client.post(f"{issuer.origin}/oauth/token", data=form)
    bad = client.post(f"{issuer.origin}/oauth/token", data={**form, "subject_token": "x.y.z"})

    assert good.status_code == 200
    assert good.json()["access_token"].startswith("sk-")
    assert bad.status_code == 400
    assert issuer.stats().token_exchanges == 1


def test_revoke_invalidates_the_refresh_token(issuer: FakeIssuer, client: httpx.Client) -> None:
    tokens = issuer.issue_tokens()
    response = client.post(
        f"{issuer.origin}/oauth/revoke",
        json={
            "token": tokens.refresh_token,
            "token_type_hint": "refresh_token",
            "client_id": CLIENT_ID,
        },
    )
    assert response.status_code == 200
    assert refresh(client, issuer, tokens.refresh_token).json()["error"]["code"] == (
        "refresh_token_invalidated"
    )
    assert issuer.stats().revocations == 1


def test_device_code_flow(issuer: FakeIssuer, client: httpx.Client) -> None:
    usercode = client.post(
        f"{issuer.origin}/api/accounts/deviceauth/usercode", json={"client_id": CLIENT_ID}
    ).json()
    assert usercode["interval"] == "5"
    assert set(usercode) == {"device_auth_id", "user_code", "interval"}
    poll = {"device_auth_id": usercode["device_auth_id"], "user_code": usercode["user_code"]}

    pending = client.post(f"{issuer.origin}/api/accounts/deviceauth/token", json=poll)
    assert pending.status_code == 403
    assert pending.json()["error"] == "authorization_pending"

    assert issuer.approve_device() == usercode["user_code"]
    approved = client.post(f"{issuer.origin}/api/accounts/deviceauth/token", json=poll).json()
    assert fi.pkce_challenge(approved["code_verifier"]) == approved["code_challenge"]
    exchanged = client.post(
        f"{issuer.origin}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": approved["authorization_code"],
            "redirect_uri": f"{issuer.origin}/deviceauth/callback",
            "client_id": CLIENT_ID,
            "code_verifier": approved["code_verifier"],
        },
    )
    assert exchanged.status_code == 200
    assert "refresh_token" in exchanged.json()
    assert issuer.stats().device_polls == 2
    assert client.get(issuer.verification_url).status_code == 200


def test_device_code_can_be_disabled(client: httpx.Client) -> None:
    with FakeIssuer.running(device_code_enabled=False) as issuer:
        response = client.post(
            f"{issuer.origin}/api/accounts/deviceauth/usercode", json={"client_id": CLIENT_ID}
        )
    assert response.status_code == 404


def test_request_log_has_params_not_only_paths(issuer: FakeIssuer, client: httpx.Client) -> None:
    tokens = issuer.issue_tokens()
    refresh(client, issuer, tokens.refresh_token)
    (record,) = issuer.requests
    assert (record.method, record.path, record.status) == ("POST", "/oauth/token", 200)
    assert record.params["grant_type"] == "refresh_token"


# --- On the fake OpenAI's server -------------------------------------------------------------


def test_issuer_shares_the_openai_server_and_guards_chatgpt_paths(client: httpx.Client) -> None:
    body = {"model": "gpt-5", "input": "hi", "stream": False}
    with FakeOpenAI.running(issuer=FakeIssuer()) as fake:
        issuer = fake.issuer
        assert issuer.origin == fake.origin
        tokens = login(client, issuer)
        url = f"{fake.chatgpt_base_url}codex/responses"

        def ask(token: str) -> httpx.Response:
            return client.post(url, json=body, headers={"authorization": f"Bearer {token}"})

        live = ask(tokens["access_token"])
        stale = ask(issuer.issue_tokens(access_ttl_s=-10).access_token)
        unknown = ask("not-a-token")
        issuer.expire_access_tokens()
        expired = ask(tokens["access_token"])
        api = client.post(f"{fake.base_url}/responses", json=body)

    assert live.status_code == 200
    for refused in (stale, unknown, expired):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "token_expired"
    assert api.status_code == 200


def test_cli_serves_the_issuer_on_the_second_line() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexd.testing.fake_openai", "--issuer"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        origin = proc.stdout.readline().strip()
        assert base_url == f"{origin}/v1"
        with httpx.Client(timeout=10) as client:
            response = client.post(
                f"{origin}/api/accounts/deviceauth/usercode", json={"client_id": CLIENT_ID}
            )
        assert json.loads(response.text)["interval"] == "5"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
