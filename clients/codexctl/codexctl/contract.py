"""The part of the wire contract that needs only the standard library.

The protocol version, where the control socket is, the error kinds with their JSON-RPC codes,
codexctl's exit codes and `RpcError`. `codexctl --version`, and `codexctl status` when no
daemon answers, run on this module alone, so it imports neither msgspec nor `typing` at run
time (the error's msgspec `data` is loaded when the first error is made).
`codexctl.protocol` re-exports every name, and the daemon imports them from there.
"""

from __future__ import annotations

import enum
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Final

    from codexctl.protocol import ErrorObject

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ERROR_TABLE",
    "EXIT_AUTH",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_LIMIT",
    "EXIT_OK",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "GATEWAY_SOCKET_NAME",
    "KIND_BY_CODE",
    "LOCK_NAME",
    "MAX_SERVER_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "SOCKET_NAME",
    "ErrorKind",
    "RpcError",
    "default_socket_path",
    "exit_code_for",
    "resolve_socket_path",
]

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20
# The largest message (one line) a client buffers from the daemon: a reply or a notification,
# such as the `job/event` that carries an embeddings job's vectors. The daemon bounds what it
# sends by it (codexd/upstream/client.py derives its bound on a whole reply from it).
MAX_SERVER_MESSAGE_BYTES: Final = 64 << 20

SOCKET_NAME: Final = "codexd.sock"
GATEWAY_SOCKET_NAME: Final = "gateway.sock"
LOCK_NAME: Final = "codexd.lock"


# --------------------------------------------------------------------------- socket path rule


def default_socket_path(
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
    *,
    run_user_root: str = "/run/user",
) -> str:
    """The control socket: the first rule that applies.

    `--socket PATH` is the caller's business (it wins over everything); this function covers
    `$CODEXD_SOCKET`, `$XDG_RUNTIME_DIR`, `/run/user/<uid>` (when it exists and is ours) and
    `${TMPDIR:-/tmp}/codexd-<uid>`.
    """
    env = os.environ if env is None else env
    uid = os.getuid() if uid is None else uid
    explicit = env.get("CODEXD_SOCKET")
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "codexd", SOCKET_NAME)
    run_user = os.path.join(run_user_root, str(uid))
    try:
        st = os.lstat(run_user)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
        return os.path.join(run_user, "codexd", SOCKET_NAME)
    tmp = env.get("TMPDIR") or "/tmp"
    return os.path.join(tmp, f"codexd-{uid}", SOCKET_NAME)


def resolve_socket_path(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """`--socket PATH` when given, else `default_socket_path()`."""
    return explicit if explicit else default_socket_path(env)


# --------------------------------------------------------------------------- errors


class ErrorKind(enum.StrEnum):
    PARSE_ERROR = "parse_error"
    INVALID_REQUEST = "invalid_request"
    METHOD_NOT_FOUND = "method_not_found"
    INVALID_PARAMS = "invalid_params"
    INTERNAL_ERROR = "internal_error"
    OVERLOADED = "overloaded"
    UNAUTHENTICATED = "unauthenticated"
    AUTH_EXPIRED = "auth_expired"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    USAGE_LIMIT_REACHED = "usage_limit_reached"
    BUDGET_EXCEEDED = "budget_exceeded"
    UPSTREAM_ERROR = "upstream_error"
    BAD_REQUEST = "bad_request"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    STREAM_ERROR = "stream_error"
    NOT_FOUND = "not_found"
    CANCELLED = "cancelled"
    REPLAY_UNAVAILABLE = "replay_unavailable"
    CONFIG_INVALID = "config_invalid"


# kind -> (JSON-RPC code, retryable): the error table, in one place for both sides.
ERROR_TABLE: Final[Mapping[ErrorKind, tuple[int, bool]]] = {
    ErrorKind.PARSE_ERROR: (-32700, False),
    ErrorKind.INVALID_REQUEST: (-32600, False),
    ErrorKind.METHOD_NOT_FOUND: (-32601, False),
    ErrorKind.INVALID_PARAMS: (-32602, False),
    ErrorKind.INTERNAL_ERROR: (-32603, False),
    ErrorKind.OVERLOADED: (-32001, True),
    ErrorKind.UNAUTHENTICATED: (-32010, False),
    ErrorKind.AUTH_EXPIRED: (-32011, False),
    ErrorKind.RATE_LIMITED: (-32020, True),
    ErrorKind.QUOTA_EXCEEDED: (-32021, False),
    ErrorKind.USAGE_LIMIT_REACHED: (-32022, False),
    ErrorKind.BUDGET_EXCEEDED: (-32023, False),
    ErrorKind.UPSTREAM_ERROR: (-32030, True),
    ErrorKind.BAD_REQUEST: (-32031, False),
    ErrorKind.CONTEXT_LENGTH_EXCEEDED: (-32032, False),
    ErrorKind.STREAM_ERROR: (-32033, True),
    ErrorKind.NOT_FOUND: (-32040, False),
    ErrorKind.CANCELLED: (-32041, False),
    ErrorKind.REPLAY_UNAVAILABLE: (-32042, False),
    ErrorKind.CONFIG_INVALID: (-32050, False),
}
KIND_BY_CODE: Final[Mapping[int, ErrorKind]] = {
    code: kind for kind, (code, _) in ERROR_TABLE.items()
}

# codexctl's exit status for a failed call, by kind.
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_AUTH: Final = 4
EXIT_LIMIT: Final = 5
EXIT_INTERRUPTED: Final = 130
# stdout's reader went away (a pager or `head` that quit): 128 + SIGPIPE, the status a shell
# reports for git or gh in the same case; nothing is printed.
EXIT_OUTPUT_CLOSED: Final = 141


def exit_code_for(kind: str) -> int:
    if kind in (ErrorKind.UNAUTHENTICATED, ErrorKind.AUTH_EXPIRED):
        return EXIT_AUTH
    if kind in (
        ErrorKind.RATE_LIMITED,
        ErrorKind.QUOTA_EXCEEDED,
        ErrorKind.USAGE_LIMIT_REACHED,
        ErrorKind.BUDGET_EXCEEDED,
    ):
        return EXIT_LIMIT
    return EXIT_FAILED


class RpcError(Exception):
    """An error as a value with a kind; raised by handlers and by clients alike."""

    def __init__(self, kind: ErrorKind, message: str, **data: Any) -> None:
        from codexctl.protocol import ErrorData  # msgspec: loaded once an error is made

        super().__init__(message)
        code, retryable = ERROR_TABLE[kind]
        data.setdefault("retryable", retryable)
        self.kind: str = kind.value
        self.code = code
        self.message = message
        self.data = ErrorData(kind=kind.value, **data)

    def to_object(self) -> ErrorObject:
        from codexctl.protocol import ErrorObject

        return ErrorObject(code=self.code, message=self.message, data=self.data)

    @classmethod
    def from_object(cls, obj: ErrorObject) -> RpcError:
        """Rebuild an error received on the wire (the kind may be one this client predates)."""
        from codexctl.protocol import ErrorData

        err = cls.__new__(cls)
        Exception.__init__(err, obj.message)
        fallback = KIND_BY_CODE.get(obj.code, ErrorKind.INTERNAL_ERROR)
        err.data = obj.data or ErrorData(kind=fallback.value, retryable=ERROR_TABLE[fallback][1])
        err.kind = err.data.kind
        err.code = obj.code
        err.message = obj.message
        return err

    def __repr__(self) -> str:
        return f"RpcError({self.kind}, {self.message!r})"
