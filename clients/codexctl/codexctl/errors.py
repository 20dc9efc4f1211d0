"""The client's exceptions (the standard library only at import: `codexctl status` raises
`DaemonUnreachable` before msgspec is loaded).

Two families:

- `DaemonUnreachable` (and `ConnectionLost`, `UntrustedSocket`): nothing usable answered at
  the socket; no call was made, or its answer never came.
- `CodexdError`, a subclass of `RpcError`: codexd answered with an error. There is one class
  per error kind (`RateLimited` for `rate_limited`, `NotFound` for `not_found`, …), so a tool
  catches what it can handle and lets the rest through; `except RpcError` still catches them
  all. Each carries the error's `kind`, `code`, `message` and `data`, and for convenience
  `retryable`, `retry_after_s` and `resets_at`.

A kind this client does not know yet (a newer daemon) is raised as `CodexdError` itself.
"""

from __future__ import annotations

from codexctl.contract import KIND_BY_CODE, ErrorKind, RpcError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from codexctl.protocol import ErrorObject


class DaemonUnreachable(Exception):
    """Nothing answers at the socket; the message says how to start the daemon."""

    def __init__(self, path: str, reason: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"codexd is not running at {path}: start it with codexd run "
            "or systemctl --user start codexd"
        )


class ConnectionLost(DaemonUnreachable):
    """The connection to the daemon closed (it stopped, restarted, or dropped us)."""

    def __init__(self, path: str) -> None:
        DaemonUnreachable.__init__(self, path)
        Exception.__init__(self, f"the connection to codexd at {path} was closed")


class UntrustedSocket(DaemonUnreachable):
    """The socket is not provably the user's own daemon; nothing was sent to it."""

    def __init__(self, path: str, reason: str) -> None:
        DaemonUnreachable.__init__(self, path, reason)
        Exception.__init__(self, f"refusing to talk to {path}: {reason}")


# --------------------------------------------------------------------------- codexd's errors

# kind -> its class; filled by the class statements below (each names its kind once).
ERROR_CLASSES: dict[str, type[CodexdError]] = {}


class CodexdError(RpcError):
    """An error codexd answered with; the base of one class per error kind.

    `kind` is the stable name (`rate_limited`), `message` says what happened and what to do
    next, `data` holds every member of the error's `data` (`http_status`, `request_id`, …).
    Raise a kind's class with just a message: `RateLimited("slow down", retry_after_s=3)`.
    """

    KIND: ClassVar[ErrorKind | None] = None

    def __init_subclass__(cls, *, kind: ErrorKind, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind in ERROR_CLASSES:
            raise TypeError(f"{kind} already has a class: {ERROR_CLASSES[kind].__name__}")
        cls.KIND = kind
        ERROR_CLASSES[kind.value] = cls

    def __init__(self, message: str, **data: Any) -> None:
        if self.KIND is None:
            raise TypeError("raise a kind's class (RateLimited, NotFound, ...), not CodexdError")
        super().__init__(self.KIND, message, **data)

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again (after `retry_after_s`)."""
        return self.data.retryable

    @property
    def retry_after_s(self) -> float | None:
        """Seconds to wait before trying again, when the error says so."""
        return self.data.retry_after_s

    @property
    def resets_at(self) -> str | None:
        """When a usage limit resets (RFC 3339 UTC), for `usage_limit_reached`."""
        return self.data.resets_at

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ParseError(CodexdError, kind=ErrorKind.PARSE_ERROR):
    """A line the client sent was not JSON (a client bug)."""


class InvalidRequest(CodexdError, kind=ErrorKind.INVALID_REQUEST):
    """A message was not a valid JSON-RPC request, or was too large."""


class MethodNotFound(CodexdError, kind=ErrorKind.METHOD_NOT_FOUND):
    """The daemon has no such method (an older daemon, or a typo in `call()`)."""


class InvalidParams(CodexdError, kind=ErrorKind.INVALID_PARAMS):
    """The params failed the method's schema; the message names the member at fault."""


class InternalError(CodexdError, kind=ErrorKind.INTERNAL_ERROR):
    """A bug in codexd (it logged the traceback), or a reply this client cannot read."""


class Overloaded(CodexdError, kind=ErrorKind.OVERLOADED):
    """Too many connections, subscriptions or queued jobs, or the daemon is draining."""


class Unauthenticated(CodexdError, kind=ErrorKind.UNAUTHENTICATED):
    """No credentials: set the provider's key in the daemon's environment or log in."""


class AuthExpired(CodexdError, kind=ErrorKind.AUTH_EXPIRED):
    """The login could not be refreshed for good: log in again."""


class RateLimited(CodexdError, kind=ErrorKind.RATE_LIMITED):
    """Upstream kept answering 429; `retry_after_s` says how long to wait."""


class QuotaExceeded(CodexdError, kind=ErrorKind.QUOTA_EXCEEDED):
    """The account's quota (billing) is used up; retrying does not help."""


class UsageLimitReached(CodexdError, kind=ErrorKind.USAGE_LIMIT_REACHED):
    """A ChatGPT plan limit was reached; it lifts at `resets_at`."""


class BudgetExceeded(CodexdError, kind=ErrorKind.BUDGET_EXCEEDED):
    """A spending cap of `[codexd.budget]` would be passed."""


class UpstreamError(CodexdError, kind=ErrorKind.UPSTREAM_ERROR):
    """The provider failed (5xx, connection errors) after the daemon's retries."""


class BadRequest(CodexdError, kind=ErrorKind.BAD_REQUEST):
    """The provider refused the request (unknown model, bad parameter): see the message."""


class ContextLengthExceeded(CodexdError, kind=ErrorKind.CONTEXT_LENGTH_EXCEEDED):
    """The input does not fit the model's context window."""


class StreamError(CodexdError, kind=ErrorKind.STREAM_ERROR):
    """The reply stream broke off or went idle, after the daemon's retries."""


class NotFound(CodexdError, kind=ErrorKind.NOT_FOUND):
    """No such job (or it is no longer retained), or no such login."""


class Cancelled(CodexdError, kind=ErrorKind.CANCELLED):
    """The job was cancelled (`job/cancel`, its client went away, or a shutdown)."""


class ReplayUnavailable(CodexdError, kind=ErrorKind.REPLAY_UNAVAILABLE):
    """The job's log no longer holds the events asked for; `data.oldest_seq` is where it
    starts now."""


class ConfigInvalid(CodexdError, kind=ErrorKind.CONFIG_INVALID):
    """config.toml is invalid; the message has the file, line and key (the old config
    stays in force)."""


def error_class(kind: str) -> type[CodexdError]:
    """The class raised for `kind` (`CodexdError` for a kind this client does not know)."""
    return ERROR_CLASSES.get(kind, CodexdError)


def error_from_object(obj: ErrorObject) -> CodexdError:
    """The exception for an error received on the wire (a reply's `error`, or a
    `job.failed` event's), of its kind's class."""
    if obj.data is not None:
        kind = obj.data.kind
    else:
        kind = KIND_BY_CODE.get(obj.code, ErrorKind.INTERNAL_ERROR).value
    err = error_class(kind).from_object(obj)
    assert isinstance(err, CodexdError)
    return err


def job_error(job_id: str, error: ErrorObject | None) -> CodexdError:
    """What a job that did not complete raises: its error, or `Cancelled` for none."""
    if error is None:
        return Cancelled(f"job {job_id} was cancelled")
    return error_from_object(error)
