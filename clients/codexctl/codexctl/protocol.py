"""The wire contract shared by codexd and its clients.

Only msgspec and the standard library may be imported here: the daemon imports this module,
and so does the thin `codexctl` client. What the client's fastest commands need (the socket
rule, error kinds, exit codes, `RpcError`) lives in `codexctl.contract`, which imports no
msgspec, and is re-exported here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import msgspec

# The standard-library part of the contract (codexctl.contract) is part of this module's names:
# the socket rule, the error kinds and codes, the exit codes, RpcError.
from codexctl.contract import *  # noqa: F403

# Codex's built-in providers: their ids cannot be defined in [model_providers].
RESERVED_PROVIDER_IDS: Final = ("openai", "ollama", "lmstudio")


def catalog_slug(model: str) -> str:
    """The catalog's name for a model: a dated snapshot is its model (`gpt-5-2025-08-07`
    is `gpt-5`)."""
    return _DATED_SNAPSHOT.sub("", model)


_DATED_SNAPSHOT: Final = re.compile(r"-\d{4}-\d{2}-\d{2}$")


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
