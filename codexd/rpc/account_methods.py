"""`account/login` and `account/login/cancel`, and `Accounts`, the daemon's glue
between the login flows, the auth-file watcher and the notifications they cause.

A login's end is `account/login_completed {login_id, success, error?}`, sent to the connection
that started it and published on the `account` topic, then (on success) `account/updated`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import msgspec

from codexctl.protocol import RpcError
from codexd.auth.login import Login, LoginManager
from codexd.auth.oauth import OAuthClient
from codexd.auth.tokens import Secret
from codexd.auth.watch import watch_auth_file
from codexd.rpc.server import CallContext, Connection

if TYPE_CHECKING:
    from codexd.daemon import Daemon

log = logging.getLogger("codexd.auth")

AUTH_WATCH_POLL_MS: Final = 200


class ApiKeyLogin(msgspec.Struct, tag_field="method", tag="api_key", forbid_unknown_fields=True):
    """`verify`: store the key only once the provider took it (one `GET /models`)."""

    api_key: str
    verify: bool = False

    def __repr__(self) -> str:
        return "ApiKeyLogin(api_key=<redacted>)"


class BrowserLogin(msgspec.Struct, tag_field="method", tag="browser", forbid_unknown_fields=True):
    pass


class DeviceLogin(msgspec.Struct, tag_field="method", tag="device", forbid_unknown_fields=True):
    pass


LoginParams = ApiKeyLogin | BrowserLogin | DeviceLogin


class LoginStartResult(msgspec.Struct, omit_defaults=True):
    login_id: str
    auth_url: str | None = None
    verification_url: str | None = None
    user_code: str | None = None


class LoginCancelParams(msgspec.Struct, forbid_unknown_fields=True):
    login_id: str


class LoginCancelResult(msgspec.Struct):
    cancelled: bool


class LoginCompleted(msgspec.Struct, omit_defaults=True):
    """`account/login_completed`'s params. `error` says what went wrong (never a secret)."""

    login_id: str
    success: bool
    error: str | None = None


async def account_login(ctx: CallContext, params: LoginParams) -> LoginStartResult:
    logins = ctx.daemon.accounts.logins
    match params:
        case ApiKeyLogin(api_key=key, verify=verify):
            login = await logins.start("api_key", owner=ctx.connection, api_key=key, verify=verify)
        case BrowserLogin():
            login = await logins.start("browser", owner=ctx.connection)
        case DeviceLogin():
            login = await logins.start("device", owner=ctx.connection)

    async def announce() -> None:
        LoginManager.announce(login)

    ctx.after_reply(announce)
    return LoginStartResult(
        login_id=login.login_id,
        auth_url=login.auth_url,
        verification_url=login.verification_url,
        user_code=login.user_code,
    )


async def account_login_cancel(ctx: CallContext, params: LoginCancelParams) -> LoginCancelResult:
    return LoginCancelResult(cancelled=ctx.daemon.accounts.logins.cancel(params.login_id))


class Accounts:
    """Owns the login tasks and the auth.json watcher: `await tg.start(accounts.run)`."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self.logins = LoginManager(
            session=daemon.auth_session,
            oauth=self._oauth,
            on_finished=self._finished,
            forced_login_method=lambda: daemon.config.snapshot.forced_login_method,
            check_api_key=self._check_api_key,
        )

    async def _check_api_key(self, key: Secret) -> RpcError | None:
        d = self._daemon
        failed = await d.runner.check_api_key(key, d.config.snapshot)
        return None if failed is None else failed.to_rpc_error()

    def _oauth(self) -> OAuthClient:
        d = self._daemon
        return OAuthClient(d._oauth_http(), d.config.snapshot.codexd.auth_issuer, d.env)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.logins.run)
            tg.start_soon(
                lambda: watch_auth_file(
                    self._daemon.paths.codex_home,
                    self._auth_file_changed,
                    rust_timeout_ms=AUTH_WATCH_POLL_MS,
                ),
                name="auth.json watcher",
            )
            task_status.started()

    async def _auth_file_changed(self) -> None:
        if await self._daemon.auth_session().reload_from_disk():
            self._daemon._account_changed()

    def _finished(self, login: Login) -> None:
        outcome = login.outcome
        assert outcome is not None
        params = LoginCompleted(login.login_id, outcome.success, outcome.error)
        events = self._daemon.events
        owner: Any = login.owner
        subscribed = isinstance(owner, Connection) and events.subscribed(owner, "account")
        if isinstance(owner, Connection) and not owner.closed and not subscribed:
            owner.notify("account/login_completed", params)
        events.publish("account", "account/login_completed", params)
        if outcome.success:
            self._daemon._account_changed()
