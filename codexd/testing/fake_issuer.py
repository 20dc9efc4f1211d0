"""A fake of OpenAI's OAuth issuer (auth.openai.com) on 127.0.0.1, as Codex uses it.

Endpoints (as the real issuer serves them):
- `GET /oauth/authorize`: checks client id, redirect URI (only Codex's registered
  http://localhost:1455|1457/auth/callback), PKCE S256 challenge; redirects straight back with
  `code` and `state`, so tests need no browser.
- `POST /oauth/token`: `authorization_code` (form; PKCE verifier checked, codes single-use),
  `refresh_token` (JSON; refresh tokens single-use, check-and-spend atomic; a reused one gets
  the real `refresh_token_reused` 401), and the id_token → API-key token exchange.
- `POST /oauth/revoke`; device code: `POST /api/accounts/deviceauth/usercode`,
  `POST /api/accounts/deviceauth/token` (403 `authorization_pending` until `approve_device()`),
  `GET /codex/device` (the verification page).

Tokens are unsigned but well formed JWTs with the claims Codex reads. Serve it alone
(`FakeIssuer.running()`, `await tg.start(issuer.serve)`) or on a FakeOpenAI's server
(`FakeOpenAI(issuer=FakeIssuer())`), which then also accepts only this issuer's live access
tokens on its ChatGPT paths.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import anyio
import anyio.abc
import msgspec

from codexd.testing.http import (
    HttpServer,
    Request,
    Responder,
    StatsCell,
    add_counts,
    serve_in_thread,
)

CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
REGISTERED_REDIRECT_URIS = frozenset(
    {"http://localhost:1455/auth/callback", "http://localhost:1457/auth/callback"}
)
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
AUTH_CLAIM = "https://api.openai.com/auth"
PROFILE_CLAIM = "https://api.openai.com/profile"
ISSUER_PATHS = (
    "/oauth/authorize",
    "/oauth/token",
    "/oauth/revoke",
    "/api/accounts/deviceauth/usercode",
    "/api/accounts/deviceauth/token",
    "/codex/device",
)
DEFAULT_MAX_LOG = 10_000
DEVICE_PAGE = b"<!DOCTYPE html><html><body>Enter the code shown in your terminal.</body></html>"

RefreshFailure = Literal[
    "refresh_token_reused", "refresh_token_expired", "refresh_token_invalidated"
]

REFRESH_FAILURE_MESSAGES: Mapping[str, str] = {
    # The reused text is the real server's; the other two follow its form.
    "refresh_token_reused": (
        "Your refresh token has already been used to generate a new access token. Please try"
        " signing in again."
    ),
    "refresh_token_expired": "Your refresh token has expired. Please try signing in again.",
    "refresh_token_invalidated": (
        "Your refresh token has been invalidated. Please try signing in again."
    ),
}

_encoder = msgspec.json.Encoder()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    """S256: base64url-no-pad(sha256(verifier))."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def make_jwt(claims: Mapping[str, Any]) -> str:
    """An unsigned but well-formed JWT: three non-empty base64url parts."""
    header = b64url(_encoder.encode({"alg": "RS256", "typ": "JWT", "kid": "fake-issuer"}))
    return f"{header}.{b64url(_encoder.encode(claims))}.{b64url(b'unsigned')}"


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified (as Codex reads it)."""
    payload = token.split(".")[1]
    decoded = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(decoded, dict)
    return decoded


def refresh_failure(code: RefreshFailure) -> tuple[int, bytes]:
    """The token endpoint's 401 for a refresh token that can no longer be used."""
    body = {
        "error": {
            "message": REFRESH_FAILURE_MESSAGES[code],
            "type": "invalid_request_error",
            "param": None,
            "code": code,
        }
    }
    return 401, _encoder.encode(body)


def oauth_error(error: str, description: str) -> bytes:
    return _encoder.encode({"error": error, "error_description": description})


@dataclass(frozen=True, slots=True)
class Tokens:
    id_token: str
    access_token: str
    refresh_token: str
    account_id: str

    def as_token_response(self) -> dict[str, Any]:
        return {
            "id_token": self.id_token,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
        }


