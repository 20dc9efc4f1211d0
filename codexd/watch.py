"""Watch a directory for changes to a few named files in it (`$CODEX_HOME`'s config files,
auth.json).

Editors and other programs save by writing a temporary file and renaming it over the old one,
which replaces the inode: a watch on the file itself goes deaf after the first save. So the
directory is watched (non-recursively) and events are filtered by name. When the directory does
not exist yet, its nearest existing ancestor is watched until it appears; if it is removed
later, the watch falls back the same way.

Readiness: watchfiles arms its watcher before its first wait, and that wait returns at the
latest after `rust_timeout_ms` with nothing to report, so the first value the generator yields
proves the watch is live. At that point (and after every re-arm) `on_change` runs once, to
catch an edit made while no watch was armed, and then `ready` is set.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Collection
from typing import Final

import anyio
import watchfiles

DEFAULT_RUST_TIMEOUT_MS: Final = 1000


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _watch_target(codex_home: str) -> str:
    """`codex_home` when it is a directory, else its nearest existing ancestor."""
    path = codex_home
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            return path
        path = parent
    return path


async def watch_names(
    codex_home: str,
    names: Collection[str] | Callable[[str], bool],
    on_change: Callable[[], Awaitable[None]],
    *,
    ready: anyio.Event | None = None,
    rust_timeout_ms: int = DEFAULT_RUST_TIMEOUT_MS,
    debounce_ms: int = 1600,
    step_ms: int = 50,
) -> None:
    """Call `on_change` after each batch of changes to `names` in `codex_home`. Runs until
    cancelled.

    `debounce_ms` and `step_ms` are watchfiles' own: a batch is delivered `step_ms` after the
    last change (at most `debounce_ms` after the first), so a save is seen within ~50 ms.
    `names` is the file names to watch, or a test of a file name.
    """
    wanted = names if callable(names) else names.__contains__
    codex_home = _absolute(codex_home)
    while True:
        target = _watch_target(codex_home)
        watching_home = target == codex_home
        armed = False

        def relevant(_change: watchfiles.Change, path: str, *, target: str = target) -> bool:
            if target == codex_home:
                return wanted(os.path.basename(path)) or path == codex_home
            # Watching an ancestor: only the next path component towards codex_home matters.
            return codex_home.startswith(path.rstrip(os.sep) + os.sep) or path == codex_home

        async for changes in watchfiles.awatch(
            target,
            watch_filter=relevant,
            recursive=False,
            debounce=debounce_ms,
            step=step_ms,
            rust_timeout=rust_timeout_ms,
            yield_on_timeout=True,
        ):
            if not armed:
                armed = True
                await on_change()
                if ready is not None:
                    ready.set()
                if _watch_target(codex_home) != target:
                    break
                continue
            if _watch_target(codex_home) != target:
                # codex_home appeared (or vanished): watch the right directory instead.
                break
            if watching_home and any(wanted(os.path.basename(path)) for _change, path in changes):
                await on_change()
