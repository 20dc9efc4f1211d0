"""The provider's model list: read at most once per TTL in its own task (a slow read never
holds `models/list` up), laid over the bundled catalog's metadata for the models it knows,
never a source of prices."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from codexd.config.load import load_config
from codexd.config.schema import CatalogModel, ConfigSnapshot, Price
from codexd.service.registry import Catalogs
from codexd.upstream.model_list import RemoteModels
from codexd.usage.catalog import Catalog

LISTED = {
    "models": [
        {
            "slug": "gpt-5.2",
            "context_window": 372000,
            "supported_reasoning_levels": [{"effort": "low"}, {"effort": "xhigh"}],
            "default_reasoning_level": "low",
            "price": {"input": 99, "cached_input": 99, "output": 99},
        },
        {"slug": "gpt-5.1", "price": {"input": 99, "cached_input": 99, "output": 99}},
        {"slug": "unknown-to-the-catalog", "context_window": 1},
    ]
}


def test_the_list_refreshes_metadata_of_known_models_and_never_prices() -> None:
    listed = [
        CatalogModel(slug="gpt-5.2", context_window=372000, supported_reasoning_levels=("low",)),
        CatalogModel(slug="gpt-5.1", price=Price(input=99, cached_input=99, output=99)),
        CatalogModel(slug="unknown-to-the-catalog", context_window=1),
    ]
    bundled = Catalog.bundled()
    catalog = Catalog.build(remote=listed)
    gpt52 = catalog.get("gpt-5.2")
    assert gpt52 is not None
    assert (gpt52.context_window, gpt52.supported_reasoning_levels) == (372000, ("low",))
    assert gpt52.price is None
    assert catalog.price_for("gpt-5.1") == bundled.price_for("gpt-5.1")
    assert catalog.get("unknown-to-the-catalog") is None
    # the user's own catalog and prices still win over the provider's list
    mine = Catalog.build(
        [CatalogModel(slug="gpt-5.2", context_window=5)],
        {"gpt-5.2": Price(input=1, cached_input=1, output=1)},
        remote=listed,
    )
    mine52 = mine.get("gpt-5.2")
    assert mine52 is not None and mine52.context_window == 5
    assert mine52.price is not None and mine52.price.source == "config"


def window(catalogs: Catalogs, slug: str = "gpt-5.2") -> int | None:
    model = catalogs.catalog().get(slug)
    assert model is not None
    return model.context_window


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_read_once_per_ttl_and_a_bad_answer_keeps_the_last_list(tmp_path: Path) -> None:
    snapshot = load_config(str(tmp_path), {})
    answers: list[bytes | None] = [json.dumps(LISTED).encode(), b"not json", None]
    asked: list[tuple[ConfigSnapshot, str]] = []

    async def fetch(snap: ConfigSnapshot, provider: str) -> bytes | None:
        asked.append((snap, provider))
        return answers.pop(0)

    clock = Clock()
    remote = RemoteModels(fetch, ttl_s=300, clock=clock)
    catalogs = Catalogs(lambda: snapshot, remote)
    assert window(catalogs) == 272000
    async with anyio.create_task_group() as tg:
        await tg.start(remote.run)
        await catalogs.refresh(snapshot, "openai")  # the first read is waited for
        await catalogs.refresh(snapshot, "openai")  # within the TTL: not asked again
        await anyio.wait_all_tasks_blocked()
        assert asked == [(snapshot, "openai")] and remote.generation == 1
        assert window(catalogs) == 372000
        assert all(m.price is None for m in remote.models)
        for _ in range(2):  # a body that is no catalog, then a failed request
            clock.now += 300
            await catalogs.refresh(snapshot, "openai")
            await anyio.wait_all_tasks_blocked()
            assert window(catalogs) == 372000
        tg.cancel_scope.cancel()
    assert len(asked) == 3 and remote.generation == 1


@pytest.mark.anyio
async def test_a_slow_read_never_holds_models_list_up(tmp_path: Path) -> None:
    snapshot = load_config(str(tmp_path), {})
    first = json.dumps(LISTED).encode()
    newer = json.dumps({"models": [{"slug": "gpt-5.2", "context_window": 500000}]}).encode()
    release = anyio.Event()
    reads = 0

    async def fetch(snap: ConfigSnapshot, provider: str) -> bytes | None:
        nonlocal reads
        reads += 1
        if reads == 1:
            return first
        await release.wait()  # the backend is slow to answer the second read
        return newer

    clock = Clock()
    remote = RemoteModels(fetch, ttl_s=300, clock=clock)
    catalogs = Catalogs(lambda: snapshot, remote)
    async with anyio.create_task_group() as tg:
        await tg.start(remote.run)
        await catalogs.refresh(snapshot, "openai")
        assert window(catalogs) == 372000
        clock.now += 300
        for _ in range(3):  # each call returns with the last list while the read hangs
            await catalogs.refresh(snapshot, "openai")
            await anyio.wait_all_tasks_blocked()
            assert window(catalogs) == 372000
        assert reads == 2 and "reading" in repr(remote)
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert window(catalogs) == 500000  # the read landed for the next call
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_first_read_that_hangs_serves_the_bundled_catalog(tmp_path: Path) -> None:
    snapshot = load_config(str(tmp_path), {})
    never = anyio.Event()

    async def fetch(snap: ConfigSnapshot, provider: str) -> bytes | None:
        await never.wait()
        return None

    remote = RemoteModels(fetch, first_wait_s=0)
    catalogs = Catalogs(lambda: snapshot, remote)
    async with anyio.create_task_group() as tg:
        await tg.start(remote.run)
        await catalogs.refresh(snapshot, "openai")
        assert window(catalogs) == 272000 and remote.generation == 0
        tg.cancel_scope.cancel()
