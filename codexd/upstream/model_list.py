"""The shell that reads Codex's model list from the ChatGPT backend, for the catalog's context
windows and reasoning levels (never its prices).

Under a ChatGPT login Codex reads `GET {base_url}/models?client_version=…` of its provider's
route (`{chatgpt_base_url}/codex/models` for the built-in `openai`) in its own catalog format.
codexd reads it the same way, for a provider whose requests go to that backend
(`ConfigSnapshot.chatgpt_backend`), at most once per `REMOTE_MODELS_TTL_S` (`PollSchedule`,
the scheduler of the plan's usage windows too) when `models/list` asks. The read runs in the
watch's own task (`run`), so a slow backend never holds `models/list` up: the call serves the
last list taken (or none: the bundled catalog) and the read lands for a later call. Only the
very first read is waited for, at most `FIRST_WAIT_S`, so that a fresh daemon shows the list.

The metadata of the models the catalog knows is laid over the bundled entries
(`Catalog.build(remote=…)`). A failed or unreadable answer is logged and the last list stays
in force; without a ChatGPT login nothing is asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import anyio
import anyio.abc
import msgspec

from codexctl.protocol import RpcError
from codexd.auth.identity import CODEX_COMPAT_VERSION
from codexd.auth.session import AuthSession
from codexd.config.load import decode_catalog
from codexd.config.schema import CatalogModel, ConfigSnapshot
from codexd.limits.poll import PollSchedule
from codexd.security.scrub import Scrubber
from codexd.upstream.client import fetch
from codexd.upstream.errors import UpstreamError
from codexd.upstream.runner import HttpClients, get_headers
from codexd.upstream.wire import endpoint_url

log = logging.getLogger("codexd.upstream")

REMOTE_MODELS_TTL_S: Final = 300.0
MAX_REMOTE_MODELS_BYTES: Final = 4 << 20
REMOTE_MODELS_TIMEOUT_S: Final = 10.0
# How long the first `models/list` waits for the first read before it serves the catalog.
FIRST_WAIT_S: Final = 2.0

# The list's body for a provider (its id) under the config in force, or None.
Fetch = Callable[[ConfigSnapshot, str], Awaitable[bytes | None]]


class RemoteModels:
    """The backend's model list as last read. `refresh` starts a read when the last one is
    older than `ttl_s` (a failure waits as long before the next try) and returns at once;
    `run` makes the reads. `generation` goes up with every list taken, so that a cached
    catalog knows it is out of date."""

    def __init__(
        self,
        fetch_list: Fetch,
        *,
        ttl_s: float = REMOTE_MODELS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        first_wait_s: float = FIRST_WAIT_S,
        timeout_s: float = REMOTE_MODELS_TIMEOUT_S,
    ) -> None:
        self._fetch = fetch_list
        self._schedule = PollSchedule(ttl_s)
        self._clock = clock
        self._first_wait_s = first_wait_s
        self._timeout_s = timeout_s
        self._want: tuple[ConfigSnapshot, str] | None = None
        self._wake = anyio.Event()
        self._in_flight: anyio.Event | None = None
        self._answered = False  # a read has ended (taken or not)
        self.models: tuple[CatalogModel, ...] = ()
        self.generation = 0

    async def refresh(self, snapshot: ConfigSnapshot, provider: str) -> None:
        """Start a read of `provider`'s list when one is due. Waits only for the first read
        (at most `first_wait_s`); after that the last list is served and the read lands for
        a later call."""
        if self._in_flight is None and self._schedule.due(self._clock()):
            self._schedule.started(self._clock())
            self._in_flight = anyio.Event()
            self._want = (snapshot, provider)
            self._wake.set()
        in_flight = self._in_flight
        if in_flight is not None and not self._answered:
            with anyio.move_on_after(self._first_wait_s):
                await in_flight.wait()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Make the reads asked for, one at a time; run it in the daemon's task group."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            want, self._want = self._want, None
            try:
                if want is not None:
                    with anyio.move_on_after(self._timeout_s + 1.0):
                        await self._read(*want)
            finally:
                self._answered = True
                done, self._in_flight = self._in_flight, None
                if done is not None:
                    done.set()

    async def _read(self, snapshot: ConfigSnapshot, provider: str) -> None:
        raw = await self._fetch(snapshot, provider)
        if raw is None:
            return
        try:
            models = decode_catalog(raw)
        except msgspec.DecodeError as exc:
            log.warning("the provider's model list is not a model catalog: %s", exc)
            return
        self.models = tuple(msgspec.structs.replace(m, price=None) for m in models)
        self.generation += 1

    def __repr__(self) -> str:
        busy = "reading" if self._in_flight is not None else "idle"
        return (
            f"<RemoteModels {len(self.models)} models, generation {self.generation}, {busy}, "
            f"{self._schedule!r}>"
        )


def chatgpt_models(
    auth: AuthSession,
    http: HttpClients,
    env: Mapping[str, str],
    *,
    timeout_s: float = REMOTE_MODELS_TIMEOUT_S,
) -> Fetch:
    """The fetch of `RemoteModels`: the list's body for a provider whose requests go to the
    ChatGPT backend, under a ChatGPT login; else None (nothing is asked)."""

    async def fetch_list(snapshot: ConfigSnapshot, provider: str) -> bytes | None:
        if not snapshot.chatgpt_backend(provider):
            return None
        try:
            credentials = await auth.credentials(snapshot.provider_ref(provider))
        except RpcError:
            return None
        if credentials.mode != "chatgpt":
            return None
        route = snapshot.route(provider, chatgpt_auth=True)
        query = dict(route.query_params or {}) | {"client_version": CODEX_COMPAT_VERSION}
        url = endpoint_url(route.base_url, "models", query)
        headers = get_headers(snapshot.providers[provider], credentials, env)
        got = await fetch(
            http.transport(provider),
            url,
            headers,
            limit=MAX_REMOTE_MODELS_BYTES,
            timeout_s=timeout_s,
            scrubber=Scrubber.for_request(headers, url),
        )
        if isinstance(got, UpstreamError):
            log.warning("the provider's model list could not be read: %s", got.message)
            return None
        return got

    return fetch_list
