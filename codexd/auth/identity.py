"""The client identity Codex sends with ChatGPT-mode requests.

`originator: codex_cli_rs` (Codex's `CODEX_INTERNAL_ORIGINATOR_OVERRIDE` honoured), a
`User-Agent` of Codex's form `{originator}/{version} ({os} {os version}; {arch}) {terminal}`
(codexd names itself where Codex names the terminal) and the `version` header that Codex's
built-in `openai` provider always carries. The ChatGPT backend serves Codex's clients; codexd
speaks as the Codex release whose wire behaviour it follows.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Mapping
from typing import Final

from codexd import __version__
from codexd.auth.oauth import ORIGINATOR

CODEX_COMPAT_VERSION: Final = "0.169.0"
ORIGINATOR_ENV: Final = "CODEX_INTERNAL_ORIGINATOR_OVERRIDE"


def _printable(text: str) -> str:
    """Codex replaces characters that may not appear in a header value with `_`."""
    return "".join(c if " " <= c <= "~" else "_" for c in text)


@functools.cache
def _platform() -> str:
    system = platform.system() or "unknown"
    release = platform.release() or "unknown"
    if system == "Linux":
        try:
            info = platform.freedesktop_os_release()
            system = info.get("NAME", system)
            release = info.get("VERSION_ID", release)
        except OSError:
            pass
    elif system == "Darwin":
        system, release = "Mac OS", platform.mac_ver()[0] or release
    return f"{system} {release}; {platform.machine() or 'unknown'}"


def originator(env: Mapping[str, str]) -> str:
    return _printable(env.get(ORIGINATOR_ENV) or ORIGINATOR)


def user_agent(env: Mapping[str, str]) -> str:
    who = originator(env)
    return _printable(f"{who}/{CODEX_COMPAT_VERSION} ({_platform()}) codexd/{__version__}")


def client_headers(env: Mapping[str, str]) -> dict[str, str]:
    """originator, User-Agent and version, as Codex sends them in ChatGPT mode."""
    return {
        "originator": originator(env),
        "User-Agent": user_agent(env),
        "version": CODEX_COMPAT_VERSION,
    }
