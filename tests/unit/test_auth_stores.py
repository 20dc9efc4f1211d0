"""One conformance suite for the credential stores, and the `auto` choice."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null
from keyring.errors import KeyringLocked, PasswordDeleteError

from codexd.auth.authfile import AuthDocument, auth_file_path
from codexd.auth.stores import (
    KEYRING_SERVICE,
    AutoStore,
    FileStore,
    KeyringStore,
    StoreError,
    is_protecting_backend,
    keyring_account,
    open_store,
)
from tests.conftest import missing
from tests.unit.test_auth_support import chatgpt_doc, make_tokens

pytestmark = pytest.mark.anyio

try:
    from keyrings.alt.file import PlaintextKeyring
except ImportError:  # pragma: no cover - depends on the test extras
    PlaintextKeyring = None


def alt_file_backend(path: Path) -> Any:
    if PlaintextKeyring is None:
        missing("needs keyrings.alt (it belongs in the test extras)")
    backend = PlaintextKeyring()
    backend.file_path = str(path)  # a private keyring file, not the user's
    return backend


class MemoryKeyring(KeyringBackend):
    """A stand-in for an OS keyring that protects secrets (Secret Service, Keychain)."""

    priority = 5  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}
        self.locked = False

    def get_password(self, service: str, username: str) -> str | None:
        if self.locked:
            raise KeyringLocked("the collection is locked")
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.locked:
            raise KeyringLocked("the collection is locked")
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.items:
            raise PasswordDeleteError("not found")
        del self.items[(service, username)]


@pytest.fixture(params=["file", "keyring"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    home = tmp_path / "home"
    home.mkdir()
    if request.param == "file":
        yield lambda: FileStore(str(home))
    else:
        backend = alt_file_backend(tmp_path / "keyring_pass.cfg")
        yield lambda: KeyringStore(str(home), backend)


def sample() -> AuthDocument:
    doc = AuthDocument.from_dict(chatgpt_doc(make_tokens(exp=2e9)) | {"unknown": {"kept": 1}})
    assert isinstance(doc, AuthDocument)
    return doc


# ---------------------------------------------------------------------- conformance


async def test_empty_store_loads_none(make_store: Any) -> None:
    assert await make_store().load() is None


async def test_save_then_load_keeps_the_whole_document(make_store: Any) -> None:
    doc = sample()
    await make_store().save(doc)
    again = await make_store().load()  # a second instance: another program sees it too
    assert again is not None
    assert msgspec.json.decode(again.to_bytes()) == msgspec.json.decode(doc.to_bytes())
    assert again.chatgpt_tokens is not None and again.chatgpt_tokens == doc.chatgpt_tokens


async def test_save_replaces(make_store: Any) -> None:
    store = make_store()
    await store.save(sample())
    newer = sample()
    await store.save(newer)
    loaded = await store.load()
    assert loaded is not None and loaded.tokens is not None and newer.tokens is not None
    assert loaded.tokens.refresh_token == newer.tokens.refresh_token


async def test_delete_reports_whether_there_was_a_login(make_store: Any) -> None:
    store = make_store()
    assert await store.delete() is False
    await store.save(sample())
    assert await store.delete() is True
    assert await store.load() is None


async def test_names_and_sources(make_store: Any) -> None:
    # What `account/read` reports as `store` and `source` for each store, not either pair.
    expected = {FileStore: ("file", "auth_file"), KeyringStore: ("keyring", "keyring")}
    store = make_store()
    assert (store.name, store.source) == expected[type(store)]
    doc = sample()
    await store.save(doc)
    assert doc.tokens is not None
    shown = repr(store)
    for secret in (doc.tokens.refresh_token, doc.tokens.access_token):
        assert secret.reveal() not in shown


# ---------------------------------------------------------------------- file specifics


async def test_file_store_writes_0600_and_reports_a_bad_file(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    await store.save(sample())
    path = Path(auth_file_path(str(tmp_path)))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_bytes(b'{"tokens": 3}')  # noqa: ASYNC240 - a test fixture write
    with pytest.raises(StoreError, match=r"\$\.tokens"):
        await store.load()


# ---------------------------------------------------------------------- keyring specifics


def test_keyring_account_is_codexs_store_key(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    expected = "cli|" + hashlib.sha256(str(real).encode()).hexdigest()[:16]
    assert keyring_account(str(real)) == expected
    assert keyring_account(str(link)) == expected  # canonical path, as Codex


async def test_keyring_entry_is_codexs_and_replaces_auth_json(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    (tmp_path / "auth.json").write_text("{}")
    doc = sample()
    await KeyringStore(str(tmp_path), backend).save(doc)
    value = backend.items[(KEYRING_SERVICE, keyring_account(str(tmp_path)))]
    assert KEYRING_SERVICE == "Codex Auth"
    assert "\n" not in value  # compact JSON
    assert msgspec.json.decode(value) == msgspec.json.decode(doc.to_bytes())
    assert not (tmp_path / "auth.json").exists()


async def test_a_locked_keyring_is_a_store_error_that_says_what_to_do(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    backend.locked = True
    with pytest.raises(StoreError) as info:
        await KeyringStore(str(tmp_path), backend).save(sample())
    assert "unlock it" in str(info.value) and 'cli_auth_credentials_store = "file"' in str(
        info.value
    )
    assert "rt-" not in str(info.value)


async def test_a_hung_keyring_times_out_without_blocking_the_loop(tmp_path: Path) -> None:
    release = threading.Event()

    class Hung(MemoryKeyring):
        def get_password(self, service: str, username: str) -> str | None:
            release.wait(10)
            return None

    store = KeyringStore(str(tmp_path), Hung(), timeout=0.05)
    try:
        with anyio.fail_after(5), pytest.raises(StoreError, match="did not answer"):
            await store.load()
    finally:
        release.set()


# ---------------------------------------------------------------------- auto


def test_which_backends_protect_secrets(tmp_path: Path) -> None:
    assert is_protecting_backend(MemoryKeyring())
    assert not is_protecting_backend(fail.Keyring())
    assert not is_protecting_backend(null.Keyring())
    if PlaintextKeyring is not None:
        assert not is_protecting_backend(alt_file_backend(tmp_path / "k.cfg"))


async def test_auto_without_a_protecting_keyring_uses_the_file_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="codexd.auth")
    store = await open_store("auto", str(tmp_path), backend=fail.Keyring())
    assert isinstance(store, FileStore)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "auth.json" in warnings[0].getMessage()


async def test_auto_with_plaintext_keyrings_alt_uses_the_file(tmp_path: Path) -> None:
    store = await open_store("auto", str(tmp_path), backend=alt_file_backend(tmp_path / "k.cfg"))
    assert isinstance(store, FileStore)


async def test_auto_with_a_real_keyring_uses_it_and_falls_back_once_on_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="codexd.auth")
    backend = MemoryKeyring()
    store = await open_store("auto", str(tmp_path), backend=backend)
    assert isinstance(store, AutoStore)
    await store.save(sample())
    assert store.name == "keyring" and backend.items
    backend.locked = True
    loaded = await store.load()  # keyring fails: the file (empty) answers
    assert loaded is None and store.name == "file"
    await store.save(sample())
    await store.save(sample())
    assert os.path.exists(auth_file_path(str(tmp_path)))  # noqa: ASYNC240
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_explicit_modes(tmp_path: Path) -> None:
    assert isinstance(await open_store("file", str(tmp_path)), FileStore)
    assert isinstance(
        await open_store("keyring", str(tmp_path), backend=MemoryKeyring()), KeyringStore
    )
