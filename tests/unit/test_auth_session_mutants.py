"""AuthSession behaviour the mutation run (`make mutate`) found untested: what waiters of a
failed refresh get, the exact errors and log lines a user or operator sees, the timeouts,
other programs' writes in odd shapes, and logout's best-effort paths. Kept apart from
test_auth_session.py (whose helpers it uses) so both can grow without conflicts."""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from codexctl.protocol import RpcError
from codexd.auth.authfile import (
    AuthDocument,
    LockTimeout,
    TokenSet,
    auth_file_path,
    format_time,
    lock_file_path,
)
from codexd.auth.oauth import OAuthFailure, RefreshReason, TokenGrant
from codexd.auth.session import (
    AuthSession,
    Credentials,
    Provider,
    key_hint,
    needs_refresh,
    same_tokens,
)
from codexd.auth.stores import FileStore, StoreError
from codexd.auth.tokens import Secret
from tests.unit.test_auth_session import (
    NOW,
    Clock,
    FakeIssuer,
    disk_tokens,
    make_session,
    write_doc,
)
from tests.unit.test_auth_support import AUTH, chatgpt_doc, make_jwt, make_tokens

pytestmark = pytest.mark.anyio

DAY = 86400.0
WHERE = (
    "in the daemon's environment (a service does not inherit your shell's: put it in "
    "~/.config/codexd/env and restart codexd)"
)
NOT_LOGGED_IN = f"not logged in: run codexctl login, or set OPENAI_API_KEY {WHERE}"
REMOVED = "the ChatGPT login was removed by another program: run codexctl login"


def rfc3339(seconds: float) -> str:
    return format_time(datetime.fromtimestamp(seconds, UTC))


def legacy_tokens(account: str = "acct-1") -> dict[str, str]:
    """Tokens whose access token has no `exp` (refreshed by age, every 8 days)."""
    tokens = make_tokens(exp=0)
    tokens["access_token"] = make_jwt({AUTH: {"chatgpt_account_id": account}})
    return tokens


def token_set(tokens: dict[str, str]) -> TokenSet:
    return TokenSet(
        id_token=Secret(tokens["id_token"]),
        access_token=Secret(tokens["access_token"]),
        refresh_token=Secret(tokens["refresh_token"]),
        account_id=tokens.get("account_id"),
    )


def corrupt(home: Path) -> None:
    """auth.json that is not JSON any more (a half-written edit by hand)."""
    Path(auth_file_path(str(home))).write_text("{not json")


def stored(home: Path) -> bool:
    return os.path.exists(auth_file_path(str(home)))


def logged(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "codexd.auth" and r.levelno == level
    ]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def expired(tmp_path: Path, clock: Clock) -> dict[str, str]:
    tokens = make_tokens(exp=clock() - 10)
    write_doc(tmp_path, chatgpt_doc(tokens))
    return tokens


