"""Hot reload from real file edits: in place, by rename, delete + recreate, late directory.

Each test waits on the store's notification (never a sleep), with a generous hang guard.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from codexctl.results import ConfigRejected, ConfigReloaded
from codexd.config.store import ConfigEvent, ConfigStore
from codexd.config.watch import watch_config

pytestmark = pytest.mark.anyio
GUARD_S = 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Watched:
    def __init__(self, store: ConfigStore, events: anyio.abc.ObjectReceiveStream[ConfigEvent]):
        self.store = store
        self.events = events

    async def until(self, done: Callable[[ConfigEvent], bool]) -> ConfigEvent:
        with anyio.fail_after(GUARD_S):
            while True:
                event = await self.events.receive()
                if done(event):
                    return event


@asynccontextmanager
async def watching(home: Path) -> AsyncIterator[Watched]:
    store = ConfigStore.open(str(home), {})
    send, receive = anyio.create_memory_object_stream[ConfigEvent](100)
    store.subscribe(send.send_nowait)

    async def on_change() -> None:
        store.reload()

    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watch_config(str(home), on_change, ready=ready, rust_timeout_ms=100))
        with anyio.fail_after(GUARD_S):
            await ready.wait()
        yield Watched(store, receive)
        tg.cancel_scope.cancel()


def write_in_place(path: Path, text: str) -> None:
    """Truncate and rewrite the same inode (no rename)."""
    with open(path, "r+") as f:
        f.truncate(0)
        f.write(text)


def reloaded_with(store: ConfigStore, model: str | None) -> Callable[[ConfigEvent], bool]:
    return lambda e: isinstance(e, ConfigReloaded) and store.snapshot.model == model


async def test_edit_in_place(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "a"\n')
    async with watching(tmp_path) as w:
        write_in_place(tmp_path / "config.toml", 'model = "b"\n')
        event = await w.until(reloaded_with(w.store, "b"))
        assert event == ConfigReloaded(generation=2, path=str(tmp_path / "config.toml"))


async def test_replace_by_rename_as_editors_save(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "a"\n')
    async with watching(tmp_path) as w:
        for n, model in enumerate(["b", "c"]):
            temp = tmp_path / f".config.toml.{n}.tmp"
            temp.write_text(f'model = "{model}"\n')
            os.replace(temp, tmp_path / "config.toml")
            await w.until(reloaded_with(w.store, model))
        assert w.store.generation == 3


async def test_delete_then_recreate(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "a"\n')
    async with watching(tmp_path) as w:
        (tmp_path / "config.toml").unlink()
        await w.until(reloaded_with(w.store, None))  # a missing file means defaults
        (tmp_path / "config.toml").write_text('model = "d"\n')
        await w.until(reloaded_with(w.store, "d"))


async def test_codexd_toml_is_watched_too(tmp_path: Path) -> None:
    async with watching(tmp_path) as w:
        (tmp_path / "codexd.toml").write_text("[codexd]\nmax_connections = 7\n")
        await w.until(
            lambda e: isinstance(e, ConfigReloaded) and w.store.snapshot.codexd.max_connections == 7
        )


async def test_an_invalid_edit_is_reported_and_the_old_config_stays(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "a"\n')
    async with watching(tmp_path) as w:
        (tmp_path / "config.toml").write_text('model = "b"\n[codexd]\nmax_connections = "x"\n')
        event = await w.until(lambda e: isinstance(e, ConfigRejected))
        assert isinstance(event, ConfigRejected)
        assert event.error.startswith("config.toml:3: codexd.max_connections: expected")
        assert w.store.snapshot.model == "a"
        (tmp_path / "config.toml").write_text('model = "b"\n')
        await w.until(reloaded_with(w.store, "b"))
        assert w.store.error is None


async def test_codex_home_created_after_start(tmp_path: Path) -> None:
    home = tmp_path / "later" / ".codex"
    async with watching(home) as w:
        home.mkdir(parents=True)
        (home / "config.toml").write_text('model = "late"\n')
        await w.until(reloaded_with(w.store, "late"))
        # Now the directory itself is watched: a further edit is seen as well.
        (home / "config.toml").write_text('model = "later"\n')
        await w.until(reloaded_with(w.store, "later"))


async def test_codex_home_removed_and_recreated(tmp_path: Path) -> None:
    home = tmp_path / ".codex"
    home.mkdir()
    (home / "config.toml").write_text('model = "a"\n')
    async with watching(home) as w:
        shutil.rmtree(home)
        await w.until(reloaded_with(w.store, None))
        home.mkdir()
        (home / "config.toml").write_text('model = "back"\n')
        await w.until(reloaded_with(w.store, "back"))
