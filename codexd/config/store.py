"""The snapshot in force, its generation, and reloads that swap only when valid.

`ConfigStore.reload()` builds the new snapshot off to the side with the same loader as start-up;
an invalid file leaves the old snapshot in force, records the located error for
`daemon/status.config.error`, tells subscribers (`config/invalid`) and logs it once per distinct
error. A valid file that changes the effective config bumps the generation and tells
subscribers (`config/reloaded`). Jobs hold the snapshot object they started with, so a swap never
touches running work.

`RESTART_KEYS` is the one list of keys a reload cannot apply: the store warns when one of them
differs from start-up, and the config doc marks them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import anyio.from_thread
import msgspec

from codexctl.results import ConfigRejected, ConfigReloaded
from codexd.config.load import ConfigError, load_config
from codexd.config.schema import ConfigSnapshot

log = logging.getLogger("codexd.config")

# The keys whose value the running daemon took at start-up: a reload validates them and the
# new snapshot carries them, but the part built from them keeps the old value until codexd
# restarts. Every other key applies on reload, to the jobs, connections and requests that
# begin after it. `*` stands for any id of a table.
RESTART_KEYS: Final = (
    "cli_auth_credentials_store",  # the credential store is opened once
    "forced_login_method",  # the auth session's choice of credential
    "codexd.auth_issuer",  # the OAuth client that refreshes tokens
    "codexd.event_loop",  # the loop the daemon runs on, chosen before it starts
    "codexd.rate_limits.*.backend",  # a provider's limiter, made on its first use
)


def _values(node: Any, parts: list[str], prefix: str) -> dict[str, Any]:
    """Every concrete dotted key matching `parts` below `node`, with its value."""
    if not parts:
        return {prefix: node}
    head, rest = parts[0], parts[1:]
    join = (prefix + ".") if prefix else ""
    if head == "*":
        items = node.items() if isinstance(node, dict) else ()
        found: dict[str, Any] = {}
        for key, child in sorted(items):
            found.update(_values(child, rest, join + key))
        return found
    child = node.get(head) if isinstance(node, dict) else getattr(node, head)
    return _values(child, rest, join + head)


def restart_pending(started: ConfigSnapshot, current: ConfigSnapshot) -> list[str]:
    """The keys of `RESTART_KEYS` (ids filled in) whose value in `current` differs from the
    one codexd started with."""
    changed: list[str] = []
    for key in RESTART_KEYS:
        before = _values(started, key.split("."), "")
        after = _values(current, key.split("."), "")
        changed += [
            k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)
        ]
    return changed


ConfigEvent = ConfigReloaded | ConfigRejected
Subscriber = Callable[[ConfigEvent], None]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one reload did: `error` is set when the file was invalid (nothing was swapped)."""

    generation: int
    changed: bool
    error: ConfigError | None = None


class ConfigStatus(msgspec.Struct, frozen=True):
    """`daemon/status.config` and the header of `config/read`."""

    path: str
    generation: int
    loaded_at: str
    error: str | None


def rfc3339(moment: datetime) -> str:
    """`2026-11-25T09:00:00.123Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


Loader = Callable[[], ConfigSnapshot]


class ConfigStore:
    """Holds the snapshot in force.

    Synchronous and cheap (two small files). Subscribers always run in the thread that made
    the store (the event loop's): they `send_nowait` into memory streams and set events,
    which is not safe from another thread. A `reload()` called from an anyio worker thread
    (`to_thread.run_sync(store.reload)`) hands them back to the loop and waits for them.
    """

    def __init__(
        self,
        snapshot: ConfigSnapshot,
        loader: Loader,
        *,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._snapshot = snapshot
        self._loader = loader
        self._now = now
        self._generation = 1
        self._loaded_at = rfc3339(now())
        self._error: ConfigError | None = None
        self._logged_error: str | None = None
        self._subscribers: list[Subscriber] = []
        self._home_thread = threading.get_ident()
        self._started = snapshot
        self._pending: list[str] = []

    @classmethod
    def open(
        cls,
        codex_home: str,
        env: Mapping[str, str] | None = None,
        *,
        now: Callable[[], datetime] = _utc_now,
    ) -> ConfigStore:
        """Load `codex_home` for start-up. Raises ConfigError (then `codexd run` exits 1)."""

        def loader() -> ConfigSnapshot:
            return load_config(codex_home, env)

        return cls(loader(), loader, now=now)

    @property
    def snapshot(self) -> ConfigSnapshot:
        return self._snapshot

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def loaded_at(self) -> str:
        return self._loaded_at

    @property
    def error(self) -> str | None:
        """The located message of the last reload, when it failed; None once one succeeds."""
        return self._error.message if self._error is not None else None

    @property
    def path(self) -> str:
        return self._snapshot.path

    @property
    def restart_pending(self) -> list[str]:
        """The keys of `RESTART_KEYS` changed since start-up, which wait for a restart."""
        return list(self._pending)

    def status(self) -> ConfigStatus:
        return ConfigStatus(
            path=self.path, generation=self._generation, loaded_at=self._loaded_at, error=self.error
        )

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback` with every ConfigReloaded / ConfigRejected; returns the unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def reload(self) -> ReloadOutcome:
        """Re-read the files; swap in the new snapshot only when it is valid."""
        try:
            candidate = self._loader()
        except ConfigError as exc:
            self._error = exc
            if exc.message != self._logged_error:
                log.warning("config invalid, keeping generation %d: %s", self._generation, exc)
                self._logged_error = exc.message
            self._publish(ConfigRejected(path=exc.file, error=exc.message))
            return ReloadOutcome(generation=self._generation, changed=False, error=exc)
        recovered = self._error is not None
        self._error = None
        self._logged_error = None
        changed = candidate != self._snapshot
        if changed:
            self._snapshot = candidate
            self._generation += 1
            self._loaded_at = rfc3339(self._now())
            log.info("config reloaded: generation %d", self._generation)
            pending = restart_pending(self._started, candidate)
            if pending and pending != self._pending:
                log.warning(
                    "config: %s changed since start-up and applies only after a restart of codexd",
                    ", ".join(pending),
                )
            self._pending = pending
        if changed or recovered:
            self._publish(ConfigReloaded(generation=self._generation, path=self.path))
        return ReloadOutcome(generation=self._generation, changed=changed)

    def _publish(self, event: ConfigEvent) -> None:
        if threading.get_ident() != self._home_thread:
            anyio.from_thread.run_sync(self._deliver, event)
        else:
            self._deliver(event)

    def _deliver(self, event: ConfigEvent) -> None:
        for callback in list(self._subscribers):
            callback(event)

    def __repr__(self) -> str:
        state = f"error: {self.error}" if self._error else "ok"
        return f"<ConfigStore generation={self._generation} {self.path} {state}>"
