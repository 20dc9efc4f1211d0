"""Login flows as Codex runs them, owned by the daemon: browser PKCE, device code, API key.

Every login is a task in the `LoginManager`'s task group, known by its `login_id`:
- browser: a loopback callback server on 127.0.0.1:1455 (else 1457: the only redirect URIs the
  issuer has registered for Codex's client id) waits for `/auth/callback`, checks `state`,
  exchanges the code (PKCE), trades the id_token for an API key (best effort) and answers the
  browser with a page saying how it went;
- device: the user code and verification URL are fetched up front; the issuer is polled at its
  interval until the user approves, then the code is exchanged like the browser's;
- api_key: stored as `codex login --with-api-key` stores it; with `verify`, only once the
  provider took it (one `GET /models`): a 401 refuses it, and so does no answer at all.

A login ends exactly once, with a `LoginOutcome` handed to `on_finished`: success, failure,
cancellation (`cancel()`), or the timeout. Nothing here logs or returns a secret.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import anyio
import anyio.abc

from codexctl.protocol import ErrorKind, RpcError
from codexd.auth.authfile import AuthDocument, LockTimeout
from codexd.auth.oauth import (
    CALLBACK_PATH,
    DEFAULT_PORT,
    FALLBACK_PORT,
    DeviceCode,
    OAuthClient,
    OAuthFailure,
    TokenGrant,
    authorize_url,
    device_redirect_uri,
    redirect_uri,
)
from codexd.auth.pkce import generate_pkce, generate_state
from codexd.auth.stores import StoreError
from codexd.auth.tokens import Secret
from codexd.security.scrub import scrub

log = logging.getLogger("codexd.auth")

LoginMethod = Literal["browser", "device", "api_key"]

DEFAULT_MAX_CONCURRENT: Final = 8
DEFAULT_TIMEOUT_S: Final = 15 * 60  # Codex's device code lifetime; the browser gets the same
CALLBACK_PORTS: Final = (DEFAULT_PORT, FALLBACK_PORT)
CALLBACK_HOST: Final = "127.0.0.1"
MAX_REQUEST_HEAD: Final = 8192
CONNECTION_TIMEOUT_S: Final = 10.0
MAX_CALLBACK_CONNECTIONS: Final = 16
RECENT_LOGINS: Final = 256  # finished login ids remembered for account/login/cancel
# How long a finished login waits for the reply that announced it (a reply comes
# before the notifications it causes); bounded so a lost reply cannot hold a login forever.
ANNOUNCE_WAIT_S: Final = 5.0
MAX_API_KEY_LEN: Final = 4096


class LoginSession(Protocol):
    """What a login needs of the auth session."""

    async def save_login(self, doc: AuthDocument) -> None: ...


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    success: bool
    error: str | None = None


@dataclass(eq=False)
class Login:
    """One login in progress. `owner` is whoever started it (the RPC connection)."""

    login_id: str
    method: LoginMethod
    owner: Any = None
    auth_url: str | None = None
    verification_url: str | None = None
    user_code: str | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    announced: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: LoginOutcome | None = None
    cancel_reason: str | None = None
    # What the flow's task needs, set by the manager when it prepares the login.
    _flow: Any = None

    def __repr__(self) -> str:
        state = "done" if self.done.is_set() else "pending"
        return f"<Login {self.login_id} {self.method} {state}>"


# ---------------------------------------------------------------------- the callback (pure)


@dataclass(frozen=True, slots=True)
class CallbackCode:
    code: Secret


@dataclass(frozen=True, slots=True)
class CallbackFailure:
    """The sign-in ended without a code; `message` is for the person."""

    message: str


@dataclass(frozen=True, slots=True)
class CallbackIgnored:
    """Not the answer we wait for (wrong state, another path): answer it, keep waiting."""

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class CallbackCancel:
    """`GET /cancel`: Codex's way for a newer login to take the port over."""


CallbackResult = CallbackCode | CallbackFailure | CallbackIgnored | CallbackCancel


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """`(method, target)` of an HTTP/1.x request head, or None when it is not one."""
    line, _, _ = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        return parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None


