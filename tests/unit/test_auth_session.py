from __future__ import annotations

import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import ByteReceiveStream

from codexctl.protocol import RpcError
from codexd.auth.authfile import AuthDocument, auth_file_path, read_auth_file, write_atomic
from codexd.auth.oauth import OAuthFailure, RefreshReason, TokenGrant, parse_refresh_response
from codexd.auth.session import AuthSession, Credentials, Provider
from codexd.auth.stores import FileStore
from codexd.auth.tokens import Secret
from tests.unit.test_auth_support import chatgpt_doc, make_tokens

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0
REUSED = (
    b'{"error":{"message":"Your refresh token has already been used to generate a new access '
    b'token. Please try signing in again.","type":"invalid_request_error","param":null,'
    b'"code":"refresh_token_reused"}}'
)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeIssuer:
    """Single-use refresh tokens, like the real issuer; records every refresh it is sent."""

    def __init__(self, clock: Clock, valid: set[str]) -> None:
        self.clock = clock
        self.valid = set(valid)
        self.spent: list[str] = []
        self.calls = 0
        self.reasons: list[str] = []
        self.issued: list[dict[str, str]] = []
        self.gate: anyio.Event | None = None
        self.failures: list[tuple[int, bytes]] = []

    async def refresh(self, token: Secret, reason: RefreshReason) -> TokenGrant | OAuthFailure:
        self.calls += 1
        self.reasons.append(reason)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            return parse_refresh_response(*self.failures.pop(0))
        rt = token.reveal()
        if rt in self.spent:
            return parse_refresh_response(401, REUSED)
        if rt not in self.valid:
            return parse_refresh_response(401, b'{"error": "refresh_token_invalidated"}')
        self.valid.discard(rt)
        self.spent.append(rt)
        new = make_tokens(exp=self.clock() + 3600)
        self.valid.add(new["refresh_token"])
        self.issued.append(new)
        return TokenGrant(
            id_token=Secret(new["id_token"]),
            access_token=Secret(new["access_token"]),
            refresh_token=Secret(new["refresh_token"]),
        )


def write_doc(home: Path, raw: dict[str, Any]) -> None:
    write_atomic(auth_file_path(str(home)), msgspec.json.encode(raw))


def raw_doc(home: Path) -> dict[str, Any]:
    with open(auth_file_path(str(home)), "rb") as f:
        raw = msgspec.json.decode(f.read())
    assert isinstance(raw, dict)
    return raw


def disk_tokens(home: Path) -> dict[str, str]:
    doc = read_auth_file(auth_file_path(str(home)))
    assert isinstance(doc, AuthDocument)
    tokens = doc.raw()["tokens"]
    assert isinstance(tokens, dict)
    return tokens


