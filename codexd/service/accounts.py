"""Accounts: who is logged in, logins, logout, refresh, and the notifications they cause.

Owns the login tasks and the auth.json watcher (`await tg.start(accounts.run)`). A login's
end is `account/login_completed {login_id, success, error?}`, sent to the owner that started
it (unless it follows the `account` topic anyway) and published on the `account` topic,
then (on success) `account/updated`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final, Literal

import anyio
import anyio.abc
import httpx

from codexctl.protocol import AccountSummary, RpcError
from codexctl.results import AccountInfo, LoginCompleted
from codexd.auth.login import Login, LoginManager
from codexd.auth.oauth import OAuthClient
from codexd.auth.session import AuthSession
from codexd.auth.tokens import Secret
from codexd.auth.watch import watch_auth_file
from codexd.config.store import ConfigStore
from codexd.events import EventHub
from codexd.jobs import Subscriber
from codexd.upstream.runner import JobRunner

log = logging.getLogger("codexd.auth")

AUTH_WATCH_POLL_MS: Final = 200

LoginMethod = Literal["api_key", "browser", "device"]


class Accounts:
    def __init__(
        self,
        *,
        session: AuthSession,
        config: ConfigStore,
        events: EventHub,
        runner: JobRunner,
        oauth_http: httpx.AsyncClient,
        codex_home: str,
        env: Mapping[str, str],
    ) -> None:
        self.session = session
        self._config = config
        self._events = events
        self._runner = runner
        self._oauth_http = oauth_http
        self._codex_home = codex_home
        self._env = env
        self.logins = LoginManager(
            session=lambda: session,
            oauth=self._oauth,
            on_finished=self._finished,
            forced_login_method=lambda: config.snapshot.forced_login_method,
            check_api_key=self._check_api_key,
        )

    def _oauth(self) -> OAuthClient:
        return OAuthClient(self._oauth_http, self._config.snapshot.codexd.auth_issuer, self._env)

    async def _check_api_key(self, key: Secret) -> RpcError | None:
        failed = await self._runner.check_api_key(key, self._config.snapshot)
        return None if failed is None else failed.to_rpc_error()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.logins.run)
            tg.start_soon(
                lambda: watch_auth_file(
                    self._codex_home, self._auth_file_changed, rust_timeout_ms=AUTH_WATCH_POLL_MS
                ),
                name="auth.json watcher",
            )
            task_status.started()

    # ---------------------------------------------------------------- calls

    def info(self) -> AccountInfo:
        return self.session.account_info()

    async def refresh(self) -> AccountInfo:
        await self.session.refresh("proactive_expiry")
        return self.session.account_info()

    async def login(
        self,
        method: LoginMethod,
        *,
        owner: Subscriber,
        api_key: str | None = None,
        verify: bool = False,
    ) -> Login:
        """Start a login; its end goes to `owner` (and the `account` topic) once
        `LoginManager.announce(login)` was called, after the caller answered."""
        return await self.logins.start(method, owner=owner, api_key=api_key, verify=verify)

    def cancel_login(self, login_id: str) -> bool:
        return self.logins.cancel(login_id)

    async def logout(self) -> bool:
        """Revoke upstream when possible, then delete the stored credentials."""
        oauth = self._oauth()

        async def revoke(tokens: Any) -> bool:
            return await oauth.revoke(
                refresh_token=tokens.refresh_token, access_token=tokens.access_token
            )

        revoked = await self.session.logout(revoke)
        self.changed()
        return revoked

    def owners(self) -> set[object]:
        """Owners of logins in progress (they wait for `account/login_completed`)."""
        return {login.owner for login in self.logins.active.values()}

    # ---------------------------------------------------------------- notifications

    def changed(self) -> None:
        info = self.session.account_info()
        self._events.publish(
            "account",
            "account/updated",
            AccountSummary(mode=info.mode, email=info.email, plan_type=info.plan_type),
        )

    async def _auth_file_changed(self) -> None:
        if await self.session.reload_from_disk():
            self.changed()

    def _finished(self, login: Login) -> None:
        outcome = login.outcome
        assert outcome is not None
        params = LoginCompleted(login.login_id, outcome.success, outcome.error)
        events = self._events
        owner: Subscriber | None = login.owner
        if owner is not None and not owner.closed and not events.subscribed(owner, "account"):
            owner.notify("account/login_completed", params)
        events.publish("account", "account/login_completed", params)
        if outcome.success:
            self.changed()
