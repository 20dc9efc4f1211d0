"""Which event loop `codexd run` runs on: uvloop where it is installed, unless turned off.

The one home of that rule. `[codexd] event_loop` chooses (default `"uvloop"`), the environment
variable `CODEXD_EVENT_LOOP` wins over it, and a uvloop that is not installed (Windows, or an
install without it) falls back to the standard library's loop with a note for the log. The
choice is read once, at start-up: `codexd.event_loop` is one of the config's `RESTART_KEYS`.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, get_args

from codexd.config.schema import EventLoop
from codexd.paths import StartupError

EVENT_LOOPS: Final[tuple[EventLoop, ...]] = get_args(EventLoop)
ENV_VAR: Final = "CODEXD_EVENT_LOOP"


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


@dataclass(frozen=True, slots=True)
class LoopChoice:
    """The loop to run and, when it is not the one asked for, why (a line for the log)."""

    name: EventLoop
    note: str | None = None

    def backend_options(self) -> dict[str, Any]:
        """anyio.run's `backend_options` for this loop (anyio's asyncio backend either way)."""
        return {"use_uvloop": self.name == "uvloop"}


def choose(
    setting: EventLoop,
    env: Mapping[str, str],
    *,
    installed: Callable[[], bool] = uvloop_installed,
) -> LoopChoice:
    """The loop for `[codexd] event_loop = setting`, with `$CODEXD_EVENT_LOOP` winning over it.

    Raises StartupError for an environment value that names no loop."""
    raw = env.get(ENV_VAR, "").strip()
    wanted: EventLoop = setting
    if raw:
        if raw not in EVENT_LOOPS:
            names = " or ".join(f'"{n}"' for n in EVENT_LOOPS)
            raise StartupError(
                f"{ENV_VAR}={raw!r} names no event loop: set it to {names}, or unset it"
            )
        wanted = raw
    if wanted == "uvloop" and not installed():
        return LoopChoice(
            "asyncio", "uvloop is not installed here: running on the standard asyncio loop"
        )
    return LoopChoice(wanted)


def running_loop_name() -> str:
    """The loop this coroutine runs on, as the log reports it: `uvloop` or `asyncio`."""
    module = type(asyncio.get_running_loop()).__module__
    return module.split(".", 1)[0]
