"""The model catalog: bundled data, model_catalog_json, [codexd.prices] (`models/list`)."""

from __future__ import annotations

import json
import re
from datetime import date
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from codexctl import results
from codexctl.protocol import Usage
from codexctl.results import ModelInfo
from codexd.config.load import ConfigError, load_config
from codexd.config.schema import Price
from codexd.usage.catalog import FALLBACK_PRICE, Catalog, default_price
from codexd.usage.cost import cost_usd

BRIEF_MODELS = [
    "gpt-5.1-codex-max",
    "gpt-5.1-codex",
    "gpt-5.1-codex-mini",
    "gpt-5.2",
    "gpt-5.1",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
]
GPT5_FAMILY = ["gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5-codex"]


def test_models_list_members_are_exactly_the_specs() -> None:
    assert ModelInfo.__struct_fields__ == (
        "slug",
        "display_name",
        "description",
        "context_window",
        "default_reasoning_level",
        "supported_reasoning_levels",
        "price",
    )
    # the config's price takes the three rates; the wire's also says where they come from
    assert Price.__struct_fields__ == ("input", "cached_input", "output")
    assert results.Price.__struct_fields__ == (
        "input",
        "cached_input",
        "output",
        "source",
        "as_of",
    )
    assert results.ModelsResult.__struct_fields__ == ("models", "default_price")


def test_bundled_catalog_has_every_required_model() -> None:
    catalog = Catalog.bundled()
    slugs = [m.slug for m in catalog.list_models()]
    for slug in BRIEF_MODELS + GPT5_FAMILY:
        assert slug in slugs
        model = catalog.get(slug)
        assert model is not None
        assert model.display_name and model.description
        assert model.context_window and model.context_window > 0
        if model.price is not None:
            assert model.price.cached_input <= model.price.input
        if model.supported_reasoning_levels:
            assert model.default_reasoning_level in model.supported_reasoning_levels
    assert len(set(slugs)) == len(slugs)


PROVIDER_DOMAIN = "openai.com"


def test_every_bundled_price_is_whole_and_names_the_providers_page_and_date() -> None:
    """A bundled price is all three rates with the provider's page and its date, or nothing
    at all (the model is then charged the default price, as an estimate): never a guess."""
    raw = json.loads(resources.files("codexd.usage").joinpath("models.json").read_text())
    priced = 0
    for model in raw["models"]:
        price = model["price"]
        if price is None:
            continue
        priced += 1
        assert set(price) - {"note"} == {"input", "cached_input", "output", "source", "as_of"}
        assert all(isinstance(price[k], (int, float)) for k in ("input", "cached_input", "output"))
        url = urlsplit(price["source"])
        assert url.scheme == "https", model["slug"]
        assert url.hostname is not None and (
            url.hostname == PROVIDER_DOMAIN or url.hostname.endswith("." + PROVIDER_DOMAIN)
        ), model["slug"]
        # One form for one page: the English HTML page, not its .md twin or a translation.
        assert re.fullmatch(r"/api/docs/models/[a-z0-9.-]+", url.path), price["source"]
        assert not url.path.endswith(".md") and not url.query, price["source"]
        assert date.fromisoformat(price["as_of"]).isoformat() == price["as_of"], model["slug"]
    assert priced > 0


def test_published_prices_and_the_unconfirmed_ones_removed() -> None:
    catalog = Catalog.bundled()
    gpt51 = catalog.price_for("gpt-5.1")
    assert gpt51 == results.Price(
        input=1.25,
        cached_input=0.125,
        output=10.0,
        source="https://developers.openai.com/api/docs/models/gpt-5.1",
        as_of="2026-12-05",
    )
    nano = catalog.price_for("gpt-5-nano")
    assert nano is not None and (nano.input, nano.cached_input, nano.output) == (0.05, 0.005, 0.4)
    turbo = catalog.price_for("gpt-4-turbo")
    assert turbo is not None and (turbo.input, turbo.cached_input, turbo.output) == (10, 10, 30)
    legacy = catalog.price_for("gpt-3.5-turbo")
    assert legacy is not None and (legacy.input, legacy.output) == (0.5, 1.5)
    # no provider page confirmed these: they are charged the default price, as estimates
    for slug in ("gpt-5.1-codex-max", "gpt-5.2", "gpt-5-mini", "o3", "gpt-4o"):
        assert catalog.get(slug) is not None
        assert catalog.price_for(slug) is None, slug


def test_embedding_models_are_priced_by_their_input_alone() -> None:
    """The embedding models whose price OpenAI's pages show: input only (no cached discount,
    no output), so an embeddings job's cost is its input tokens at that price, not an
    estimate at the default price; ada-002's price was not confirmed, so it has none."""
    catalog = Catalog.bundled()
    small = catalog.price_for("text-embedding-3-small")
    large = catalog.price_for("text-embedding-3-large")
    assert small is not None and (small.input, small.cached_input, small.output) == (0.02, 0.02, 0)
    assert large is not None and (large.input, large.cached_input, large.output) == (0.13, 0.13, 0)
    assert catalog.price_for("text-embedding-ada-002") is None
    usage = Usage(input_tokens=1_000_000, total_tokens=1_000_000)
    assert cost_usd(usage, small, FALLBACK_PRICE) == (pytest.approx(0.02), False)
    assert cost_usd(usage, large, FALLBACK_PRICE) == (pytest.approx(0.13), False)


