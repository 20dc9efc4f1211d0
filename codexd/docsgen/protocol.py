"""docs/protocol.md: the control protocol, rendered from the code that implements it.

The methods come from the method table (`codexd.rpc.methods.TABLE`): its order, summaries,
handler docstrings and the params and result types the server decodes and encodes with. Every
struct's docstring becomes its description and its members become a table (a member's type,
default and, when the type carries `msgspec.Meta(description=...)`, its description). Error
kinds, codes and retryability come from `ERROR_TABLE`, codexctl's exit codes from the `EXIT_*`
constants and `exit_code_for`, job states from `jobs.TRANSITIONS`. The prose that no type can
carry (what each error kind means, what each exit code means, the notifications' topics) is
kept here, next to the examples in examples.py, and rendering fails when an entry is missing.

The output depends on nothing but the code: no clock, no paths of this machine, no versions.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from msgspec import inspect as mi

from codexctl import protocol as wire
from codexctl.results import (
    ConfigRejected,
    ConfigReloaded,
    EmbeddingsResult,
    LoginCompleted,
    ProviderLimits,
    SubscriptionDropped,
)
from codexd.config.schema import CodexdSettings
from codexd.docsgen.examples import (
    ERROR_EXAMPLE,
    EXAMPLES,
    NOTIFICATION_EXAMPLES,
    Exchange,
)
from codexd.events import TOPICS
from codexd.jobs import TRANSITIONS, JobEventParams, JobState
from codexd.rpc.methods import TABLE
from codexd.rpc.server import Method


@dataclass(frozen=True)
class Notice:
    """One notification the daemon sends: its method, its params type, who receives it."""

    method: str
    params: Any
    topic: str | None  # the events/subscribe topic; None: only connections that asked for it
    summary: str


NOTIFICATIONS: Final[tuple[Notice, ...]] = (
    Notice(
        "job/event",
        JobEventParams,
        None,
        "One event of a job, sent to every connection following the job (`job/submit` with "
        "`subscribe`, or `job/subscribe`). `seq` starts at 1 and grows by one per event of "
        "that job; `event` is one of the [job events](#job-events).",
    ),
    Notice(
        "subscription/dropped",
        SubscriptionDropped,
        None,
        "This connection read too slowly and lost a subscription: a job's events (`job_id`, "
        "with `next_seq`, the seq of the first event it missed: pass `next_seq - 1` to "
        "`job/subscribe` as `after_seq` to resume) or a topic (`topic`; call `events/subscribe` "
        "again).",
    ),
    Notice(
        "account/updated",
        wire.AccountSummary,
        "account",
        "The login changed: a login or logout through the daemon, a refresh, or auth.json "
        "edited by another program.",
    ),
    Notice(
        "account/login_completed",
        LoginCompleted,
        "account",
        "A login started with `account/login` ended. Sent to the connection that started it "
        "and to subscribers of the topic.",
    ),
    Notice(
        "config/reloaded",
        ConfigReloaded,
        "config",
        "A changed config file was loaded; `generation` is the new one.",
    ),
    Notice(
        "config/invalid",
        ConfigRejected,
        "config",
        "A changed config file was refused; the previous config stays in force.",
    ),
    Notice(
        "ratelimits/updated",
        ProviderLimits,
        "ratelimits",
        "A provider's budget or the limits its server reported changed (one `providers[]` "
        "entry of `ratelimits/read`).",
    ),
    Notice(
        "job/created",
        wire.JobChange,
        "jobs",
        "A job was created, by any client.",
    ),
    Notice(
        "job/finished",
        wire.JobChange,
        "jobs",
        "A job reached a final state: completed, failed or cancelled.",
    ),
)

ERROR_WHEN: Final[Mapping[wire.ErrorKind, str]] = {
    wire.ErrorKind.PARSE_ERROR: "The line is not JSON (or not UTF-8).",
    wire.ErrorKind.INVALID_REQUEST: "The line is JSON but not a request: not an object, a "
    'batch (an array), a `jsonrpc` other than `"2.0"`, an `id` that is neither a string nor '
    "an integer, or a line over the size limit (the connection is then closed).",
    wire.ErrorKind.METHOD_NOT_FOUND: "No method of that name.",
    wire.ErrorKind.INVALID_PARAMS: "The params do not fit the method: a wrong type, a missing "
    "member, a member the method does not define, or a value out of range. The message names "
    "the member's path, such as `$.body.model`.",
    wire.ErrorKind.INTERNAL_ERROR: "A bug in codexd. It is logged with a traceback; the "
    "connection stays open.",
    wire.ErrorKind.OVERLOADED: "A bound was reached: too many connections, a full job queue, "
    "or the daemon is draining for a shutdown. Try again later.",
    wire.ErrorKind.UNAUTHENTICATED: "No credentials for the provider. The message names the "
    "environment variable the daemon looked at and `codexctl login`.",
    wire.ErrorKind.AUTH_EXPIRED: "The ChatGPT login can no longer be refreshed; log in again.",
    wire.ErrorKind.RATE_LIMITED: "The provider still answers 429 after the retries, or asks "
    "for a wait longer than `[codexd] max_retry_wait_s` (`retry_after_s` says how long).",
    wire.ErrorKind.QUOTA_EXCEEDED: "The account has no quota left (billing). Never retried.",
    wire.ErrorKind.USAGE_LIMIT_REACHED: "The ChatGPT plan's usage limit is reached; `resets_at` "
    "says when it resets. Never retried.",
    wire.ErrorKind.BUDGET_EXCEEDED: "The job would pass a `[codexd.budget]` spending cap.",
    wire.ErrorKind.UPSTREAM_ERROR: "The provider failed (5xx, or the connection) and the "
    "retries ran out.",
    wire.ErrorKind.BAD_REQUEST: "The provider refused the request (an unknown model, a bad "
    "parameter); the message carries the provider's own.",
    wire.ErrorKind.CONTEXT_LENGTH_EXCEEDED: "The input does not fit the model's context window.",
    wire.ErrorKind.STREAM_ERROR: "The reply stream broke off or went idle, and the stream "
    "retries ran out.",
    wire.ErrorKind.NOT_FOUND: "No job or login with that id (a finished job is forgotten after "
    "`[codexd] job_retention_s`).",
    wire.ErrorKind.CANCELLED: "The `error` of a cancelled job, as `job/get` shows it.",
    wire.ErrorKind.REPLAY_UNAVAILABLE: "`job/subscribe` asked for events older than the job's "
    "log still holds; `oldest_seq` is the oldest one it can replay from.",
    wire.ErrorKind.CONFIG_INVALID: "The config file is invalid (`config/reload`); `file`, "
    "`line` and `key` locate the fault.",
}

EXIT_MEANING: Final[Mapping[str, str]] = {
    "EXIT_OK": "Success.",
    "EXIT_FAILED": "The call or the job failed with an error of any other kind.",
    "EXIT_USAGE": "The command line is wrong (an unknown option, a missing argument).",
    "EXIT_UNREACHABLE": "No daemon answers at the socket, the connection was lost, or the "
    "socket is not provably the user's own daemon.",
    "EXIT_AUTH": "Credentials are needed: not logged in, or the login expired.",
    "EXIT_LIMIT": "A rate limit, quota, plan usage limit or spending cap stopped the call.",
    "EXIT_INTERRUPTED": "Interrupted (Ctrl-C); a job that `ask` started is cancelled.",
    "EXIT_OUTPUT_CLOSED": "Standard output was closed by its reader (a pager or `head` that "
    "quit); nothing more is printed.",
}

UPSTREAM_EVENTS: Final = (
    (
        "response.output_text.delta",
        "`delta`: the next piece of the reply's text (for both "
        "wire APIs: Chat Completions chunks are translated).",
    ),
    ("response.reasoning_summary_text.delta", "`delta`: the next piece of a reasoning summary."),
    ("response.output_item.done", "`item`: a finished output item (a message, a function call)."),
)


# --------------------------------------------------------------------------- types


def _doc(obj: object) -> str:
    """An object's own docstring (not one inherited from a base class), each paragraph on one
    line so that it reads the same inside a list item or a table."""
    raw = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not isinstance(raw, str):
        return ""
    paragraphs = inspect.cleandoc(raw).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _anchor(name: str) -> str:
    return name.lower()


def _is_empty(t: mi.Type) -> bool:
    return isinstance(t, mi.StructType) and not t.fields and t.tag is None


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _children(t: mi.Type) -> Iterator[mi.Type]:
    t = _unwrap(t)
    if isinstance(t, mi.StructType):
        for f in t.fields:
            yield f.type
    elif isinstance(t, mi.UnionType):
        yield from t.types
    elif isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
        yield t.item_type
    elif isinstance(t, mi.TupleType):
        yield from t.item_types
    elif isinstance(t, mi.DictType):
        yield t.key_type
        yield t.value_type


def _structs(t: mi.Type) -> Iterator[mi.StructType]:
    """The struct types `t` names directly (itself, union members, array items)."""
    t = _unwrap(t)
    if isinstance(t, mi.StructType):
        yield t
    else:
        for child in _children(t):
            yield from _structs(child)


class Types:
    """Every struct the protocol mentions, and where each is shown.

    A struct used in exactly one place at the top (one method's params or result, one
    notification's params) is shown there; every other one gets a section under "Types", and
    the places that use it link to it.
    """

    def __init__(self, tops: Iterable[Any], placed: Iterable[type] = ()) -> None:
        self.placed = frozenset(placed)  # shown in a section of their own elsewhere
        self.uses: Counter[type] = Counter()
        self.info: dict[type, mi.StructType] = {}
        self._top: set[type] = set()
        names: dict[str, type] = {}
        for tp in tops:
            for s in _structs(mi.type_info(tp)):
                self._top.add(s.cls)
                self._visit(s, names)

    def _visit(self, s: mi.StructType, names: dict[str, type]) -> None:
        self.uses[s.cls] += 1
        if s.cls in self.info:
            return
        if s.fields:
            other = names.setdefault(s.cls.__name__, s.cls)
            if other is not s.cls:
                raise ValueError(
                    f"two protocol types are named {s.cls.__name__}: {other.__module__} and "
                    f"{s.cls.__module__}; rename one"
                )
        self.info[s.cls] = s
        for f in s.fields:
            for child in _structs(f.type):
                self._visit(child, names)

    def inline(self, cls: type) -> bool:
        return cls in self._top and self.uses[cls] == 1

    def sectioned(self) -> list[mi.StructType]:
        out = [
            s
            for cls, s in self.info.items()
            if s.fields and not self.inline(cls) and cls not in self.placed
        ]
        return sorted(out, key=lambda s: s.cls.__name__)

    def expr(self, t: mi.Type) -> str:
        """A member's type in words: `string or null`, `array of [JobView](#jobview)`."""
        t = _unwrap(t)
        if isinstance(t, mi.UnionType):
            parts = [self.expr(x) for x in t.types if not isinstance(x, mi.NoneType)]
            if any(isinstance(x, mi.NoneType) for x in t.types):
                parts.append("null")
            return " or ".join(parts)
        if isinstance(t, mi.NoneType):
            return "null"
        if isinstance(t, mi.StrType):
            return "string"
        if isinstance(t, mi.BoolType):
            return "boolean"
        if isinstance(t, mi.IntType):
            return "integer"
        if isinstance(t, mi.FloatType):
            return "number"
        if isinstance(t, mi.AnyType | mi.RawType):
            return "any JSON value"
        if isinstance(t, mi.LiteralType):
            return " or ".join(f"`{json.dumps(v)}`" for v in t.values)
        if isinstance(t, mi.EnumType):
            return " or ".join(f"`{json.dumps(m.value)}`" for m in t.cls)
        if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
            return f"array of {self._grouped(t.item_type)}"
        if isinstance(t, mi.DictType):
            value = _unwrap(t.value_type)
            return (
                "object" if isinstance(value, mi.AnyType) else f"object of {self._grouped(value)}"
            )
        if isinstance(t, mi.StructType):
            if _is_empty(t):
                return "`{}`"
            name = t.cls.__name__
            return f"[`{name}`](#{_anchor(name)})"
        raise TypeError(f"no words for the type {t!r}: teach Types.expr")

    def _grouped(self, t: mi.Type) -> str:
        """`expr`, in parentheses when it is a choice (`array of ("a" or "b")`)."""
        words = self.expr(t)
        return f"({words})" if " or " in words else words

    def members(self, s: mi.StructType) -> list[str]:
        """The member table of a struct: what a sender must or may put in it (input types
        refuse unknown members), or what a reader finds in it."""
        is_input = s.forbid_unknown_fields
        hints = {f.name: f.type for f in msgspec.structs.fields(s.cls)}
        omit = s.cls.__struct_config__.omit_defaults
        rows: list[tuple[str, str, str, str]] = []
        if s.tag_field is not None:
            rows.append(
                (s.tag_field, f"`{json.dumps(s.tag)}`", "required" if is_input else "always", "")
            )
        for f in s.fields:
            unset = msgspec.UnsetType in typing.get_args(hints[f.name])
            if is_input:
                note = "required" if f.required else _default(f)
            elif unset:
                note = "only when it applies"
            elif not f.required and omit:
                note = f"left out when {_default(f)}"
            else:
                note = "always"
            rows.append((f.encode_name, self.expr(f.type), note, _description(f.type)))
        described = any(r[3] for r in rows)
        noted = any(r[2] != "always" for r in rows)
        head = ["member", "type"]
        if noted:
            head.append("default" if is_input else "present")
        if described:
            head.append("description")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, typ, note, desc in rows:
            cells = [f"`{name}`", typ]
            if noted:
                cells.append(note)
            if described:
                cells.append(desc)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return lines

    def block(self, tp: Any, what: str) -> list[str]:
        """A method's params or result: inline when only this place uses it, else a link."""
        t = _unwrap(mi.type_info(tp))
        if isinstance(t, mi.StructType) and _is_empty(t):
            if what == "Params":
                return [f"**{what}**: none (send `{{}}` or leave `params` out)."]
            return [f"**{what}**: `{{}}`."]
        if isinstance(t, mi.StructType) and self.inline(t.cls):
            out = [f"**{what}** (`{t.cls.__name__}`):"]
            doc = _doc(t.cls)
            if doc:
                out += ["", doc]
            return [*out, "", *self.members(t)]
        if isinstance(t, mi.UnionType) and all(isinstance(x, mi.StructType) for x in t.types):
            out = [f"**{what}**: one of"]
            for variant in t.types:
                assert isinstance(variant, mi.StructType)
                out += ["", f"- `{variant.cls.__name__}`" + _doc_suffix(variant.cls), ""]
                out += ["  " + line for line in self.members(variant)]
            return out
        return [f"**{what}**: {self.expr(t)}."]


def _doc_suffix(cls: type) -> str:
    doc = _doc(cls)
    return f": {doc}" if doc else ""


def _default(f: mi.Field) -> str:
    factory = f.default_factory
    value = factory() if factory is not msgspec.NODEFAULT else f.default
    return f"`{msgspec.json.encode(value).decode()}`"


def _description(t: mi.Type) -> str:
    while isinstance(t, mi.Metadata):
        desc = (t.extra_json_schema or {}).get("description")
        if desc:
            return str(desc)
        t = t.type
    return ""


# --------------------------------------------------------------------------- examples


def _json(value: Any) -> str:
    compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if len(compact) <= 100:
        return compact
    return json.dumps(value, ensure_ascii=False, indent=2)


def request_message(method: str, ex: Exchange) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if ex.params is not None:
        msg["params"] = ex.params
    return msg


def reply_message(ex: Exchange) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "result": ex.result}


