"""Where the login lives: auth.json (`file`), the OS keyring (`keyring`), or `auto`.

The keyring entry is Codex's own (service `Codex Auth`, account `cli|<16 hex of
sha256(canonical CODEX_HOME)>`, value the compact auth.json), so Codex CLI and codexd see one
login. Keyring calls block (D-Bus, Keychain): they run in a worker thread behind the store's own
CapacityLimiter(1), abandoned on cancellation and bounded by a timeout, so a hung keyring cannot
hold up the daemon.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol, TypeVar

import anyio
import anyio.to_thread

from codexd.auth.authfile import (
    AuthDocument,
    AuthFileError,
    auth_file_path,
    delete_auth_file,
    read_auth_file,
    write_auth_file,
)

KEYRING_SERVICE: Final = "Codex Auth"
KEYRING_TIMEOUT_S: Final = 10.0

StoreName = Literal["file", "keyring"]
StoreMode = Literal["file", "keyring", "auto"]
Source = Literal["auth_file", "keyring"]

log = logging.getLogger("codexd.auth")
T = TypeVar("T")


class StoreError(Exception):
    """A store could not be read or written. The message names the place, never a secret."""


class CredentialStore(Protocol):
    @property
    def name(self) -> StoreName: ...

    @property
    def source(self) -> Source: ...

    async def load(self) -> AuthDocument | None: ...

    async def save(self, doc: AuthDocument) -> None: ...

    async def delete(self) -> bool: ...


def keyring_account(codex_home: str) -> str:
    """Codex's `compute_store_key`: `cli|` + the first 16 hex digits of sha256(canonical home)."""
    try:
        canonical = os.path.realpath(codex_home, strict=True)
    except OSError:
        canonical = codex_home
    return "cli|" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


class FileStore:
    """`$CODEX_HOME/auth.json`, 0600, written atomically."""

    def __init__(self, codex_home: str) -> None:
        self.path = auth_file_path(codex_home)

    @property
    def name(self) -> StoreName:
        return "file"

    @property
    def source(self) -> Source:
        return "auth_file"

    async def load(self) -> AuthDocument | None:
        doc = read_auth_file(self.path)
        if isinstance(doc, AuthFileError):
            raise StoreError(f"{self.path}: {doc.message}")
        return doc

    async def save(self, doc: AuthDocument) -> None:
        try:
            write_auth_file(self.path, doc)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from None

    async def delete(self) -> bool:
        try:
            return delete_auth_file(self.path)
        except OSError as exc:
            raise StoreError(f"cannot delete {self.path}: {exc.strerror}") from None

    def __repr__(self) -> str:
        return f"FileStore({self.path!r})"


class KeyringStore:
    """Codex's keyring entry; `backend` is a keyring backend instance (default: keyring's)."""

    def __init__(
        self, codex_home: str, backend: Any = None, *, timeout: float = KEYRING_TIMEOUT_S
    ) -> None:
        self.account = keyring_account(codex_home)
        self.auth_path = auth_file_path(codex_home)
        self._backend = backend
        self._timeout = timeout
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def name(self) -> StoreName:
        return "keyring"

    @property
    def source(self) -> Source:
        return "keyring"

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        import keyring.errors

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        try:
            with anyio.fail_after(self._timeout):
                return await anyio.to_thread.run_sync(
                    fn, *args, limiter=self._limiter, abandon_on_cancel=True
                )
        except TimeoutError:
            raise StoreError(
                f"the keyring did not answer within {self._timeout:g} s while {what}: unlock it, "
                'or set cli_auth_credentials_store = "file" in config.toml'
            ) from None
        except keyring.errors.KeyringError as exc:
            raise StoreError(
                f"the keyring failed while {what} ({type(exc).__name__}: {exc}): unlock it, "
                'or set cli_auth_credentials_store = "file" in config.toml'
            ) from None

    async def _get_backend(self) -> Any:
        if self._backend is None:
            import keyring

            self._backend = await self._call("opening it", keyring.get_keyring)
        return self._backend

    async def load(self) -> AuthDocument | None:
        backend = await self._get_backend()
        value = await self._call(
            "reading the login", backend.get_password, KEYRING_SERVICE, self.account
        )
        if value is None:
            return None
        doc = AuthDocument.from_bytes(value.encode())
        if isinstance(doc, AuthFileError):
            raise StoreError(f"the keyring entry {KEYRING_SERVICE!r}: {doc.message}")
        return doc

    async def save(self, doc: AuthDocument) -> None:
        backend = await self._get_backend()
        value = doc.to_bytes(compact=True).decode()
        await self._call(
            "saving the login", backend.set_password, KEYRING_SERVICE, self.account, value
        )
        # As Codex: once the keyring holds the login, a stale auth.json must not linger.
        try:
            delete_auth_file(self.auth_path)
        except OSError as exc:
            log.warning("could not remove %s after saving to the keyring: %s", self.auth_path, exc)

    async def delete(self) -> bool:
        import keyring.errors

        backend = await self._get_backend()

        def remove() -> bool:
            try:
                backend.delete_password(KEYRING_SERVICE, self.account)
            except keyring.errors.PasswordDeleteError:
                return False
            return True

        removed = await self._call("deleting the login", remove)
        try:
            removed = delete_auth_file(self.auth_path) or removed
        except OSError as exc:
            raise StoreError(f"cannot delete {self.auth_path}: {exc.strerror}") from None
        return removed

    def __repr__(self) -> str:
        return f"KeyringStore(account={self.account!r})"