async def make_session(
    home: Path,
    issuer: FakeIssuer,
    clock: Clock,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> AuthSession:
    session = AuthSession(
        codex_home=str(home),
        store=FileStore(str(home)),
        refresher=issuer.refresh,
        env=env or {},
        clock=clock,
        retry_delays=(0, 0, 0),
        **kwargs,
    )
    await session.load()
    return session


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def expired(tmp_path: Path, clock: Clock) -> dict[str, str]:
    tokens = make_tokens(exp=clock() - 10)
    write_doc(tmp_path, chatgpt_doc(tokens))
    return tokens


# ---------------------------------------------------------------------- when to refresh


async def test_a_token_valid_beyond_five_minutes_is_used_as_is(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock() + 310)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    creds = await session.credentials()
    assert creds.bearer == Secret(tokens["access_token"])
    assert creds.headers() == {
        "Authorization": f"Bearer {tokens['access_token']}",
        "ChatGPT-Account-ID": "acct-1",
    }
    assert issuer.calls == 0


async def test_a_token_within_five_minutes_is_refreshed_and_written(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock() + 290)
    write_doc(tmp_path, chatgpt_doc(tokens) | {"kept": True})
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    creds = await session.credentials()
    new = issuer.issued[0]
    assert creds.bearer == Secret(new["access_token"])
    assert issuer.reasons == ["proactive_expiry"]
    on_disk = disk_tokens(tmp_path)
    assert on_disk["refresh_token"] == new["refresh_token"]
    assert raw_doc(tmp_path)["kept"] is True


async def test_hundred_concurrent_callers_cause_exactly_one_refresh(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    issuer.gate = anyio.Event()
    session = await make_session(tmp_path, issuer, clock)
    results: list[Credentials] = []

    async def job() -> None:
        results.append(await session.credentials())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(job)
            await anyio.wait_all_tasks_blocked()
            assert issuer.calls == 1  # every other caller is waiting for that one refresh
            issuer.gate.set()
    assert issuer.calls == 1
    assert len(results) == 100
    assert {r.bearer.reveal() for r in results if r.bearer} == {issuer.issued[0]["access_token"]}
    assert session.refresh_count == 1


async def test_a_cancelled_first_caller_does_not_lose_the_refresh(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    issuer.gate = anyio.Event()
    session = await make_session(tmp_path, issuer, clock)
    got: list[Credentials] = []

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()

            async def owner() -> None:
                with first:
                    await session.credentials()

            tg.start_soon(owner)
            await anyio.wait_all_tasks_blocked()

            async def waiter() -> None:
                got.append(await session.credentials())

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            first.cancel()
            issuer.gate.set()
    assert issuer.calls == 1
    assert got[0].bearer == Secret(issuer.issued[0]["access_token"])
    assert disk_tokens(tmp_path)["refresh_token"] == issuer.issued[0]["refresh_token"]


# ---------------------------------------------------------------------- other programs


CHILD = textwrap.dedent(
    """
    import sys
    from codexd.auth.authfile import hold_auth_lock_blocking, write_atomic
    home, payload = sys.argv[1], sys.argv[2]
    with hold_auth_lock_blocking(home):
        print("locked", flush=True)
        sys.stdin.readline()
        write_atomic(home + "/auth.json", open(payload, "rb").read())
    """
)


async def read_line(stream: ByteReceiveStream) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        buf += await stream.receive(1)
    return buf


async def test_tokens_another_process_refreshed_under_the_lock_are_adopted(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)  # holds the expired tokens
    newer = make_tokens(exp=clock() + 3600)
    payload = tmp_path / "payload.json"
    payload.write_bytes(msgspec.json.encode(chatgpt_doc(newer, "2026-11-25T10:00:00Z")))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    got: list[Credentials] = []

    with anyio.fail_after(30):
        async with await anyio.open_process(
            [sys.executable, str(script), str(tmp_path), str(payload)]
        ) as proc:
            assert proc.stdout is not None and proc.stdin is not None
            assert await read_line(proc.stdout) == b"locked\n"

            async def job() -> None:
                got.append(await session.credentials())

            async with anyio.create_task_group() as tg:
                tg.start_soon(job)
                await anyio.wait_all_tasks_blocked()
                assert not got and issuer.calls == 0  # waiting for the child's lock
                await proc.stdin.send(b"go\n")
            assert await proc.wait() == 0

    assert got[0].bearer == Secret(newer["access_token"])
    assert issuer.calls == 0
    assert expired["refresh_token"] not in issuer.spent


async def test_a_401_after_another_program_refreshed_adopts_instead_of_refreshing(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    creds = await session.credentials()
    newer = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(newer, "2026-11-25T10:00:00Z"))  # Codex CLI refreshed
    again = await session.refresh("unauthorized_recovery", stale=creds)
    assert again.bearer == Secret(newer["access_token"])
    assert issuer.calls == 0


async def test_a_401_refreshes_once_and_later_401s_with_old_credentials_do_not(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    stale = await session.credentials()
    first = await session.refresh("unauthorized_recovery", stale=stale)
    second = await session.refresh("unauthorized_recovery", stale=stale)
    assert first.bearer == second.bearer == Secret(issuer.issued[0]["access_token"])
    assert issuer.calls == 1
    assert issuer.reasons == ["unauthorized_recovery"]


async def test_reload_from_disk_adopts_newer_and_ignores_stale_snapshots(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens, "2026-11-25T09:00:00Z"))
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    newer = make_tokens(exp=clock() + 7200)
    write_doc(tmp_path, chatgpt_doc(newer, "2026-11-25T10:00:00Z"))
    assert await session.reload_from_disk() is True
    assert (await session.credentials()).bearer == Secret(newer["access_token"])
    assert await session.reload_from_disk() is False
    write_doc(tmp_path, chatgpt_doc(tokens, "2026-11-25T09:00:00Z"))  # a stale write-back
    assert await session.reload_from_disk() is False
    assert (await session.credentials()).bearer == Secret(newer["access_token"])
    os.unlink(auth_file_path(str(tmp_path)))  # logged out elsewhere
    assert await session.reload_from_disk() is True
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert info.value.kind == "unauthenticated"


# ---------------------------------------------------------------------- failures


async def test_a_reused_refresh_token_is_auth_expired_and_final_until_a_new_login(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, set())
    issuer.spent.append(expired["refresh_token"])
    session = await make_session(tmp_path, issuer, clock)
    with pytest.raises(RpcError) as info:
        await session.credentials()
    err = info.value
    assert err.kind == "auth_expired" and err.code == -32011
    assert err.message.startswith(
        "Your access token could not be refreshed because your refresh token was already used."
    )
    assert "codexctl login" in err.message
    assert err.data.upstream_code == "refresh_token_reused"
    with pytest.raises(RpcError):
        await session.credentials()
    assert issuer.calls == 1  # the dead token is not sent again
    assert disk_tokens(tmp_path)["refresh_token"] == expired["refresh_token"]

    fresh = make_tokens(exp=clock() + 3600)
    doc = AuthDocument.from_dict(chatgpt_doc(fresh))
    assert isinstance(doc, AuthDocument)
    await session.save_login(doc)
    assert (await session.credentials()).bearer == Secret(fresh["access_token"])


async def test_transient_failures_are_retried_and_do_not_log_out(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    issuer.failures = [(503, b"upstream down"), (500, b'{"error":{"message":"oops"}}')]
    session = await make_session(tmp_path, issuer, clock)
    creds = await session.credentials()
    assert issuer.calls == 3
    assert creds.bearer == Secret(issuer.issued[0]["access_token"])


async def test_transient_failures_past_the_retries_are_retryable_upstream_errors(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    issuer.failures = [(502, b"")] * 4
    session = await make_session(tmp_path, issuer, clock)
    with pytest.raises(RpcError) as info:
        await session.credentials()
    assert info.value.kind == "upstream_error" and info.value.data.retryable
    assert "still logged in" in info.value.message
    assert issuer.calls == 4
    assert disk_tokens(tmp_path) == expired  # nothing lost
    assert (await session.credentials()).bearer == Secret(issuer.issued[0]["access_token"])


async def test_a_failed_proactive_refresh_keeps_using_an_unexpired_token(
    tmp_path: Path, clock: Clock
) -> None:
    tokens = make_tokens(exp=clock() + 120)
    write_doc(tmp_path, chatgpt_doc(tokens))
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    issuer.failures = [(503, b"")] * 4
    session = await make_session(tmp_path, issuer, clock)
    creds = await session.credentials()
    assert creds.bearer == Secret(tokens["access_token"])


# ---------------------------------------------------------------------- which credential


async def test_precedence(tmp_path: Path, clock: Clock) -> None:
    issuer = FakeIssuer(clock, set())
    env = {"OPENAI_API_KEY": "sk-env", "LOCAL_KEY": "sk-local"}

    session = await make_session(tmp_path, issuer, clock, env=env)
    creds = await session.credentials()
    assert (creds.mode, creds.source, creds.bearer) == ("api_key", "env", Secret("sk-env"))

    write_doc(tmp_path, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored"})
    await session.reload_from_disk()
    assert (await session.credentials()).source == "env"
    session_no_env = await make_session(tmp_path, issuer, clock)
    creds = await session_no_env.credentials()
    assert (creds.source, creds.bearer) == ("auth_file", Secret("sk-stored"))

    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens) | {"OPENAI_API_KEY": "sk-exchanged"})
    await session.reload_from_disk()
    assert (await session.credentials()).mode == "chatgpt"  # the stored login beats the env key
    assert session.account_info().source == "auth_file"

    session.forced_login_method = "api"
    creds = await session.credentials()
    assert (creds.mode, creds.bearer) == ("api_key", Secret("sk-env"))
    assert session.account_info().mode == "api_key"

    custom = Provider(id="local", env_key="LOCAL_KEY")
    assert (await session.credentials(custom)).bearer == Secret("sk-local")
    assert (await session.credentials(Provider(id="ollama", env_key=None))).mode == "none"
    shared = Provider(id="proxy", env_key=None, requires_openai_auth=True)
    session.forced_login_method = None
    assert (await session.credentials(shared)).mode == "chatgpt"


async def test_no_credentials_names_the_env_var_the_daemon_and_codexctl_login(
    tmp_path: Path, clock: Clock
) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    with pytest.raises(RpcError) as info:
        await session.credentials()
    err = info.value
    assert err.kind == "unauthenticated" and err.code == -32010
    assert "OPENAI_API_KEY" in err.message
    assert "daemon's environment" in err.message
    assert "codexctl login" in err.message
    with pytest.raises(RpcError) as info:
        await session.credentials(Provider(id="azure", env_key="AZURE_OPENAI_API_KEY"))
    assert "AZURE_OPENAI_API_KEY" in info.value.message
    assert "daemon's environment" in info.value.message
    session.forced_login_method = "chatgpt"
    with pytest.raises(RpcError, match="codexctl login"):
        await session.credentials()


async def test_account_info(tmp_path: Path, clock: Clock) -> None:
    tokens = make_tokens(exp=1_800_003_600, email="ada@example.com", plan="pro", account="acct-7")
    write_doc(tmp_path, chatgpt_doc(tokens, "2026-11-25T09:00:00.123456789Z"))
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    info = session.account_info()
    assert msgspec.to_builtins(info) == {
        "mode": "chatgpt",
        "source": "auth_file",
        "email": "ada@example.com",
        "plan_type": "pro",
        "account_id": "acct-7",
        "expires_at": "2027-01-15T09:00:00.000000Z",
        "last_refresh": "2026-11-25T09:00:00.123456Z",
        "store": "file",
        "key_hint": None,
    }
    empty = await make_session(tmp_path / "nowhere", FakeIssuer(clock, set()), clock)
    assert empty.account_info().mode is None


async def test_logout_revokes_then_deletes(tmp_path: Path, clock: Clock) -> None:
    tokens = make_tokens(exp=clock() + 3600)
    write_doc(tmp_path, chatgpt_doc(tokens))
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    revoked_with: list[str] = []

    async def revoke(t: Any) -> bool:
        revoked_with.append(t.refresh_token.reveal())
        return True

    assert await session.logout(revoke) is True
    assert revoked_with == [tokens["refresh_token"]]
    assert read_auth_file(auth_file_path(str(tmp_path))) is None
    assert session.account_info().mode is None


# ---------------------------------------------------------------------- secrets never leave


async def test_no_token_appears_in_logs_errors_reprs_or_results(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = make_tokens(exp=clock() - 10)
    write_doc(tmp_path, chatgpt_doc(tokens) | {"OPENAI_API_KEY": "sk-exchanged-secret-key"})
    issuer = FakeIssuer(clock, {tokens["refresh_token"]})
    issuer.failures = [(503, b"")]
    session = await make_session(
        tmp_path, issuer, clock, env={"OPENAI_API_KEY": "sk-env-secret-key"}
    )
    shown: list[str] = []
    creds = await session.credentials()  # one transient failure, then a refresh
    shown += [repr(creds), str(creds), repr(session), repr(session.store)]
    shown.append(msgspec.json.encode(session.account_info()).decode())
    clock.now += 7200  # expire the new tokens; the issuer now says reused
    issuer.spent.append(issuer.issued[0]["refresh_token"])
    issuer.valid.clear()
    with pytest.raises(RpcError) as info:
        await session.credentials()
    shown += [
        str(info.value),
        repr(info.value),
        msgspec.json.encode(info.value.to_object()).decode(),
    ]
    session.forced_login_method = "api"
    shown.append(repr(await session.credentials()))
    shown += [r.getMessage() for r in caplog.records] + [caplog.text]
    text = "\n".join(shown)
    secrets = [tokens["id_token"], tokens["access_token"], tokens["refresh_token"]]
    secrets += [issuer.issued[0][k] for k in ("id_token", "access_token", "refresh_token")]
    secrets += ["sk-exchanged-secret-key", "sk-env-secret-key"]
    assert caplog.records, "the scenario should have logged something"
    for secret in secrets:
        assert secret not in text
        assert secret.split(".")[1 if "." in secret else 0] not in text


async def test_a_caller_cancelled_while_waiting_for_the_lock_hands_over_to_the_next(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    import fcntl

    from codexd.auth.authfile import lock_file_path

    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    session = await make_session(tmp_path, issuer, clock)
    held = os.open(lock_file_path(str(tmp_path)), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(held, fcntl.LOCK_EX)
    got: list[Credentials] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()

            async def owner() -> None:
                with first:
                    await session.credentials()

            async def waiter() -> None:
                got.append(await session.credentials())

            tg.start_soon(owner)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            first.cancel()
            await anyio.wait_all_tasks_blocked()
            assert issuer.calls == 0
            os.close(held)
    assert issuer.calls == 1
    assert got[0].bearer == Secret(issuer.issued[0]["access_token"])


async def test_a_rejected_credential_is_named_with_what_to_do_about_it(
    tmp_path: Path, clock: Clock
) -> None:
    session = await make_session(tmp_path, FakeIssuer(clock, set()), clock)
    key = Secret("sk-rejected")
    azure = Provider(id="azure", env_key="AZURE_OPENAI_API_KEY")
    status = "401 invalid_api_key"
    said = {
        "env": session.rejected(Credentials("api_key", "env", key), azure, status),
        "auth_file": session.rejected(Credentials("api_key", "auth_file", key), Provider(), status),
        "keyring": session.rejected(Credentials("api_key", "keyring", key), Provider(), status),
    }
    assert "AZURE_OPENAI_API_KEY of the daemon's environment (401 invalid_api_key)" in said["env"]
    assert "~/.config/codexd/env" in said["env"]
    assert said["auth_file"] == (
        f"upstream rejected the API key stored in {tmp_path / 'auth.json'} (401 "
        "invalid_api_key): store a valid one with codexctl login --api-key, or remove it with "
        "codexctl logout"
    )
    assert said["keyring"].startswith("upstream rejected the API key stored in the keyring (")
    chatgpt = session.rejected(Credentials("chatgpt", "keyring", key), Provider(), "401")
    assert chatgpt == (
        "upstream rejected the ChatGPT login stored in the keyring (401): log in again with "
        "codexctl login"
    )
    assert all("sk-rejected" not in text for text in [*said.values(), chatgpt])


async def test_concurrent_callers_share_one_failing_refresh_and_its_retries(
    tmp_path: Path, clock: Clock, expired: dict[str, str]
) -> None:
    # The state lock and the re-read of auth.json under it would hide a missing single-flight
    # guard when the refresh succeeds (the next caller adopts the new tokens). When the issuer
    # keeps failing, only the shared flight stops each caller from running its own retries.
    issuer = FakeIssuer(clock, {expired["refresh_token"]})
    issuer.failures = [(502, b"")] * 100
    session = await make_session(tmp_path, issuer, clock)
    errors: list[RpcError] = []

    async def job() -> None:
        try:
            await session.credentials()
        except RpcError as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(job)
    assert len(errors) == 10
    assert all(e.kind == "upstream_error" and e.data.retryable for e in errors)
    assert issuer.calls == 4  # one refresh, tried once and retried three times, for all ten
    assert session.refresh_count == 4
    assert disk_tokens(tmp_path) == expired
