"""`account/login` and `account/login/cancel`: decode, call `Accounts` (service/accounts.py).

A login's end is `account/login_completed {login_id, success, error?}`, sent to the connection
that started it and published on the `account` topic, then (on success) `account/updated`.
"""

from __future__ import annotations

import msgspec

from codexctl.results import LoginCancelResult, LoginStartResult
from codexd.auth.login import LoginManager
from codexd.rpc.server import CallContext


class ApiKeyLogin(msgspec.Struct, tag_field="method", tag="api_key", forbid_unknown_fields=True):
    """Store an API key. With `verify`, only once the provider took it (one `GET /models`)."""

    api_key: str
    verify: bool = False

    def __repr__(self) -> str:
        return "ApiKeyLogin(api_key=<redacted>)"


class BrowserLogin(msgspec.Struct, tag_field="method", tag="browser", forbid_unknown_fields=True):
    """Sign in with ChatGPT in a browser: open the result's `auth_url` on this machine."""


class DeviceLogin(msgspec.Struct, tag_field="method", tag="device", forbid_unknown_fields=True):
    """Sign in with ChatGPT on any device: visit `verification_url` and enter `user_code`."""


LoginParams = ApiKeyLogin | BrowserLogin | DeviceLogin


class LoginCancelParams(msgspec.Struct, forbid_unknown_fields=True):
    """The login to cancel."""

    login_id: str


async def account_login(ctx: CallContext, params: LoginParams) -> LoginStartResult:
    """Starts a login and returns at once with what the user must do. Its end comes as
    `account/login_completed` to this connection (and to the `account` topic), then, when it
    succeeded, `account/updated`. An API key without `verify` is stored at once."""
    accounts, owner = ctx.services.accounts, ctx.connection
    match params:
        case ApiKeyLogin(api_key=key, verify=verify):
            login = await accounts.login("api_key", owner=owner, api_key=key, verify=verify)
        case BrowserLogin():
            login = await accounts.login("browser", owner=owner)
        case DeviceLogin():
            login = await accounts.login("device", owner=owner)

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
    """Stops a login in progress (its browser callback or device-code polling); it ends with
    `account/login_completed` and `success: false`. An id the daemon never gave out (or
    forgot long ago) is `not_found`."""
    return LoginCancelResult(cancelled=ctx.services.accounts.cancel_login(params.login_id))
