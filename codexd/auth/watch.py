"""Watch `$CODEX_HOME/auth.json` for logins and refreshes written by another program.

Codex CLI (and any tool sharing the file) replaces auth.json by renaming a temporary file over
it; `codexd.watch` watches the directory for that.

`on_change` runs once as soon as the watch is armed (an edit made before that is not missed),
then after each batch of changes to auth.json. Deciding whether the new content is newer than
what the daemon holds is the session's job (`AuthSession.reload_from_disk`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from codexd.auth.authfile import AUTH_FILE_NAME
from codexd.watch import DEFAULT_RUST_TIMEOUT_MS, watch_names


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
    await watch_names(
        codex_home,
        (AUTH_FILE_NAME,),
        on_change,
        ready=ready,
        rust_timeout_ms=rust_timeout_ms,
        debounce_ms=debounce_ms,
        step_ms=step_ms,
    )
