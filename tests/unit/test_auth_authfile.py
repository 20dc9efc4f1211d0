from __future__ import annotations

import fcntl
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexd.auth.authfile import (
    AuthDocument,
    AuthFileError,
    LockTimeout,
    auth_file_path,
    hold_auth_lock,
    lock_file_path,
    read_auth_file,
    write_atomic,
    write_auth_file,
)
from codexd.auth.tokens import Secret
from tests.unit.test_auth_support import chatgpt_doc, make_jwt, make_tokens

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def doc_from(raw: dict[str, Any]) -> AuthDocument:
    doc = AuthDocument.from_dict(raw)
    assert isinstance(doc, AuthDocument), doc
    return doc


# ---------------------------------------------------------------------- every era's shape


def test_2025_chatgpt_file_without_auth_mode() -> None:
    tokens = make_tokens(exp=2e9)
    tokens.pop("account_id")
    doc = doc_from(
        {"OPENAI_API_KEY": None, "tokens": tokens, "last_refresh": "2025-07-01T10:00:00.123456789Z"}
    )
    assert doc.mode == "chatgpt"
    assert doc.chatgpt_tokens is not None and doc.chatgpt_tokens.account_id is None
    assert doc.last_refresh == datetime(2025, 7, 1, 10, 0, 0, 123456, tzinfo=UTC)


def test_2025_file_with_an_exchanged_key_and_no_auth_mode_is_api_key_mode() -> None:
    doc = doc_from({"OPENAI_API_KEY": "sk-x", "tokens": make_tokens(exp=2e9)})
    assert doc.mode == "api_key"
    assert doc.chatgpt_tokens is None


def test_api_key_login_is_exactly_what_codex_writes() -> None:
    doc = AuthDocument.api_key_login(Secret("sk-proj-1"))
    assert msgspec.json.decode(doc.to_bytes()) == {
        "auth_mode": "apikey",
        "OPENAI_API_KEY": "sk-proj-1",
    }
    assert doc.mode == "api_key"


def test_newest_fields_and_unknown_modes_are_kept_but_not_used() -> None:
    raw = {
        "auth_mode": "agentIdentity",
        "OPENAI_API_KEY": None,
        "agent_identity": "jwt",
        "personal_access_token": "pat",
    }
    doc = doc_from(raw)
    assert doc.mode == "unsupported"
    assert doc.chatgpt_tokens is None
    assert msgspec.json.decode(doc.to_bytes()) == raw


def test_chatgpt_auth_tokens_mode_counts_as_chatgpt() -> None:
    doc = doc_from({"auth_mode": "chatgptAuthTokens", "tokens": make_tokens(exp=2e9)})
    assert doc.mode == "chatgpt" and doc.chatgpt_tokens is not None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"tokens": {"id_token": 1}}', "$.tokens.id_token"),
        (b'{"tokens": {"id_token": "a"}}', "$.tokens"),
        (b'{"OPENAI_API_KEY": 5}', "$.OPENAI_API_KEY"),
    ],
)
def test_a_bad_file_is_a_located_error_value(data: bytes, fragment: str) -> None:
    result = AuthDocument.from_bytes(data)
    assert isinstance(result, AuthFileError)
    assert fragment in result.message


def test_error_values_never_quote_the_secret() -> None:
    result = AuthDocument.from_bytes(
        b'{"OPENAI_API_KEY": "sk-leak", "tokens": {"id_token": "sk-leak2"}}'
    )
    assert isinstance(result, AuthFileError)
    assert "sk-leak" not in result.message


# ---------------------------------------------------------------------- round trips


def test_refresh_keeps_unknown_fields_everywhere_and_replaces_only_returned_tokens() -> None:
    tokens = make_tokens(exp=1e9, account="acct-old")
    raw = chatgpt_doc(tokens) | {"future_top": {"x": 1}}
    raw["tokens"] = raw["tokens"] | {"future_inner": [1, 2]}
    doc = doc_from(raw)
    new_id = make_jwt({"https://api.openai.com/auth": {"chatgpt_account_id": "acct-new"}})
    updated = doc.with_refreshed(
        id_token=Secret(new_id), access_token=Secret("at-2"), refresh_token=None, now=NOW
    )
    out = msgspec.json.decode(updated.to_bytes())
    assert out["future_top"] == {"x": 1}
    assert out["tokens"]["future_inner"] == [1, 2]
    assert out["tokens"]["id_token"] == new_id
    assert out["tokens"]["access_token"] == "at-2"
    assert out["tokens"]["refresh_token"] == tokens["refresh_token"]
    assert out["tokens"]["account_id"] == "acct-new"
    assert out["last_refresh"] == "2026-11-25T09:00:00.000000Z"
    # the original document is untouched
    assert msgspec.json.decode(doc.to_bytes()) == raw


def test_layout_is_codexs_two_space_json_without_trailing_newline() -> None:
    doc = AuthDocument.chatgpt_login(
        id_token=Secret(make_jwt({"https://api.openai.com/auth": {"chatgpt_account_id": "a-1"}})),
        access_token=Secret("at"),
        refresh_token=Secret("rt"),
        api_key=None,
        now=NOW,
    )
    text = doc.to_bytes().decode()
    assert text.startswith(
        '{\n  "auth_mode": "chatgpt",\n  "OPENAI_API_KEY": null,\n  "tokens": {\n'
    )
    assert not text.endswith("\n")
    assert list(msgspec.json.decode(text)) == [
        "auth_mode",
        "OPENAI_API_KEY",
        "tokens",
        "last_refresh",
    ]
    assert list(msgspec.json.decode(text)["tokens"]) == [
        "id_token",
        "access_token",
        "refresh_token",
        "account_id",
    ]
    assert msgspec.json.decode(doc.to_bytes(compact=True)) == msgspec.json.decode(text)


