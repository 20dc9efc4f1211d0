"""docs/config.md, generated from the config schema.

Every key, its type and its default come from the msgspec Structs of codexd/config/schema.py
and its meaning from their `Meta(description=...)`; whether a reload applies it comes from
`RESTART_KEYS` (config/store.py); the built-in providers from the loader. What is written here
is the prose around them, one example per table (each a file the loader accepts, which the
tests check) and the environment variables (the tests check that every one the code reads is
listed).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from msgspec import inspect as mi

from codexd.auth.oauth import ORIGINATOR
from codexd.config.load import (
    CODEXD_FILE_TABLES,
    CODEXD_NAME,
    CONFIG_NAME,
    PROFILE_SUFFIX,
    default_config,
)
from codexd.config.schema import LMSTUDIO_DEFAULT_PORT, OLLAMA_DEFAULT_PORT, ConfigToml
from codexd.config.store import MAX_PROFILE_SNAPSHOTS, RESTART_KEYS
from codexd.install import SHELL_LOCATIONS, env_file_path
from codexd.limits.plan import POLL_INTERVAL_S
from codexd.usage.catalog import DEFAULT_PRICE_KEY, FALLBACK_PRICE

# What a table of tables shows for the ids of its entries.
_PLACEHOLDERS: Final = {"profiles": "NAME", "prices": "MODEL"}


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    pattern: str  # dotted, `*` for any id: `codexd.rate_limits.*.backend`
    type: str
    default: str
    restart: bool
    description: str


@dataclass(frozen=True, slots=True)
class Table:
    header: str  # as written in the file: `codexd.rate_limits.ID` ("" for the top level)
    pattern: str  # dotted, `*` for any id ("" for the top level)
    lead: str  # the description of the key that holds the table
    strict: bool  # an unknown key is an error
    keys: tuple[Key, ...]


# --------------------------------------------------------------------------- the schema


def _unwrap(info: Any) -> tuple[Any, str]:
    """A field's type without its description, and the description ("" when none)."""
    if isinstance(info, mi.Metadata):
        inner, inner_text = _unwrap(info.type)
        text = (info.extra_json_schema or {}).get("description", "")
        return inner, text or inner_text
    return info, ""


def _without_none(info: Any) -> Any:
    if isinstance(info, mi.UnionType):
        inner = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(inner) == 1:
            return _unwrap(inner[0])[0]
    return info


