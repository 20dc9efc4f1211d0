"""`account/login` and `account/login/cancel`: decode, call `Accounts` (service/accounts.py).

A login's end is `account/login_completed {login_id, success, error?}`, sent to the connection
that started it and published on the `account` topic, then (on success) `account/updated`.
"""

from __future__ import annotations

import msgspec

from codexd.auth.login import LoginManager
from codexd.rpc.server import CallContext


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


async def account_login(ctx: CallContext, params: LoginParams) -> LoginStartResult:
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
    return LoginCancelResult(cancelled=ctx.services.accounts.cancel_login(params.login_id))