def interpret_callback(method: str, target: str, expected_state: str) -> CallbackResult:
    """Codex's callback rules, as a value."""
    if method != "GET":
        return CallbackIgnored(405, "Method not allowed.")
    parts = urllib.parse.urlsplit(target)
    if parts.path == "/cancel":
        return CallbackCancel()
    if parts.path != CALLBACK_PATH:
        return CallbackIgnored(404, "Not found.")
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    if not secrets.compare_digest(query.get("state", "").encode(), expected_state.encode()):
        return CallbackIgnored(400, "State mismatch.")
    error = query.get("error")
    if error:
        description = query.get("error_description") or ""
        if error == "access_denied" and "missing_codex_entitlement" in description:
            return CallbackFailure(
                "Codex is not enabled for your workspace. Contact your workspace administrator "
                "to request access to Codex."
            )
        return CallbackFailure(f"Sign-in failed: {scrub(description or error, 300)}")
    code = query.get("code")
    if not code:
        return CallbackFailure("Missing authorization code. Sign-in could not be completed.")
    return CallbackCode(Secret(code))


def _html_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def page(title: str, message: str) -> bytes:
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>codexd</title></head>'
        f"<body><h1>{_html_escape(title)}</h1><p>{_html_escape(message)}</p></body></html>"
    ).encode()


