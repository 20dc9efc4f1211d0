"""auth.json in Codex's shape: a typed view over the raw document, atomic writes, auth.lock.

Codex CLI's `AuthDotJson` (every era): `auth_mode` (optional: `apikey`, `chatgpt`,
`chatgptAuthTokens`, `agentIdentity`), `OPENAI_API_KEY` (always written, may be null),
`tokens {id_token, access_token, refresh_token, account_id}`, `last_refresh` (RFC 3339), and in
the newest releases `agent_identity` / `personal_access_token`. Codex drops fields it does not
know when it rewrites the file; codexd keeps them: the raw dict is what gets written back.

Codex takes `flock(LOCK_EX)` on `$CODEX_HOME/auth.lock` around every write of auth.json;
codexd takes the same lock around its whole read–refresh–write.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import anyio
import msgspec

from codexd.auth.tokens import JwtClaims, Secret, claims_or_empty

AUTH_FILE_NAME: Final = "auth.json"
LOCK_FILE_NAME: Final = "auth.lock"
TEMP_PREFIX: Final = ".auth-"

# Resolved modes codexd uses; others (agentIdentity, ...) are kept on disk but not used.
Mode = Literal["api_key", "chatgpt", "unsupported"]


class AuthFileError(msgspec.Struct, frozen=True):
    """auth.json (or the keyring's copy of it) could not be read. Never quotes a secret."""

    message: str


class _TokensWire(msgspec.Struct):
    id_token: str
    access_token: str
    refresh_token: str
    account_id: str | None = None


class _AuthWire(msgspec.Struct, rename={"openai_api_key": "OPENAI_API_KEY"}):
    auth_mode: str | None = None
    openai_api_key: str | None = None
    tokens: _TokensWire | None = None
    last_refresh: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class TokenSet:
    id_token: Secret
    access_token: Secret
    refresh_token: Secret
    account_id: str | None

    @property
    def id_claims(self) -> JwtClaims:
        return claims_or_empty(self.id_token)

    @property
    def access_claims(self) -> JwtClaims:
        return claims_or_empty(self.access_token)

    def __repr__(self) -> str:
        return f"TokenSet(account_id={self.account_id!r})"


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a `Z`, as Codex writes `last_refresh`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class AuthDocument:
    """One auth.json: the raw dict (unknown fields kept) and the typed view codexd reads."""

    __slots__ = ("_raw", "api_key", "auth_mode", "last_refresh", "tokens")

    def __init__(self, raw: dict[str, Any], wire: _AuthWire) -> None:
        self._raw = raw
        self.auth_mode = wire.auth_mode
        self.api_key = Secret(wire.openai_api_key) if wire.openai_api_key else None
        self.tokens = (
            TokenSet(
                id_token=Secret(wire.tokens.id_token),
                access_token=Secret(wire.tokens.access_token),
                refresh_token=Secret(wire.tokens.refresh_token),
                account_id=wire.tokens.account_id,
            )
            if wire.tokens is not None
            else None
        )
        self.last_refresh = parse_time(wire.last_refresh)

    # ------------------------------------------------------------------ decoding

    @classmethod
    def from_dict(cls, raw: object) -> AuthDocument | AuthFileError:
        if not isinstance(raw, dict):
            return AuthFileError("auth.json does not hold a JSON object")
        try:
            wire = msgspec.convert(raw, _AuthWire)
        except msgspec.ValidationError as exc:
            return AuthFileError(f"auth.json has an unexpected shape: {exc}")
        return cls(raw, wire)

    @classmethod
    def from_bytes(cls, data: bytes) -> AuthDocument | AuthFileError:
        try:
            raw = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            return AuthFileError(f"auth.json is not valid JSON ({exc})")
        return cls.from_dict(raw)

    # ------------------------------------------------------------------ the typed view

    @property
    def mode(self) -> Mode:
        """`AuthDotJson::resolved_mode`: without `auth_mode`, an API key means API-key mode."""
        if self.auth_mode is None:
            return "api_key" if self.api_key is not None else "chatgpt"
        if self.auth_mode == "apikey":
            return "api_key"
        if self.auth_mode in ("chatgpt", "chatgptAuthTokens"):
            return "chatgpt"
        return "unsupported"

    @property
    def chatgpt_tokens(self) -> TokenSet | None:
        return self.tokens if self.mode == "chatgpt" else None

    def raw(self) -> dict[str, Any]:
        """A deep copy of the document (holds secrets: only for writing it back)."""
        return copy.deepcopy(self._raw)

    def to_bytes(self, *, compact: bool = False) -> bytes:
        """2-space JSON without a trailing newline (Codex's layout); compact for the keyring."""
        encoded = msgspec.json.encode(self._raw)
        return encoded if compact else msgspec.json.format(encoded, indent=2)

    def __repr__(self) -> str:
        return f"AuthDocument(mode={self.mode}, fields={sorted(self._raw)})"

    # ------------------------------------------------------------------ new versions

    def with_refreshed(
        self,
        *,
        id_token: Secret | None,
        access_token: Secret | None,
        refresh_token: Secret | None,
        now: datetime,
    ) -> AuthDocument:
        """Each returned token replaces the stored one (Codex's `persist_tokens`)."""
        raw = self.raw()
        tokens = raw.get("tokens")
        if not isinstance(tokens, dict):
            tokens = {}
        if id_token is not None:
            tokens["id_token"] = id_token.reveal()
            account_id = claims_or_empty(id_token).account_id
            if account_id is not None:
                tokens["account_id"] = account_id
        if access_token is not None:
            tokens["access_token"] = access_token.reveal()
        if refresh_token is not None:
            tokens["refresh_token"] = refresh_token.reveal()
        raw["tokens"] = tokens
        raw["last_refresh"] = format_time(now)
        return _must(AuthDocument.from_dict(raw))

    @classmethod
    def chatgpt_login(
        cls,
        *,
        id_token: Secret,
        access_token: Secret,
        refresh_token: Secret,
        api_key: Secret | None,
        now: datetime,
    ) -> AuthDocument:
        """What Codex's login server persists, in Codex's key order."""
        raw: dict[str, Any] = {
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": api_key.reveal() if api_key else None,
            "tokens": {
                "id_token": id_token.reveal(),
                "access_token": access_token.reveal(),
                "refresh_token": refresh_token.reveal(),
                "account_id": claims_or_empty(id_token).account_id,
            },
            "last_refresh": format_time(now),
        }
        return _must(cls.from_dict(raw))

    @classmethod
    def api_key_login(cls, api_key: Secret) -> AuthDocument:
        """`codex login --with-api-key` writes exactly this."""
        return _must(cls.from_dict({"auth_mode": "apikey", "OPENAI_API_KEY": api_key.reveal()}))


def _must(doc: AuthDocument | AuthFileError) -> AuthDocument:
    if isinstance(doc, AuthFileError):
        raise ValueError(doc.message)
    return doc


# ---------------------------------------------------------------------- file I/O


def auth_file_path(codex_home: str) -> str:
    return os.path.join(codex_home, AUTH_FILE_NAME)


def lock_file_path(codex_home: str) -> str:
    return os.path.join(codex_home, LOCK_FILE_NAME)


def read_auth_file(path: str) -> AuthDocument | AuthFileError | None:
    """The document at `path`; None when there is no file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return AuthFileError(f"cannot read {path}: {exc.strerror}")
    return AuthDocument.from_bytes(data)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Temp file in the same directory (0600, O_EXCL), fsync, rename over `path`, fsync the dir.

    A reader (or a crash at any instant) sees the old file or the new one, never a mix.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_auth_file(path: str, doc: AuthDocument) -> None:
    write_atomic(path, doc.to_bytes())


def delete_auth_file(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------- auth.lock


class LockTimeout(Exception):
    """auth.lock stayed held by another program for longer than we are willing to wait."""


def _open_lock(codex_home: str) -> int:
    # Codex creates auth.lock 0644; the lock file holds nothing.
    return os.open(lock_file_path(codex_home), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def hold_auth_lock_blocking(codex_home: str) -> Iterator[None]:
    """The lock for plain synchronous code (tests' second process, tools)."""
    fd = _open_lock(codex_home)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


@contextlib.asynccontextmanager
async def hold_auth_lock(
    codex_home: str,
    *,
    wait_s: float = 30.0,
    first_delay: float = 0.002,
    max_delay: float = 0.05,
) -> AsyncIterator[None]:
    """flock(LOCK_EX) on `$CODEX_HOME/auth.lock` without blocking the event loop.

    Polls LOCK_NB with backoff: a thread blocked in flock() cannot be cancelled, and an
    abandoned one would take the lock later with nobody to release it.
    """
    fd = _open_lock(codex_home)
    try:
        try:
            with anyio.fail_after(wait_s):
                await _flock_polling(fd, first_delay, max_delay)
        except TimeoutError:
            raise LockTimeout(
                f"{lock_file_path(codex_home)} stayed locked by another program for {wait_s:g} s"
            ) from None
        yield
    finally:
        os.close(fd)


async def _flock_polling(fd: int, delay: float, max_delay: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        await anyio.sleep(delay)
        delay = min(delay * 2, max_delay)


def now_utc() -> datetime:
    return datetime.now(UTC)