@dataclass(frozen=True, slots=True)
class TokenReply:
    """A scripted answer of the token endpoint, used instead of the real handling (nothing is
    spent): e.g. `TokenReply(500, ...)` for a transient failure."""

    status: int
    body: bytes
    delay_s: float = 0.0


def transient_failure(status: int = 503) -> TokenReply:
    return TokenReply(status, oauth_error("temporarily_unavailable", "Please try again later."))


@dataclass(frozen=True, slots=True)
class IssuerStats:
    requests: int = 0
    authorizations: int = 0  # codes handed out by /oauth/authorize
    code_exchanges: int = 0  # successful authorization_code grants
    refresh_attempts: int = 0  # refresh_token grants received
    refreshes: int = 0  # successful refreshes
    refreshes_in_flight: int = 0
    peak_concurrent_refreshes: int = 0
    reuses: int = 0  # refresh tokens presented again after they were spent
    refresh_rejections: int = 0  # every refresh answered 401 (reused, expired, invalidated)
    token_exchanges: int = 0  # id_token → API key
    revocations: int = 0
    device_codes: int = 0
    device_polls: int = 0
    scripted: int = 0


_PEAKS = {"refreshes_in_flight": "peak_concurrent_refreshes"}


@dataclass(frozen=True, slots=True)
class IssuerRecord:
    method: str
    path: str
    headers: Mapping[str, str]
    params: Mapping[str, Any]  # query (GET) or decoded JSON/form body
    time: float
    status: int


@dataclass(slots=True)
class _RefreshToken:
    family: int
    state: Literal["live", "spent", "expired", "invalidated"] = "live"


@dataclass(slots=True)
class _Code:
    challenge: str
    redirect_uri: str
    client_id: str


@dataclass(slots=True)
class _Device:
    device_auth_id: str
    user_code: str
    approved: bool = False
    verifier: str = ""
    code: str = ""