def http_response(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(
        status, "Error"
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def validate_api_key(key: str) -> str:
    """The key as given, stripped; RpcError invalid_params names what is wrong (never the key)."""
    key = key.strip()
    if not key:
        raise RpcError(ErrorKind.INVALID_PARAMS, "invalid params: the API key is empty")
    if len(key) > MAX_API_KEY_LEN or any(c.isspace() or not c.isprintable() for c in key):
        raise RpcError(
            ErrorKind.INVALID_PARAMS,
            "invalid params: the API key must be one line of printable characters without spaces",
        )
    return key


# ---------------------------------------------------------------------- the manager


@dataclass(slots=True)
class _BrowserFlow:
    listener: anyio.abc.SocketListener
    redirect: str
    state: str
    verifier: Secret


@dataclass(slots=True)
class _DeviceFlow:
    code: DeviceCode


@dataclass(slots=True, repr=False)
class _ApiKeyFlow:
    key: Secret


class _CallbackServer:
    """The browser login's local callback server: accepts connections (a bounded number at
    once), reads each request, answers it, and on the redirect with a code exchanges it. The
    first outcome (signed in, failed, cancelled) stops it."""

    def __init__(self, flows: LoginManager, flow: _BrowserFlow) -> None:
        self._flows = flows
        self._flow = flow
        self._result: list[LoginOutcome] = []
        self._slots = anyio.Semaphore(MAX_CALLBACK_CONNECTIONS)
        self._exchanging = anyio.Lock()

    async def run(self) -> LoginOutcome:
        """Serve until an outcome (or the listener closes)."""
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    stream = await self._flow.listener.accept()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    break
                if self._slots.value == 0:
                    await stream.aclose()
                    continue
                await self._slots.acquire()
                tg.start_soon(self._serve_one, stream, tg.cancel_scope)
        if self._result:
            return self._result[0]
        return LoginOutcome(False, "the sign-in callback server stopped")

    async def _serve_one(self, stream: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
        try:
            await self._handle(stream, scope)
        finally:
            self._slots.release()

    def _finish(self, outcome: LoginOutcome, scope: anyio.CancelScope) -> None:
        if not self._result:
            self._result.append(outcome)
        scope.cancel()

    async def _handle(self, stream: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
        """One connection: read its request head (bounded in time), then answer it."""
        async with stream:
            try:
                with anyio.fail_after(CONNECTION_TIMEOUT_S):
                    head = await _read_head(stream)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            request = parse_request_line(head) if head else None
            if request is None:
                await _reply(stream, 400, page("Bad request", "This is not an HTTP request."))
                return
            await self._answer(stream, interpret_callback(*request, self._flow.state), scope)

    async def _answer(
        self, stream: anyio.abc.SocketStream, answer: CallbackResult, scope: anyio.CancelScope
    ) -> None:
        match answer:
            case CallbackIgnored(status, message):
                await _reply(stream, status, page("codexd sign-in", message))
            case CallbackCancel():
                await _reply(stream, 200, page("Login cancelled", "Login cancelled."))
                self._finish(
                    LoginOutcome(False, "the login was cancelled by another sign-in"), scope
                )
            case CallbackFailure(message):
                await _reply(stream, 200, page("Sign-in failed", message))
                self._finish(LoginOutcome(False, message), scope)
            case CallbackCode(code):
                await self._exchange(stream, code, scope)

    async def _exchange(
        self, stream: anyio.abc.SocketStream, code: Secret, scope: anyio.CancelScope
    ) -> None:
        """The redirect with a code: exchange it (once) and tell the browser how it went."""
        if self._exchanging.locked() or self._result:
            await _reply(stream, 400, page("codexd sign-in", "This sign-in is already done."))
            return
        async with self._exchanging:
            flow = self._flow
            outcome = await self._flows._exchange_and_save(
                code, redirect=flow.redirect, verifier=flow.verifier, api_key=True
            )
        if outcome.success:
            await _reply(
                stream,
                200,
                page(
                    "Signed in to codexd",
                    "You are signed in. You may close this window and return to your terminal.",
                ),
            )
        else:
            await _reply(stream, 200, page("Sign-in failed", outcome.error or ""))
        self._finish(outcome, scope)


class LoginManager:
    """Runs logins as tasks of its own group (`await tg.start(manager.run)`)."""

    def __init__(
        self,
        *,
        session: Callable[[], LoginSession],
        oauth: Callable[[], OAuthClient],
        on_finished: Callable[[Login], None],
        forced_login_method: Callable[[], str | None] = lambda: None,
        check_api_key: Callable[[Secret], Awaitable[RpcError | None]] | None = None,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ports: Sequence[int] = CALLBACK_PORTS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._session = session
        self._oauth = oauth
        self._on_finished = on_finished
        self._forced = forced_login_method
        self._check_api_key = check_api_key
        self.max_concurrent = max_concurrent
        self.timeout_s = timeout_s
        self.ports = tuple(ports)
        self._now = now
        self._ids = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None
        self.active: dict[str, Login] = {}
        self._recent: deque[str] = deque(maxlen=RECENT_LOGINS)

    def __repr__(self) -> str:
        return f"LoginManager({len(self.active)} in progress)"

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    # ------------------------------------------------------------------ starting

    def _new_id(self) -> str:
        return f"login_{next(self._ids)}_{secrets.token_hex(4)}"

    def _check_capacity(self, method: LoginMethod) -> None:
        if self._tg is None:
            raise RpcError(ErrorKind.OVERLOADED, "codexd is still starting: retry in a moment")
        if len(self.active) >= self.max_concurrent:
            raise RpcError(
                ErrorKind.OVERLOADED,
                f"{len(self.active)} logins are already in progress: finish or cancel one "
                "(account/login/cancel) and try again",
            )
        forced = self._forced()
        if forced == "api" and method != "api_key":
            raise RpcError(
                ErrorKind.INVALID_PARAMS,
                'forced_login_method = "api" in config.toml allows only an API-key login: '
                "run codexctl login --api-key",
            )
        if forced == "chatgpt" and method == "api_key":
            raise RpcError(
                ErrorKind.INVALID_PARAMS,
                'forced_login_method = "chatgpt" in config.toml allows only a ChatGPT login: '
                "run codexctl login",
            )

    async def start(
        self,
        method: LoginMethod,
        *,
        owner: Any = None,
        api_key: str | None = None,
        verify: bool = False,
    ) -> Login:
        """Prepare a login (bind the callback port, fetch the device code, check the API key
        with the provider when `verify`) and run it.

        Returns at once with what the user must see (`auth_url`, `verification_url`,
        `user_code`); the end comes through `on_finished`, not before `announce(login)`.
        Raises RpcError: overloaded, invalid_params, upstream_error (no device code),
        unauthenticated (the provider refused the key), or the kind of a failed check.
        """
        self._check_capacity(method)
        login = Login(self._new_id(), method, owner)
        if method == "browser":
            login._flow = await self._bind_callback()
            flow: _BrowserFlow = login._flow
            pkce = generate_pkce()
            flow.verifier = pkce.verifier
            login.auth_url = authorize_url(
                self._oauth().issuer,
                redirect=flow.redirect,
                code_challenge=pkce.challenge,
                state=flow.state,
            )
        elif method == "device":
            code = await self._oauth().start_device_code()
            if isinstance(code, OAuthFailure):
                raise RpcError(
                    ErrorKind.UPSTREAM_ERROR,
                    f"could not start the device login: {code.message}",
                    retryable=not code.permanent,
                    http_status=code.status,
                )
            login._flow = _DeviceFlow(code)
            login.verification_url = code.verification_url
            login.user_code = code.user_code
        else:
            key = Secret(validate_api_key(api_key or ""))
            if verify:
                await self._verify_api_key(key)
            login._flow = _ApiKeyFlow(key)
        if self._tg is None:  # stopped while preparing
            await self._close_flow(login)
            raise RpcError(ErrorKind.OVERLOADED, "codexd is stopping")
        self.active[login.login_id] = login
        self._tg.start_soon(self._run_login, login, name=f"login {login.login_id}")
        return login

    async def _verify_api_key(self, key: Secret) -> None:
        """Refuse a key the provider answers with 401, or that could not be checked (no
        answer, a 5xx). Any other answer (403 for a key not allowed to list models, 429)
        means the key itself was accepted."""
        if self._check_api_key is None:
            return
        failed = await self._check_api_key(key)
        if failed is None:
            return
        status = failed.data.http_status
        if status == 401:
            code = failed.data.upstream_code
            raise RpcError(
                ErrorKind.UNAUTHENTICATED,
                f"the provider refused this API key (401{f' {code}' if code else ''}), so it "
                "was not stored: check the key and run codexctl login --api-key again",
                http_status=401,
                upstream_code=code,
            )
        if status is not None and status < 500:
            log.info("stored an API key the provider answered with %d", status)
            return
        raise RpcError(
            ErrorKind(failed.kind),
            f"could not check the API key with the provider ({failed.message}), so it was not "
            "stored: try again, or store it unchecked with codexctl login --api-key --no-verify",
            retryable=failed.data.retryable,
            http_status=status,
        )

    @staticmethod
    def announce(login: Login) -> None:
        """The reply that named `login_id` is out: its completion may now be delivered."""
        login.announced.set()

    async def _bind_callback(self) -> _BrowserFlow:
        errors: list[str] = []
        for port in self.ports:
            try:
                listener = await anyio.create_tcp_listener(
                    local_host=CALLBACK_HOST, local_port=port
                )
            except OSError as exc:
                errors.append(f"{port}: {exc.strerror or exc}")
                continue
            # One address, so one listener: accepted one connection at a time by the flow.
            single = listener.listeners[0]
            assert isinstance(single, anyio.abc.SocketListener)
            bound = single.extra(anyio.abc.SocketAttribute.local_port)
            return _BrowserFlow(single, redirect_uri(bound), generate_state(), Secret(""))
        ports = " and ".join(str(p) for p in self.ports)
        raise RpcError(
            ErrorKind.OVERLOADED,
            f"cannot listen for the sign-in callback on {CALLBACK_HOST} port {ports} "
            f"({'; '.join(errors)}): another login (Codex CLI?) holds them; finish or cancel it, "
            "or use codexctl login --device",
        )

    # ------------------------------------------------------------------ cancelling

    def cancel(self, login_id: str, reason: str = "the login was cancelled") -> bool:
        """True when a login in progress was cancelled; False when it had already ended.

        Raises RpcError not_found for an id this daemon never gave out (or long forgotten).
        """
        login = self.active.get(login_id)
        if login is None:
            if login_id in self._recent:
                return False
            raise RpcError(
                ErrorKind.NOT_FOUND, f"no login {login_id!r}: it is unknown or long over"
            )
        if login.outcome is not None or login.cancel_reason is not None:
            return False
        login.cancel_reason = reason
        login.scope.cancel()
        return True

    # ------------------------------------------------------------------ running

    async def _run_login(self, login: Login) -> None:
        outcome: LoginOutcome | None = None
        try:
            with login.scope:
                with anyio.move_on_after(self.timeout_s) as timer:
                    outcome = await self._flow(login)
                if timer.cancelled_caught:
                    minutes = self.timeout_s / 60
                    outcome = LoginOutcome(
                        False,
                        f"the sign-in was not completed within {minutes:g} minutes: "
                        "run codexctl login again",
                    )
        except (StoreError, LockTimeout, OSError) as exc:
            # Signed in, but the login could not be kept (a full disk, a locked keyring).
            message = exc if isinstance(exc, StoreError) else getattr(exc, "strerror", None) or exc
            log.error("login %s could not be saved: %s", login.login_id, message)
            outcome = LoginOutcome(
                False,
                f"the login could not be saved ({message}): free some disk space or fix the "
                "credential store, then run codexctl login again",
            )
        except Exception:
            log.exception("login %s failed unexpectedly", login.login_id)
            outcome = LoginOutcome(
                False, "the login failed unexpectedly (a codexd bug; see its log)"
            )
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_flow(login)
                if outcome is None:
                    outcome = LoginOutcome(False, login.cancel_reason or "the login was cancelled")
                login.outcome = outcome
                with anyio.move_on_after(ANNOUNCE_WAIT_S):
                    await login.announced.wait()
                self.active.pop(login.login_id, None)
                self._recent.append(login.login_id)
                if outcome.success:
                    log.info("login %s (%s) succeeded", login.login_id, login.method)
                else:
                    log.info("login %s (%s) ended: %s", login.login_id, login.method, outcome.error)
                login.done.set()
                try:
                    self._on_finished(login)
                except Exception:
                    log.exception("reporting the end of login %s failed", login.login_id)

    async def _close_flow(self, login: Login) -> None:
        if isinstance(login._flow, _BrowserFlow):
            await login._flow.listener.aclose()
        login._flow = None

    async def _flow(self, login: Login) -> LoginOutcome:
        flow = login._flow
        if isinstance(flow, _BrowserFlow):
            return await self._browser(login, flow)
        if isinstance(flow, _DeviceFlow):
            return await self._device(flow)
        assert isinstance(flow, _ApiKeyFlow)
        await self._session().save_login(AuthDocument.api_key_login(flow.key))
        return LoginOutcome(True)

    async def _browser(self, login: Login, flow: _BrowserFlow) -> LoginOutcome:
        return await _CallbackServer(self, flow).run()

    async def _device(self, flow: _DeviceFlow) -> LoginOutcome:
        oauth = self._oauth()
        authorized = await oauth.wait_for_device_code(flow.code, timeout_s=self.timeout_s)
        if isinstance(authorized, OAuthFailure):
            return LoginOutcome(False, f"{authorized.message}: run codexctl login --device again")
        return await self._exchange_and_save(
            authorized.authorization_code,
            redirect=device_redirect_uri(oauth.issuer),
            verifier=authorized.code_verifier,
            api_key=False,
        )

    async def _exchange_and_save(
        self, code: Secret, *, redirect: str, verifier: Secret, api_key: bool
    ) -> LoginOutcome:
        """The code exchange, then (browser only, as Codex) the API-key exchange, then store."""
        oauth = self._oauth()
        grant = await oauth.exchange_code(code, redirect=redirect, code_verifier=verifier)
        if isinstance(grant, OAuthFailure):
            return LoginOutcome(False, f"Sign-in failed: {grant.message}")
        key = await self._api_key_for(oauth, grant) if api_key else None
        assert grant.id_token and grant.access_token and grant.refresh_token
        doc = AuthDocument.chatgpt_login(
            id_token=grant.id_token,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            api_key=key,
            now=self._now(),
        )
        try:
            await self._session().save_login(doc)
        except Exception as exc:
            log.error("could not store the new login: %s", type(exc).__name__)
            return LoginOutcome(False, f"signed in, but the login could not be stored: {exc}")
        return LoginOutcome(True)

    @staticmethod
    async def _api_key_for(oauth: OAuthClient, grant: TokenGrant) -> Secret | None:
        assert grant.id_token is not None
        exchanged = await oauth.exchange_api_key(grant.id_token)
        if isinstance(exchanged, OAuthFailure):
            log.info(
                "no API key from the token exchange (%s); keeping the ChatGPT tokens",
                exchanged.message,
            )
            return None
        return exchanged


async def _read_head(stream: anyio.abc.SocketStream) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_REQUEST_HEAD:
            return b""
        chunk = await stream.receive(4096)
        buf += chunk
    return buf


async def _reply(stream: anyio.abc.SocketStream, status: int, body: bytes) -> None:
    try:
        await stream.send(http_response(status, body))
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


__all__ = [
    "CALLBACK_PORTS",
    "Login",
    "LoginManager",
    "LoginMethod",
    "LoginOutcome",
    "interpret_callback",
    "parse_request_line",
    "validate_api_key",
]
