"""What a job cost, from its token usage and a model's price.

Prices are USD per 1M tokens, as OpenAI publishes them. As in OpenAI's usage object,
`input_tokens` includes the cached ones and `output_tokens` includes the reasoning ones, so
reasoning is billed at the output price and is never added a second time.
"""

from __future__ import annotations

from typing import Final, Protocol

TOKENS_PER_PRICE_UNIT: Final = 1_000_000


class PriceLike(Protocol):
    """Anything with the three prices: the catalog's `Price`, a `[codexd.prices]` entry."""

    @property
    def input(self) -> float: ...

    @property
    def cached_input(self) -> float: ...

    @property
    def output(self) -> float: ...


class UsageLike(Protocol):
    """The token counts of a job's `usage` that cost depends on."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def cached_input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...


def cost_usd(usage: UsageLike, price: PriceLike | None, default: PriceLike) -> tuple[float, bool]:
    """(cost in USD, estimated): `estimated` is true when the model had no price of its own.

    Cached tokens are clamped to the input count, and negative counts to zero, so a provider
    reporting nonsense can never produce a negative or inflated cost.
    """
    estimated = price is None
    chosen = default if price is None else price
    input_tokens = max(usage.input_tokens, 0)
    cached = min(max(usage.cached_input_tokens, 0), input_tokens)
    output = max(usage.output_tokens, 0)
    dollars_per_million = (
        (input_tokens - cached) * chosen.input
        + cached * chosen.cached_input
        + output * chosen.output
    )
    return dollars_per_million / TOKENS_PER_PRICE_UNIT, estimated


def estimate_cost_usd(
    estimated_tokens: int, price: PriceLike, *, input_only: bool = False
) -> float:
    """A job's cost guessed before it is sent, for the budget check.

    `estimated_tokens` is `codexd.limits.estimate.estimate_tokens(...)`: the larger of the output
    cap and the input characters / 4, one number that does not say which side the tokens are
    on. It is priced at the dearest of the three prices so that the guess leans high and a cap
    is reached a little early rather than passed. With `input_only` (a request that has no
    output, such as embeddings) every token is input, and priced so.
    """
    rate = price.input if input_only else max(price.input, price.cached_input, price.output)
    return max(estimated_tokens, 0) * rate / TOKENS_PER_PRICE_UNIT
