"""Cost: uncached input, cached input and output (reasoning included) per 1M tokens."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexd.config.schema import Price
from codexd.usage.catalog import FALLBACK_PRICE as DEFAULT_PRICE
from codexd.usage.cost import cost_usd, estimate_cost_usd


class Usage(msgspec.Struct):
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0


PRICE = Price(input=2.0, cached_input=0.5, output=8.0)


def test_uncached_input_and_output_at_their_prices() -> None:
    cost, estimated = cost_usd(Usage(1_000_000, 0, 1_000_000), PRICE, DEFAULT_PRICE)
    assert cost == pytest.approx(10.0)
    assert estimated is False


def test_cached_tokens_are_billed_at_the_cached_price_not_twice() -> None:
    # 1,000 input of which 800 cached: 200 × 2.0 + 800 × 0.5 + 100 × 8.0 = 1,600 per 1M.
    cost, _ = cost_usd(Usage(1_000, 800, 100), PRICE, DEFAULT_PRICE)
    assert cost == pytest.approx(1_600 / 1_000_000)


def test_reasoning_tokens_are_inside_output_and_not_added_again() -> None:
    plain, _ = cost_usd(Usage(0, 0, 500, reasoning_tokens=0), PRICE, DEFAULT_PRICE)
    reasoning, _ = cost_usd(Usage(0, 0, 500, reasoning_tokens=400), PRICE, DEFAULT_PRICE)
    assert plain == reasoning == pytest.approx(500 * 8.0 / 1_000_000)


def test_a_model_without_a_price_uses_the_default_and_is_estimated() -> None:
    cost, estimated = cost_usd(Usage(1_000_000, 100_000, 10_000), None, DEFAULT_PRICE)
    assert estimated is True
    assert cost == pytest.approx(0.9 * 1.25 + 0.1 * 0.125 + 0.01 * 10.0)


def test_nonsense_counts_never_make_a_negative_or_inflated_cost() -> None:
    # More cached than input is clamped to the input; negative counts to zero.
    cost, _ = cost_usd(Usage(100, 500, -7), PRICE, DEFAULT_PRICE)
    assert cost == pytest.approx(100 * 0.5 / 1_000_000)


def test_the_pre_send_estimate_prices_every_token_at_the_dearest_rate() -> None:
    assert estimate_cost_usd(4096, PRICE) == pytest.approx(4096 * 8.0 / 1_000_000)
    assert estimate_cost_usd(-1, PRICE) == 0.0


counts = st.integers(min_value=0, max_value=10**9)


@given(counts, counts, counts)
def test_cost_is_monotone_and_bounded_by_pricing_all_input_uncached(
    input_tokens: int, cached: int, output: int
) -> None:
    cached = min(cached, input_tokens)
    cost, _ = cost_usd(Usage(input_tokens, cached, output), PRICE, DEFAULT_PRICE)
    uncached_cost, _ = cost_usd(Usage(input_tokens, 0, output), PRICE, DEFAULT_PRICE)
    more_output, _ = cost_usd(Usage(input_tokens, cached, output + 1), PRICE, DEFAULT_PRICE)
    assert 0.0 <= cost <= uncached_cost
    assert more_output > cost
