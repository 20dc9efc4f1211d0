"""The wire contract shared by codexd and its clients.

Only msgspec and the standard library may be imported here: the daemon imports this module,
and so does the thin `codexctl` client, which must start in tens of milliseconds.
"""

from __future__ import annotations

import enum
import os
import re
import stat
from collections.abc import Mapping
from typing import Annotated, Any, Final

import msgspec

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_MESSAGE_BYTES: Final = 1 << 20
# The largest message (one line) a client buffers from the daemon: a reply or a notification,
# such as the `job/event` that carries an embeddings job's vectors. The daemon bounds what it
# sends by it (codexd/upstream/client.py derives its bound on a whole reply from it).
MAX_SERVER_MESSAGE_BYTES: Final = 64 << 20

SOCKET_NAME: Final = "codexd.sock"
GATEWAY_SOCKET_NAME: Final = "gateway.sock"
LOCK_NAME: Final = "codexd.lock"
# Codex's built-in providers: their ids cannot be defined in [model_providers].
RESERVED_PROVIDER_IDS: Final = ("openai", "ollama", "lmstudio")


def catalog_slug(model: str) -> str:
    """The catalog's name for a model: a dated snapshot is its model (`gpt-5-2025-08-07`
    is `gpt-5`)."""
    return _DATED_SNAPSHOT.sub("", model)


_DATED_SNAPSHOT: Final = re.compile(r"-\d{4}-\d{2}-\d{2}$")


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


class ErrorData(msgspec.Struct, omit_defaults=True):
    """`error.data` of an error reply. Optional members are left out when they do not apply."""

    kind: Annotated[str, msgspec.Meta(description="The error kind: match on this.")]
    # always present, even when false (no default, so never omitted)
    retryable: Annotated[
        bool, msgspec.Meta(description="Whether sending the same request later may succeed.")
    ]
    retry_after_s: Annotated[
        float | None, msgspec.Meta(description="How long to wait before trying again.")
    ] = None
    resets_at: Annotated[
        str | None, msgspec.Meta(description="When a usage limit resets (RFC 3339).")
    ] = None
    http_status: Annotated[int | None, msgspec.Meta(description="The provider's HTTP status.")] = (
        None
    )
    upstream_code: Annotated[
        str | None,
        msgspec.Meta(description="The provider's error code, such as `insufficient_quota`."),
    ] = None
    request_id: Annotated[
        str | None, msgspec.Meta(description="The provider's request id, for its support.")
    ] = None
    oldest_seq: Annotated[
        int | None, msgspec.Meta(description="`replay_unavailable`: the oldest seq still held.")
    ] = None
    file: Annotated[
        str | None, msgspec.Meta(description="`config_invalid`: the file at fault.")
    ] = None
    line: Annotated[int | None, msgspec.Meta(description="`config_invalid`: its line.")] = None
    key: Annotated[str | None, msgspec.Meta(description="`config_invalid`: the key.")] = None


class ErrorObject(msgspec.Struct):
    """An error: a reply's `error`, a failed job's `error`. `message` is for people, `data.kind`
    for programs."""

    code: int
    message: str
    data: ErrorData | None = None


class RpcError(Exception):
    """An error as a value with a kind; raised by handlers and by clients alike."""

    def __init__(self, kind: ErrorKind, message: str, **data: Any) -> None:
        super().__init__(message)
        code, retryable = ERROR_TABLE[kind]
        data.setdefault("retryable", retryable)
        self.kind: str = kind.value
        self.code = code
        self.message = message
        self.data = ErrorData(kind=kind.value, **data)

    def to_object(self) -> ErrorObject:
        return ErrorObject(code=self.code, message=self.message, data=self.data)

    @classmethod
    def from_object(cls, obj: ErrorObject) -> RpcError:
        """Rebuild an error received on the wire (the kind may be one this client predates)."""
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


# --------------------------------------------------------------------------- envelopes


class Envelope(msgspec.Struct):
    """What the server reads of every incoming line before it knows the method.

    `id` left out (UNSET) marks a notification; `params` stays raw until the method's own type
    decodes it, so that a bad member is -32602 and not -32600.
    """

    method: str
    jsonrpc: str | msgspec.UnsetType = msgspec.UNSET
    id: int | str | msgspec.UnsetType = msgspec.UNSET
    params: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class ReplyEnvelope(msgspec.Struct):
    """What a client reads of every incoming line: a reply (has `id`) or a notification."""

    jsonrpc: str = "2.0"
    id: int | str | msgspec.UnsetType | None = msgspec.UNSET
    method: str | msgspec.UnsetType = msgspec.UNSET
    params: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: ErrorObject | msgspec.UnsetType = msgspec.UNSET


class Request(msgspec.Struct, omit_defaults=True):
    method: str
    id: int | str | msgspec.UnsetType = msgspec.UNSET
    params: Any = msgspec.UNSET
    jsonrpc: str = "2.0"


class Reply(msgspec.Struct):
    id: int | str | None
    result: Any
    jsonrpc: str = "2.0"


class ErrorReply(msgspec.Struct):
    id: int | str | None
    error: ErrorObject
    jsonrpc: str = "2.0"


class Notification(msgspec.Struct):
    method: str
    params: Any
    jsonrpc: str = "2.0"


# --------------------------------------------------------------------------- shared results


class ClientInfo(msgspec.Struct, forbid_unknown_fields=True):
    """Who the client is: `name` is what its usage is recorded under (`codexctl usage --by
    client`)."""

    name: str
    version: str | None = None


class ServerInfo(msgspec.Struct):
    """The daemon: `name` is always `codexd`; `version` is its release."""

    name: str
    version: str