class FakeIssuer:
    """The fake issuer. Public methods are safe to call from any thread."""

    def __init__(
        self,
        *,
        email: str = "user@example.com",
        plan_type: str = "plus",
        account_id: str = "acct_fake0001",
        user_id: str = "user-fake0001",
        client_id: str = CLIENT_ID,
        access_ttl_s: float = 3600.0,
        refresh_delay_s: float = 0.0,
        revoke_family_on_reuse: bool = False,
        device_interval_s: int = 5,
        device_code_enabled: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        wall_clock: Callable[[], float] = time.time,
        max_log: int = DEFAULT_MAX_LOG,
    ) -> None:
        self.email = email
        self.plan_type = plan_type
        self.account_id = account_id
        self.user_id = user_id
        self.client_id = client_id
        self.access_ttl_s = access_ttl_s
        self.refresh_delay_s = refresh_delay_s
        self.revoke_family_on_reuse = revoke_family_on_reuse
        self.device_interval_s = device_interval_s
        self.device_code_enabled = device_code_enabled
        self._wall = wall_clock
        self._host = host
        self._server = HttpServer(self.handle, host=host, port=port)
        self._origin: str | None = None

        self._lock = threading.Lock()
        self._stats = StatsCell(IssuerStats())
        self._log: deque[IssuerRecord] = deque(maxlen=max_log)
        self._script: deque[tuple[str | None, TokenReply]] = deque()
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._access_tokens: dict[str, float] = {}  # token → exp (unix seconds)
        self._revoked_access: set[str] = set()
        self._id_tokens: set[str] = set()
        self._devices: dict[str, _Device] = {}
        self._families = itertools.count(1)
        self._serial = itertools.count(1)
        self._denial: tuple[str, str] | None = None
        self._refreshes_held = False

    # -- addresses and running ------------------------------------------------------------

    @property
    def origin(self) -> str:
        """The issuer URL (`[codexd] auth_issuer`): http://127.0.0.1:PORT"""
        if self._origin is None:
            raise RuntimeError("the fake issuer is not serving yet")
        return self._origin

    @property
    def token_url(self) -> str:
        """As CODEX_REFRESH_TOKEN_URL_OVERRIDE."""
        return f"{self.origin}/oauth/token"

    @property
    def verification_url(self) -> str:
        return f"{self.origin}/codex/device"

    def mount(self, origin: str) -> None:
        """Served by another fake's server at `origin`."""
        self._origin = origin

    def bind_loop(self) -> None:
        self._stats.bind_loop()

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; `await tg.start(issuer.serve)` returns `origin`."""
        self.bind_loop()
        async with anyio.create_task_group() as tg:
            port = await tg.start(self._server.serve)
            self._origin = f"http://{self._host}:{port}"
            task_status.started(self._origin)

    @classmethod
    @contextmanager
    def running(cls, **kwargs: Any) -> Iterator[FakeIssuer]:
        issuer = cls(**kwargs)
        with serve_in_thread(issuer.serve, name="fake-issuer"):
            yield issuer

    # -- control --------------------------------------------------------------------------

    def issue_tokens(
        self, *, access_ttl_s: float | None = None, email: str | None = None
    ) -> Tokens:
        """Mint a fresh login (a new refresh-token family) without any HTTP, e.g. to write an
        auth.json for a test; `access_ttl_s` may be negative for an already expired token."""
        with self._lock:
            return self._mint(next(self._families), access_ttl_s, email)

    def script(self, *replies: TokenReply, grant_type: str | None = None) -> None:
        """Answer the next token requests (of `grant_type`, if given) with these replies
        instead of handling them."""
        with self._lock:
            for reply in replies:
                self._script.append((grant_type, reply))

    def expire_refresh_token(self, token: str) -> None:
        self._set_refresh_state(token, "expired")

    def invalidate_refresh_token(self, token: str) -> None:
        self._set_refresh_state(token, "invalidated")

    def invalidate_all_refresh_tokens(self) -> None:
        with self._lock:
            for record in self._refresh_tokens.values():
                if record.state == "live":
                    record.state = "invalidated"

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (the ChatGPT paths answer 401)."""
        with self._lock:
            now = self._wall()
            for token in self._access_tokens:
                self._access_tokens[token] = min(self._access_tokens[token], now - 1)

    def deny_next_authorize(
        self, error: str = "access_denied", description: str = "The user denied access."
    ) -> None:
        with self._lock:
            self._denial = (error, description)

    def approve_device(self, user_code: str | None = None) -> str:
        """Approve the device login with `user_code` (default: the latest one); returns the
        user code approved."""
        with self._lock:
            pending = [d for d in self._devices.values() if not d.approved]
            if user_code is not None:
                pending = [d for d in pending if d.user_code == user_code]
            if not pending:
                raise LookupError("no pending device login to approve")
            device = pending[-1]
            device.approved = True
            device.verifier = b64url(secrets.token_bytes(64))
            device.code = f"ac_fake_{secrets.token_hex(16)}"
            self._codes[device.code] = _Code(
                challenge=pkce_challenge(device.verifier),
                redirect_uri=f"{self.origin}/deviceauth/callback",
                client_id=self.client_id,
            )
            return device.user_code

    def hold_refreshes(self) -> None:
        """Refresh requests wait (counted in flight, their token already checked and spent)
        until `release_refreshes()`: a deterministic way to make them overlap."""
        with self._lock:
            self._refreshes_held = True

    def release_refreshes(self) -> None:
        with self._lock:
            self._refreshes_held = False
        self._stats.poke()

    def _held(self) -> bool:
        with self._lock:
            return self._refreshes_held

    def refresh_token_state(self, token: str) -> str:
        """live, spent, expired, invalidated or unknown."""
        with self._lock:
            record = self._refresh_tokens.get(token)
            return record.state if record else "unknown"

    def access_token_failure(self, token: str) -> Literal["expired", "unknown"] | None:
        """Why this bearer token would be refused (None: it is live)."""
        with self._lock:
            if token in self._revoked_access:
                return "expired"
            exp = self._access_tokens.get(token)
        if exp is None:
            return "unknown"
        return "expired" if exp <= self._wall() else None

    @property
    def requests(self) -> list[IssuerRecord]:
        with self._lock:
            return list(self._log)

    def stats(self) -> IssuerStats:
        return self._stats.value

    def wait_for(
        self, predicate: Callable[[IssuerStats], bool], timeout: float = 10.0
    ) -> IssuerStats:
        return self._stats.wait_for(predicate, timeout)

    async def wait_until(self, predicate: Callable[[IssuerStats], bool]) -> IssuerStats:
        return await self._stats.wait_until(predicate)

    # -- internals ------------------------------------------------------------------------

    def _update(self, **changes: int) -> None:
        self._stats.update(lambda s: add_counts(s, _PEAKS, **changes))

    def _set_refresh_state(self, token: str, state: Literal["expired", "invalidated"]) -> None:
        with self._lock:
            record = self._refresh_tokens.get(token)
            if record is None:
                raise LookupError("unknown refresh token")
            record.state = state

    def _mint(self, family: int, access_ttl_s: float | None, email: str | None) -> Tokens:
        """New tokens in `family`; the caller holds the lock."""
        now = int(self._wall())
        serial = next(self._serial)
        ttl = self.access_ttl_s if access_ttl_s is None else access_ttl_s
        email = email or self.email
        auth = {
            "chatgpt_account_id": self.account_id,
            "chatgpt_plan_type": self.plan_type,
            "chatgpt_user_id": self.user_id,
            "user_id": self.user_id,
        }
        id_token = make_jwt(
            {
                "iss": self._origin or "http://127.0.0.1",
                "aud": [self.client_id],
                "sub": f"auth0|{self.user_id}",
                "email": email,
                "email_verified": True,
                "iat": now,
                "auth_time": now,
                "exp": now + 3600,
                "jti": f"id-{serial}",
                AUTH_CLAIM: {
                    **auth,
                    "organization_id": "org-fake",
                    "project_id": "proj_fake",
                    "completed_platform_onboarding": True,
                    "is_org_owner": True,
                },
            }
        )
        exp = now + ttl
        access_token = make_jwt(
            {
                "iss": self._origin or "http://127.0.0.1",
                "aud": ["https://api.openai.com/v1"],
                "sub": f"auth0|{self.user_id}",
                "client_id": self.client_id,
                "iat": now,
                "exp": int(exp),
                "jti": f"at-{serial}",
                "scp": ["openid", "profile", "email", "offline_access"],
                AUTH_CLAIM: auth,
                PROFILE_CLAIM: {"email": email, "email_verified": True},
            }
        )
        refresh_token = f"rt_fake_{serial}_{secrets.token_hex(20)}"
        self._refresh_tokens[refresh_token] = _RefreshToken(family)
        self._access_tokens[access_token] = exp
        self._id_tokens.add(id_token)
        return Tokens(id_token, access_token, refresh_token, self.account_id)

    def _record(self, request: Request, params: Mapping[str, Any], status: int) -> None:
        record = IssuerRecord(
            request.method, request.path, request.headers, params, time.monotonic(), status
        )
        with self._lock:
            self._log.append(record)

    @staticmethod
    def owns(path: str) -> bool:
        return path in ISSUER_PATHS

    async def handle(self, request: Request, responder: Responder) -> None:
        """Answer an issuer request; leaves other paths alone (nothing sent)."""
        if not self.owns(request.path):
            return
        self._update(requests=1)
        params = _params(request)
        status, body, content_type, headers = await self._route(request, params)
        self._record(request, params, status)
        await responder.send(status, body, content_type=content_type, headers=headers)

    async def _route(
        self, request: Request, params: dict[str, Any]
    ) -> tuple[int, bytes, str, list[tuple[str, str]]]:
        json_type = "application/json"
        match (request.method, request.path):
            case ("GET", "/oauth/authorize"):
                return self._authorize(params)
            case ("POST", "/oauth/token"):
                status, body = await self._token(params)
                return status, body, json_type, []
            case ("POST", "/oauth/revoke"):
                status, body = self._revoke(params)
                return status, body, json_type, []
            case ("POST", "/api/accounts/deviceauth/usercode"):
                status, body = self._device_usercode(params)
                return status, body, json_type, []
            case ("POST", "/api/accounts/deviceauth/token"):
                status, body = self._device_token(params)
                return status, body, json_type, []
            case ("GET", "/codex/device"):
                return 200, DEVICE_PAGE, "text/html; charset=utf-8", []
        return 405, oauth_error("invalid_request", "Method not allowed."), json_type, []

    def _authorize(
        self, params: Mapping[str, Any]
    ) -> tuple[int, bytes, str, list[tuple[str, str]]]:
        def refuse(description: str) -> tuple[int, bytes, str, list[tuple[str, str]]]:
            return 400, oauth_error("invalid_request", description), "application/json", []

        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id:
            return refuse("Unknown client_id.")
        if redirect_uri not in REGISTERED_REDIRECT_URIS:
            return refuse("The redirect_uri is not registered for this client.")
        if params.get("response_type") != "code":
            return refuse("response_type must be code.")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return refuse("A PKCE code_challenge with method S256 is required.")
        state = params.get("state", "")
        with self._lock:
            denial, self._denial = self._denial, None
            if denial is None:
                code = f"ac_fake_{secrets.token_hex(16)}"
                self._codes[code] = _Code(params["code_challenge"], redirect_uri, self.client_id)
        if denial is not None:
            query = {"error": denial[0], "error_description": denial[1], "state": state}
        else:
            self._update(authorizations=1)
            query = {"code": code, "state": state}
        location = f"{redirect_uri}?{urlencode(query)}"
        return 302, b"", "text/plain", [("location", location)]

    def _take_script(self, grant_type: str) -> TokenReply | None:
        with self._lock:
            index = next(
                (i for i, (only, _) in enumerate(self._script) if only in (None, grant_type)),
                None,
            )
            if index is None:
                return None
            reply = self._script[index][1]
            del self._script[index]
        self._update(scripted=1)
        return reply

    async def _token(self, params: Mapping[str, Any]) -> tuple[int, bytes]:
        grant_type = str(params.get("grant_type", ""))
        refreshing = grant_type == "refresh_token"
        if refreshing:
            self._update(refresh_attempts=1, refreshes_in_flight=1)
        try:
            scripted = self._take_script(grant_type)
            if scripted is not None:
                if scripted.delay_s:
                    await anyio.sleep(scripted.delay_s)
                return scripted.status, scripted.body
            if params.get("client_id") != self.client_id:
                return 401, oauth_error("invalid_client", "Unknown client_id.")
            if grant_type == "authorization_code":
                return self._exchange_code(params)
            if refreshing:
                status, body = self._refresh(params)
                await self._stats.wait_until(lambda _: not self._held())
                if self.refresh_delay_s:
                    await anyio.sleep(self.refresh_delay_s)
                return status, body
            if grant_type == TOKEN_EXCHANGE_GRANT:
                return self._exchange_id_token(params)
            return 400, oauth_error(
                "unsupported_grant_type", f"Unsupported grant type {grant_type!r}."
            )
        finally:
            if refreshing:
                self._update(refreshes_in_flight=-1)

    def _exchange_code(self, params: Mapping[str, Any]) -> tuple[int, bytes]:
        code = str(params.get("code", ""))
        verifier = str(params.get("code_verifier", ""))
        with self._lock:
            record = self._codes.pop(code, None)  # single use, even when the rest is wrong
            if record is None:
                return 400, oauth_error("invalid_grant", "Invalid authorization code.")
            if params.get("redirect_uri") != record.redirect_uri:
                return 400, oauth_error("invalid_grant", "redirect_uri does not match.")
            if pkce_challenge(verifier) != record.challenge:
                return 400, oauth_error("invalid_grant", "Invalid code_verifier.")
            tokens = self._mint(next(self._families), None, None)
        self._update(code_exchanges=1)
        return 200, _encoder.encode(
            {
                **tokens.as_token_response(),
                "token_type": "Bearer",
                "expires_in": int(self.access_ttl_s),
            }
        )

    def _refresh(self, params: Mapping[str, Any]) -> tuple[int, bytes]:
        token = str(params.get("refresh_token", ""))
        # Check and spend under one lock with no await in between: two refreshes with one token
        # can never both succeed.
        with self._lock:
            record = self._refresh_tokens.get(token)
            failure: RefreshFailure | None = None
            if record is None or record.state == "invalidated":
                failure = "refresh_token_invalidated"
            elif record.state == "expired":
                failure = "refresh_token_expired"
            elif record.state == "spent":
                failure = "refresh_token_reused"
                if self.revoke_family_on_reuse:
                    for other in self._refresh_tokens.values():
                        if other.family == record.family and other.state == "live":
                            other.state = "invalidated"
            else:
                record.state = "spent"
                tokens = self._mint(record.family, None, None)
        if failure is not None:
            self._update(refresh_rejections=1, reuses=int(failure == "refresh_token_reused"))
            return refresh_failure(failure)
        self._update(refreshes=1)
        return 200, _encoder.encode(tokens.as_token_response())

    def _exchange_id_token(self, params: Mapping[str, Any]) -> tuple[int, bytes]:
        subject = str(params.get("subject_token", ""))
        with self._lock:
            known = subject in self._id_tokens
        if (
            params.get("requested_token") != "openai-api-key"
            or params.get("subject_token_type") != ID_TOKEN_TYPE
            or not known
        ):
            return 400, oauth_error("invalid_grant", "Invalid subject token.")
        self._update(token_exchanges=1)
        key = f"sk-fake-{hashlib.sha256(subject.encode()).hexdigest()[:32]}"
        return 200, _encoder.encode(
            {
                "access_token": key,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
            }
        )

    def _revoke(self, params: Mapping[str, Any]) -> tuple[int, bytes]:
        token = str(params.get("token", ""))
        with self._lock:
            record = self._refresh_tokens.get(token)
            if record is not None:
                for other in self._refresh_tokens.values():
                    if other.family == record.family and other.state == "live":
                        other.state = "invalidated"
            elif token in self._access_tokens:
                self._revoked_access.add(token)
        self._update(revocations=1)
        return 200, b"{}"

    def _device_usercode(self, params: Mapping[str, Any]) -> tuple[int, bytes]:
        if not self.device_code_enabled:
            return 404, oauth_error("not_found", "Not found.")
        if params.get("client_id") != self.client_id:
            return 401, oauth_error("invalid_client", "Unknown client_id.")
        letters = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        user_code = "-".join("".join(secrets.choice(letters) for _ in range(4)) for _ in range(2))
        device = _Device(f"deviceauth_{secrets.token_hex(12)}", user_code)
        with self._lock:
            self._devices[device.device_auth_id] = device
        self._update(device_codes=1)
        return 200, _encoder.encode(
            {
                "device_auth_id": device.device_auth_id,
                "user_code": user_code,
                "interval": str(self.device_interval_s),
            }
        )

    def _device_token(self, params: Mapping[str, Any]) -> tuple[int, bytes]:
        self._update(device_polls=1)
        with self._lock:
            device = self._devices.get(str(params.get("device_auth_id", "")))
            if device is None or device.user_code != params.get("user_code"):
                return 404, oauth_error("not_found", "Unknown device authorization.")
            if not device.approved:
                return 403, oauth_error(
                    "authorization_pending", "The user has not approved this device yet."
                )
            del self._devices[device.device_auth_id]
        return 200, _encoder.encode(
            {
                "authorization_code": device.code,
                "code_challenge": pkce_challenge(device.verifier),
                "code_verifier": device.verifier,
            }
        )


def _params(request: Request) -> dict[str, Any]:
    if request.method == "GET":
        return dict(request.query)
    if not request.body:
        return {}
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            decoded = request.json()
        except msgspec.DecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return request.form()
