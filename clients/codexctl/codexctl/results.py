"""Typed results of the methods whose result types the daemon defines for itself.

`codexctl.protocol` holds the types both sides import (`DaemonStatus`, `JobView`,
`SubmitResult`, …). The rest are built inside the daemon, which this package must never
import; their shapes are mirrored here, member for member and under the same names, for the
typed calls of `codexctl.Client`. A test holds each one equal (by JSON Schema) to the daemon's
own, so the two cannot drift apart. Unknown members are ignored on decoding, so a newer daemon
that adds a member does not break an older client.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from codexctl.protocol import BudgetStatus

# --------------------------------------------------------------------------- account


class AccountInfo(msgspec.Struct, frozen=True):
    """`account/read`: who is logged in and with which credential; never a secret.

    `mode` is `api_key`, `chatgpt` or None (no credentials); `source` is where the credential
    in use was found; `key_hint` is an API key masked as Codex shows it (`sk-proj-***p1234`).
    """

    mode: Literal["api_key", "chatgpt"] | None
    source: Literal["env", "auth_file", "keyring", "config"] | None
    email: str | None
    plan_type: str | None
    account_id: str | None
    expires_at: str | None
    last_refresh: str | None
    store: Literal["file", "keyring"]
    key_hint: str | None = None


class LoginStartResult(msgspec.Struct, omit_defaults=True):
    """`account/login`: the login's id and what to show the user (a browser URL, or a device
    code and where to enter it). Its end is the `LoginCompleted` notification."""

    login_id: str
    auth_url: str | None = None
    verification_url: str | None = None
    user_code: str | None = None


class LoginCancelResult(msgspec.Struct):
    """`account/login/cancel`: whether a login in progress was cancelled."""

    cancelled: bool


class LogoutResult(msgspec.Struct):
    """`account/logout`: whether the login was also revoked upstream."""

    revoked: bool


# --------------------------------------------------------------------------- models, config


UsdPerMillion = Annotated[float, msgspec.Meta(ge=0)]


class Price(msgspec.Struct, frozen=True, kw_only=True):
    """USD per 1M tokens."""

    input: UsdPerMillion
    cached_input: UsdPerMillion
    output: UsdPerMillion


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One model of the catalog: its context window, reasoning levels and price (None when
    the catalog has none)."""

    slug: str
    display_name: str
    description: str
    context_window: int | None
    default_reasoning_level: str | None
    supported_reasoning_levels: tuple[str, ...]
    price: Price | None


class ModelsResult(msgspec.Struct):
    """`models/list`."""

    models: list[ModelInfo]


class ConfigRead(msgspec.Struct):
    """`config/read`: the effective config (secrets redacted), its generation and the error of
    the last reload, if it failed."""

    path: str
    generation: int
    loaded_at: str
    error: str | None
    effective: dict[str, Any]


class ConfigReloadResult(msgspec.Struct):
    """`config/reload`: the generation in force and whether the file had changed."""

    generation: int
    changed: bool


# --------------------------------------------------------------------------- rate limits


class BudgetSnapshot(msgspec.Struct, frozen=True):
    """A provider's client-side budget now (a limit that is not set is None)."""

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
    """A ChatGPT plan window: how much of it is used and when it resets."""

    used_percent: float
    window_minutes: int | None = None
    resets_at: str | None = None


class Credits(msgspec.Struct, frozen=True):
    """A ChatGPT plan's credits."""

    has_credits: bool | None = None
    unlimited: bool | None = None
    balance: str | None = None


class UpstreamLimits(msgspec.Struct, frozen=True):
    """The rate-limit facts the provider last told the daemon."""

    requests: LimitWindow | None = None
    tokens: LimitWindow | None = None
    primary: UsageWindow | None = None
    secondary: UsageWindow | None = None
    credits: Credits | None = None


class BackendStatus(msgspec.Struct, frozen=True):
    """Where a shared budget's window lives (Redis), and whether it answers."""

    kind: str
    url: str
    connected: bool
    error: str | None = None


class ProviderLimits(msgspec.Struct, frozen=True, omit_defaults=True):
    """One provider of `ratelimits/read`, and the `ratelimits/updated` notification."""

    provider: str
    budget: BudgetSnapshot
    upstream: UpstreamLimits
    backend: BackendStatus | None = None


class RateLimitsResult(msgspec.Struct):
    """`ratelimits/read`."""

    providers: list[ProviderLimits]


# --------------------------------------------------------------------------- usage


class UsageTotals(msgspec.Struct, kw_only=True):
    """Requests, tokens and cost; `estimated` when a model had no price of its own."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False


class UsageRow(UsageTotals, kw_only=True):
    """One group of `usage/read`: only the keys asked for in `group_by` are set."""

    day: str | msgspec.UnsetType = msgspec.UNSET
    model: str | msgspec.UnsetType = msgspec.UNSET
    client: str | msgspec.UnsetType = msgspec.UNSET
    provider: str | msgspec.UnsetType = msgspec.UNSET


class UsageResult(msgspec.Struct, omit_defaults=True):
    """`usage/read`: the groups, their total, and the spend against the budget caps."""

    rows: list[UsageRow]
    total: UsageTotals
    budget: BudgetStatus | None = None


# --------------------------------------------------------------------------- the rest


class TokenResult(msgspec.Struct):
    """`gateway/token`: the bearer token for the gateway's TCP address (a secret)."""

    token: str

    def __repr__(self) -> str:
        return "TokenResult(token=<redacted>)"


class MethodInfo(msgspec.Struct):
    """One method of `daemon/methods`, with the JSON Schemas of its params and result."""

    name: str
    params_schema: dict[str, Any]
    result_schema: dict[str, Any]
    summary: str
