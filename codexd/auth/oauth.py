"""The issuer's OAuth endpoints as Codex uses them: pure request builders and response parsers,
and `OAuthClient`, a thin httpx shell over them.

Failures are `OAuthFailure` values: `permanent` ones (a spent, expired or revoked refresh token;
any 401 on refresh) mean the user must sign in again; the rest are transient and worth a retry.
No message or code carries a token: what the issuer says passes the request's `Scrubber`
(codexd/security/scrub.py), which cuts the secrets the request carried before it bounds the text.
"""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import anyio
import httpx
import msgspec

from codexd.auth.tokens import Secret
from codexd.security.scrub import GENERIC, Scrubber, request_values

CLIENT_ID: Final = "app_EMoamEEZ73f0CkXaXp7hrann"
DEFAULT_ISSUER: Final = "https://auth.openai.com"
SCOPE: Final = "openid profile email offline_access api.connectors.read api.connectors.invoke"
ORIGINATOR: Final = "codex_cli_rs"
DEFAULT_PORT: Final = 1455
FALLBACK_PORT: Final = 1457  # the other redirect URI the issuer has registered for this client
CALLBACK_PATH: Final = "/auth/callback"
REFRESH_URL_ENV: Final = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"
REVOKE_URL_ENV: Final = "CODEX_REVOKE_TOKEN_URL_OVERRIDE"
DEVICE_AUTH_TIMEOUT_S: Final = 15 * 60
MAX_DETAIL: Final = 300

RefreshReason = Literal["proactive_expiry", "unauthorized_recovery"]

# Codex's texts, followed by what to run here.
_SIGN_IN_AGAIN: Final = "Please log out and sign in again (codexctl login)."
REFRESH_MESSAGES: Final[Mapping[str, str]] = {
    "refresh_token_expired": "Your access token could not be refreshed because your refresh "
    f"token has expired. {_SIGN_IN_AGAIN}",
    "refresh_token_reused": "Your access token could not be refreshed because your refresh "
    f"token was already used. {_SIGN_IN_AGAIN}",
    "refresh_token_invalidated": "Your access token could not be refreshed because your "
    f"refresh token was revoked. {_SIGN_IN_AGAIN}",
}
REFRESH_MESSAGE_OTHER: Final = f"Your access token could not be refreshed. {_SIGN_IN_AGAIN}"


@dataclass(frozen=True, slots=True, repr=False)
class OAuthRequest:
    """One HTTP call to the issuer. The body holds secrets (also listed in `secrets`, so that
    an answer quoting them back is scrubbed): the repr shows only where it goes."""

    method: str
    url: str
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"OAuthRequest({self.method} {self.url})"

    @property
    def scrubber(self) -> Scrubber:
        return Scrubber(itertools.chain(self.secrets, request_values({}, self.url)))


class OAuthFailure(msgspec.Struct, frozen=True):
    message: str
    permanent: bool = False
    status: int | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class TokenGrant:
    """Tokens from the token endpoint; any of them may be absent on refresh."""

    id_token: Secret | None = None
    access_token: Secret | None = None
    refresh_token: Secret | None = None

    def __repr__(self) -> str:
        present = [n for n in ("id_token", "access_token", "refresh_token") if getattr(self, n)]
        return f"TokenGrant({', '.join(present)})"


@dataclass(frozen=True, slots=True)
class DeviceCode:
    device_auth_id: str
    user_code: str
    interval_s: float
    verification_url: str


@dataclass(frozen=True, slots=True)
class DevicePending:
    slow_down: bool = False


@dataclass(frozen=True, slots=True, repr=False)
class DeviceAuthorized:
    authorization_code: Secret
    code_verifier: Secret
    code_challenge: str | None

    def __repr__(self) -> str:
        return "DeviceAuthorized()"


# ---------------------------------------------------------------------- URLs


def _issuer(issuer: str) -> str:
    return issuer.rstrip("/")


def redirect_uri(port: int) -> str:
    return f"http://localhost:{port}{CALLBACK_PATH}"


def device_redirect_uri(issuer: str) -> str:
    return f"{_issuer(issuer)}/deviceauth/callback"


def device_verification_url(issuer: str) -> str:
    return f"{_issuer(issuer)}/codex/device"


def token_url(issuer: str) -> str:
    return f"{_issuer(issuer)}/oauth/token"


def refresh_url(issuer: str, env: Mapping[str, str]) -> str:
    return env.get(REFRESH_URL_ENV) or token_url(issuer)


def revoke_url(issuer: str, env: Mapping[str, str]) -> str:
    """The revoke override; else the refresh override with its path set to /oauth/revoke."""
    explicit = env.get(REVOKE_URL_ENV)
    if explicit:
        return explicit
    refresh_override = env.get(REFRESH_URL_ENV)
    if refresh_override:
        parts = urllib.parse.urlsplit(refresh_override)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/oauth/revoke", "", ""))
    return f"{_issuer(issuer)}/oauth/revoke"