def test_default_model_is_first() -> None:
    catalog = Catalog.bundled()
    assert catalog.default_model == "gpt-5.1-codex-max"
    assert catalog.list_models()[0].slug == "gpt-5.1-codex-max"
    codex_max = catalog.get("gpt-5.1-codex-max")
    assert codex_max is not None
    assert codex_max.supported_reasoning_levels == ("low", "medium", "high", "xhigh")


def test_dated_snapshot_names_find_their_model() -> None:
    catalog = Catalog.bundled()
    assert catalog.price_for("gpt-5-2025-08-07") == catalog.price_for("gpt-5")
    assert catalog.price_for("no-such-model") is None


def test_unknown_model_uses_the_default_price(tmp_path: Path) -> None:
    """What a job without a price of its own is charged at: 1.25 / 0.125 / 10.0, unless
    `[codexd.prices."*"]` says otherwise (which is then no model of its own)."""
    catalog = Catalog.for_snapshot(load_config(str(tmp_path), {}))
    assert catalog.default_price == Price(input=1.25, cached_input=0.125, output=10.0)
    assert catalog.default_price == FALLBACK_PRICE == default_price({})
    assert catalog.default_price_info() == results.Price(
        input=1.25, cached_input=0.125, output=10.0, source="default", as_of=None
    )
    (tmp_path / "config.toml").write_text(
        '[codexd.prices."*"]\ninput = 2\ncached_input = 0.2\noutput = 8\n'
    )
    catalog = Catalog.for_snapshot(load_config(str(tmp_path), {}))
    assert catalog.default_price == Price(input=2, cached_input=0.2, output=8)
    assert catalog.default_price_info().source == "config"
    assert catalog.get("*") is None


def test_prices_in_config_add_and_override(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        """
[codexd.prices."my-model"]
input = 1
cached_input = 0.5
output = 3

[codexd.prices."gpt-5"]
input = 9
cached_input = 9
output = 9
"""
    )
    catalog = Catalog.for_snapshot(load_config(str(tmp_path), {}))
    assert catalog.price_for("my-model") == results.Price(
        input=1, cached_input=0.5, output=3, source="config", as_of=None
    )
    assert catalog.price_for("gpt-5") == results.Price(
        input=9, cached_input=9, output=9, source="config", as_of=None
    )
    gpt5 = catalog.get("gpt-5")
    assert gpt5 is not None and gpt5.display_name == "GPT-5"  # only the price was replaced
    mine = catalog.get("my-model")
    assert mine is not None and (mine.display_name, mine.context_window) == ("my-model", None)


def test_model_catalog_json_in_codex_format(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text(
        json.dumps(
            {
                "models": [
                    {
                        "slug": "gpt-9-codex",
                        "display_name": "gpt-9-codex",
                        "description": "from the future",
                        "default_reasoning_level": "medium",
                        "supported_reasoning_levels": [
                            {"effort": "low", "description": "fast"},
                            {"effort": "medium", "description": "balanced"},
                        ],
                        "context_window": 500000,
                        "shell_type": "shell_command",
                        "visibility": "list",
                        "truncation_policy": {"mode": "tokens", "limit": 10000},
                    },
                    {"slug": "gpt-5.1", "context_window": 400000},
                ]
            }
        )
    )
    (tmp_path / "config.toml").write_text('model_catalog_json = "models.json"\n')
    snap = load_config(str(tmp_path), {})
    assert snap.model_catalog_json == str(tmp_path / "models.json")
    catalog = Catalog.for_snapshot(snap)
    future = catalog.get("gpt-9-codex")
    assert future is not None
    assert future.supported_reasoning_levels == ("low", "medium")
    assert (future.context_window, future.price) == (500000, None)
    gpt51 = catalog.get("gpt-5.1")
    assert gpt51 is not None
    assert gpt51.context_window == 400000
    assert gpt51.price is not None and gpt51.price == Catalog.bundled().price_for("gpt-5.1")


def test_a_bad_model_catalog_json_is_a_located_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "x"\nmodel_catalog_json = "missing.json"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), {})
    assert (info.value.line, info.value.key) == (2, "model_catalog_json")
    (tmp_path / "missing.json").write_text('{"models": [{"display_name": "no slug"}]}')
    with pytest.raises(ConfigError, match=r"^config.toml:2: model_catalog_json: the model catalog"):
        load_config(str(tmp_path), {})


def test_models_list_result_encodes_as_spec_json() -> None:
    catalog = Catalog.bundled()
    entry = catalog.list_models()[0]
    assert json.loads(msgspec.json.encode(entry)) == {
        "slug": "gpt-5.1-codex-max",
        "display_name": "GPT-5.1-Codex-Max",
        "description": entry.description,
        "context_window": 272000,
        "default_reasoning_level": "medium",
        "supported_reasoning_levels": ["low", "medium", "high", "xhigh"],
        "price": None,
    }
    priced = catalog.get("gpt-5-nano")
    assert priced is not None
    assert json.loads(msgspec.json.encode(priced))["price"] == {
        "input": 0.05,
        "cached_input": 0.005,
        "output": 0.4,
        "source": "https://developers.openai.com/api/docs/models/gpt-5-nano",
        "as_of": "2026-12-05",
    }
