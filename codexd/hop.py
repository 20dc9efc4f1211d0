"""The mark on codexd's own upstream requests, so that its gateway knows one coming back.

A provider whose `base_url` is this daemon's own gateway is easy to write when Codex and
codexd share config.toml: the provider Codex is meant to use through the gateway becomes
codexd's default too. Each job would then send its request to the gateway, which would make
another job for the same provider, without end. So every request codexd sends upstream
carries `X-Codexd-Hop` with a value drawn when the daemon starts, and the gateway answers a
request carrying this daemon's value with a 400 that says what to change (an upstream 4xx is
never retried: the job that sent it fails at once, with that message). Another daemon's
value passes, so one codexd may use another's gateway.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Final

HOP_HEADER: Final = "X-Codexd-Hop"
HOP: Final = secrets.token_hex(8)

LOOP_CODE: Final = "codexd_gateway_loop"
LOOP_MESSAGE: Final = (
    "This request came from this codexd itself: a provider in its config sends to its own "
    "gateway, so the job would call itself without end. Give codexd's jobs a provider that "
    "reaches OpenAI (`model_provider`, or `provider` in the request), and let Codex pick the "
    "gateway provider with a profile file (see the gateway docs)."
)


def is_own_hop(headers: Mapping[str, str]) -> bool:
    """Whether a request's headers (names lower-cased) carry this daemon's own mark."""
    return headers.get("x-codexd-hop") == HOP
