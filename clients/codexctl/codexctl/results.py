"""The results of the methods beyond the job and status ones of `codexctl.protocol`.

Like the types of `codexctl.protocol`, each is defined once, here: the daemon builds and
encodes these very classes, and `codexctl.Client`'s typed calls decode into them. Their
docstrings are the descriptions of docs/protocol.md. The params of the notifications that
`codexctl.protocol` does not hold live here too. Unknown members are ignored on decoding,
so a newer daemon that adds a member does not break an older client.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from codexctl.protocol import BudgetStatus

# Where the credential in use was found. "config": a provider's `experimental_bearer_token`
# (never the OpenAI login's source).
CredentialSource = Literal["env", "auth_file", "keyring", "config"]

# --------------------------------------------------------------------------- account


class AccountInfo(msgspec.Struct, frozen=True):
    """`account/read`'s result: who is logged in and with which credential; never a secret.

    `mode` is `api_key`, `chatgpt` or null (no credentials); `source` is where the credential
    in use was found; `key_hint` is an API key masked as Codex shows it (`sk-proj-***p1234`).
    """

    mode: Literal["api_key", "chatgpt"] | None
    source: CredentialSource | None
    email: str | None
    plan_type: str | None
    account_id: str | None
    expires_at: str | None
    last_refresh: str | None
    store: Literal["file", "keyring"]
    key_hint: str | None = None


class LoginStartResult(msgspec.Struct, omit_defaults=True):
    """`account/login`'s result: the login's id, and what the user must do: open `auth_url`
    (browser), or visit `verification_url` and enter `user_code` (device)."""

    login_id: str
    auth_url: str | None = None
    verification_url: str | None = None
    user_code: str | None = None


class LoginCancelResult(msgspec.Struct):
    """`cancelled` is false when the login had ended already."""

    cancelled: bool


class LogoutResult(msgspec.Struct):
    """`account/logout`'s result: `revoked` is true when the issuer revoked the tokens, false
    when there was nothing to revoke or it could not be reached."""

    revoked: bool


# --------------------------------------------------------------------------- models, config


UsdPerMillion = Annotated[float, msgspec.Meta(ge=0)]


class PriceRates(msgspec.Struct, frozen=True, kw_only=True):
    """USD per 1M tokens."""

    input: Annotated[
        UsdPerMillion,
        msgspec.Meta(description="USD per million input tokens not read from cache."),
    ]
    cached_input: Annotated[
        UsdPerMillion, msgspec.Meta(description="USD per million input tokens read from cache.")
    ]
    output: Annotated[
        UsdPerMillion,
        msgspec.Meta(description="USD per million output tokens (reasoning tokens included)."),
    ]


# Where a price comes from, besides the https URL of the provider's page that states it: the
# user's config (`[codexd.prices]`, `model_catalog_json`), or codexd's built-in default price.
PRICE_SOURCE_CONFIG: Final = "config"
PRICE_SOURCE_DEFAULT: Final = "default"


class Price(PriceRates, frozen=True, kw_only=True):
    """USD per 1M tokens, and where that price comes from."""

    source: Annotated[
        str | None,
        msgspec.Meta(
            description="The provider's page that states this price (an https URL), `config` "
            "for a price from `[codexd.prices]` or `model_catalog_json`, or `default` for "
            "codexd's built-in default price."
        ),
    ] = None
    as_of: Annotated[
        str | None,
        msgspec.Meta(
            description="The date (YYYY-MM-DD) of the source page's content, or of the check "
            "when the page is undated; null for a price from the config or the default."
        ),
    ] = None


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One model of the catalog: its context window, reasoning levels and price (null when
    the catalog has none)."""

    slug: str
    display_name: str
    description: str
    context_window: int | None
    default_reasoning_level: str | None
    supported_reasoning_levels: tuple[str, ...]
    price: Price | None


class ModelsResult(msgspec.Struct):
    """`models/list`'s result. `default_price` is what a model without a price of its own is
    charged (`[codexd.prices."*"]`, else codexd's default); such costs are `estimated`."""

    models: list[ModelInfo]
    default_price: Price | None = None


