"""The model catalog: bundled models.json, `model_catalog_json`, and `[codexd.prices]`.

Later layers win: the bundled file (OpenAI's published prices, each with the page that states
it and that page's date; a model whose price could not be confirmed there has none), then the
metadata the provider lists for the models the bundled file knows (context window, reasoning
levels: `remote`, never a price), then the user's `model_catalog_json` (Codex's format;
fields it gives replace the bundled ones), then `[codexd.prices."slug"]`, which adds a price
for any slug or overrides a listed one.
`[codexd.prices."*"]` is the default price for a model with none. Every price the catalog
hands out says where it comes from (`results.Price.source`): the provider's page, `config`,
or `default`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Final

import msgspec

from codexctl import results
from codexctl.protocol import catalog_slug
from codexctl.results import PRICE_SOURCE_CONFIG, PRICE_SOURCE_DEFAULT, ModelInfo, PriceRates
from codexd.config.schema import CatalogModel, ConfigSnapshot, Price

FALLBACK_PRICE: Final = Price(input=1.25, cached_input=0.125, output=10.0)
DEFAULT_PRICE_KEY: Final = "*"


class _BundledPrice(msgspec.Struct, frozen=True, kw_only=True):
    input: float
    cached_input: float
    output: float
    source: str
    as_of: str
    note: str | None = None


class _BundledModel(msgspec.Struct, frozen=True, kw_only=True):
    slug: str
    display_name: str
    description: str
    context_window: int | None
    default_reasoning_level: str | None
    supported_reasoning_levels: tuple[str, ...]
    price: _BundledPrice | None


class _BundledCatalog(msgspec.Struct, frozen=True, kw_only=True):
    default_model: str
    models: tuple[_BundledModel, ...]
    about: str = ""


@functools.cache
def _bundled() -> _BundledCatalog:
    raw = resources.files("codexd.usage").joinpath("models.json").read_bytes()
    return msgspec.json.decode(raw, type=_BundledCatalog)


def _bundled_models() -> dict[str, ModelInfo]:
    models: dict[str, ModelInfo] = {}
    for entry in _bundled().models:
        price = None
        if entry.price is not None:
            price = results.Price(
                input=entry.price.input,
                cached_input=entry.price.cached_input,
                output=entry.price.output,
                source=entry.price.source,
                as_of=entry.price.as_of,
            )
        models[entry.slug] = ModelInfo(
            slug=entry.slug,
            display_name=entry.display_name,
            description=entry.description,
            context_window=entry.context_window,
            default_reasoning_level=entry.default_reasoning_level,
            supported_reasoning_levels=entry.supported_reasoning_levels,
            price=price,
        )
    return models


def _apply(base: ModelInfo | None, extra: CatalogModel) -> ModelInfo:
    """`extra`'s given fields over `base` (or over an empty entry for a new slug)."""
    if base is None:
        base = ModelInfo(
            slug=extra.slug,
            display_name=extra.slug,
            description="",
            context_window=None,
            default_reasoning_level=None,
            supported_reasoning_levels=(),
            price=None,
        )
    return ModelInfo(
        slug=extra.slug,
        display_name=extra.display_name if extra.display_name is not None else base.display_name,
        description=extra.description if extra.description is not None else base.description,
        context_window=(
            extra.context_window if extra.context_window is not None else base.context_window
        ),
        default_reasoning_level=(
            extra.default_reasoning_level
            if extra.default_reasoning_level is not None
            else base.default_reasoning_level
        ),
        supported_reasoning_levels=(
            extra.supported_reasoning_levels
            if extra.supported_reasoning_levels is not None
            else base.supported_reasoning_levels
        ),
        price=_configured(extra.price) if extra.price is not None else base.price,
    )


def _configured(price: PriceRates, source: str = PRICE_SOURCE_CONFIG) -> results.Price:
    """A price from the user's config (or codexd's default), as `models/list` reports it."""
    return results.Price(
        input=price.input,
        cached_input=price.cached_input,
        output=price.output,
        source=source,
        as_of=None,
    )


def default_price(prices: Mapping[str, Price]) -> Price:
    """The price of a model with none (its cost is `estimated`): `[codexd.prices."*"]`,
    else 1.25 / 0.125 / 10.0."""
    return prices.get(DEFAULT_PRICE_KEY, FALLBACK_PRICE)


class Catalog:
    """The models codexd knows, with prices. Immutable once built; one per config snapshot."""

    def __init__(
        self,
        models: Mapping[str, ModelInfo],
        *,
        default_model: str,
        default_price: PriceRates = FALLBACK_PRICE,
        default_price_source: str = PRICE_SOURCE_DEFAULT,
    ) -> None:
        self._models = dict(models)
        self.default_model = default_model
        self.default_price = default_price
        self.default_price_source = default_price_source

    @classmethod
    def bundled(cls) -> Catalog:
        """The bundled catalog alone."""
        return cls(_bundled_models(), default_model=_bundled().default_model)

    @classmethod
    def build(
        cls,
        extra_models: Iterable[CatalogModel] = (),
        prices: Mapping[str, Price] | None = None,
        remote: Iterable[CatalogModel] = (),
    ) -> Catalog:
        """The bundled catalog, then `remote` (the provider's list: metadata of the models
        the bundled catalog knows, never a price), then `extra_models` (model_catalog_json),
        then `prices`."""
        models = _bundled_models()
        for listed in remote:
            if listed.slug in models:
                models[listed.slug] = _apply(
                    models[listed.slug], msgspec.structs.replace(listed, price=None)
                )
        for extra in extra_models:
            models[extra.slug] = _apply(models.get(extra.slug), extra)
        prices = prices or {}
        for slug, price in prices.items():
            if slug == DEFAULT_PRICE_KEY:
                continue
            models[slug] = _apply(models.get(slug), CatalogModel(slug=slug, price=price))
        return cls(
            models,
            default_model=_bundled().default_model,
            default_price=default_price(prices),
            default_price_source=(
                PRICE_SOURCE_CONFIG if DEFAULT_PRICE_KEY in prices else PRICE_SOURCE_DEFAULT
            ),
        )

    @classmethod
    def for_snapshot(
        cls, snapshot: ConfigSnapshot, remote: Iterable[CatalogModel] = ()
    ) -> Catalog:
        return cls.build(snapshot.catalog_models, snapshot.codexd.prices, remote)

    def get(self, slug: str) -> ModelInfo | None:
        """The model `slug`, also under a dated snapshot name (`gpt-5-2025-08-07` → `gpt-5`)."""
        found = self._models.get(slug)
        if found is None:
            found = self._models.get(catalog_slug(slug))
        return found

    def price_for(self, slug: str) -> results.Price | None:
        """The model's price, or None (then cost uses `default_price` and is `estimated`)."""
        model = self.get(slug)
        return model.price if model is not None else None

    def default_price_info(self) -> results.Price:
        """`default_price` as `models/list` reports it, with its source."""
        return _configured(self.default_price, self.default_price_source)

    def list_models(self) -> list[ModelInfo]:
        """Every model, the default first, then in catalog order."""
        models = list(self._models.values())
        models.sort(key=lambda m: m.slug != self.default_model)
        return models

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        return f"<Catalog {len(self._models)} models, default {self.default_model}>"