extra_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
reserved = {"auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh"}


@given(st.dictionaries(st.text().filter(lambda k: k not in reserved), extra_values, max_size=5))
def test_unknown_top_level_fields_survive_read_refresh_write(extra: dict[str, Any]) -> None:
    raw = chatgpt_doc(make_tokens(exp=1e9)) | extra
    doc = doc_from(msgspec.json.decode(msgspec.json.encode(raw)))
    updated = doc.with_refreshed(
        id_token=None, access_token=Secret("a"), refresh_token=Secret("r"), now=NOW
    )
    again = AuthDocument.from_bytes(updated.to_bytes())
    assert isinstance(again, AuthDocument)
    out = msgspec.json.decode(again.to_bytes())
    for key, value in extra.items():
        assert out[key] == value


def test_repr_shows_no_secret() -> None:
    tokens = make_tokens(exp=1e9)
    doc = doc_from(chatgpt_doc(tokens) | {"OPENAI_API_KEY": "sk-hidden"})
    shown = repr(doc) + repr(doc.tokens)
    for value in [*tokens.values(), "sk-hidden"]:
        if value != tokens["account_id"]:
            assert value not in shown


# ---------------------------------------------------------------------- files


def test_written_file_is_0600_and_reads_back(tmp_path: Path) -> None:
    path = auth_file_path(str(tmp_path))
    doc = doc_from(chatgpt_doc(make_tokens(exp=1e9)) | {"extra": 1})
    os.umask(0o022)
    write_auth_file(path, doc)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = read_auth_file(path)
    assert isinstance(again, AuthDocument)
    assert again.to_bytes() == doc.to_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["auth.json"]  # no temp file left behind


def test_rewrite_of_a_wider_file_makes_it_0600(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_atomic(str(path), b'{"OPENAI_API_KEY": null}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_file_is_none_and_unreadable_is_an_error(tmp_path: Path) -> None:
    assert read_auth_file(str(tmp_path / "auth.json")) is None
    (tmp_path / "auth.json").mkdir()
    assert isinstance(read_auth_file(str(tmp_path / "auth.json")), AuthFileError)


def test_a_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "auth.json"
    path.write_bytes(b'{"OPENAI_API_KEY": "old"}')

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomic(str(path), b'{"OPENAI_API_KEY": "new"}')
    assert path.read_bytes() == b'{"OPENAI_API_KEY": "old"}'
    assert [p.name for p in tmp_path.iterdir()] == ["auth.json"]


# ---------------------------------------------------------------------- auth.lock


@pytest.mark.anyio
async def test_lock_waits_for_another_holder_without_blocking_the_loop(tmp_path: Path) -> None:
    home = str(tmp_path)
    other = os.open(lock_file_path(home), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(other, fcntl.LOCK_EX)  # another open file description: excluded like a process
    acquired = anyio.Event()
    release = anyio.Event()

    async def take() -> None:
        async with hold_auth_lock(home):
            acquired.set()
            await release.wait()

    bystander_ran = anyio.Event()

    async def bystander() -> None:
        await anyio.lowlevel.checkpoint()
        bystander_ran.set()

    # A hang guard only: should the wait block the loop's thread in flock(), release the
    # other holder so the test can go on and fail below instead of hanging.
    watchdog = threading.Timer(20, fcntl.flock, (other, fcntl.LOCK_UN))
    watchdog.start()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            await anyio.wait_all_tasks_blocked()
            # While `take` waits for the lock, another task runs and finishes: the wait does
            # not hold the event loop's thread, and the lock is still the other holder's.
            tg.start_soon(bystander)
            await bystander_ran.wait()
            assert not acquired.is_set()
            watchdog.cancel()
            os.close(other)
            await acquired.wait()
            # while we hold it, nobody else can
            probe = os.open(lock_file_path(home), os.O_RDWR)
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            release.set()
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
        os.close(probe)


@pytest.mark.anyio
async def test_the_lock_file_codexd_creates_is_0644_like_codex(tmp_path: Path) -> None:
    home = str(tmp_path)
    old = os.umask(0o002)
    try:
        async with hold_auth_lock(home):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(lock_file_path(home)).st_mode) == 0o644


@pytest.mark.anyio
async def test_lock_gives_up_with_a_timeout_value(tmp_path: Path) -> None:
    home = str(tmp_path)
    other = os.open(lock_file_path(home), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(LockTimeout, match=r"auth\.lock stayed locked"):
            async with hold_auth_lock(home, wait_s=0.05):
                pytest.fail("acquired a held lock")
    finally:
        os.close(other)


@pytest.mark.anyio
async def test_cancelling_a_waiter_leaves_the_lock_free(tmp_path: Path) -> None:
    home = str(tmp_path)
    other = os.open(lock_file_path(home), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(other, fcntl.LOCK_EX)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def take() -> None:
                async with hold_auth_lock(home):
                    pytest.fail("acquired a held lock")

            tg.start_soon(take)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    os.close(other)
    async with hold_auth_lock(home, wait_s=1):
        pass
