"""config.toml as frozen msgspec Structs, with Codex's defaults and bounds.

Two kinds of table live here. Codex's own (the top level, `[profiles.*]`,
`[model_providers.*]`) tolerate every key codexd does not read, because the same file feeds
Codex CLI. Ours (`[codexd]` and its sub-tables, `[model_params]`) forbid unknown keys: a typo
there must not pass silently.

`ConfigSnapshot` is the effective result of loading: what a job keeps for its whole life.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

# --------------------------------------------------------------------------- value types

WireApi = Literal["responses", "chat"]
# Every effort Codex has accepted over time; the model decides which it honours.
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max", "ultra"]
ReasoningSummary = Literal["auto", "concise", "detailed", "none"]
Verbosity = Literal["low", "medium", "high"]
CredentialsStore = Literal["file", "keyring", "auto"]
LoginMethod = Literal["chatgpt", "api"]
LogLevel = Literal["debug", "info", "warning", "error"]

Retries = Annotated[int, Meta(ge=0, le=100)]
PositiveInt = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(ge=0)]
Timeout = Annotated[float, Meta(gt=0)]
Usd = Annotated[float, Meta(ge=0)]
UsdPerMillion = Annotated[float, Meta(ge=0)]

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
OLLAMA_DEFAULT_PORT: Final = 11434
LMSTUDIO_DEFAULT_PORT: Final = 1234
DEFAULT_MODEL_PROVIDER: Final = "openai"


# --------------------------------------------------------------------------- Codex's tables


class ProviderConfig(Struct, frozen=True, kw_only=True):
    """`[model_providers.ID]` (Codex's `ModelProviderInfo`); unknown keys are ignored."""

    name: str | None = None
    base_url: str | None = None
    env_key: str | None = None
    env_key_instructions: str | None = None
    experimental_bearer_token: str | None = None
    wire_api: WireApi = "responses"
    query_params: dict[str, str] | None = None
    http_headers: dict[str, str] | None = None
    env_http_headers: dict[str, str] | None = None
    requires_openai_auth: bool = False
    request_max_retries: Retries = DEFAULT_REQUEST_MAX_RETRIES
    stream_max_retries: Retries = DEFAULT_STREAM_MAX_RETRIES
    stream_idle_timeout_ms: PositiveInt = DEFAULT_STREAM_IDLE_TIMEOUT_MS


class ProfileConfig(Struct, frozen=True, kw_only=True):
    """`[profiles.NAME]`: overrides of the top-level model keys; unknown keys are ignored."""

    model: str | None = None
    model_provider: str | None = None
    model_context_window: PositiveInt | None = None
    model_reasoning_effort: ReasoningEffort | None = None
    model_reasoning_summary: ReasoningSummary | None = None
    model_verbosity: Verbosity | None = None
    chatgpt_base_url: str | None = None


# --------------------------------------------------------------------------- codexd's tables


class ModelParams(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[model_params]`: defaults for requests that leave these out."""

    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    max_tokens: PositiveInt | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None


class RateLimitSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[codexd.rate_limits.ID]`; None means no cap beyond what upstream teaches."""

    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    max_concurrency: PositiveInt = 64
    default_output_tokens: PositiveInt = 4096
    backend: str | None = None


class BudgetSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    daily_usd: Usd | None = None
    monthly_usd: Usd | None = None


class Price(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per 1M tokens."""

    input: UsdPerMillion
    cached_input: UsdPerMillion
    output: UsdPerMillion


class GatewaySettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = False
    tcp: str | None = None
    head_timeout_s: Timeout = DEFAULT_GATEWAY_HEAD_TIMEOUT_S
    idle_timeout_s: Timeout = DEFAULT_GATEWAY_IDLE_TIMEOUT_S
    max_unauthenticated_connections: PositiveInt = DEFAULT_GATEWAY_MAX_UNAUTHENTICATED


DEFAULT_RATE_LIMIT: Final = RateLimitSettings()


class CodexdSettings(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[codexd]`: every bound of the daemon, with its default."""

    log_level: LogLevel = "info"
    max_message_bytes: Annotated[int, Meta(ge=1024)] = 1_048_576
    max_connections: PositiveInt = 256
    connection_idle_timeout_s: Timeout = DEFAULT_CONNECTION_IDLE_TIMEOUT_S
    max_queued_jobs: PositiveInt = 1000
    job_retention_s: Seconds = 900
    drain_timeout_s: Seconds = 30
    max_retry_wait_s: Seconds = 120
    max_job_log_events: Annotated[int, Meta(ge=2)] = 100_000
    auth_issuer: str = "https://auth.openai.com"
    usage_retention_days: PositiveInt = 400
    rate_limits: dict[str, RateLimitSettings] = {}
    budget: BudgetSettings = BudgetSettings()
    prices: dict[str, Price] = {}
    gateway: GatewaySettings = GatewaySettings()


# --------------------------------------------------------------------------- the whole file


class ConfigToml(Struct, frozen=True, kw_only=True):
    """`$CODEX_HOME/config.toml` as decoded; keys codexd does not use are ignored."""

    model: str | None = None
    model_provider: str | None = None
    model_context_window: PositiveInt | None = None
    model_reasoning_effort: ReasoningEffort | None = None
    model_reasoning_summary: ReasoningSummary | None = None
    model_verbosity: Verbosity | None = None
    profile: str | None = None
    profiles: dict[str, ProfileConfig] = {}
    openai_base_url: str | None = None
    chatgpt_base_url: str | None = None
    cli_auth_credentials_store: CredentialsStore = "file"
    forced_login_method: LoginMethod | None = None
    model_catalog_json: str | None = None
    model_params: ModelParams = ModelParams()
    model_providers: dict[str, ProviderConfig] = {}
    codexd: CodexdSettings = CodexdSettings()


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

    The model settings are those of the active profile (`profile`) laid over the file's own
    (kept in `top_level`, so that a request may name another profile); `providers` holds the
    built-ins and the file's custom providers.
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