@pytest.fixture
def caplog_auth(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="codexd.auth")
    return caplog


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[None]:
    """auth.lock held by "another program" for the whole test."""
    fd = os.open(lock_file_path(str(tmp_path)), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


class UnwritableStore(FileStore):
    """auth.json that reads fine and cannot be written (a full disk)."""

    async def save(self, doc: AuthDocument) -> None:
        raise StoreError("cannot write auth.json: No space left on device")


async def errors_of_two_callers(session: AuthSession, issuer: FakeIssuer) -> list[Any]:
    """Two concurrent `credentials()` calls joined on one refresh; what each got."""
    issuer.gate = anyio.Event()
    got: list[Any] = []

    async def caller() -> None:
        try:
            got.append(await session.credentials())
        except Exception as exc:
            got.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            issuer.gate.set()
    return got


def same_error(a: RpcError, b: RpcError) -> bool:
    return (a.kind, a.message, a.data) == (b.kind, b.message, b.data)


# ---------------------------------------------------------------------- pure rules


def test_an_api_key_never_sends_a_chatgpt_account_header() -> None:
    creds = Credentials("api_key", "env", Secret("sk-x"), account_id="acct-1")
    assert creds.headers() == {"Authorization": "Bearer sk-x"}
    assert Credentials("none", None, None).headers() == {}


def test_needs_refresh_at_the_boundaries() -> None:
    now = NOW
    assert needs_refresh(token_set(make_tokens(exp=now + 300)), None, now)
    assert not needs_refresh(token_set(make_tokens(exp=now + 301)), None, now)
    legacy = token_set(legacy_tokens())
    assert not needs_refresh(legacy, None, now)
    assert not needs_refresh(legacy, datetime.fromtimestamp(now - DAY, UTC), now)
    assert not needs_refresh(legacy, datetime.fromtimestamp(now - 8 * DAY, UTC), now)
    assert needs_refresh(legacy, datetime.fromtimestamp(now - 8 * DAY - 1, UTC), now)


def test_same_tokens_needs_both_tokens_equal() -> None:
    a = make_tokens(exp=NOW)
    assert same_tokens(token_set(a), token_set(dict(a)))
    assert same_tokens(None, None)
    assert not same_tokens(None, token_set(a))
    assert not same_tokens(token_set(a), None)
    assert not same_tokens(token_set(a), token_set(a | {"access_token": "other"}))
    assert not same_tokens(token_set(a), token_set(a | {"refresh_token": "other"}))


# ---------------------------------------------------------------------- choosing a credential


async def test_without_credentials_the_errors_say_exactly_what_to_do(
    tmp_path: Path, clock: Clock
) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert info.value.message == NOT_LOGGED_IN
    with pytest.raises(RpcError) as info:
        await session.credentials(Provider(id="azure", env_key="AZURE_OPENAI_API_KEY"))
    assert info.value.message == f"no API key for provider azure: set AZURE_OPENAI_API_KEY {WHERE}"
    session.forced_login_method = "api"
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert (info.value.kind, info.value.message) == ("unauthenticated", NOT_LOGGED_IN)


async def test_forced_chatgpt_login_ignores_api_keys(tmp_path: Path, clock: Clock) -> None:
    write_doc(tmp_path, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored"})
    session = await make_session(
        tmp_path,
        FakeIssuer(clock, set()),
        clock,
        env={"OPENAI_API_KEY": "sk-env"},
        forced_login_method="chatgpt",
    )
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert info.value.kind == "unauthenticated"
    assert info.value.message == (
        'not logged in: forced_login_method = "chatgpt" requires a ChatGPT login: '
        "run codexctl login"
    )


async def test_forced_api_login_given_at_construction_beats_a_chatgpt_login(
    tmp_path: Path, clock: Clock
) -> None:
    write_doc(tmp_path, chatgpt_doc(make_tokens(exp=clock() + 3600)))
    session = await make_session(
        tmp_path,
        FakeIssuer(clock, set()),
        clock,
        env={"OPENAI_API_KEY": "sk-env"},
        forced_login_method="api",
    )
    creds = await session.credentials()
    assert (creds.mode, creds.source, creds.bearer) == ("api_key", "env", Secret("sk-env"))


async def test_a_stored_api_key_is_an_api_key_credential(tmp_path: Path, clock: Clock) -> None:
    when = "2026-11-25T09:00:00.000000Z"
    write_doc(
        tmp_path, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored", "last_refresh": when}
    )
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    creds = await session.credentials()
    assert (creds.mode, creds.source, creds.bearer) == ("api_key", "auth_file", Secret("sk-stored"))
    info = session.account_info()
    assert (info.mode, info.source, info.last_refresh, info.store) == (
        "api_key",
        "auth_file",
        when,
        "file",
    )
    with_env = await make_session(
        tmp_path, FakeIssuer(clock, set()), clock, env={"OPENAI_API_KEY": "sk-env"}
    )
    info = with_env.account_info()
    assert (info.mode, info.source, info.last_refresh, info.store) == (
        "api_key",
        "env",
        None,
        "file",
    )


def test_a_key_hint_shows_the_first_8_and_last_5_characters_of_a_long_enough_key() -> None:
    assert key_hint("sk-proj-0123456789abcdef") == "sk-proj-***bcdef"
    # 14 characters is the shortest key shown in part; at 13 the hint would show all but one.
    assert key_hint("sk-abcdefghij") == "***"
    assert key_hint("sk-abcdefghijk") == "sk-abcde***ghijk"
    assert key_hint("") == "***"


async def test_account_info_shows_the_hint_of_the_key_in_use(tmp_path: Path, clock: Clock) -> None:
    write_doc(tmp_path, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored-0123456789"})
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    assert session.account_info().key_hint == "sk-store***56789"
    with_env = await make_session(
        tmp_path, FakeIssuer(clock, set()), clock, env={"OPENAI_API_KEY": "sk-environ-987654321"}
    )
    assert with_env.account_info().key_hint == "sk-envir***54321"
    # A provider that needs no key has no hint.
    none = with_env.account_info(Provider(id="local", env_key=None))
    assert (none.mode, none.key_hint) == (None, None)


async def test_the_account_id_falls_back_to_the_id_tokens(tmp_path: Path, clock: Clock) -> None:
    tokens = make_tokens(exp=clock() + 3600, account="acct-9")
    del tokens["account_id"]
    write_doc(tmp_path, chatgpt_doc(tokens))
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    creds = await session.credentials()
    assert creds.source == "auth_file"
    assert creds.headers()["ChatGPT-Account-ID"] == "acct-9"
    assert session.account_info().account_id == "acct-9"


async def test_account_info_without_a_login_still_names_the_store(
    tmp_path: Path, clock: Clock
) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    info = session.account_info()
    assert (info.mode, info.source, info.store) == (None, None, "file")


async def test_repr_names_the_store_and_the_stored_mode(tmp_path: Path, clock: Clock) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    assert repr(session) == "AuthSession(store=file, stored_mode=None)"
    write_doc(tmp_path, chatgpt_doc(make_tokens(exp=clock() + 3600)))
    await session.reload_from_disk()
    assert repr(session) == "AuthSession(store=file, stored_mode=chatgpt)"


# ---------------------------------------------------------------------- reading the store


async def test_an_unreadable_store_is_logged_and_not_fatal(
    tmp_path: Path, clock: Clock, caplog_auth: pytest.LogCaptureFixture
) -> None:
    corrupt(tmp_path)
    session = await make_session(
        tmp_path, FakeIssuer(clock, set()), clock, env={"OPENAI_API_KEY": "sk-env"}
    )
    assert (await session.credentials()).source == "env"
    assert repr(session) == "AuthSession(store=file, stored_mode=None)"
    assert await session.reload_from_disk() is False
    warnings = logged(caplog_auth, logging.WARNING)
    assert len(warnings) == 2
    for message in warnings:
        assert message.startswith(f"cannot read the stored login: {auth_file_path(str(tmp_path))}")
        assert "not valid JSON" in message


async def test_reload_from_disk_logs_what_it_adopts_and_what_it_refuses(
    tmp_path: Path, clock: Clock, caplog_auth: pytest.LogCaptureFixture
) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens, "2026-11-25T09:00:00Z"))
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    write_doc(tmp_path, chatgpt_doc(make_tokens(exp=clock() + 3600), "2026-11-25T10:00:00Z"))
    assert await session.reload_from_disk() is True
    write_doc(tmp_path, chatgpt_doc(tokens, "2026-11-25T09:00:00Z"))
    assert await session.reload_from_disk() is False
    assert logged(caplog_auth, logging.INFO) == ["adopted the login stored by another program"]
    assert logged(caplog_auth, logging.WARNING) == [
        "another program wrote older tokens than the ones codexd holds; keeping ours"
    ]


async def test_reload_from_disk_adopts_logins_of_every_shape(tmp_path: Path, clock: Clock) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    first = make_tokens(exp=clock() + 3600)
    # a first login while we had none
    write_doc(tmp_path, chatgpt_doc(first, "2026-11-25T09:00:00Z"))
    assert await session.reload_from_disk() is True
    # only the access token changed (same refresh token, same time)
    second = first | {"access_token": make_tokens(exp=clock() + 7200)["access_token"]}
    write_doc(tmp_path, chatgpt_doc(second, "2026-11-25T09:00:00Z"))
    assert await session.reload_from_disk() is True
    assert (await session.credentials()).bearer == Secret(second["access_token"])
    # new tokens written with the same last_refresh are not older: adopted
    third = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(third, "2026-11-25T09:00:00Z"))
    assert await session.reload_from_disk() is True
    assert (await session.credentials()).bearer == Secret(third["access_token"])
    # a document without last_refresh cannot be judged stale: adopted
    fourth = make_tokens(exp=clock() + 3600)
    raw = chatgpt_doc(fourth)
    del raw["last_refresh"]
    write_doc(tmp_path, raw)
    assert await session.reload_from_disk() is True
    assert (await session.credentials()).bearer == Secret(fourth["access_token"])
    # an API-key login written with an older last_refresh replaces the ChatGPT one
    write_doc(tmp_path, chatgpt_doc(make_tokens(exp=clock() + 3600), "2026-11-25T12:00:00Z"))
    assert await session.reload_from_disk() is True
    write_doc(
        tmp_path,
        {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-new", "last_refresh": "2026-11-25T08:00:00Z"},
    )
    assert await session.reload_from_disk() is True
    assert (await session.credentials()).bearer == Secret("sk-new")


# ---------------------------------------------------------------------- when to refresh


async def test_a_token_without_exp_is_refreshed_after_eight_days(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = legacy_tokens()
    write_doc(tmp_path, chatgpt_doc(tokens, rfc3339(clock() - 9 * DAY)))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    creds = await session.credentials()
    assert issuer.calls == 1
    assert creds.bearer == Secret(issuer.issued[0]["access_token"])


async def test_refresh_defaults_to_unauthorized_recovery(tmp_path: Path, clock: Clock) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    await session.refresh()
    assert issuer.reasons == ["unauthorized_recovery"]


async def test_refresh_without_a_chatgpt_login_says_so(tmp_path: Path, clock: Clock) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    with pytest.raises(RpcError) as info:
        await session.refresh()
    assert (info.value.kind, info.value.message) == (
        "unauthenticated",
        "not logged in with ChatGPT: run codexctl login",
    )


async def test_refreshing_stores_every_new_token_and_counts_and_logs_it(
    tmp_path: Path, clock: Clock, caplog_auth: pytest.LogCaptureFixture
) -> None:
    tokens = make_tokens(exp=clock() + 60)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    await session.credentials()
    clock.now += 3600
    await session.credentials()
    assert session.refresh_count == issuer.calls == 2
    new = issuer.issued[1]
    assert disk_tokens(tmp_path) == new | {"account_id": "acct-1"}
    refreshed = "refreshed the ChatGPT login (proactive_expiry)"
    assert logged(caplog_auth, logging.INFO) == [refreshed, refreshed]


# ---------------------------------------------------------------------- other programs


async def test_after_a_401_tokens_another_program_wrote_are_adopted_and_kept(
    tmp_path: Path, clock: Clock, caplog_auth: pytest.LogCaptureFixture
) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    stale = await session.credentials()
    # another program's tokens, even ones that look about to expire: the 401 was for ours
    newer = make_tokens(exp=clock() + 60, account="acct-2")
    write_doc(tmp_path, chatgpt_doc(newer, "2026-11-25T10:00:00Z"))
    again = await session.refresh("unauthorized_recovery", stale=stale)
    assert again.bearer == Secret(newer["access_token"])
    assert session.account_info().account_id == "acct-2"
    assert issuer.calls == 0
    assert logged(caplog_auth, logging.INFO) == ["adopted tokens refreshed by another program"]


@pytest.mark.parametrize("kind", ["exp", "legacy"])
async def test_a_proactive_refresh_spends_the_refresh_token_another_program_wrote(
    tmp_path: Path, clock: Clock, kind: str
) -> None:
    def expiring() -> dict[str, str]:
        return make_tokens(exp=clock() + 60) if kind == "exp" else legacy_tokens()

    nine_days_ago = rfc3339(clock() - 9 * DAY)
    ours = expiring()
    write_doc(tmp_path, chatgpt_doc(ours, nine_days_ago))
    theirs = expiring()
    issuer = FakeIssuer(clock, {theirs["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    write_doc(tmp_path, chatgpt_doc(theirs, nine_days_ago))
    creds = await session.credentials()
    assert issuer.calls == 1
    assert issuer.spent == [theirs["refresh_token"]]
    assert creds.bearer == Secret(issuer.issued[0]["access_token"])


async def test_a_login_removed_during_a_proactive_refresh_is_unauthenticated(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock() + 120)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    os.unlink(auth_file_path(str(tmp_path)))
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert (info.value.kind, info.value.message) == ("unauthenticated", REMOVED)
    assert session.account_info().mode is None
    assert issuer.calls == 0


async def test_a_chatgpt_login_replaced_by_an_api_key_fails_the_refresh(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    stale = await session.credentials()
    write_doc(tmp_path, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-new"})
    with pytest.raises(RpcError) as info:
        await session.refresh("unauthorized_recovery", stale=stale)
    assert (info.value.kind, info.value.message) == ("unauthenticated", REMOVED)
    assert session.account_info().mode == "api_key"
    assert issuer.calls == 0


# ---------------------------------------------------------------------- failures


async def test_a_failed_proactive_refresh_says_until_when_the_token_is_used(
    tmp_path: Path, clock: Clock, caplog_auth: pytest.LogCaptureFixture
) -> None:
    tokens = make_tokens(exp=clock() + 120)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    issuer.failures = [(503, b"")] * 4
    session = await make_session(tmp_path, issuer, clock)
    assert (await session.credentials()).bearer == Secret(tokens["access_token"])
    assert logged(caplog_auth, logging.WARNING)[-1] == (
        f"using the current access token until it expires at {rfc3339(clock() + 120)}"
    )


async def test_a_token_expiring_right_now_is_not_used_when_its_refresh_fails(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock())
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    issuer.failures = [(503, b"")] * 4
    session = await make_session(tmp_path, issuer, clock)
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert info.value.kind == "upstream_error"


async def test_transient_failures_end_in_an_upstream_error_naming_the_last_one(
    tmp_path: Path, clock: Clock, expired: dict[str, str], caplog_auth: pytest.LogCaptureFixture
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    issuer.failures = [(502, b"")] * 4
    session = await make_session(tmp_path, issuer, clock)
    with pytest.raises(RpcError) as info:
        await session.credentials()
    warnings = logged(caplog_auth, logging.WARNING)
    assert len(warnings) == 4
    reason = warnings[0].removeprefix("refreshing the ChatGPT login failed (attempt 1): ")
    assert reason != warnings[0] and reason
    assert warnings == [
        f"refreshing the ChatGPT login failed (attempt {n}): {reason}" for n in (1, 2, 3, 4)
    ]
    assert info.value.message == (
        f"could not refresh the ChatGPT login ({reason}); you are still logged in, "
        "try again shortly"
    )
    assert info.value.data.http_status == 502
    assert info.value.data.retryable


async def test_the_waiter_of_a_failed_refresh_shares_its_error_and_does_not_retry(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    issuer.failures = [(502, b"")] * 8
    session = await make_session(tmp_path, issuer, clock)
    owner, waiter = await errors_of_two_callers(session, issuer)
    assert isinstance(owner, RpcError) and isinstance(waiter, RpcError)
    assert owner.data.http_status == 502
    assert same_error(owner, waiter)
    assert issuer.calls == 4


async def test_the_waiter_of_a_dead_refresh_token_gets_auth_expired_with_its_details(
    tmp_path: Path, clock: Clock, expired: dict[str, str], caplog_auth: pytest.LogCaptureFixture
) -> None:
    issuer = FakeIssuer(clock, set())
    issuer.spent.append(expired["refresh_token"])
    session = await make_session(tmp_path, issuer, clock)
    owner, waiter = await errors_of_two_callers(session, issuer)
    assert isinstance(owner, RpcError) and isinstance(waiter, RpcError)
    assert (owner.kind, owner.data.http_status, owner.data.upstream_code) == (
        "auth_expired",
        401,
        "refresh_token_reused",
    )
    assert same_error(owner, waiter)
    # later callers fail fast with the same error, without asking the issuer again
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert same_error(owner, info.value)
    assert issuer.calls == 1
    assert logged(caplog_auth, logging.ERROR) == [
        f"the ChatGPT login cannot be refreshed: {owner.message}"
    ]


async def test_a_refresh_that_crashes_tells_its_waiters_it_is_a_bug(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})

    async def crashing(token: Secret, reason: RefreshReason) -> TokenGrant | OAuthFailure:
        await issuer.refresh(token, reason)
        raise RuntimeError("bug")

    session = await make_session(tmp_path, issuer, clock)
    session._refresher = crashing
    owner, waiter = await errors_of_two_callers(session, issuer)
    assert isinstance(owner, RuntimeError)
    assert isinstance(waiter, RpcError)
    assert (waiter.kind, waiter.message) == (
        "internal_error",
        "refreshing the login failed unexpectedly (a codexd bug; see its log)",
    )
    assert issuer.calls == 1


async def test_new_tokens_that_cannot_be_stored_are_still_used_and_shared(
    tmp_path: Path, clock: Clock, expired: dict[str, str], caplog_auth: pytest.LogCaptureFixture
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    session = AuthSession(
        codex_home=str(tmp_path),
        store=UnwritableStore(str(tmp_path)),
        refresher=issuer.refresh,
        env={},
        clock=clock,
        retry_delays=(0, 0, 0),
    )
    await session.load()
    first, second = await errors_of_two_callers(session, issuer)
    new = Secret(issuer.issued[0]["access_token"])
    assert first.bearer == second.bearer == new
    assert (await session.credentials()).bearer == new
    assert issuer.calls == 1
    assert logged(caplog_auth, logging.ERROR) == [
        "refreshed the login but could not store it: cannot write auth.json: No space left on "
        "device"
    ]


async def test_a_store_unreadable_during_the_refresh_fails_it_with_the_reason(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    corrupt(tmp_path)
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert info.value.kind == "upstream_error"
    assert info.value.message.startswith(
        f"could not refresh the ChatGPT login ({auth_file_path(str(tmp_path))}: auth.json is "
        "not valid JSON"
    )
    assert issuer.calls == 0


async def test_a_lock_held_too_long_fails_refresh_login_and_logout(
    tmp_path: Path, clock: Clock, expired: dict[str, str], held_lock: None
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock, lock_timeout_s=0)
    lock = lock_file_path(str(tmp_path))
    with anyio.fail_after(5):
        with pytest.raises(RpcError) as info:
            await session.credentials()
        assert info.value.message == (
            f"could not refresh the ChatGPT login ({lock} stayed locked by another program "
            "for 0 s); you are still logged in, try again shortly"
        )
        assert info.value.data.http_status is None
        doc = AuthDocument.from_dict(chatgpt_doc(make_tokens(exp=clock() + 3600)))
        assert isinstance(doc, AuthDocument)
        with pytest.raises(LockTimeout):
            await session.save_login(doc)
        with pytest.raises(LockTimeout):
            await session.logout()
    assert issuer.calls == 0


async def test_a_refresh_that_takes_too_long_is_given_up(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock, refresh_timeout_s=0)
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert info.value.message == (
        "could not refresh the ChatGPT login (it took too long); you are still logged in, "
        "try again shortly"
    )
    assert info.value.data.http_status is None
    assert issuer.calls == 0


async def test_retry_delays_are_waited_in_order(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    issuer.failures = [(503, b"")] * 2
    session = await make_session(tmp_path, issuer, clock)
    session._retry_delays = (0, 0, math.inf)  # the third retry would never come
    with anyio.fail_after(5):
        creds = await session.credentials()
    assert issuer.calls == 3
    assert creds.bearer == Secret(issuer.issued[0]["access_token"])


# ---------------------------------------------------------------------- login and logout


async def test_a_new_login_after_a_dead_token_refreshes_normally(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, set())
    issuer.spent.append(expired["refresh_token"])
    session = await make_session(tmp_path, issuer, clock)
    with pytest.raises(RpcError):
        await session.credentials()
    fresh = make_tokens(exp=clock() + 60)
    issuer.valid.add(fresh["refresh_token"])
    doc = AuthDocument.from_dict(chatgpt_doc(fresh))
    assert isinstance(doc, AuthDocument)
    await session.save_login(doc)
    assert (await session.credentials()).bearer == Secret(issuer.issued[0]["access_token"])


async def test_a_login_written_by_another_program_after_logout_refreshes_normally(
    tmp_path: Path, clock: Clock
) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    write_doc(tmp_path, chatgpt_doc(make_tokens(exp=clock() + 3600)))
    await session.reload_from_disk()
    assert await session.logout() is False
    fresh = make_tokens(exp=clock() + 60)
    issuer = FakeIssuer(clock, {fresh["refresh_token"]})
    session._refresher = issuer.refresh
    write_doc(tmp_path, chatgpt_doc(fresh))
    assert await session.reload_from_disk() is True
    assert (await session.credentials()).bearer == Secret(issuer.issued[0]["access_token"])


async def test_logout_with_nothing_stored_does_not_revoke(tmp_path: Path, clock: Clock) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    calls: list[object] = []

    async def revoke(tokens: TokenSet) -> bool:
        calls.append(tokens)
        return True

    assert await session.logout(revoke) is False
    assert calls == []


async def test_logout_revokes_what_it_holds_when_the_store_is_unreadable(
    tmp_path: Path, clock: Clock, caplog_auth: pytest.LogCaptureFixture
) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens))
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    corrupt(tmp_path)
    revoked: list[str] = []

    async def revoke(t: TokenSet) -> bool:
        revoked.append(t.refresh_token.reveal())
        return True

    assert await session.logout(revoke) is True
    assert revoked == [tokens["refresh_token"]]
    assert not stored(tmp_path)
    [warning] = logged(caplog_auth, logging.WARNING)
    assert warning.startswith(
        f"cannot read the stored login before logging out: {auth_file_path(str(tmp_path))}"
    )


async def test_logout_deletes_the_login_even_when_revoking_fails(
    tmp_path: Path, clock: Clock, caplog_auth: pytest.LogCaptureFixture
) -> None:
    write_doc(tmp_path, chatgpt_doc(make_tokens(exp=clock() + 3600)))
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)

    async def revoke(t: TokenSet) -> bool:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    assert await session.logout(revoke) is False
    assert not stored(tmp_path)
    assert logged(caplog_auth, logging.WARNING) == [
        "could not revoke the login upstream: ConnectError"
    ]


# ---------------------------------------------------------------------- a provider's bearer token


async def test_a_providers_bearer_token_is_used_unless_its_env_key_is_set(
    tmp_path: Path, clock: Clock
) -> None:
    """Codex's order: the provider's env_key when it is set, else its bearer token, and only
    then a login."""
    write_doc(tmp_path, chatgpt_doc(make_tokens(exp=clock() + 3600)))
    session = await make_session(
        tmp_path, FakeIssuer(clock, set()), clock, env={"AZURE_KEY": "sk-azure-env"}
    )
    with_token = Provider(id="azure", env_key=None, bearer_token="tok-config-123")
    creds = await session.credentials(with_token)
    assert (creds.mode, creds.source, creds.bearer) == (
        "api_key",
        "config",
        Secret("tok-config-123"),
    )
    # An env_key whose variable is unset still leaves the bearer token in charge.
    unset = Provider(id="azure", env_key="UNSET_KEY", bearer_token="tok-config-123")
    assert (await session.credentials(unset)).source == "config"
    set_ = Provider(id="azure", env_key="AZURE_KEY", bearer_token="tok-config-123")
    creds = await session.credentials(set_)
    assert (creds.source, creds.bearer) == ("env", Secret("sk-azure-env"))
    assert session.check_credentials(with_token) is None


async def test_a_rejected_bearer_token_is_named_as_the_configs(
    tmp_path: Path, clock: Clock
) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    provider = Provider(id="azure", env_key=None, bearer_token="tok-config-123")
    creds = await session.credentials(provider)
    assert session.rejected(creds, provider, "401 invalid_api_key") == (
        "upstream rejected the experimental_bearer_token of provider azure "
        "(401 invalid_api_key): correct it in config.toml"
    )


async def test_check_credentials_is_the_error_a_job_would_fail_with(
    tmp_path: Path, clock: Clock
) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    azure = Provider(id="azure", env_key="AZURE_OPENAI_API_KEY")
    error = session.check_credentials(azure)
    assert error is not None
    with pytest.raises(RpcError) as info:
        await session.credentials(azure)
    assert (error.kind, error.message) == (info.value.kind, info.value.message)
    with_key = await make_session(
        tmp_path, FakeIssuer(clock, set()), clock, env={"AZURE_OPENAI_API_KEY": "sk-az"}
    )
    assert with_key.check_credentials(azure) is None


async def test_a_rejected_environment_key_says_where_to_correct_it(
    tmp_path: Path, clock: Clock
) -> None:
    session = await make_session(
        tmp_path, FakeIssuer(clock, set()), clock, env={"AZURE_KEY": "sk-azure-env"}
    )
    provider = Provider(id="azure", env_key="AZURE_KEY")
    creds = await session.credentials(provider)
    assert session.rejected(creds, provider, "401 invalid_api_key") == (
        "upstream rejected the API key in AZURE_KEY of the daemon's environment "
        "(401 invalid_api_key): correct AZURE_KEY where codexd gets its environment (for the "
        "service: ~/.config/codexd/env) and restart codexd"
    )