ConfigLayerKind = Literal["config", "codexd", "profile", "legacy_profile"]


class ConfigLayer(msgspec.Struct, frozen=True):
    """One layer of the effective config, as `config/read` lists them (lowest first, each
    laid over the ones before it): `config` is config.toml, `codexd` is codexd.toml,
    `profile` a profile file (`$CODEX_HOME/NAME.config.toml`) and `legacy_profile` a
    `[profiles.NAME]` table of config.toml (its `path`). `profile` names the profile of the
    last two kinds, and is null for the others."""

    path: str
    kind: ConfigLayerKind
    profile: str | None = None


class ConfigRead(msgspec.Struct):
    """`config/read`'s result. `effective` is the config in force, defaults filled in, with
    every secret (keys, header values, credentials and query values inside URLs) replaced;
    `error` is as `daemon/status.config.error` (why the last reload failed, or else why a
    profile file that requests name is invalid), or null; `layers` are the files (and the
    legacy profile table) it was made from, lowest first: config.toml always (missing, it
    means every default), the others when they are in use."""

    path: str
    generation: int
    loaded_at: str
    error: str | None
    effective: dict[str, Any]
    layers: list[ConfigLayer] = []


class ConfigReloadResult(msgspec.Struct):
    """`config/reload`'s result: the generation in force, and whether this reload changed the
    effective config (a new generation)."""

    generation: int
    changed: bool


# --------------------------------------------------------------------------- rate limits


class BudgetSnapshot(msgspec.Struct, frozen=True):
    """`ratelimits/read` → `providers[].budget`: the provider's budget in this daemon now (a
    limit that is not set is null)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrency: int
    available_requests: int | None
    available_tokens: int | None
    in_flight: int
    queued: int
    paused_until: str | None


class LimitWindow(msgspec.Struct, frozen=True):
    """One `x-ratelimit-*` family (requests or tokens), as upstream last reported it."""

    limit: int | None = None
    remaining: int | None = None
    reset_after_s: float | None = None
    resets_at: str | None = None


class UsageWindow(msgspec.Struct, frozen=True):
    """A ChatGPT plan window (`primary`: the 5-hour one, `secondary`: the weekly one), from
    the `x-codex-primary-*` / `x-codex-secondary-*` headers or the plan's usage read
    (`{chatgpt_base_url}/wham/usage`), whichever is newer: how much of it is used, its length
    and when it resets."""

    used_percent: float
    window_minutes: int | None = None
    resets_at: str | None = None


class Credits(msgspec.Struct, frozen=True):
    """A ChatGPT plan's credits, as the provider reports them (`x-codex-credits-*`, or the
    plan's usage read)."""

    has_credits: bool | None = None
    unlimited: bool | None = None
    balance: str | None = None


class UpstreamLimits(msgspec.Struct, frozen=True):
    """`ratelimits/read` → `providers[].upstream`: the last facts the server told us, in its
    response headers and, with a ChatGPT login, in the plan's usage read (read at most once
    a minute); the newer of the two wins."""

    requests: LimitWindow | None = None
    tokens: LimitWindow | None = None
    primary: UsageWindow | None = None
    secondary: UsageWindow | None = None
    credits: Credits | None = None


class BackendStatus(msgspec.Struct, frozen=True):
    """Where the window lives when it is shared: Redis, or this daemon while Redis is away."""

    kind: str
    url: str
    connected: bool
    error: str | None = None


class ProviderLimits(msgspec.Struct, frozen=True, omit_defaults=True):
    """One `ratelimits/read` `providers[]` entry, and the `ratelimits/updated` params.

    `backend` is there only when the budget is shared (it says whether Redis answers); a
    local budget has exactly the members `ratelimits/read` reports."""

    provider: str
    budget: BudgetSnapshot
    upstream: UpstreamLimits
    backend: BackendStatus | None = None


class RateLimitsResult(msgspec.Struct):
    """`ratelimits/read`'s result, one entry per provider, sorted by id."""

    providers: list[ProviderLimits]


