"""Watch `$CODEX_HOME` for edits of config.toml, codexd.toml and the profile files
(`NAME.config.toml`); how the directory is watched (renames, a missing directory, readiness)
is `codexd.watch`'s.

Every profile file is watched, not only those in use: which ones are in use changes with the
requests, and a change to one that is not in use costs a reload that changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from codexd.config.load import CODEXD_NAME, CONFIG_NAME, profile_of
from codexd.watch import DEFAULT_RUST_TIMEOUT_MS, watch_names

WATCHED_NAMES: Final = frozenset({CONFIG_NAME, CODEXD_NAME})


def is_config_file(name: str) -> bool:
    """A file name of `$CODEX_HOME` whose change may change the config."""
    return name in WATCHED_NAMES or profile_of(name) is not None


async def watch_config(
    codex_home: str,
    on_change: Callable[[], Awaitable[None]],
    *,
    ready: anyio.Event | None = None,
    rust_timeout_ms: int = DEFAULT_RUST_TIMEOUT_MS,
    debounce_ms: int = 1600,
    step_ms: int = 50,
) -> None:
    """Call `on_change` after each batch of changes to the config files. Runs until cancelled.

    A batch is delivered `step_ms` after the last change (at most `debounce_ms` after the
    first), so a save is seen within ~50 ms.
    """
    await watch_names(
        codex_home,
        is_config_file,
        on_change,
        ready=ready,
        rust_timeout_ms=rust_timeout_ms,
        debounce_ms=debounce_ms,
        step_ms=step_ms,
    )