class AutoStore:
    """A protecting keyring first; on a keyring error fall back to auth.json (as Codex's auto)."""

    def __init__(self, keyring_store: KeyringStore, file_store: FileStore) -> None:
        self._keyring = keyring_store
        self._file = file_store
        self._active: KeyringStore | FileStore = keyring_store
        self._warned = False

    @property
    def name(self) -> StoreName:
        return self._active.name

    @property
    def source(self) -> Source:
        return self._active.source

    def _fall_back(self, exc: StoreError) -> None:
        if not self._warned:
            log.warning("%s; using %s instead", exc, self._file.path)
            self._warned = True
        self._active = self._file

    async def load(self) -> AuthDocument | None:
        try:
            doc = await self._keyring.load()
        except StoreError as exc:
            self._fall_back(exc)
            return await self._file.load()
        if doc is not None:
            self._active = self._keyring
            return doc
        doc = await self._file.load()
        self._active = self._file if doc is not None else self._keyring
        return doc

    async def save(self, doc: AuthDocument) -> None:
        try:
            await self._keyring.save(doc)
            self._active = self._keyring
        except StoreError as exc:
            self._fall_back(exc)
            await self._file.save(doc)

    async def delete(self) -> bool:
        removed = False
        try:
            removed = await self._keyring.delete()
        except StoreError as exc:
            log.warning("%s", exc)
        return await self._file.delete() or removed

    def __repr__(self) -> str:
        return f"AutoStore(active={self._active.name})"


def is_protecting_backend(backend: Any) -> bool:
    """Secret Service, macOS Keychain, Windows, KWallet: yes. fail, null, keyrings.alt: no.

    keyrings.alt's plaintext file has priority 0.5, so merely installing it makes keyring pick
    it on a box without a real keyring; only `recommended` (priority >= 1) backends count.
    """
    from keyring.backends import chainer, fail, null

    if isinstance(backend, chainer.ChainerBackend):
        return any(is_protecting_backend(b) for b in backend.backends)
    if isinstance(backend, fail.Keyring | null.Keyring):
        return False
    if type(backend).__module__.startswith("keyrings.alt"):
        return False
    try:
        return float(backend.priority) >= 1
    except Exception:  # a backend that cannot state its priority is not viable
        return False


async def open_store(
    mode: StoreMode, codex_home: str, *, backend: Any = None
) -> FileStore | KeyringStore | AutoStore:
    """The store for `cli_auth_credentials_store`; `auto` without a real keyring warns once."""
    if mode == "file":
        return FileStore(codex_home)
    if mode == "keyring":
        return KeyringStore(codex_home, backend)
    if backend is None:
        import keyring

        limiter = anyio.CapacityLimiter(1)
        try:
            with anyio.fail_after(KEYRING_TIMEOUT_S):
                backend = await anyio.to_thread.run_sync(
                    keyring.get_keyring, limiter=limiter, abandon_on_cancel=True
                )
        except Exception as exc:
            log.warning("no keyring available (%s); storing the login in auth.json", exc)
            return FileStore(codex_home)
    if not is_protecting_backend(backend):
        log.warning(
            "no keyring that protects secrets is available (found %s); storing the login in %s "
            "(mode 0600)",
            type(backend).__name__,
            auth_file_path(codex_home),
        )
        return FileStore(codex_home)
    return AutoStore(KeyringStore(codex_home, backend), FileStore(codex_home))