def _example(method: str, ex: Exchange) -> list[str]:
    return [
        "Example:",
        "",
        "```json",
        _json(request_message(method, ex)),
        "```",
        "",
        "```json",
        _json(reply_message(ex)),
        "```",
    ]


# --------------------------------------------------------------------------- sections


def _mib(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


def _transport() -> list[str]:
    settings = CodexdSettings()
    return [
        "## Connecting",
        "",
        "### Where the socket is",
        "",
        "The control socket is a Unix stream socket. Its path is the first of these that "
        "applies; the daemon and codexctl compute it with the same function, so they agree:",
        "",
        "1. the `--socket PATH` option of `codexd` and `codexctl`;",
        "2. `$CODEXD_SOCKET`;",
        f"3. `$XDG_RUNTIME_DIR/codexd/{wire.SOCKET_NAME}`;",
        f"4. `/run/user/<uid>/codexd/{wire.SOCKET_NAME}`, when `/run/user/<uid>` is a "
        "directory owned by you;",
        f"5. `${{TMPDIR:-/tmp}}/codexd-<uid>/{wire.SOCKET_NAME}`.",
        "",
        "The socket's directory is yours alone (mode 0700) and the socket is 0600. Before "
        "sending anything, a careful client checks the same: the directory belongs to the user "
        "and is not writable by others, and the peer's uid (`SO_PEERCRED` or `getpeereid`) is "
        "the user's. The daemon, for its part, closes at once and without a word any "
        "connection from another uid (root excepted). The OpenAI-compatible gateway listens "
        f"beside it on `{wire.GATEWAY_SOCKET_NAME}` and is described in "
        "[gateway.md](gateway.md).",
        "",
        "### Framing",
        "",
        "Each message is one JSON value on one line: UTF-8, ended by `\\n` (NDJSON). Empty "
        "lines are skipped. A line may hold at most "
        f"`[codexd] max_message_bytes` bytes, {_mib(settings.max_message_bytes)} by default, "
        "the newline not counted. A longer line is answered with an `invalid_request` error "
        "(id `null`) and the daemon closes the connection: nothing after it is read.",
        "",
        f"At most `[codexd] max_connections` ({settings.max_connections} by default) "
        "connections are served at once; one more receives a single `overloaded` error (id "
        "`null`) and is closed. A connection that stays idle for "
        f"`[codexd] connection_idle_timeout_s` ({settings.connection_idle_timeout_s:g} s by "
        "default) is closed, unless it waits for something: a request in flight, a job's or a "
        "topic's events, a login's end, or a running job that is cancelled with it.",
        "",
        "### Requests and replies",
        "",
        "The protocol is JSON-RPC 2.0 without batches:",
        "",
        '- A request is `{"jsonrpc": "2.0", "id": ID, "method": NAME, "params": {...}}`. '
        '`jsonrpc` may be left out; any value other than `"2.0"` is `invalid_request`. `id` is '
        "a string or an integer.",
        "- `params` is an object of named members (an array is `invalid_params`), and may be "
        "left out when the method takes none. A member the method does not define is "
        "`invalid_params`, except inside `job/submit`'s `body`, which is passed on as it is.",
        "- A request without `id` is a notification: it runs, and gets no reply, not even an "
        "error.",
        "- An array (a batch) is `invalid_request`: send one request per line.",
        '- Every reply is `{"jsonrpc": "2.0", "id": ID, "result": ...}` or '
        '`{"jsonrpc": "2.0", "id": ID, "error": {...}}` (see [Errors](#errors)).',
        "- Requests on one connection run concurrently: replies may come in any order, so "
        "match them by `id`. A reply always comes before the notifications it causes on the "
        "same connection (the `job/submit` reply before the job's first `job/event`, the "
        "`job/subscribe` reply before the replay).",
        "",
        "Method names are `noun/verb`; member names are snake_case. Times are RFC 3339 UTC "
        "strings such as `2026-11-25T09:00:00.123Z`; durations are numbers of seconds.",
        "",
        "### The handshake",
        "",
        "There is none to wait for: a client may send any request first. `initialize` is "
        "optional; it names the client, and the name is what usage is accounted under (without "
        "it the daemon uses the peer's program name, or for an interpreter such as python its "
        "script's file name). Its result carries the daemon's version and "
        f"`protocol_version` ({wire.PROTOCOL_VERSION} for this release): a client that finds a "
        "different number should warn that one side needs an upgrade.",
    ]


def _methods(types: Types) -> list[str]:
    out = [
        "## Methods",
        "",
        "The same list, with a JSON Schema of each method's params and result, is what "
        "`daemon/methods` returns and `codexctl rpc --list` prints.",
        "",
        "| method | what it does |",
        "|---|---|",
    ]
    for m in TABLE.methods.values():
        out.append(f"| [`{m.name}`](#{_method_anchor(m.name)}) | {m.summary} |")
    for m in TABLE.methods.values():
        out += ["", *_method(m, types)]
    return out


def _method_anchor(name: str) -> str:
    return name.replace("/", "").lower()


def _method(m: Method[Any, Any], types: Types) -> list[str]:
    out = [f"### `{m.name}`", "", m.summary]
    doc = _doc(m.handler)
    if doc:
        out += ["", doc]
    out += ["", *types.block(m.params_type, "Params")]
    out += ["", *types.block(m.result_type, "Result")]
    out += ["", *_example(m.name, EXAMPLES[m.name])]
    return out


def _notifications(types: Types) -> list[str]:
    out = [
        "## Notifications",
        "",
        "The daemon sends notifications (`method` and `params`, no `id`) on its own. A "
        "connection receives a job's `job/event`s while it follows the job, and the others "
        "once it has called `events/subscribe` with their topic "
        f"({', '.join(f'`{t}`' for t in TOPICS)}).",
        "",
        "| method | topic |",
        "|---|---|",
    ]
    for n in NOTIFICATIONS:
        topic = f"`{n.topic}`" if n.topic else "(following a job, or any subscription)"
        if n.method == "job/event":
            topic = "(following the job)"
        out.append(f"| [`{n.method}`](#{_method_anchor(n.method)}) | {topic} |")
    for n in NOTIFICATIONS:
        out += ["", f"### `{n.method}`", "", n.summary, ""]
        out += types.block(n.params, "Params")
        message = {"jsonrpc": "2.0", "method": n.method, "params": NOTIFICATION_EXAMPLES[n.method]}
        out += ["", "Example:", "", "```json", _json(message), "```"]
    return out


def _item(marker: str, lines: list[str]) -> list[str]:
    """A list item: `marker` before the first line, the others indented under it."""
    pad = " " * len(marker)
    return [marker + lines[0], *(pad + line if line else "" for line in lines[1:]), ""]


def _event(cls: type, types: Types) -> list[str]:
    t = _struct(cls)
    head = f"`{t.tag}`" + _doc_suffix(cls)
    if len(t.fields) == 0:
        return [head + " It has no other member."]
    return [head, "", *types.members(t)]


def _events(types: Types) -> list[str]:
    """The job events in the order they come: the ones before the upstream events, those,
    the retry (after which the order starts over at `job.started`), then one final event."""
    own = typing.get_args(wire.JobOwnEvent)
    final = [cls for cls in own if _tag(cls) in ("job.completed", "job.failed", "job.cancelled")]
    before = [cls for cls in own if _tag(cls) in ("job.queued", "job.started")]
    retry = [cls for cls in own if _tag(cls) == "job.retrying"]
    if len(before) + len(retry) + len(final) != len(own):
        raise ValueError("a job event is neither first, retry nor final: place it in _events")
    out = [
        "## Jobs",
        "",
        "### Job events",
        "",
        "The `event` of a `job/event` notification is an object with a `type`. A job's events "
        "come in this order:",
        "",
    ]
    n = 0
    for cls in before:
        n += 1
        out += _item(f"{n}. ", _event(cls, types))
    n += 1
    upstream = [
        "Upstream events, passed through as the provider sent them, with their own members. "
        "The ones a client most often reads:",
        "",
        *(f"- `{name}`: {what}" for name, what in UPSTREAM_EVENTS),
        "",
        "Other events of the Responses API pass through under their own `type`; ignore the "
        "ones you do not know.",
        "",
        "An embeddings job has one upstream event instead, with its vectors:",
        "",
        *_event(EmbeddingsResult, types),
    ]
    out += _item(f"{n}. ", upstream)
    for cls in retry:
        n += 1
        out += _item(
            f"{n}. ",
            [*_event(cls, types), "", "The next attempt follows from `job.started` on."],
        )
    n += 1
    ends = ["Exactly one final event:", ""]
    for cls in final:
        ends += _item("- ", _event(cls, types))
    out += _item(f"{n}. ", ends)
    out += ["### Job states", "", *_states()]
    return out


def _tag(cls: type) -> str:
    tag = cls.__struct_config__.tag  # type: ignore[attr-defined]
    assert isinstance(tag, str)
    return tag


def _states() -> list[str]:
    out = [
        "A job's `state` is one of "
        + ", ".join(f"`{s.value}`" for s in JobState)
        + ". Each event moves it as this table says; `completed`, `failed` and `cancelled` "
        "are final. A finished job stays readable (and can be subscribed to again) for "
        "`[codexd] job_retention_s` "
        f"({CodexdSettings().job_retention_s:g} s by default).",
        "",
        "| state | event | next state |",
        "|---|---|---|",
    ]
    for (state, kind), after in TRANSITIONS.items():
        event = "an upstream event" if kind == "upstream" else f"`{kind}`"
        out.append(f"| `{state.value}` | {event} | `{after.value}` |")
    return out


def _errors(types: Types) -> list[str]:
    missing = [k for k in wire.ERROR_TABLE if k not in ERROR_WHEN]
    if missing:
        raise KeyError(f"docsgen.protocol.ERROR_WHEN says nothing about {missing}")
    out = [
        "## Errors",
        "",
        "An error reply's `error` (and the `error` of a failed job) is an object with a "
        "`code`, a `message` that tells a person what happened and what to do next, and "
        "`data`, whose `kind` is the stable name to match on. `retryable` says whether the "
        "same request may succeed when sent again later. No member ever holds a secret.",
        "",
        "### ErrorObject",
        "",
        *types.members(_struct(wire.ErrorObject)),
        "",
        "### ErrorData",
        "",
        _doc(wire.ErrorData),
        "",
        *types.members(_struct(wire.ErrorData)),
        "",
        "Example:",
        "",
        "```json",
        _json(ERROR_EXAMPLE),
        "```",
        "",
        "### Error kinds",
        "",
        "| code | kind | retryable | codexctl exits | when |",
        "|---|---|---|---|---|",
    ]
    for kind, (code, retryable) in wire.ERROR_TABLE.items():
        out.append(
            f"| {code} | `{kind.value}` | {'yes' if retryable else 'no'} | "
            f"{wire.exit_code_for(kind)} | {ERROR_WHEN[kind]} |"
        )
    out += [
        "",
        "A client that meets a code it does not know should treat it by its `data.kind` if "
        "that is known, and otherwise as a failure that is not retryable.",
    ]
    return out


def _struct(cls: type) -> mi.StructType:
    t = mi.type_info(cls)
    assert isinstance(t, mi.StructType)
    return t


def _exit_codes() -> list[str]:
    codes = sorted(
        ((name, value) for name, value in vars(wire).items() if name.startswith("EXIT_")),
        key=lambda item: (item[1], item[0]),
    )
    missing = [name for name, _ in codes if name not in EXIT_MEANING]
    if missing:
        raise KeyError(f"docsgen.protocol.EXIT_MEANING says nothing about {missing}")
    by_exit: dict[int, list[str]] = {}
    for kind in wire.ERROR_TABLE:
        by_exit.setdefault(wire.exit_code_for(kind), []).append(f"`{kind.value}`")
    out = [
        "## codexctl exit codes",
        "",
        "`codexctl` ends with one of these statuses; a failed call maps its error kind to a "
        "status as the last column says.",
        "",
        "| status | meaning | error kinds |",
        "|---|---|---|",
    ]
    for name, value in codes:
        kinds = ", ".join(by_exit.get(value, [])) if value != wire.EXIT_FAILED else "every other"
        out.append(f"| {value} | {EXIT_MEANING[name]} | {kinds} |")
    return out


def _types_section(types: Types) -> list[str]:
    out = [
        "## Types",
        "",
        "The objects used in more than one place above. In a type that a client sends, an "
        "unknown member is `invalid_params`; in one the daemon sends, a client should ignore "
        "members it does not know, as later releases may add some.",
    ]
    for s in types.sectioned():
        name = s.cls.__name__
        out += ["", f"### {name}", ""]
        doc = _doc(s.cls)
        if doc:
            out += [doc, ""]
        out += types.members(s)
    return out


def _tops() -> list[Any]:
    tops: list[Any] = []
    for m in TABLE.methods.values():
        tops += [m.params_type, m.result_type]
    tops += [n.params for n in NOTIFICATIONS]
    tops += list(typing.get_args(wire.JobOwnEvent))
    tops.append(EmbeddingsResult)
    tops.append(wire.ErrorObject)
    return tops


def render() -> str:
    """The whole of docs/protocol.md."""
    types = Types(_tops(), placed=[wire.ErrorObject, wire.ErrorData])
    parts = [
        "# The control protocol",
        "",
        "<!-- Generated by `make docs` from the method table and the protocol types; edit the "
        "code (codexd/docsgen/ and the docstrings), not this file. -->",
        "",
        "This page is for people who write a client for codexd. Everything a client can do "
        "goes through one Unix socket, with JSON-RPC 2.0 messages, one per line. `codexctl` "
        "and its Python library (`codexctl.Client`) are such clients; anything that can open "
        "a Unix socket and write JSON can be another.",
        "",
        "Contents: [Connecting](#connecting) · [Methods](#methods) · "
        "[Notifications](#notifications) · [Jobs](#jobs) · [Errors](#errors) · "
        "[codexctl exit codes](#codexctl-exit-codes) · [Types](#types)",
        "",
        *_transport(),
        "",
        *_methods(types),
        "",
        *_notifications(types),
        "",
        *_events(types),
        "",
        *_errors(types),
        "",
        *_exit_codes(),
        "",
        *_types_section(types),
    ]
    text = "\n".join(parts)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n"
