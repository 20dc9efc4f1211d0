"""The model list the provider serves to Codex, for the catalog's context windows and levels.

Under a ChatGPT login Codex reads `GET {chatgpt_base_url}/codex/models?client_version=…` (the
route of the built-in `openai` provider, then `models`) in its own catalog format. codexd
reads it the same way, at most once per `REMOTE_MODELS_TTL_S`, when `models/list` is called,
and lays the metadata of the models its catalog knows over the bundled entries
(`Catalog.build(remote=…)`). Prices never come from it. A failed or unreadable answer is
logged and the last list stays in force; without a ChatGPT login nothing is asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import anyio
import msgspec

from codexctl.protocol import RpcError
from codexd.auth.identity import CODEX_COMPAT_VERSION
from codexd.auth.session import AuthSession
from codexd.config.load import decode_catalog
from codexd.config.schema import CatalogModel, ConfigSnapshot
from codexd.security.scrub import Scrubber
from codexd.upstream.client import fetch
from codexd.upstream.errors import UpstreamError
from codexd.upstream.runner import HttpClients, request_headers

log = logging.getLogger(__name__)

REMOTE_MODELS_TTL_S: Final = 300.0
MAX_REMOTE_MODELS_BYTES: Final = 4 << 20
REMOTE_MODELS_TIMEOUT_S: Final = 10.0
PROVIDER: Final = "openai"

Fetch = Callable[[ConfigSnapshot], Awaitable[bytes | None]]


class RemoteModels:
    """The provider's model list as last read; `refresh` reads it again when it is older than
    `ttl_s` (a failure waits as long before the next try). `generation` goes up with every
    list taken, so that a cached catalog knows it is out of date."""

    def __init__(
        self,
        fetch_list: Fetch,
        *,
        ttl_s: float = REMOTE_MODELS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch_list
        self._ttl_s = ttl_s
        self._clock = clock
        self._asked_at: float | None = None
        self._lock = anyio.Lock()
        self.models: tuple[CatalogModel, ...] = ()
        self.generation = 0

    async def refresh(self, snapshot: ConfigSnapshot) -> None:
        async with self._lock:  # one request at a time; the others take its answer
            now = self._clock()
            if self._asked_at is not None and now - self._asked_at < self._ttl_s:
                return
            self._asked_at = now
            raw = await self._fetch(snapshot)
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
        return f"<RemoteModels {len(self.models)} models, generation {self.generation}>"


def chatgpt_models(auth: AuthSession, http: HttpClients, env: Mapping[str, str]) -> Fetch:
    """The fetch of `RemoteModels`: the list's body under a ChatGPT login, else None."""

    async def fetch_list(snapshot: ConfigSnapshot) -> bytes | None:
        try:
            credentials = await auth.credentials(snapshot.provider_ref(PROVIDER))
        except RpcError:
            return None
        if credentials.mode != "chatgpt":
            return None
        base = snapshot.route(PROVIDER, chatgpt_auth=True).base_url.rstrip("/")
        url = f"{base}/models?client_version={CODEX_COMPAT_VERSION}"
        headers = request_headers(snapshot.providers[PROVIDER], credentials, env)
        headers["Accept"] = "application/json"
        headers.pop("Content-Type", None)
        got = await fetch(
            http.transport(PROVIDER),
            url,
            headers,
            limit=MAX_REMOTE_MODELS_BYTES,
            timeout_s=REMOTE_MODELS_TIMEOUT_S,
            scrubber=Scrubber.for_request(headers, url),
        )
        if isinstance(got, UpstreamError):
            log.warning("the provider's model list could not be read: %s", got.message)
            return None
        return got

    return fetch_list