def _literals(hint: Any) -> tuple[Any, ...] | None:
    """The values of the Literal inside a type hint, in the order they are written."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):
        found = _literals(arg)
        if found is not None:
            return found
    return None


def _number(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else str(n)


def _bounded(kind: str, info: Any) -> str:
    low = info.ge if info.ge is not None else info.gt
    high = info.le if info.le is not None else info.lt
    if low is not None and high is not None:
        return f"{kind} from {_number(low)} to {_number(high)}"
    if low is not None:
        return f"{kind} {'≥' if info.ge is not None else '>'} {_number(low)}"
    if high is not None:
        return f"{kind} {'≤' if info.le is not None else '<'} {_number(high)}"
    return kind


def _type_text(info: Any, hint: Any) -> str:
    info = _unwrap(info)[0]
    if isinstance(info, mi.UnionType):
        return " or ".join(
            _type_text(t, hint) for t in info.types if not isinstance(t, mi.NoneType)
        )
    if isinstance(info, mi.BoolType):
        return "boolean"
    if isinstance(info, mi.StrType):
        return "string"
    if isinstance(info, mi.IntType):
        return _bounded("integer", info)
    if isinstance(info, mi.FloatType):
        return _bounded("number", info)
    if isinstance(info, mi.LiteralType):
        values = _literals(hint) or info.values
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in values)
    if isinstance(info, mi.DictType):
        value = _unwrap(info.value_type)[0]
        if isinstance(value, mi.StrType):
            return "table of strings"
    raise TypeError(f"no words for the type {info!r}: teach codexd/docsgen/config.py")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no TOML for the default {value!r}")


def _default_text(field: mi.Field) -> str:
    if field.required:
        return "required"
    value = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    if value is None:
        return "not set"
    if value == {}:
        return "empty"
    return f"`{_toml(value)}`"


def _walk(
    info: mi.StructType, header: tuple[str, ...], pattern: tuple[str, ...], lead: str
) -> Iterator[Table]:
    hints = typing.get_type_hints(info.cls, include_extras=True)
    keys: list[Key] = []
    below: list[tuple[mi.StructType, tuple[str, ...], tuple[str, ...], str]] = []
    for field in info.fields:
        inner, description = _unwrap(field.type)
        inner = _without_none(inner)
        if isinstance(inner, mi.StructType):
            below.append((inner, (*header, field.name), (*pattern, field.name), description))
            continue
        if isinstance(inner, mi.DictType):
            value = _unwrap(inner.value_type)[0]
            if isinstance(value, mi.StructType):
                placeholder = _PLACEHOLDERS.get(field.name, "ID")
                below.append(
                    (
                        value,
                        (*header, field.name, placeholder),
                        (*pattern, field.name, "*"),
                        description,
                    )
                )
                continue
        dotted = ".".join((*pattern, field.name))
        keys.append(
            Key(
                name=field.name,
                pattern=dotted,
                type=_type_text(field.type, hints[field.name]),
                default=_default_text(field),
                restart=dotted in RESTART_KEYS,
                description=description,
            )
        )
    yield Table(
        header=".".join(header),
        pattern=".".join(pattern),
        lead=lead,
        strict=info.forbid_unknown_fields,
        keys=tuple(keys),
    )
    for child in below:
        yield from _walk(*child)


def tables() -> list[Table]:
    """Every table of the file, the top level first, in the order the schema declares them."""
    root = mi.type_info(ConfigToml)
    assert isinstance(root, mi.StructType)
    return list(_walk(root, (), (), ""))


# --------------------------------------------------------------------------- what is written


# One example per table, by its pattern; each must load on its own (the tests load them).
EXAMPLES: Final[dict[str, str]] = {
    "": """\
model = "gpt-5.1-codex"
model_provider = "openai"
model_context_window = 272000
model_reasoning_effort = "high"
model_reasoning_summary = "concise"
model_verbosity = "low"
openai_base_url = "http://127.0.0.1:8000/v1"    # e.g. a proxy in front of the API
chatgpt_base_url = "https://chatgpt.com/backend-api/"
cli_auth_credentials_store = "auto"
forced_login_method = "chatgpt"
model_catalog_json = "models.json"              # $CODEX_HOME/models.json
""",
    "profiles.*": """\
profile = "deep"                  # no deep.config.toml: this table is the profile

[profiles.deep]
model = "gpt-5.1-codex-max"
model_provider = "openai"
model_context_window = 400000
model_reasoning_effort = "xhigh"
model_reasoning_summary = "detailed"
model_verbosity = "medium"
chatgpt_base_url = "https://chatgpt.com/backend-api/"

[profiles.quick]
model = "gpt-5.1-codex-mini"
model_reasoning_effort = "low"
""",
    "model_params": """\
[model_params]
temperature = 0.2
max_tokens = 8192
top_p = 0.9
frequency_penalty = 0.5
presence_penalty = 0.0
""",
    "model_providers.*": """\
model_provider = "azure"

[model_providers.azure]
name = "Azure OpenAI"
base_url = "https://my-resource.openai.azure.com/openai"
env_key = "AZURE_OPENAI_API_KEY"
env_key_instructions = "Create a key in the Azure portal"
wire_api = "responses"
query_params = { api-version = "2025-04-01-preview" }
request_max_retries = 6
stream_max_retries = 10
stream_idle_timeout_ms = 600000

[model_providers.local]
name = "Local server"
base_url = "http://127.0.0.1:8080/v1"
wire_api = "chat"
experimental_bearer_token = "local-dev"
http_headers = { X-Team = "research" }
env_http_headers = { X-Request-Source = "CODEXD_SOURCE" }

[model_providers.corp]
base_url = "https://llm-gateway.example.com/v1"
requires_openai_auth = true       # takes the same login as `openai`
""",
    "codexd": """\