def authorize_url(
    issuer: str,
    *,
    redirect: str,
    code_challenge: str,
    state: str,
    originator: str = ORIGINATOR,
    allowed_workspace_ids: tuple[str, ...] = (),
) -> str:
    """Codex's authorize URL, parameters in Codex's order."""
    params = [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", redirect),
        ("scope", SCOPE),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
        ("id_token_add_organizations", "true"),
        ("codex_cli_simplified_flow", "true"),
        ("state", state),
        ("originator", originator),
    ]
    if allowed_workspace_ids:
        params.append(("allowed_workspace_id", ",".join(allowed_workspace_ids)))
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    return f"{_issuer(issuer)}/oauth/authorize?{query}"


# ---------------------------------------------------------------------- request builders


def code_exchange_request(
    issuer: str, *, code: Secret, redirect: str, code_verifier: Secret
) -> OAuthRequest:
    return OAuthRequest(
        "POST",
        token_url(issuer),
        form={
            "grant_type": "authorization_code",
            "code": code.reveal(),
            "redirect_uri": redirect,
            "client_id": CLIENT_ID,
            "code_verifier": code_verifier.reveal(),
        },
        secrets=(code.reveal(), code_verifier.reveal()),
    )


def refresh_request(url: str, refresh_token: Secret, reason: RefreshReason) -> OAuthRequest:
    return OAuthRequest(
        "POST",
        url,
        json={
            "client_id": CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_reason": reason,
            "refresh_token": refresh_token.reveal(),
        },
        secrets=(refresh_token.reveal(),),
    )


