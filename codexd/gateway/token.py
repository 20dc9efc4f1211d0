"""The gateway's bearer token: a 0600 file `gateway.token` in the state dir.

Created on first use with `secrets.token_urlsafe`, replaced atomically by `rotate`. The TCP
listener compares in constant time and re-reads the file only when it changed on disk
(one `stat` per request), so a rotation takes effect on the next request.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from typing import TYPE_CHECKING, Final

import msgspec

from codexd.auth.authfile import write_atomic

if TYPE_CHECKING:
    from codexd.rpc.server import CallContext

TOKEN_FILE_NAME: Final = "gateway.token"
TOKEN_BYTES: Final = 32


class TokenFile:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, TOKEN_FILE_NAME)
        self._cached: tuple[tuple[int, int, int], str] | None = None

    def current(self) -> str:
        """The token, creating the file when there is none (or it holds nothing)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self.rotate()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(self.path, 0o600)
        with open(self.path, encoding="ascii", errors="replace") as f:
            token = f.read().strip()
        if not token:
            return self.rotate()
        self._cached = (key, token)
        return token

    def rotate(self) -> str:
        """A new token, atomically in place of the old one (which stops working at once)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        write_atomic(self.path, token.encode("ascii") + b"\n", 0o600)
        st = os.stat(self.path)
        self._cached = ((st.st_ino, st.st_mtime_ns, st.st_size), token)
        return token

    def matches(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries the current token."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self.current().encode())


# --------------------------------------------------------------------------- gateway/token


class TokenParams(msgspec.Struct, forbid_unknown_fields=True):
    rotate: bool = False


class TokenResult(msgspec.Struct):
    token: str


async def gateway_token(ctx: CallContext, params: TokenParams) -> TokenResult:
    """`gateway/token {rotate?}` → `{token}`; only on the control socket (peer-checked)."""
    tokens = TokenFile(ctx.daemon.paths.state_dir)
    return TokenResult(token=tokens.rotate() if params.rotate else tokens.current())
