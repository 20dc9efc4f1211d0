"""Shared per-provider rate limits: a pure rolling-window budget, fair waiting
across clients, rate-limit header parsing, the token estimate, and the anyio `Limiter`.

What they report (`ProviderLimits` and its parts) are wire types of `codexctl.results`."""

from codexd.limits.budget import Admission, Budget, BudgetLimits
from codexd.limits.estimate import estimate_tokens
from codexd.limits.fairqueue import FairQueue
from codexd.limits.headers import (
    RateLimitHeaders,
    parse_rate_limit_headers,
    retry_after_from_message,
)
from codexd.limits.limiter import Limiter, Slot, budget_limits
from codexd.limits.redis import RedisUnavailable, RedisWindow, parse_redis_url

__all__ = [
    "Admission",
    "Budget",
    "BudgetLimits",
    "FairQueue",
    "Limiter",
    "RateLimitHeaders",
    "RedisUnavailable",
    "RedisWindow",
    "Slot",
    "budget_limits",
    "estimate_tokens",
    "parse_rate_limit_headers",
    "parse_redis_url",
    "retry_after_from_message",
]