def api_key_exchange_request(issuer: str, id_token: Secret) -> OAuthRequest:
    return OAuthRequest(
        "POST",
        token_url(issuer),
        form={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "client_id": CLIENT_ID,
            "requested_token": "openai-api-key",
            "subject_token": id_token.reveal(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        },
        secrets=(id_token.reveal(),),
    )


def revoke_request(
    url: str, *, refresh_token: Secret | None, access_token: Secret | None
) -> OAuthRequest | None:
    """The refresh token with the client id; else the access token without it (as Codex)."""
    if refresh_token:
        body = {
            "token": refresh_token.reveal(),
            "token_type_hint": "refresh_token",
            "client_id": CLIENT_ID,
        }
    elif access_token:
        body = {"token": access_token.reveal(), "token_type_hint": "access_token"}
    else:
        return None
    return OAuthRequest("POST", url, json=body, secrets=(body["token"],))


def device_code_request(issuer: str) -> OAuthRequest:
    return OAuthRequest(
        "POST",
        f"{_issuer(issuer)}/api/accounts/deviceauth/usercode",
        json={"client_id": CLIENT_ID},
    )


def device_poll_request(issuer: str, code: DeviceCode) -> OAuthRequest:
    return OAuthRequest(
        "POST",
        f"{_issuer(issuer)}/api/accounts/deviceauth/token",
        json={"device_auth_id": code.device_auth_id, "user_code": code.user_code},
        secrets=(code.device_auth_id,),
    )


# ---------------------------------------------------------------------- response parsers


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def _code_as_sent(body: bytes) -> str | None:
    obj = _json_object(body)
    if obj is None:
        return None
    err = obj.get("error")
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        return str(err["code"])
    if isinstance(err, str):
        return err
    if isinstance(obj.get("code"), str):
        return str(obj["code"])
    return None


def error_code(body: bytes) -> str | None:
    """`error.code` (object), `error` (string) or top-level `code`, lower-cased (Codex's rule).

    For decisions only: a code that is shown or returned is `shown_code`."""
    code = _code_as_sent(body)
    return code.lower() if code is not None else None


def shown_code(body: bytes, scrubber: Scrubber = GENERIC) -> str | None:
    """`error_code` as a client may see it: scrubbed before it is lower-cased, since what the
    issuer may have quoted back is the request's secret as sent."""
    code = scrubber.word(_code_as_sent(body))
    return code.lower() if code is not None else None


def error_detail(body: bytes, scrubber: Scrubber = GENERIC) -> str:
    """`error_description`, `error.message`, `error` / `error.code`; never the raw body.

    The raw body is left out on purpose, and the fields pass `scrubber`: a misbehaving server
    (or a proxy) could echo the request, tokens included, back.
    """
    obj = _json_object(body)
    if obj is None:
        return "(no JSON error body)"
    text: object = obj.get("error_description")
    err = obj.get("error")
    if not isinstance(text, str) and isinstance(err, dict):
        text = next((err[k] for k in ("message", "code") if isinstance(err.get(k), str)), None)
    if not isinstance(text, str) and isinstance(err, str):
        text = err
    if not isinstance(text, str):
        return "(no error detail)"
    return scrubber(text, MAX_DETAIL) or "(no error detail)"


def _secret_field(obj: Mapping[str, Any], name: str) -> Secret | None:
    value = obj.get(name)
    return Secret(value) if isinstance(value, str) and value else None


def parse_refresh_response(
    status: int, body: bytes, *, scrubber: Scrubber = GENERIC
) -> TokenGrant | OAuthFailure:
    """Codex's `classify_refresh_token_failure`: 401 or a known code is permanent."""
    if 200 <= status < 300:
        obj = _json_object(body)
        if obj is None:
            return OAuthFailure(
                f"Failed to refresh token: {status}: the response was not a JSON object",
                status=status,
            )
        return TokenGrant(
            id_token=_secret_field(obj, "id_token"),
            access_token=_secret_field(obj, "access_token"),
            refresh_token=_secret_field(obj, "refresh_token"),
        )
    code = error_code(body)
    if code is not None and code in REFRESH_MESSAGES:
        return OAuthFailure(REFRESH_MESSAGES[code], permanent=True, status=status, code=code)
    shown = shown_code(body, scrubber)
    if status == 401:
        return OAuthFailure(REFRESH_MESSAGE_OTHER, permanent=True, status=status, code=shown)
    return OAuthFailure(
        f"Failed to refresh token: {status}: {error_detail(body, scrubber)}",
        status=status,
        code=shown,
    )


def parse_code_exchange_response(
    status: int, body: bytes, *, scrubber: Scrubber = GENERIC
) -> TokenGrant | OAuthFailure:
    if 200 <= status < 300:
        obj = _json_object(body) or {}
        grant = TokenGrant(
            id_token=_secret_field(obj, "id_token"),
            access_token=_secret_field(obj, "access_token"),
            refresh_token=_secret_field(obj, "refresh_token"),
        )
        if grant.id_token and grant.access_token and grant.refresh_token:
            return grant
        return OAuthFailure(
            "the token endpoint's answer lacks id_token, access_token or refresh_token",
            permanent=True,
            status=status,
        )
    return OAuthFailure(
        f"token endpoint returned status {status}: {error_detail(body, scrubber)}",
        permanent=400 <= status < 500,
        status=status,
        code=shown_code(body, scrubber),
    )


def parse_api_key_exchange_response(status: int, body: bytes) -> Secret | OAuthFailure:
    if 200 <= status < 300:
        key = _secret_field(_json_object(body) or {}, "access_token")
        if key is not None:
            return key
    return OAuthFailure(f"api key exchange failed with status {status}", status=status)


def parse_device_code_response(
    issuer: str, status: int, body: bytes, *, scrubber: Scrubber = GENERIC
) -> DeviceCode | OAuthFailure:
    if status == 404:
        return OAuthFailure(
            "device code login is not enabled for this Codex server. Use the browser login or "
            "verify the server URL.",
            permanent=True,
            status=status,
        )
    obj = _json_object(body)
    if not 200 <= status < 300 or obj is None:
        return OAuthFailure(
            f"device code request failed with status {status}: {error_detail(body, scrubber)}",
            permanent=400 <= status < 500,
            status=status,
        )
    device_auth_id = obj.get("device_auth_id")
    user_code = obj.get("user_code") or obj.get("usercode")
    if not isinstance(device_auth_id, str) or not isinstance(user_code, str):
        return OAuthFailure(
            "the device code answer lacks device_auth_id or user_code",
            status=status,
        )
    return DeviceCode(
        device_auth_id=device_auth_id,
        user_code=user_code,
        interval_s=_interval(obj.get("interval")),
        verification_url=device_verification_url(issuer),
    )


def _interval(value: object) -> float:
    """The poll interval: Codex's server sends seconds as a string; RFC 8628 as a number."""
    try:
        seconds = float(value) if isinstance(value, str | int | float) else 5.0
    except ValueError:
        return 5.0
    return min(max(seconds, 0.0), 60.0) if seconds == seconds else 5.0


def parse_device_poll_response(
    status: int, body: bytes, *, scrubber: Scrubber = GENERIC
) -> DeviceAuthorized | DevicePending | OAuthFailure:
    """403/404 mean "not yet" on Codex's server; RFC 8628 error codes are understood too."""
    obj = _json_object(body) or {}
    if 200 <= status < 300:
        code = _secret_field(obj, "authorization_code")
        verifier = _secret_field(obj, "code_verifier")
        if code is None or verifier is None:
            return OAuthFailure(
                "the device token answer lacks authorization_code or code_verifier", status=status
            )
        challenge = obj.get("code_challenge")
        return DeviceAuthorized(code, verifier, challenge if isinstance(challenge, str) else None)
    err = error_code(body)
    if err == "slow_down":
        return DevicePending(slow_down=True)
    if err == "authorization_pending" or (status in (403, 404) and err is None):
        return DevicePending()
    if err == "expired_token":
        return OAuthFailure(
            "the device code expired: start the login again", permanent=True, status=status
        )
    if err == "access_denied":
        return OAuthFailure("the sign-in was denied", permanent=True, status=status, code=err)
    if status in (403, 404):
        return DevicePending()
    return OAuthFailure(
        f"device token poll failed with status {status}: {error_detail(body, scrubber)}",
        permanent=400 <= status < 500 and status != 429,
        status=status,
        code=shown_code(body, scrubber),
    )


# ---------------------------------------------------------------------- the httpx shell


class OAuthClient:
    """Sends the requests above with a caller-owned `httpx.AsyncClient`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        issuer: str = DEFAULT_ISSUER,
        env: Mapping[str, str] | None = None,
        *,
        timeout_s: float = 30.0,
    ) -> None:
        self.http = http
        self.issuer = issuer
        self.env: Mapping[str, str] = env or {}
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"OAuthClient({self.issuer})"

    async def send(self, req: OAuthRequest) -> tuple[int, bytes] | OAuthFailure:
        try:
            response = await self.http.request(
                req.method,
                req.url,
                json=req.json,
                data=req.form,
                headers={"accept": "application/json"},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            host = urllib.parse.urlsplit(req.url).netloc.rpartition("@")[2]  # no userinfo
            return OAuthFailure(f"cannot reach {host}: {type(exc).__name__}")
        return response.status_code, response.content

    async def refresh(
        self, refresh_token: Secret, reason: RefreshReason
    ) -> TokenGrant | OAuthFailure:
        req = refresh_request(refresh_url(self.issuer, self.env), refresh_token, reason)
        sent = await self.send(req)
        if isinstance(sent, OAuthFailure):
            return sent
        return parse_refresh_response(*sent, scrubber=req.scrubber)

    async def exchange_code(
        self, code: Secret, *, redirect: str, code_verifier: Secret
    ) -> TokenGrant | OAuthFailure:
        req = code_exchange_request(
            self.issuer, code=code, redirect=redirect, code_verifier=code_verifier
        )
        sent = await self.send(req)
        if isinstance(sent, OAuthFailure):
            return sent
        return parse_code_exchange_response(*sent, scrubber=req.scrubber)

    async def exchange_api_key(self, id_token: Secret) -> Secret | OAuthFailure:
        sent = await self.send(api_key_exchange_request(self.issuer, id_token))
        return sent if isinstance(sent, OAuthFailure) else parse_api_key_exchange_response(*sent)

    async def revoke(self, *, refresh_token: Secret | None, access_token: Secret | None) -> bool:
        """Best effort (10 s, as Codex): True when the issuer accepted the revocation."""
        req = revoke_request(
            revoke_url(self.issuer, self.env),
            refresh_token=refresh_token,
            access_token=access_token,
        )
        if req is None:
            return False
        with anyio.move_on_after(10):
            sent = await self.send(req)
            return not isinstance(sent, OAuthFailure) and 200 <= sent[0] < 300
        return False

    async def start_device_code(self) -> DeviceCode | OAuthFailure:
        req = device_code_request(self.issuer)
        sent = await self.send(req)
        if isinstance(sent, OAuthFailure):
            return sent
        return parse_device_code_response(self.issuer, *sent, scrubber=req.scrubber)

    async def poll_device_code(
        self, code: DeviceCode
    ) -> DeviceAuthorized | DevicePending | OAuthFailure:
        req = device_poll_request(self.issuer, code)
        sent = await self.send(req)
        if isinstance(sent, OAuthFailure):
            return DevicePending()  # a dropped poll is retried at the next interval
        return parse_device_poll_response(*sent, scrubber=req.scrubber)

    async def wait_for_device_code(
        self, code: DeviceCode, *, timeout_s: float = DEVICE_AUTH_TIMEOUT_S
    ) -> DeviceAuthorized | OAuthFailure:
        """Poll at the server's interval (+5 s on slow_down) until authorized, refused or expired.

        Cancel the caller's scope to abandon the login.
        """
        interval = code.interval_s
        with anyio.move_on_after(timeout_s):
            while True:
                result = await self.poll_device_code(code)
                if not isinstance(result, DevicePending):
                    return result
                if result.slow_down:
                    interval += 5.0
                await anyio.sleep(interval)
        return OAuthFailure(
            f"device auth timed out after {timeout_s / 60:g} minutes", permanent=True
        )
