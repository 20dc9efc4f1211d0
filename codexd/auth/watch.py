"""Watch `$CODEX_HOME/auth.json` for logins and refreshes written by another program.

Codex CLI (and any tool sharing the file) replaces auth.json by renaming a temporary file over
it, so the directory is watched, not the file, and events are filtered by name. When
`$CODEX_HOME` does not exist yet, its nearest existing ancestor is watched until it appears.

`on_change` runs once as soon as the watch is armed (an edit made before that is not missed),
then after each batch of changes to auth.json. Deciding whether the new content is newer than
what the daemon holds is the session's job (`AuthSession.reload_from_disk`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import watchfiles

from codexd.auth.authfile import AUTH_FILE_NAME

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


async def watch_auth_file(
    codex_home: str,
    on_change: Callable[[], Awaitable[None]],
    *,
    ready: anyio.Event | None = None,
    rust_timeout_ms: int = DEFAULT_RUST_TIMEOUT_MS,
    debounce_ms: int = 1600,
    step_ms: int = 20,
) -> None:
    """Call `on_change` after changes to auth.json. Runs until cancelled."""
    codex_home = _absolute(codex_home)
    while True:
        target = _watch_target(codex_home)
        armed = False

        def relevant(_change: watchfiles.Change, path: str, *, target: str = target) -> bool:
            if target == codex_home:
                return os.path.basename(path) == AUTH_FILE_NAME or path == codex_home
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
            if _watch_target(codex_home) != target:
                break  # codex_home appeared or vanished: watch the right directory
            if not armed:
                armed = True
                await on_change()
                if ready is not None:
                    ready.set()
                continue
            if any(os.path.basename(path) == AUTH_FILE_NAME for _change, path in changes):
                await on_change()