class InitializeResult(msgspec.Struct):
    """`initialize`'s result: the daemon and the protocol version it speaks."""

    server: ServerInfo
    protocol_version: int


# --------------------------------------------------------------------------- job results


class Usage(msgspec.Struct):
    """Token counts: `input_tokens` includes the cached ones, `output_tokens` the reasoning
    ones (as OpenAI's Responses API counts them)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0


class JobView(msgspec.Struct, kw_only=True):
    """A job as `job/get` shows it. `state` is one of the job states; `client` is the name of
    the client that submitted it; `api` the wire API it went to (`responses`, `chat` or
    `embeddings`); `attempts` counts the attempts sent upstream. `output_text` is the reply's
    text so far (left out of `job/created` and `job/finished`; null for a completed embeddings
    job), `usage` and `cost_usd` are set once the job has finished, and `error` once it failed
    or was cancelled."""

    id: str
    state: str
    client: str
    provider: str
    model: str
    api: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    output_text: str | msgspec.UnsetType | None = msgspec.UNSET
    usage: Usage | None
    cost_usd: float | None
    error: ErrorObject | None


# --------------------------------------------------------------------------- job events
#
# The `event` of a `job/event` notification is one of the job's own events below, or an
# upstream event (`response.output_text.delta`, `response.output_item.done`, …) passed through
# as the provider sent it, with a `type` member. Each job event encodes with its `type` first.


class JobQueued(msgspec.Struct, tag="job.queued", tag_field="type"):
    """The job waits for its provider's rate-limit budget; `position` in the line."""

    position: int


class JobStarted(msgspec.Struct, tag="job.started", tag_field="type"):
    """An attempt went upstream (`attempt` counts from 1)."""

    attempt: int


class JobRetrying(msgspec.Struct, tag="job.retrying", tag_field="type"):
    """An attempt failed and another follows after `delay_s`. With `reset_output`, the
    text streamed so far is void: start over with the next attempt's deltas."""

    attempt: int
    delay_s: float
    reason: str
    error_kind: str
    reset_output: bool


class JobCompleted(msgspec.Struct, tag="job.completed", tag_field="type", kw_only=True):
    """The reply is whole: its text, token usage and cost. An embeddings job has no text:
    its `output_text` is left out (its vectors came in the `embeddings.result` event)."""

    output_text: str | msgspec.UnsetType = msgspec.UNSET
    usage: Usage
    cost_usd: float
    response_id: str | None


class JobFailed(msgspec.Struct, tag="job.failed", tag_field="type"):
    """The job ended with an error (its kind says whether to submit it again)."""

    error: ErrorObject


class JobCancelled(msgspec.Struct, tag="job.cancelled", tag_field="type"):
    """The job was cancelled: by `job/cancel`, its client going away, or a shutdown."""


JobOwnEvent = JobQueued | JobStarted | JobRetrying | JobCompleted | JobFailed | JobCancelled
# A job's last event: one of these ends every job, and nothing follows it.
TERMINAL_EVENT_TYPES: Final = (JobCompleted, JobFailed, JobCancelled)


class SubmitResult(msgspec.Struct):
    """`job/submit`'s result."""

    job_id: str
    state: str


class ListResult(msgspec.Struct):
    """`job/list`'s result: newest first."""

    jobs: list[JobView]


class SubscribeResult(msgspec.Struct):
    """`job/subscribe`'s result: events from `next_seq` on are live."""

    job_id: str
    next_seq: int


class JobChange(msgspec.Struct):
    """`job/created` and `job/finished`'s params: the job, without its `output_text`."""

    job: JobView


# --------------------------------------------------------------------------- daemon/status


class JobCounts(msgspec.Struct):
    """`daemon/status.jobs`: jobs waiting, running, and kept (finished ones included)."""

    queued: int
    running: int
    retained: int


class ConfigStatus(msgspec.Struct):
    """`daemon/status.config`: the config file, its generation (one more per change that was
    loaded), when it was loaded, and the located error of a file whose previous version stays
    in force: why the last reload failed, or else why a profile file that requests name is
    invalid (null when every file in use is valid)."""

    path: str
    generation: int
    loaded_at: str
    error: str | None


class AccountSummary(msgspec.Struct):
    """Who is logged in, in short (`daemon/status.account`, `account/updated`): `mode` is
    `api_key`, `chatgpt` or null (no credentials)."""

    mode: str | None
    email: str | None
    plan_type: str | None


class BudgetStatus(msgspec.Struct):
    """Spend against the caps, for `daemon/status` and `codexctl usage` (null: no cap)."""

    daily_usd: float | None
    monthly_usd: float | None
    spent_today_usd: float
    spent_month_usd: float
    day_resets_at: str
    month_resets_at: str


class GatewayStatus(msgspec.Struct):
    """`daemon/status.gateway`: where the gateway listens now (null while it is off)."""

    unix: str  # gateway.sock
    tcp: str | None  # HOST:PORT, or null without `[codexd.gateway] tcp`


class DaemonStatus(msgspec.Struct):
    """`daemon/status`'s result. `started_by` is `manual`, `systemd`, `launchd` or
    `socket_activation` (whenever a listening socket was passed in); `socket`, `codex_home`
    and `state_dir` are the paths the daemon uses, so a client can tell when its own
    `CODEX_HOME` differs. `jobs`, `config` and `account` are null only while their part is
    not running."""

    version: str
    protocol_version: int
    pid: int
    started_at: str
    started_by: str
    uptime_s: float
    socket: str
    codex_home: str
    state_dir: str
    connections: int
    jobs: JobCounts | None
    config: ConfigStatus | None
    account: AccountSummary | None
    budget: BudgetStatus | None = None  # spend against [codexd.budget]; null without caps
    gateway: GatewayStatus | None = None  # null while the gateway is off
