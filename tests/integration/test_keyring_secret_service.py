"""The keyring store against a real Secret Service: gnome-keyring on a private D-Bus session.

The same conformance checks the keyrings.alt suite runs (tests/unit/test_auth_stores.py), then
what only a real keyring shows: Codex's entry as another program finds it, the secret not in
plain text on disk, a locked collection, `auto` choosing it, and a real daemon logging in to it.
Skips, with the reason, where gnome-keyring or secretstorage cannot be had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codexd.auth.authfile import auth_file_path
from codexd.auth.stores import (
    AutoStore,
    KeyringStore,
    StoreError,
    is_protecting_backend,
    keyring_account,
    open_store,
)
from codexd.testing.daemon_process import DaemonProcess
from tests.conftest import missing
from tests.integration._secret_service import (
    SecretServiceSession,
    Unavailable,
    private_secret_service,
)
from tests.unit.test_auth_stores import (
    sample,
    test_delete_reports_whether_there_was_a_login,
    test_empty_store_loads_none,
    test_names_and_sources,
    test_save_replaces,
    test_save_then_load_keeps_the_whole_document,
)

pytestmark = pytest.mark.anyio

# Collected here again, with this module's `make_store`: the Secret Service passes the same suite.
CONFORMANCE = (
    test_empty_store_loads_none,
    test_save_then_load_keeps_the_whole_document,
    test_save_replaces,
    test_delete_reports_whether_there_was_a_login,
    test_names_and_sources,
)

CODEX_SERVICE = "Codex Auth"  # Codex CLI's own name for its keyring entry
API_KEY = "sk-proj-secret-service-login-0123456789"


def secret_service_backend() -> Any:
    try:
        import secretstorage  # noqa: F401
    except ImportError:
        missing("needs secretstorage (keyring's Secret Service backend)")
    from keyring.backends import SecretService

    return SecretService.Keyring()  # type: ignore[no-untyped-call]


def start_or_skip(stack: ExitStack) -> SecretServiceSession:
    secret_service_backend()
    try:
        return stack.enter_context(private_secret_service())
    except Unavailable as exc:
        missing(f"needs a private Secret Service (gnome-keyring-daemon, dbus-daemon): {exc}")


@pytest.fixture(scope="module")
def secret_service() -> Iterator[SecretServiceSession]:
    with ExitStack() as stack:
        yield start_or_skip(stack)


@pytest.fixture
def on_bus(secret_service: SecretServiceSession, monkeypatch: pytest.MonkeyPatch) -> Any:
    """This process talks to the private bus; returns a Secret Service backend on it."""
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", secret_service.address)
    return secret_service_backend()


@pytest.fixture
def make_store(on_bus: Any, tmp_path: Path) -> Any:
    home = tmp_path / "home"
    home.mkdir()
    return lambda: KeyringStore(str(home), secret_service_backend())


def find_items(home: Path) -> list[Any]:
    """Codex's entry as any Secret Service client finds it: by service and account."""
    import secretstorage

    conn = secretstorage.dbus_init()
    try:
        attributes = {"service": CODEX_SERVICE, "username": keyring_account(str(home))}
        return [
            (item.get_label(), item.get_secret())
            for item in secretstorage.search_items(conn, attributes)
        ]
    finally:
        conn.close()


# ---------------------------------------------------------------------- beyond the suite


async def test_the_entry_is_codexs_and_never_plain_on_disk(
    on_bus: Any, secret_service: SecretServiceSession, tmp_path: Path
) -> None:
    (tmp_path / "auth.json").write_text("{}")
    doc = sample()
    await KeyringStore(str(tmp_path), on_bus).save(doc)

    [(_, secret)] = find_items(tmp_path)
    assert b"\n" not in secret  # compact JSON, as Codex stores it
    stored = msgspec.json.decode(secret)
    assert stored == msgspec.json.decode(doc.to_bytes())
    assert stored["unknown"] == {"kept": 1}
    assert not (tmp_path / "auth.json").exists()

    assert doc.tokens is not None
    keyrings = secret_service.data_dir / "keyrings"
    on_disk = b"".join(p.read_bytes() for p in keyrings.iterdir())
    assert on_disk and doc.tokens.refresh_token.reveal().encode() not in on_disk


async def test_secret_service_protects_and_auto_uses_it(on_bus: Any, tmp_path: Path) -> None:
    assert is_protecting_backend(on_bus)
    store = await open_store("auto", str(tmp_path), backend=on_bus)
    assert isinstance(store, AutoStore)
    doc = sample()
    await store.save(doc)
    assert (store.name, store.source) == ("keyring", "keyring")
    assert not os.path.exists(auth_file_path(str(tmp_path)))  # noqa: ASYNC240
    assert len(find_items(tmp_path)) == 1
    again = await KeyringStore(str(tmp_path), secret_service_backend()).load()
    assert again is not None and again.to_bytes() == doc.to_bytes()


async def test_a_locked_collection_says_unlock_it_and_auto_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import secretstorage

    with ExitStack() as stack:  # a session of its own: this one stays locked
        session = start_or_skip(stack)
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session.address)
        backend = secret_service_backend()
        auto = await open_store("auto", str(tmp_path), backend=backend)
        await auto.save(sample())
        conn = secretstorage.dbus_init()
        try:
            secretstorage.get_default_collection(conn).lock()
        finally:
            conn.close()

        with pytest.raises(StoreError) as info:
            await KeyringStore(str(tmp_path), backend).load()
        assert "unlock it" in str(info.value)
        assert 'cli_auth_credentials_store = "file"' in str(info.value)
        assert await auto.load() is None  # the keyring refuses; the file (empty) answers
        assert auto.name == "file"


# ---------------------------------------------------------------------- a real daemon


def codexctl(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "codexctl", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done


@pytest.mark.parametrize("mode", ["keyring", "auto"])
def test_daemon_logs_in_to_the_secret_service(
    mode: str,
    secret_service: SecretServiceSession,
    daemon_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret_service_backend()
    home = Path(daemon_env["CODEX_HOME"])
    (home / "config.toml").write_text(f'cli_auth_credentials_store = "{mode}"\n')
    env = dict(daemon_env, **secret_service.env)
    env.pop("PYTHON_KEYRING_BACKEND", None)  # keyring picks its backend itself, as for a user
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", secret_service.address)

    with DaemonProcess(env) as daemon:
        login = codexctl(env, "login", "--api-key", "--no-verify", stdin=API_KEY + "\n")
        assert login.returncode == 0, login.stderr
        assert login.stdout == "Logged in using an API key stored in the keyring\n"
        account = json.loads(codexctl(env, "rpc", "account/read").stdout)
        assert (account["mode"], account["store"], account["source"]) == (
            "api_key",
            "keyring",
            "keyring",
        )
        assert not os.path.exists(auth_file_path(str(home)))
        [(_, secret)] = find_items(home)
        assert json.loads(secret) == {"auth_mode": "apikey", "OPENAI_API_KEY": API_KEY}

        out = codexctl(env, "logout")
        assert out.returncode == 0, out.stderr
        assert find_items(home) == []
        stderr = daemon.stderr()
    assert API_KEY not in login.stdout + login.stderr + stderr