[codexd]
log_level = "debug"
max_message_bytes = 4194304
max_connections = 64
connection_idle_timeout_s = 300
max_queued_jobs = 200
job_retention_s = 3600
drain_timeout_s = 60
max_retry_wait_s = 300
max_job_log_events = 20000
auth_issuer = "https://auth.openai.com"
usage_retention_days = 90
event_loop = "asyncio"                # the standard loop instead of uvloop (restart)
""",
    "codexd.rate_limits.*": """\
[codexd.rate_limits.openai]
requests_per_minute = 500
tokens_per_minute = 200000
max_concurrency = 16
default_output_tokens = 8192
backend = "redis://127.0.0.1:6379/0"
""",
    "codexd.budget": """\
[codexd.budget]
daily_usd = 20.0
monthly_usd = 200.0
""",
    "codexd.prices.*": f"""\
[codexd.prices."my-finetune"]
input = 3.0
cached_input = 0.3
output = 12.0

[codexd.prices."{DEFAULT_PRICE_KEY}"]             # the price of a model that has none
input = 2.0
cached_input = 0.2
output = 8.0
""",
    "codexd.gateway": """\
[codexd.gateway]
enabled = true
tcp = "127.0.0.1:8765"
head_timeout_s = 5
idle_timeout_s = 60
max_unauthenticated_connections = 32
""",
}


def _code(text: str) -> str:
    return f"`{text}`"


def _builtin_providers() -> list[str]:
    snapshot = default_config({})
    out = [
        "### Built-in providers",
        "",
        "These ids are always defined and cannot be redefined under `[model_providers]`.",
        "",
        "| Id | Name | Base URL | Credentials | Wire API |",
        "|---|---|---|---|---|",
    ]
    for provider_id, cfg in snapshot.providers.items():
        urls = _code(snapshot.route(provider_id, chatgpt_auth=False).base_url)
        if cfg.requires_openai_auth:
            chatgpt = snapshot.route(provider_id, chatgpt_auth=True).base_url
            urls = f"{urls} with an API key, {_code(chatgpt)} with a ChatGPT sign-in"
            key = (
                "the daemon's login: a stored ChatGPT sign-in, else the API key in "
                f"{_code(cfg.env_key or '')}, else one stored by `codexctl login --api-key`"
            )
        elif cfg.env_key:
            key = f"the API key in {_code(cfg.env_key)}"
        else:
            key = "none"
        for header, var in sorted((cfg.env_http_headers or {}).items()):
            key += f"; {_code(header)} from {_code(var)} when set"
        out.append(f"| `{provider_id}` | {cfg.name} | {urls} | {key} | `{cfg.wire_api}` |")
    out += [
        "",
        "`openai_base_url` moves the `openai` provider, whatever the login. The two local "
        "providers follow `CODEX_OSS_BASE_URL` and `CODEX_OSS_PORT` (see below).",
        "",
    ]
    return out


def _fallback_price() -> list[str]:
    price = FALLBACK_PRICE
    return [
        f'Without `[codexd.prices."{DEFAULT_PRICE_KEY}"]`, a model that has no price is '
        f"counted at {_number(price.input)} / {_number(price.cached_input)} / "
        f"{_number(price.output)} USD per million input / cached input / output tokens, and "
        "its usage rows are marked estimated.",
        "",
    ]


def _plan_windows() -> list[str]:
    return [
        "### A ChatGPT plan's usage windows",
        "",
        "With a ChatGPT sign-in, a provider whose requests go to the ChatGPT backend (the "
        "built-in `openai`, or a provider with `requires_openai_auth = true` whose `base_url` "
        "lies under `chatgpt_base_url`) also follows the plan's own limits: its 5-hour and "
        "weekly usage windows and its credits, read from `chatgpt_base_url` + `wham/usage` "
        f"at most once every {POLL_INTERVAL_S:.0f} seconds (when a job starts and the last "
        "read is older) and once more after a job ends in `usage_limit_reached`. All such "
        "providers share the reads: the plan belongs to the login. `codexctl limits` (and "
        "`ratelimits/read`, `ratelimits/updated`) shows the windows, each with what is used "
        "and when it resets, and the credits, beside what response headers said: the newer "
        "of the two wins.",
        "",
        "While a window is at 100 %, nothing is sent "
        "upstream: a job fails at once with `usage_limit_reached` and the window's "
        "`resets_at`, or, when the window resets within `max_retry_wait_s`, the provider's "
        "budget pauses until then and its jobs wait. A read that fails (the network, a 401, "
        "a body that is not the usage data) is logged once and changes nothing. A plan "
        "that says it is not allowed, with no window at 100 %, blocks nothing: the provider's "
        "own answer then says why.",
        "",
    ]


# Sections written after a table's own, by its pattern.
_AFTER: Final[dict[str, Callable[[], list[str]]]] = {
    "model_providers.*": _builtin_providers,
    "codexd.rate_limits.*": _plan_windows,
    "codexd.prices.*": _fallback_price,
}


# (variable, what it does); the variables of the built-in providers are added from them.
ENVIRONMENT: Final = (
    (
        "CODEX_HOME",
        "The directory of `config.toml`, `codexd.toml` and `auth.json`, the one Codex CLI "
        "uses. Default `~/.codex`, which may be missing (every key then has its default); a "
        "directory named here must exist, or `codexd run` stops.",
    ),
    (
        "CODEXD_STATE_DIR",
        "The directory of the usage ledger and the gateway token, kept at mode 700. Default: "
        "the platform's user state directory, `$XDG_STATE_HOME/codexd` or "
        "`~/.local/state/codexd` on Linux, `~/Library/Application Support/codexd` on macOS.",
    ),
    (
        "CODEXD_SOCKET",
        "The control socket (`--socket` wins over it); `gateway.sock` and `codexd.lock` are "
        "beside it. Default: `$XDG_RUNTIME_DIR/codexd/codexd.sock`, else "
        "`/run/user/UID/codexd/codexd.sock` when that directory exists and is yours, else "
        "`${TMPDIR:-/tmp}/codexd-UID/codexd.sock`. `codexctl` follows the same rule.",
    ),
    (
        "XDG_RUNTIME_DIR, TMPDIR",
        "Where the default control socket goes (see `CODEXD_SOCKET`).",
    ),
    (
        "XDG_STATE_HOME",
        "Where the default state directory goes on Linux (see `CODEXD_STATE_DIR`).",
    ),
    (
        "CODEX_REFRESH_TOKEN_URL_OVERRIDE",
        "Refresh ChatGPT tokens at this URL instead of the issuer's `/oauth/token`, as Codex "
        "does; logging out then revokes at `/oauth/revoke` of the same host. Default: unset.",
    ),
    (
        "CODEX_REVOKE_TOKEN_URL_OVERRIDE",
        "Revoke tokens at this URL when logging out. Default: unset.",
    ),
    (
        "CODEX_INTERNAL_ORIGINATOR_OVERRIDE",
        "The `originator` header of requests made with a ChatGPT sign-in, and the start of "
        f"their User-Agent, as in Codex. Default: `{ORIGINATOR}`.",
    ),
    (
        "CODEX_OSS_BASE_URL",
        "The base URL of the built-in `ollama` and `lmstudio` providers. Default: unset.",
    ),
    (
        "CODEX_OSS_PORT",
        "Their port on localhost when `CODEX_OSS_BASE_URL` is unset. Default: "
        f"{OLLAMA_DEFAULT_PORT} for `ollama`, {LMSTUDIO_DEFAULT_PORT} for `lmstudio`.",
    ),
    (
        "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY",
        "The proxy for requests upstream and to the OAuth issuer, and the hosts that bypass "
        "it (lower-case names too). Default: none.",
    ),
    (
        "SSL_CERT_FILE, SSL_CERT_DIR",
        "Trust these CA certificates instead of the bundled ones (a proxy that inspects TLS). "
        "Default: unset.",
    ),
    (
        "HOME, XDG_CONFIG_HOME",
        "Where `codexd install-service` writes the unit files: "
        "`$XDG_CONFIG_HOME/systemd/user` (else `~/.config/systemd/user`), or "
        "`~/Library/LaunchAgents` for launchd.",
    ),
)

# Set by the service manager, never by hand.
SERVICE_MANAGER: Final = (
    ("NOTIFY_SOCKET", "where readiness, reloads and stopping are reported (systemd)"),
    ("WATCHDOG_USEC, WATCHDOG_PID", "how often systemd's watchdog expects a keep-alive"),
    ("LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES", "the sockets passed by socket activation"),
    ("INVOCATION_ID", "started by systemd (`daemon/status` says so)"),
    ("XPC_SERVICE_NAME, LAUNCH_JOB_LABEL", "started by launchd"),
    ("JOURNAL_STREAM", "stderr goes to the journal: log lines carry no timestamp"),
)


def _environment() -> list[str]:
    snapshot = default_config({})
    rows = list(ENVIRONMENT)
    for provider_id, cfg in snapshot.providers.items():
        if cfg.env_key:
            rows.append(
                (
                    cfg.env_key,
                    f"The API key of the built-in `{provider_id}` provider (after a stored "
                    "ChatGPT sign-in, unless `forced_login_method` says otherwise). Default: "
                    "unset.",
                )
            )
        for header, var in sorted((cfg.env_http_headers or {}).items()):
            rows.append(
                (var, f"Sent as `{header}` with `{provider_id}`'s requests. Default: unset.")
            )
    out = [
        "## Environment variables",
        "",
        "codexd reads its environment once, when it starts: restart it after a change. A "
        "provider's `env_key` and the variables of its `env_http_headers` are read from the "
        "same environment.",
        "",
        "| Variable | What it does |",
        "|---|---|",
    ]
    out += [f"| {_names(name)} | {text} |" for name, text in rows]
    out += [
        "",
        "Set by a service manager, not by you:",
        "",
        *(f"- {_names(name)}: {text}." for name, text in SERVICE_MANAGER),
        "",
        "### The service's environment file",
        "",
        "A user service does not inherit your login shell's environment. The units and the "
        f"plist that `codexd install-service` writes read `{env_file_path({'HOME': '~'})}`: "
        "`KEY=value` lines, mode 600, created empty if missing. Put API keys and proxy "
        "settings there, then restart the service. When the shell that runs `install-service` "
        f"sets {' or '.join(_code(n) for n in SHELL_LOCATIONS)} to somewhere other than the "
        "service's default, it writes them into that file too, so that the service reads the "
        "same config, login and ledger as your shell.",
        "",
    ]
    return out


def _names(names: str) -> str:
    return ", ".join(_code(n) for n in names.split(", "))


def _table(table: Table) -> list[str]:
    name = table.pattern.split(".", 1)[0]
    out: list[str] = []
    if table.header:
        out += [f"## `[{table.header}]`", ""]
        lead = table.lead
        if table.strict:
            lead += " An unknown key here is an error, so a typo cannot pass unnoticed."
        else:
            lead += " Keys codexd does not read are left alone (they are Codex's)."
        if name in CODEXD_FILE_TABLES:
            lead += f" May be written in `{CODEXD_NAME}` instead."
        out += [lead, ""]
    else:
        out += [
            "## Top-level keys",
            "",
            "Codex's own keys, of which codexd reads these; it leaves the others alone.",
            "",
        ]
    out += [
        "| Key | Type | Default | Applies | Meaning |",
        "|---|---|---|---|---|",
    ]
    for key in table.keys:
        applies = "restart" if key.restart else "reload"
        out.append(f"| `{key.name}` | {key.type} | {key.default} | {applies} | {key.description} |")
    example = EXAMPLES.get(table.pattern)
    if example is None:
        raise ValueError(f"no example for [{table.header}]: add one to EXAMPLES")
    out += ["", "```toml", example.rstrip("\n"), "```", ""]
    after = _AFTER.get(table.pattern)
    if after is not None:
        out += after()
    return out


PROFILE_EXAMPLE: Final = """\
# $CODEX_HOME/work.config.toml: `codexctl ask --profile work ...`, or `profile = "work"`
model = "gpt-5.1-codex-mini"
model_provider = "corp"
model_reasoning_effort = "low"

