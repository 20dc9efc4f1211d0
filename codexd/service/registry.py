"""Per-provider rate limiters and the model catalog of the config snapshot in force.

`Limiters.limiter_for` makes a provider's limiter on first use (with the settings
`ConfigSnapshot.rate_limit` gives) and runs it in the registry's own task group; a config reload
reconfigures the ones that exist. `Catalogs` keeps the catalog of the last snapshot asked for,
with the provider's own model list (`RemoteModels`) laid in when there is one.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc

from codexctl.results import ProviderLimits
from codexd.config.schema import ConfigSnapshot
from codexd.events import EventHub
from codexd.limits.limiter import Limiter, budget_limits
from codexd.limits.redis import RedisWindow
from codexd.upstream.model_list import RemoteModels
from codexd.usage.catalog import Catalog


class Catalogs:
    def __init__(
        self, current: Callable[[], ConfigSnapshot], remote: RemoteModels | None = None
    ) -> None:
        self._current = current
        self._remote = remote
        self._catalog: tuple[ConfigSnapshot, int, Catalog] | None = None

    def catalog(self, snapshot: ConfigSnapshot | None = None) -> Catalog:
        snapshot = snapshot or self._current()
        remote = self._remote
        generation = remote.generation if remote is not None else 0
        cached = self._catalog
        if cached is None or cached[0] is not snapshot or cached[1] != generation:
            listed = remote.models if remote is not None else ()
            cached = self._catalog = (
                snapshot,
                generation,
                Catalog.for_snapshot(snapshot, listed),
            )
        return cached[2]

    async def refresh(self, snapshot: ConfigSnapshot, provider: str) -> None:
        """Ask for `provider`'s model list again when it is due; returns without waiting for
        the read, except the first one (see `RemoteModels`)."""
        if self._remote is not None:
            await self._remote.refresh(snapshot, provider)


class Limiters:
    """Every provider's limiter; `await tg.start(limiters.run)` runs them."""

    def __init__(self, events: EventHub) -> None:
        self.events = events
        self.limiters: dict[str, Limiter] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            for provider, limiter in self.limiters.items():
                tg.start_soon(limiter.run, name=f"limiter {provider}")
            self._tg = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    def limiter_for(self, provider: str, snapshot: ConfigSnapshot) -> Limiter:
        limiter = self.limiters.get(provider)
        if limiter is None:
            settings = snapshot.rate_limit(provider)
            backend = settings.backend
            limiter = Limiter(
                provider,
                budget_limits(settings),
                on_change=self._ratelimits_changed,
                watched=lambda: self.events.count("ratelimits") > 0,
                remote=RedisWindow(backend, provider) if backend else None,
            )
            self.limiters[provider] = limiter
            if self._tg is not None:
                self._tg.start_soon(limiter.run, name=f"limiter {provider}")
        return limiter

    def reconfigure(self, snapshot: ConfigSnapshot) -> None:
        """A reloaded config: each existing limiter takes its new limits."""
        for provider, limiter in self.limiters.items():
            limiter.reconfigure(budget_limits(snapshot.rate_limit(provider)))

    def _ratelimits_changed(self, snapshot: ProviderLimits) -> None:
        self.events.publish("ratelimits", "ratelimits/updated", snapshot)
