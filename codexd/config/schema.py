"""config.toml as frozen msgspec Structs, with Codex's defaults and bounds.

Two kinds of table live here. Codex's own (the top level, `[profiles.*]`,
`[model_providers.*]`) tolerate every key codexd does not read, because the same file feeds
Codex CLI. Ours (`[codexd]` and its sub-tables, `[model_params]`) forbid unknown keys: a typo
there must not pass silently.

`ConfigSnapshot` is the effective result of loading: what a job keeps for its whole life.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from codexctl import results

# --------------------------------------------------------------------------- value types

WireApi = Literal["responses", "chat"]
# Every effort Codex has accepted over time; the model decides which it honours.
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max", "ultra"]
ReasoningSummary = Literal["auto", "concise", "detailed", "none"]
Verbosity = Literal["low", "medium", "high"]
CredentialsStore = Literal["file", "keyring", "auto"]
LoginMethod = Literal["chatgpt", "api"]
LogLevel = Literal["debug", "info", "warning", "error"]
EventLoop = Literal["asyncio", "uvloop"]

Retries = Annotated[int, Meta(ge=0, le=100)]
PositiveInt = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(ge=0)]
Timeout = Annotated[float, Meta(gt=0)]
Usd = Annotated[float, Meta(ge=0)]

MAX_RETRIES: Final = 100
DEFAULT_REQUEST_MAX_RETRIES: Final = 4
DEFAULT_STREAM_MAX_RETRIES: Final = 5
DEFAULT_STREAM_IDLE_TIMEOUT_MS: Final = 300_000

# A control socket connection with nothing in flight and nothing subscribed is closed after
# this long, so that leaked clients cannot hold `max_connections` slots for ever; long enough
# that a tool keeping a connection between occasional calls seldom meets it.
DEFAULT_CONNECTION_IDLE_TIMEOUT_S: Final = 600.0

# The gateway: a request head must be whole this long after the connection opened (or after
# its first byte, on a kept-alive connection); real clients send a head in one write.
DEFAULT_GATEWAY_HEAD_TIMEOUT_S: Final = 10.0
# A kept-alive gateway connection waiting for its next request; longer than the pools of the
# usual clients (httpx 5 s, reqwest 90 s), so that they close first and never reuse a
# connection the gateway is closing.
DEFAULT_GATEWAY_IDLE_TIMEOUT_S: Final = 120.0
# TCP connections that have not yet shown the token; past it the oldest is closed. Room for
# an owner's burst of new connections (all accepted before any head is read), and with
# max_connections twice over still far from a 1024-descriptor limit.
DEFAULT_GATEWAY_MAX_UNAUTHENTICATED: Final = 128

OPENAI_API_BASE_URL: Final = "https://api.openai.com/v1"
DEFAULT_CHATGPT_BASE_URL: Final = "https://chatgpt.com/backend-api/"
# Hosts whose `chatgpt_base_url` gets `/backend-api` added when it lacks it, as Codex does.
CHATGPT_HOSTS: Final = frozenset({"chatgpt.com", "chat.openai.com"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
OLLAMA_DEFAULT_PORT: Final = 11434
LMSTUDIO_DEFAULT_PORT: Final = 1234
DEFAULT_MODEL_PROVIDER: Final = "openai"


# --------------------------------------------------------------------------- Codex's tables
# Every key of the file carries its description (`Meta(description=...)`): docs/config.md is
# generated from these Structs (codexd/docsgen/config.py), and a key without one fails its test.


class ProviderConfig(Struct, frozen=True, kw_only=True):
    """`[model_providers.ID]` (Codex's `ModelProviderInfo`); unknown keys are ignored."""

    name: Annotated[
        str | None, Meta(description="The provider's display name; unset: its id. Not empty.")
    ] = None
    base_url: Annotated[
        str | None,
        Meta(
            description="The URL requests go to (`/responses` or `/chat/completions` is "
            "appended); unset: as for `openai`."
        ),
    ] = None
    env_key: Annotated[
        str | None,
        Meta(
            description="The environment variable of the daemon that holds the API key, "
            "sent as `Authorization: Bearer`."
        ),
    ] = None
    env_key_instructions: Annotated[
        str | None, Meta(description="Accepted for Codex, which shows it; codexd does not use it.")
    ] = None
    experimental_bearer_token: Annotated[
        str | None,
        Meta(
            description="An API key written in the file, used when `env_key` gives none; "
            "never shown by `config show`."
        ),
    ] = None
    wire_api: Annotated[
        WireApi,
        Meta(
            description='The API the provider speaks: `"responses"` (POST /responses) or '
            '`"chat"` (POST /chat/completions).'
        ),
    ] = "responses"
    query_params: Annotated[
        dict[str, str] | None,
        Meta(description="Added to every request URL (Azure's `api-version`, for one)."),
    ] = None
    http_headers: Annotated[
        dict[str, str] | None, Meta(description="Headers sent with every request.")
    ] = None
    env_http_headers: Annotated[
        dict[str, str] | None,
        Meta(
            description="Header name → environment variable: the header is sent with the "
            "variable's value when the daemon's environment sets it."
        ),
    ] = None
    requires_openai_auth: Annotated[
        bool,
        Meta(
            description="Use the daemon's OpenAI login (ChatGPT sign-in or API key) instead "
            "of `env_key`."
        ),
    ] = False
    request_max_retries: Annotated[
        Retries,
        Meta(
            description="Retries of a request that fails before its stream starts (429, 5xx, "
            "connection errors)."
        ),
    ] = DEFAULT_REQUEST_MAX_RETRIES
    stream_max_retries: Annotated[
        Retries, Meta(description="Retries of a stream that drops or stays idle too long.")
    ] = DEFAULT_STREAM_MAX_RETRIES
    stream_idle_timeout_ms: Annotated[
        PositiveInt,
        Meta(description="Milliseconds a stream may stay silent before it counts as dropped."),
    ] = DEFAULT_STREAM_IDLE_TIMEOUT_MS


class ProfileConfig(Struct, frozen=True, kw_only=True):
    """`[profiles.NAME]`: overrides of the top-level model keys; unknown keys are ignored."""

    model: Annotated[str | None, Meta(description="Replaces the top-level `model`.")] = None
    model_provider: Annotated[
        str | None, Meta(description="Replaces the top-level `model_provider`.")
    ] = None
    model_context_window: Annotated[
        PositiveInt | None, Meta(description="Replaces the top-level `model_context_window`.")
    ] = None
    model_reasoning_effort: Annotated[
        ReasoningEffort | None,
        Meta(description="Replaces the top-level `model_reasoning_effort`."),
    ] = None
    model_reasoning_summary: Annotated[
        ReasoningSummary | None,
        Meta(description="Replaces the top-level `model_reasoning_summary`."),
    ] = None
    model_verbosity: Annotated[
        Verbosity | None, Meta(description="Replaces the top-level `model_verbosity`.")
    ] = None
    chatgpt_base_url: Annotated[
        str | None, Meta(description="Replaces the top-level `chatgpt_base_url`.")
    ] = None


# --------------------------------------------------------------------------- codexd's tables


class ModelParams(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[model_params]`: defaults for requests that leave these out."""

    temperature: Annotated[
        Annotated[float, Meta(ge=0, le=2)] | None,
        Meta(description="Sampling temperature."),
    ] = None
    max_tokens: Annotated[
        PositiveInt | None,
        Meta(
            description="Output token cap (sent as `max_output_tokens` to the Responses API, "
            "`max_completion_tokens` to Chat Completions)."
        ),
    ] = None
    top_p: Annotated[
        Annotated[float, Meta(ge=0, le=1)] | None,
        Meta(description="Nucleus sampling: the probability mass to sample from."),
    ] = None
    frequency_penalty: Annotated[
        Annotated[float, Meta(ge=-2, le=2)] | None,
        Meta(description="Chat Completions only (the Responses API has no penalties)."),
    ] = None
    presence_penalty: Annotated[
        Annotated[float, Meta(ge=-2, le=2)] | None,
        Meta(description="Chat Completions only (the Responses API has no penalties)."),
    ] = None


class RateLimitSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[codexd.rate_limits.ID]`; None means no cap beyond what upstream teaches."""

    requests_per_minute: Annotated[
        PositiveInt | None,
        Meta(
            description="Most request starts in any rolling 60 seconds; unset: only what "
            "upstream's rate-limit headers and 429s teach."
        ),
    ] = None
    tokens_per_minute: Annotated[
        PositiveInt | None,
        Meta(
            description="Most tokens in any rolling 60 seconds (estimated when a request "
            "starts, corrected by its real usage); unset: only what upstream teaches."
        ),
    ] = None
    max_concurrency: Annotated[
        PositiveInt, Meta(description="Most requests in flight at once.")
    ] = 64
    default_output_tokens: Annotated[
        PositiveInt,
        Meta(
            description="The output part of the token estimate for a request that sets no "
            "output cap."
        ),
    ] = 4096
    backend: Annotated[
        str | None,
        Meta(
            description="A `redis://`, `rediss://` or `unix://` URL: keep this budget in "
            "Redis, shared by the daemons of several machines; unset: in memory."
        ),
    ] = None


class BudgetSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[codexd.budget]`: spending caps; a cap left out is no cap."""

    daily_usd: Annotated[
        Usd | None,
        Meta(
            description="Most USD spent in the local day; a job that would pass it fails "
            "with `budget_exceeded`."
        ),
    ] = None
    monthly_usd: Annotated[
        Usd | None,
        Meta(description="Most USD spent in the local month, likewise."),
    ] = None


class Price(results.PriceRates, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per 1M tokens."""

    # The members are the wire type's (the price `models/list` reports); only the config
    # refuses unknown keys.


class GatewaySettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[codexd.gateway]`: the OpenAI-compatible HTTP API."""

    enabled: Annotated[
        bool,
        Meta(
            description="Serve the OpenAI HTTP API on `gateway.sock` beside the control "
            "socket (and on `tcp` when set)."
        ),
    ] = False
    tcp: Annotated[
        str | None,
        Meta(
            description="Also listen on this loopback `host:port`; requests there must carry "
            "the bearer token that `codexctl gateway token` prints."
        ),
    ] = None
    head_timeout_s: Annotated[
        Timeout,
        Meta(
            description="Seconds a request head may take to arrive whole; past it the "
            "connection is closed."
        ),
    ] = DEFAULT_GATEWAY_HEAD_TIMEOUT_S
    idle_timeout_s: Annotated[
        Timeout,
        Meta(description="Seconds a kept-alive connection may wait for its next request."),
    ] = DEFAULT_GATEWAY_IDLE_TIMEOUT_S
    max_unauthenticated_connections: Annotated[
        PositiveInt,
        Meta(
            description="TCP connections that have not shown the token yet; past it the "
            "oldest is closed."
        ),
    ] = DEFAULT_GATEWAY_MAX_UNAUTHENTICATED


DEFAULT_RATE_LIMIT: Final = RateLimitSettings()


class CodexdSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[codexd]`: every bound of the daemon, with its default."""

    log_level: Annotated[
        LogLevel,
        Meta(description="How much the daemon logs (`codexd run --log-level` sets it at start)."),
    ] = "info"
    event_loop: Annotated[
        EventLoop,
        Meta(
            description="The daemon's event loop: `uvloop` (libuv, faster; the standard "
            "`asyncio` loop where it is not installed) or `asyncio`. The environment "
            "variable `CODEXD_EVENT_LOOP` wins over it."
        ),
    ] = "uvloop"
    max_message_bytes: Annotated[
        Annotated[int, Meta(ge=1024)],
        Meta(
            description="Longest request line a client may send on the control socket; a "
            "longer one is answered with an error and closes the connection."
        ),
    ] = 1_048_576
    max_connections: Annotated[
        PositiveInt,
        Meta(
            description="Most control-socket connections at once; one more is refused with "
            "an error."
        ),
    ] = 256
    connection_idle_timeout_s: Annotated[
        Timeout,
        Meta(
            description="Seconds after which a control-socket connection with nothing in "
            "flight and no subscription is closed."
        ),
    ] = DEFAULT_CONNECTION_IDLE_TIMEOUT_S
    max_queued_jobs: Annotated[
        PositiveInt,
        Meta(description="Most jobs waiting to run; one more is refused with `overloaded`."),
    ] = 1000
    job_retention_s: Annotated[
        Seconds,
        Meta(
            description="Seconds a finished job and its events stay available (`codexctl "
            "watch`, re-attaching)."
        ),
    ] = 900
    drain_timeout_s: Annotated[
        Seconds,
        Meta(
            description="On shutdown, seconds running jobs get to finish before they are cancelled."
        ),
    ] = 30
    max_retry_wait_s: Annotated[
        Seconds,
        Meta(
            description="Longest wait accepted before a retry (or for a usage window to "
            "reset); a longer one fails the job at once, with `retry_after_s`."
        ),
    ] = 120
    max_job_log_events: Annotated[
        Annotated[int, Meta(ge=2)],
        Meta(
            description="Most events kept in one job's log (stream deltas included); past "
            "it the oldest but the first are dropped."
        ),
    ] = 100_000
    auth_issuer: Annotated[
        str,
        Meta(description="The OAuth issuer of the ChatGPT sign-in and of token refresh."),
    ] = "https://auth.openai.com"
    usage_retention_days: Annotated[
        PositiveInt,
        Meta(
            description="Usage ledger rows older than this many days are folded into daily totals."
        ),
    ] = 400
    rate_limits: Annotated[
        dict[str, RateLimitSettings],
        Meta(description="The client-side rate-limit budget of each provider, by its id."),
    ] = {}
    budget: Annotated[BudgetSettings, Meta(description="Spending caps.")] = BudgetSettings()
    prices: Annotated[
        dict[str, Price],
        Meta(
            description='Prices by model, adding to or replacing the catalog\'s; `"*"` is '
            "the price of a model that has none."
        ),
    ] = {}
    gateway: Annotated[GatewaySettings, Meta(description="The OpenAI-compatible HTTP gateway.")] = (
        GatewaySettings()
    )


# --------------------------------------------------------------------------- the whole file


class ConfigToml(Struct, frozen=True, kw_only=True):
    """`$CODEX_HOME/config.toml` as decoded; keys codexd does not use are ignored."""

    model: Annotated[
        str | None,
        Meta(description="The model of a request that names none; unset: the catalog's default."),
    ] = None
    model_provider: Annotated[
        str,
        Meta(
            description="The provider of a request that names none: a built-in id or one of "
            "`[model_providers]`."
        ),
    ] = DEFAULT_MODEL_PROVIDER
    model_context_window: Annotated[
        PositiveInt | None,
        Meta(
            description="The model's context window in tokens, as Codex reads it; codexd "
            "shows it with the selected settings and sends nothing for it."
        ),
    ] = None
    model_reasoning_effort: Annotated[
        ReasoningEffort | None,
        Meta(
            description="The reasoning effort of a request that sets none; the model's "
            "catalog entry says which it takes."
        ),
    ] = None
    model_reasoning_summary: Annotated[
        ReasoningSummary | None,
        Meta(
            description="The reasoning summary asked for when a Responses request sets none; "
            '`"none"` asks for none.'
        ),
    ] = None
    model_verbosity: Annotated[
        Verbosity | None,
        Meta(description="The text verbosity of a request that sets none."),
    ] = None
    profile: Annotated[
        str | None,
        Meta(
            description="The profile in force unless a request names another: the file "
            "`$CODEX_HOME/NAME.config.toml` laid over this one, else the legacy "
            "`[profiles.NAME]` table."
        ),
    ] = None
    profiles: Annotated[
        dict[str, ProfileConfig],
        Meta(
            description="Legacy named sets of model settings, used for a profile that has no "
            "file of its own."
        ),
    ] = {}
    openai_base_url: Annotated[
        str | None,
        Meta(
            description="Where the built-in `openai` provider sends requests, whatever the "
            f"login; unset: {OPENAI_API_BASE_URL} with an API key, `chatgpt_base_url` + "
            "`codex` with a ChatGPT sign-in."
        ),
    ] = None
    chatgpt_base_url: Annotated[
        str,
        Meta(
            description="The ChatGPT backend: under a ChatGPT sign-in, requests go to this "
            "URL + `codex`."
        ),
    ] = DEFAULT_CHATGPT_BASE_URL
    cli_auth_credentials_store: Annotated[
        CredentialsStore,
        Meta(
            description='Where the login is kept: `"file"` (auth.json, mode 600), '
            '`"keyring"` (the system keyring, under Codex\'s names) or `"auto"` (the keyring, '
            "else the file)."
        ),
    ] = "file"
    forced_login_method: Annotated[
        LoginMethod | None,
        Meta(
            description='Allow only this login: `"chatgpt"` (ChatGPT sign-in) or `"api"` '
            "(API key); unset: a stored ChatGPT sign-in first, else an API key."
        ),
    ] = None
    model_catalog_json: Annotated[
        str | None,
        Meta(
            description="A models.json in Codex's format whose models add to or replace the "
            "bundled catalog; relative to $CODEX_HOME, `~` expanded, read at start and at "
            "each reload."
        ),
    ] = None
    model_params: Annotated[
        ModelParams, Meta(description="Defaults for requests that leave these out.")
    ] = ModelParams()
    model_providers: Annotated[
        dict[str, ProviderConfig],
        Meta(description="Providers of your own, by id; a built-in id is refused."),
    ] = {}
    codexd: Annotated[CodexdSettings, Meta(description="codexd's own settings.")] = CodexdSettings()


# --------------------------------------------------------------------------- catalog entries


class CatalogModel(Struct, frozen=True, kw_only=True):
    """One model of the catalog: the bundled file, or `model_catalog_json` (Codex's format).

    Codex's `supported_reasoning_levels` are `[{effort, description}]`; plain strings are
    accepted too. Fields left out by an override keep the bundled value (`None` = not given).
    """

    slug: str
    display_name: str | None = None
    description: str | None = None
    context_window: int | None = None
    default_reasoning_level: str | None = None
    supported_reasoning_levels: tuple[str, ...] | None = None
    price: Price | None = None


# --------------------------------------------------------------------------- the snapshot


class ProviderRef(Struct, frozen=True, kw_only=True):
    """What the auth session needs to know of a provider.

    `requires_openai_auth` is the one answer to "does this provider take the OpenAI login
    (auth.json, the keyring, OPENAI_API_KEY)?": the built-in `openai` has it set (see
    config.load.builtin_providers), a custom provider when its table says so.
    `bearer_token` is the table's `experimental_bearer_token`; `repr` never shows it.
    """

    id: str
    env_key: str | None
    requires_openai_auth: bool
    bearer_token: str | None = None

    def __repr__(self) -> str:
        return (
            f"ProviderRef(id={self.id!r}, env_key={self.env_key!r}, "
            f"requires_openai_auth={self.requires_openai_auth})"
        )


class Route(Struct, frozen=True, kw_only=True):
    """Where a provider's requests go under a given login (`ConfigSnapshot.route`)."""

    base_url: str
    wire_api: WireApi
    query_params: dict[str, str] | None
    provider: ProviderRef


class ModelSelection(Struct, frozen=True, kw_only=True):
    """What a request gets from config when its body leaves the model settings out."""

    profile: str | None
    model: str | None
    model_provider: str
    model_context_window: int | None
    model_reasoning_effort: ReasoningEffort | None
    model_reasoning_summary: ReasoningSummary | None
    model_verbosity: Verbosity | None


class ConfigSnapshot(Struct, frozen=True, kw_only=True):
    """The effective configuration: immutable, swapped whole on reload.

    The model settings are those of the active profile (`profile`): a profile file is
    merged into the document before it is decoded; a legacy `[profiles.NAME]` table is laid
    over the file's own settings (kept in `top_level`, so that `selection` can lay another
    legacy table over them). `providers` holds the built-ins and the files' custom providers.
    """

    path: str
    codexd_path: str
    profile: str | None
    model: str | None
    model_provider: str
    model_context_window: int | None
    model_reasoning_effort: ReasoningEffort | None
    model_reasoning_summary: ReasoningSummary | None
    model_verbosity: Verbosity | None
    openai_base_url: str | None
    chatgpt_base_url: str
    cli_auth_credentials_store: CredentialsStore
    forced_login_method: LoginMethod | None
    model_catalog_json: str | None
    model_params: ModelParams
    providers: dict[str, ProviderConfig]
    profiles: dict[str, ProfileConfig]
    codexd: CodexdSettings
    top_level: ModelSelection
    catalog_models: tuple[CatalogModel, ...] = ()
    # The files (and legacy table) this snapshot was made from, lowest first (`config/read`).
    layers: tuple[results.ConfigLayer, ...] = ()

    @property
    def provider(self) -> ProviderConfig:
        """The active provider (validated to exist when the snapshot was built)."""
        return self.providers[self.model_provider]

    def selection(self, profile: str | None = None) -> ModelSelection:
        """Model settings for a request naming `profile` (None: the active ones).

        Raises KeyError for an unknown profile name.
        """
        if profile is None or profile == self.profile:
            return ModelSelection(
                profile=self.profile,
                model=self.model,
                model_provider=self.model_provider,
                model_context_window=self.model_context_window,
                model_reasoning_effort=self.model_reasoning_effort,
                model_reasoning_summary=self.model_reasoning_summary,
                model_verbosity=self.model_verbosity,
            )
        return overlay(self.top_level, profile, self.profiles[profile])

    def rate_limit(self, provider_id: str) -> RateLimitSettings:
        """The budget settings of a provider (defaults when `[codexd.rate_limits.ID]` is absent):
        the one place the limiter, the token estimate and `ratelimits/read` read them from."""
        return self.codexd.rate_limits.get(provider_id, DEFAULT_RATE_LIMIT)

    def provider_ref(self, provider_id: str) -> ProviderRef:
        """What the auth session needs of `provider_id` (KeyError when unknown)."""
        cfg = self.providers[provider_id]
        return ProviderRef(
            id=provider_id,
            env_key=cfg.env_key,
            requires_openai_auth=cfg.requires_openai_auth,
            bearer_token=cfg.experimental_bearer_token,
        )

    def route(self, provider_id: str, *, chatgpt_auth: bool) -> Route:
        """Where and how requests for `provider_id` go under a login that is (or is not) a
        ChatGPT one: the one rule the job runner and the API-key check follow."""
        cfg = self.providers[provider_id]
        return Route(
            base_url=self._base_url(provider_id, cfg, chatgpt_auth),
            wire_api=cfg.wire_api,
            query_params=cfg.query_params,
            provider=self.provider_ref(provider_id),
        )

    def chatgpt_backend(self, provider_id: str) -> bool:
        """Whether `provider_id`'s requests under a ChatGPT login go to the ChatGPT backend:
        it takes the OpenAI login and its base URL lies under `chatgpt_base_url` (the same
        scheme, host and port, and the backend's path segments first; `/backend-api-x` is not
        under `/backend-api`). The one answer for what the login's backend serves this
        provider: the plan's usage windows and Codex's model list. An `openai_base_url` or a
        custom `base_url` elsewhere is not the backend: the login's reads are not its."""
        cfg = self.providers[provider_id]
        if not cfg.requires_openai_auth:
            return False
        return _url_under(self._base_url(provider_id, cfg, True), self.chatgpt_base_url)

    def plan_usage_url(self) -> str:
        """Where the ChatGPT plan's usage windows are read (for the providers that
        `chatgpt_backend` names), as Codex's backend client builds it:
        `{chatgpt_base_url}/wham/usage` when the base has a `backend-api` path segment
        (chatgpt.com and chat.openai.com get it added), else `{base}/api/codex/usage`."""
        base = self.chatgpt_base_url.rstrip("/")
        parts = urlsplit(base)
        segments = _segments(parts.path)
        if (
            parts.scheme == "https"
            and (parts.hostname or "") in CHATGPT_HOSTS
            and "backend-api" not in segments
        ):
            base += "/backend-api"
            segments.append("backend-api")
        if "backend-api" in segments:
            return base + "/wham/usage"
        return base + "/api/codex/usage"

    def _base_url(self, provider_id: str, provider: ProviderConfig, chatgpt_auth: bool) -> str:
        """As Codex decides it: an explicit base URL wins (for `openai`: `openai_base_url`);
        otherwise a provider using the Codex login goes to `chatgpt_base_url` + `codex` under
        a ChatGPT login and to the public API under an API key."""
        if provider_id == "openai":
            if self.openai_base_url:
                return self.openai_base_url
        elif provider.base_url:
            return provider.base_url
        if chatgpt_auth:
            return self.chatgpt_base_url.rstrip("/") + "/codex"
        return provider.base_url or OPENAI_API_BASE_URL


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number
        return None
    return scheme, (parts.hostname or "").lower(), port


def _url_under(url: str, base: str) -> bool:
    """`url` lies under `base`: the same origin, and `base`'s path segments begin its own."""
    origin = _origin(url)
    if origin is None or origin != _origin(base) or not origin[1]:
        return False
    prefix = _segments(urlsplit(base).path)
    return _segments(urlsplit(url).path)[: len(prefix)] == prefix


def overlay(top: ModelSelection, name: str | None, profile: ProfileConfig | None) -> ModelSelection:
    """The file's top-level settings with a profile's overrides laid over them."""
    if profile is None:
        return msgspec.structs.replace(top, profile=name)

    def pick(override: Any, base: Any) -> Any:
        return override if override is not None else base

    return ModelSelection(
        profile=name,
        model=pick(profile.model, top.model),
        model_provider=pick(profile.model_provider, top.model_provider),
        model_context_window=pick(profile.model_context_window, top.model_context_window),
        model_reasoning_effort=pick(profile.model_reasoning_effort, top.model_reasoning_effort),
        model_reasoning_summary=pick(profile.model_reasoning_summary, top.model_reasoning_summary),
        model_verbosity=pick(profile.model_verbosity, top.model_verbosity),
    )


def to_builtins(value: Any) -> Any:
    """JSON-ready builtins of a Struct (used by redaction and change detection)."""
    return msgspec.to_builtins(value)