[model_providers.corp]
base_url = "https://llm-gateway.example.com/v1"
env_key = "CORP_API_KEY"
"""


def _profiles() -> list[str]:
    return [
        "## Profiles",
        "",
        "A profile is a set of settings chosen by name: by `profile = \"NAME\"` in "
        f"`{CONFIG_NAME}` (the profile in force), or by one request (`codexctl ask --profile "
        "NAME`, `job/submit`'s `profile`, the gateway's `X-Codexd-Profile` header). As in "
        f"Codex CLI 0.145 and later, NAME selects the file `$CODEX_HOME/NAME{PROFILE_SUFFIX}`, "
        f"laid over `{CONFIG_NAME}`: the two are merged table by table, and what the profile "
        "file sets replaces what config.toml sets (an array is replaced whole). A profile "
        "file may hold any key of config.toml, providers of its own included, but not "
        "`profile`. NAME is made of letters, digits, `_` and `-`.",
        "",
        "When that file does not exist, the `[profiles.NAME]` table of config.toml is used: "
        "the format Codex wrote before profile files (see `[profiles.NAME]` below). A name "
        "that is neither is refused, naming the file it looked for: a request gets "
        "`invalid_params`, and the `profile` key an invalid config. A request naming a "
        "profile whose file is invalid gets `config_invalid`, with the file, line and key. "
        "Such a refusal is remembered until the next reload, so a request that repeats it "
        "costs no file read.",
        "",
        "The profile file of `profile` is read at every load, as part of config.toml: when it "
        "is invalid, the reload is refused as a whole and nothing of the new files applies. "
        "One that a request names is read when the first such request comes; its "
        f"configuration is then kept (for {MAX_PROFILE_SNAPSHOTS} profiles at most, the least "
        "recently used dropped) and read again at every reload. codexd watches every "
        f"`*{PROFILE_SUFFIX}` of `$CODEX_HOME`: editing, creating or deleting a profile file "
        "reloads. When a kept profile's file has become invalid, that profile's previous "
        "configuration stays in force for its requests and the error is reported like "
        "config.toml's (the log, `config/invalid`, `codexctl status`), but the reload of "
        "config.toml itself goes on: `codexctl config reload` succeeds and the new config.toml "
        "is in force. "
        "The `[codexd]` settings of a profile file apply when it is the `profile` of "
        "config.toml; a request that names a profile runs with the daemon's own `[codexd]`. "
        f"`codexctl config check NAME{PROFILE_SUFFIX}` checks a profile file laid over the "
        "config.toml beside it, and `codexctl config show` lists the files in force.",
        "",
        "```toml",
        PROFILE_EXAMPLE.rstrip("\n"),
        "```",
        "",
    ]


def render() -> str:
    """docs/config.md."""
    restart = ", ".join(_code(k.replace("*", "ID")) for k in RESTART_KEYS)
    tables_ = " and ".join(f"`[{t}]`" for t in CODEXD_FILE_TABLES)
    out = [
        "# Configuration",
        "",
        "<!-- Generated from codexd/config/schema.py by `make docs`: edit the schema and "
        "codexd/docsgen/config.py, not this file. -->",
        "",
        f"codexd reads `$CODEX_HOME/{CONFIG_NAME}`, the file Codex CLI reads, and "
        f"`$CODEX_HOME/{CODEXD_NAME}`. Both may be missing: every key then has its default. "
        f"`{CODEXD_NAME}` holds only {tables_}, for those who run `codex --strict-config`, "
        f"which refuses tables it does not know; a key set in both files is an error.",
        "",
        "`codexctl config check FILE` checks a file before you put it in place, and "
        "`codexctl config show` prints the configuration in force (secrets hidden).",
        "",
        "## Reload or restart",
        "",
        "codexd watches both files and the profile files (below): saving one, `codexctl "
        "config reload` and `SIGHUP` all "
        "reload. The new files are checked first and used only when valid; an invalid file "
        "leaves the configuration in force and is reported (the log, `codexctl status`) with "
        "its line and key. At start-up an invalid file stops `codexd run` with that message.",
        "",
        "A reload applies to what begins after it: jobs keep the configuration they were "
        "submitted with, and an open connection may keep the limits it started with. The "
        "gateway starts, stops or moves "
        "its listeners to follow `[codexd.gateway]`. The keys marked *restart* in the "
        f"tables below ({restart}) are read at start-up only: after a reload that changes one "
        "of them codexd logs a warning, and the change takes effect once codexd restarts.",
        "",
    ]
    out += _profiles()
    for table in tables():
        out += _table(table)
    out += _environment()
    return "\n".join(out).rstrip("\n") + "\n"
