"""codexctl: the thin client of the codexd daemon (library and command line).

    from codexctl import Client

    with Client() as c:
        reply = c.ask("Say hi")
        print(reply.text, reply.usage.total_tokens, reply.cost_usd)

`Client` (blocking) and `AsyncClient` (asyncio) have one typed call per daemon method,
`ask`/`stream` for model requests, and `events(job_id)` for a job's events across
reconnects. Errors are one class per kind (`RateLimited`, `NotFound`, …), all `RpcError`s.
The names are loaded on first use so that `codexctl --version` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False  # not typing's: importing typing would cost `codexctl --version` ~5 ms
if TYPE_CHECKING:
    from typing import Any, Final

    from codexctl.aio import AsyncClient
    from codexctl.client import Client
    from codexctl.errors import (
        AuthExpired,
        BadRequest,
        BudgetExceeded,
        Cancelled,
        CodexdError,
        ConfigInvalid,
        ConnectionLost,
        ContextLengthExceeded,
        DaemonUnreachable,
        InternalError,
        InvalidParams,
        InvalidRequest,
        MethodNotFound,
        NotFound,
        Overloaded,
        ParseError,
        QuotaExceeded,
        RateLimited,
        ReplayUnavailable,
        StreamError,
        Unauthenticated,
        UntrustedSocket,
        UpstreamError,
        UsageLimitReached,
    )
    from codexctl.events import (
        AccountUpdated,
        ConfigRejected,
        ConfigReloaded,
        JobCreated,
        JobEvent,
        JobFinished,
        LoginCompleted,
        Notification,
        OutputItemDone,
        RateLimitsUpdated,
        ReasoningDelta,
        SubscriptionDropped,
        TextDelta,
        UpstreamEvent,
    )
    from codexctl.protocol import (
        ClientInfo,
        DaemonStatus,
        ErrorKind,
        JobCancelled,
        JobCompleted,
        JobFailed,
        JobQueued,
        JobRetrying,
        JobStarted,
        JobView,
        ListResult,
        RpcError,
        SubmitResult,
        SubscribeResult,
        Usage,
    )
    from codexctl.streaming import AsyncStream, Reply, Reset, Stream
    from codexctl.trust import check_socket

# Each public name and the module it lives in; imported when first asked for.
_HOMES: Final[dict[str, str]] = {
    "AsyncClient": "codexctl.aio",
    "Client": "codexctl.client",
    "check_socket": "codexctl.trust",
    **dict.fromkeys(
        (
            "AuthExpired",
            "BadRequest",
            "BudgetExceeded",
            "Cancelled",
            "CodexdError",
            "ConfigInvalid",
            "ConnectionLost",
            "ContextLengthExceeded",
            "DaemonUnreachable",
            "InternalError",
            "InvalidParams",
            "InvalidRequest",
            "MethodNotFound",
            "NotFound",
            "Overloaded",
            "ParseError",
            "QuotaExceeded",
            "RateLimited",
            "ReplayUnavailable",
            "StreamError",
            "Unauthenticated",
            "UntrustedSocket",
            "UpstreamError",
            "UsageLimitReached",
        ),
        "codexctl.errors",
    ),
    **dict.fromkeys(
        (
            "AccountUpdated",
            "ConfigRejected",
            "ConfigReloaded",
            "JobCreated",
            "JobEvent",
            "JobFinished",
            "LoginCompleted",
            "Notification",
            "OutputItemDone",
            "RateLimitsUpdated",
            "ReasoningDelta",
            "SubscriptionDropped",
            "TextDelta",
            "UpstreamEvent",
        ),
        "codexctl.events",
    ),
    **dict.fromkeys(
        (
            "ClientInfo",
            "DaemonStatus",
            "ErrorKind",
            "JobCancelled",
            "JobCompleted",
            "JobFailed",
            "JobQueued",
            "JobRetrying",
            "JobStarted",
            "JobView",
            "ListResult",
            "RpcError",
            "SubmitResult",
            "SubscribeResult",
            "Usage",
        ),
        "codexctl.protocol",
    ),
    **dict.fromkeys(("AsyncStream", "Reply", "Reset", "Stream"), "codexctl.streaming"),
}

# The public names (tests hold them equal to _HOMES).
__all__ = [
    "AccountUpdated",
    "AsyncClient",
    "AsyncStream",
    "AuthExpired",
    "BadRequest",
    "BudgetExceeded",
    "Cancelled",
    "Client",
    "ClientInfo",
    "CodexdError",
    "ConfigInvalid",
    "ConfigRejected",
    "ConfigReloaded",
    "ConnectionLost",
    "ContextLengthExceeded",
    "DaemonStatus",
    "DaemonUnreachable",
    "ErrorKind",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "JobCancelled",
    "JobCompleted",
    "JobCreated",
    "JobEvent",
    "JobFailed",
    "JobFinished",
    "JobQueued",
    "JobRetrying",
    "JobStarted",
    "JobView",
    "ListResult",
    "LoginCompleted",
    "MethodNotFound",
    "NotFound",
    "Notification",
    "OutputItemDone",
    "Overloaded",
    "ParseError",
    "QuotaExceeded",
    "RateLimited",
    "RateLimitsUpdated",
    "ReasoningDelta",
    "ReplayUnavailable",
    "Reply",
    "Reset",
    "RpcError",
    "Stream",
    "StreamError",
    "SubmitResult",
    "SubscribeResult",
    "SubscriptionDropped",
    "TextDelta",
    "Unauthenticated",
    "UntrustedSocket",
    "UpstreamError",
    "UpstreamEvent",
    "Usage",
    "UsageLimitReached",
    "__version__",
    "check_socket",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'codexctl' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return __all__
