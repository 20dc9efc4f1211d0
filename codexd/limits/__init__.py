"""Shared per-provider rate limits: a pure rolling-window budget, fair waiting
across clients, rate-limit header parsing, the token estimate, and the anyio `Limiter`."""

from codexd.limits.budget import Admission, Budget, BudgetLimits, BudgetSnapshot
from codexd.limits.estimate import estimate_tokens
from codexd.limits.fairqueue import FairQueue
from codexd.limits.headers import (
    Credits,
    LimitWindow,
    RateLimitHeaders,
    UpstreamLimits,
    UsageWindow,
    parse_rate_limit_headers,
    retry_after_from_message,
)
from codexd.limits.limiter import BackendStatus, Limiter, ProviderLimits, Slot, budget_limits
from codexd.limits.redis import RedisUnavailable, RedisWindow, parse_redis_url

__all__ = [
    "Admission",
    "BackendStatus",
    "Budget",
    "BudgetLimits",
    "BudgetSnapshot",
    "Credits",
    "FairQueue",
    "LimitWindow",
    "Limiter",
    "ProviderLimits",
    "RateLimitHeaders",
    "RedisUnavailable",
    "RedisWindow",
    "Slot",
    "UpstreamLimits",
    "UsageWindow",
    "budget_limits",
    "estimate_tokens",
    "parse_rate_limit_headers",
    "parse_redis_url",
    "retry_after_from_message",
]