# --------------------------------------------------------------------------- usage


class UsageTotals(msgspec.Struct, kw_only=True):
    """`usage/read`'s `total`: requests, tokens and cost, `estimated` when a model had no
    price of its own. A row adds its group keys."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False


class UsageRow(UsageTotals, kw_only=True):
    """One group of `usage/read`: only the keys asked for in `group_by` are present."""

    day: str | msgspec.UnsetType = msgspec.UNSET
    model: str | msgspec.UnsetType = msgspec.UNSET
    client: str | msgspec.UnsetType = msgspec.UNSET
    provider: str | msgspec.UnsetType = msgspec.UNSET


class UsageResult(msgspec.Struct, omit_defaults=True):
    """`usage/read`'s result. Through the daemon it also carries `budget`: today's and this
    month's spend against the `[codexd.budget]` caps (`codexctl usage` shows them),
    whatever `since`/`until` asked for."""

    rows: list[UsageRow]
    total: UsageTotals
    budget: BudgetStatus | None = None


# --------------------------------------------------------------------------- embeddings

EMBEDDINGS_RESULT: Final = "embeddings.result"


class Embedding(msgspec.Struct, frozen=True):
    """One input's vector. `index` is the input's place in the request's `input`;
    `embedding` is a list of numbers, or with `encoding_format: "base64"` a base64 string of
    little-endian float32 values."""

    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingsUsage(msgspec.Struct, frozen=True):
    """The tokens of an embeddings request's input (it has no output tokens)."""

    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingsResult(msgspec.Struct, frozen=True, tag=EMBEDDINGS_RESULT, tag_field="type"):
    """The vectors of an embeddings job (`api: "embeddings"`): the provider's reply to
    `POST /embeddings` as it sent it, members kept, with this `type` added. `data` holds one
    `Embedding` per input, `model` the model that made them. It comes once, just before
    `job.completed`."""

    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage | None = None
    object: str = "list"


# --------------------------------------------------------------------------- notifications
# The params of the notifications the daemon sends, each with its `method` (a class variable,
# not a member). `codexctl.events` decodes notifications into these very classes.


class LoginCompleted(msgspec.Struct, frozen=True, omit_defaults=True):
    """`account/login_completed`'s params: a login ended; `error` says why when it failed
    (never a secret)."""

    method: ClassVar[str] = "account/login_completed"
    login_id: str
    success: bool
    error: str | None = None


class ConfigReloaded(msgspec.Struct, frozen=True):
    """`config/reloaded`'s params: a new config is in force."""

    method: ClassVar[str] = "config/reloaded"
    generation: int
    path: str


class ConfigRejected(msgspec.Struct, frozen=True):
    """`config/invalid`'s params: an edit was invalid; the old config stays in force."""

    method: ClassVar[str] = "config/invalid"
    path: str
    error: str


class SubscriptionDropped(msgspec.Struct, frozen=True, omit_defaults=True):
    """`subscription/dropped`'s params: the daemon stopped sending a job's events (or a
    topic's) because the client read too slowly. `reason` is `slow_consumer`; `job_id` and
    `next_seq` (the first event it did not send) for a job's events, `topic` for a topic's
    notifications."""

    method: ClassVar[str] = "subscription/dropped"
    reason: str
    job_id: str | None = None
    topic: str | None = None
    next_seq: int | None = None


# --------------------------------------------------------------------------- the rest


class Empty(msgspec.Struct):
    """A result with nothing to say: `{}` (a typed call returns None for it)."""


class TokenResult(msgspec.Struct):
    """`gateway/token`'s result: the bearer token TCP clients of the gateway must send."""

    token: str

    def __repr__(self) -> str:
        return "TokenResult(token=<redacted>)"


class MethodInfo(msgspec.Struct):
    """One method of `daemon/methods`: its name, one line on what it does, and JSON Schemas of
    its params and its result."""

    name: str
    params_schema: dict[str, Any]
    result_schema: dict[str, Any]
    summary: str
