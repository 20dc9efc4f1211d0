"""The snapshot in force, its generation, and reloads that swap only when valid.

`ConfigStore.reload()` builds the new snapshot off to the side with the same loader as start-up;
an invalid file leaves the old snapshot in force, records the located error for
`daemon/status.config.error`, tells subscribers (`config/invalid`) and logs it once per distinct
error. A valid file that changes the effective config bumps the generation and tells
subscribers (`config/reloaded`). Jobs hold the snapshot object they started with, so a swap never
touches running work.

`RESTART_KEYS` is the one list of keys a reload cannot apply: the store warns when one of them
differs from start-up, and the config doc marks them.

Profiles: the snapshot in force carries the profile of config.toml's `profile` key. A request
that names another gets `for_profile(name)`: config.toml with that profile laid over it, built
on first use and kept in a bounded cache (`MAX_PROFILE_SNAPSHOTS`, least recently used out).
Each reload rebuilds the cached ones as well: a profile file that became invalid keeps its old
snapshot for its requests and is reported like config.toml (`config/invalid`, the log,
`daemon/status.config.error`), without failing the reload of config.toml; one that disappeared
is dropped. Such a snapshot takes `[codexd]` from the snapshot in force: the daemon's own
settings (limits, the gateway, budgets) are the daemon's, not a request's. The profile in force
is part of config.toml's load: when its file is invalid the whole reload is rejected.

A name that selects nothing (or whose file is invalid) is remembered too
(`MAX_PROFILE_REFUSALS`), so that repeated requests for it read no file and list no directory;
every reload forgets these answers, and the watcher reloads on any change of a config file in
`$CODEX_HOME`, a profile file created included.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import anyio.from_thread
import msgspec

from codexctl.results import ConfigRejected, ConfigReloaded
from codexd.config.load import ConfigError, ProfileNotFound, load_config
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

# The most snapshots of profiles that requests named (besides the one in force) kept at once.
MAX_PROFILE_SNAPSHOTS: Final = 16
# The most profile names remembered as refused (no such profile, or an invalid file).
MAX_PROFILE_REFUSALS: Final = 64


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
    """What one reload did: `error` is set when config.toml, codexd.toml or the profile file in
    force was invalid (nothing was swapped). A profile file that only requests name is not
    the reload's error: it is reported on its own and keeps its old snapshot."""

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
# The snapshot of a named profile (raises ConfigError, ProfileNotFound).
ProfileLoader = Callable[[str], ConfigSnapshot]


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
        profile_loader: ProfileLoader | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._snapshot = snapshot
        self._loader = loader
        self._profile_loader = profile_loader
        self._profiles: OrderedDict[str, ConfigSnapshot] = OrderedDict()
        # Cached profiles whose file became invalid (their old snapshot is kept), by name.
        self._profile_errors: dict[str, ConfigError] = {}
        # Names whose lookup failed, with the answer, until the next reload.
        self._refused: OrderedDict[str, ProfileNotFound | ConfigError] = OrderedDict()
        self._epoch = 0  # bumped by every reload: a lookup begun before it is not remembered
        self._now = now
        self._generation = 1
        self._loaded_at = rfc3339(now())
        # config.toml, codexd.toml or the profile in force, when the last reload failed
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

        def profile_loader(name: str) -> ConfigSnapshot:
            return load_config(codex_home, env, profile=name)

        return cls(loader(), loader, profile_loader=profile_loader, now=now)

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
        """The located message of a file whose previous version stays in force: config.toml's
        (codexd.toml's, the profile in force's) when the last reload failed, else that of a
        cached profile file that is invalid; None when every file in use is valid."""
        if self._error is not None:
            return self._error.message
        errors = self._profile_errors
        for name in list(self._profiles):
            if name in errors:
                return errors[name].message
        return None

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

    def for_profile(self, name: str) -> ConfigSnapshot:
        """The snapshot for a request naming profile `name`: the one in force when it is its
        profile, else config.toml with that profile laid over it (cached).

        Raises ProfileNotFound (neither a profile file nor a legacy table), ConfigError (its
        file is invalid).
        """
        if name == self._snapshot.profile:
            return self._snapshot
        cached = self._profiles.get(name)
        if cached is not None:
            self._profiles.move_to_end(name)
            return cached
        refused = self._refused.get(name)
        if refused is not None:
            self._refused.move_to_end(name)
            raise refused.with_traceback(None)  # not a traceback that grows with each raise
        if self._profile_loader is None:
            raise ProfileNotFound(name, None, sorted(self._snapshot.profiles))
        epoch = self._epoch
        try:
            loaded = self._profile_loader(name)
        except (ProfileNotFound, ConfigError) as exc:
            if epoch == self._epoch:
                self._refused[name] = exc
                while len(self._refused) > MAX_PROFILE_REFUSALS:
                    self._refused.popitem(last=False)
            raise
        snapshot = self._with_daemon_settings(loaded, self._snapshot)
        self._profiles[name] = snapshot
        while len(self._profiles) > MAX_PROFILE_SNAPSHOTS:
            self._profiles.popitem(last=False)
        return snapshot

    @property
    def cached_profiles(self) -> list[str]:
        """The profiles that requests named and whose snapshots are kept, oldest use first."""
        return list(self._profiles)

    @staticmethod
    def _with_daemon_settings(snapshot: ConfigSnapshot, in_force: ConfigSnapshot) -> ConfigSnapshot:
        return msgspec.structs.replace(snapshot, codexd=in_force.codexd)

    def _reload_profiles(
        self, in_force: ConfigSnapshot
    ) -> tuple[OrderedDict[str, ConfigSnapshot], dict[str, ConfigError]]:
        """The cached profiles rebuilt: an invalid one keeps its snapshot (with the daemon's
        settings of `in_force`) and its error is returned, a vanished one is dropped."""
        rebuilt: OrderedDict[str, ConfigSnapshot] = OrderedDict()
        errors: dict[str, ConfigError] = {}
        # A copy taken at once: a reload may run in a worker thread while the event loop's
        # `for_profile` adds to the cache (what it adds meanwhile is simply built again).
        for name, old in list(self._profiles.items()):
            if name == in_force.profile or self._profile_loader is None:
                continue
            try:
                fresh = self._profile_loader(name)
            except ProfileNotFound:
                continue
            except ConfigError as exc:
                errors[name] = exc
                fresh = old
            rebuilt[name] = self._with_daemon_settings(fresh, in_force)
        return rebuilt, errors

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback` with every ConfigReloaded / ConfigRejected; returns the unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def reload(self) -> ReloadOutcome:
        """Re-read the files; swap in the new snapshot only when it is valid.

        config.toml, codexd.toml and the profile in force are one load: one of them invalid
        rejects the reload (`error`). A cached profile that became invalid keeps its old
        snapshot and is reported (once per distinct error), and the reload goes on."""
        self._epoch += 1
        self._refused = OrderedDict()  # a file may have appeared or been mended: ask again
        try:
            candidate = self._loader()
        except ConfigError as exc:
            return self._rejected(exc)
        profiles, profile_errors = self._reload_profiles(candidate)
        reported = self._profile_errors
        had_error = self.error is not None
        changed = candidate != self._snapshot or profiles != self._profiles
        self._profiles = profiles
        self._profile_errors = profile_errors
        self._error = None
        self._logged_error = None
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
        if changed or (had_error and self.error is None):
            self._publish(ConfigReloaded(generation=self._generation, path=self.path))
        for name, invalid in profile_errors.items():
            if reported.get(name) != invalid:
                log.warning(
                    "profile %s invalid, its requests keep its previous config: %s", name, invalid
                )
                self._publish(ConfigRejected(path=invalid.file, error=invalid.message))
        return ReloadOutcome(generation=self._generation, changed=changed)

    def _rejected(self, exc: ConfigError) -> ReloadOutcome:
        """An invalid config.toml, codexd.toml or profile file in force: recorded for
        `daemon/status`, logged once, told to subscribers; what was in force stays."""
        self._error = exc
        if exc.message != self._logged_error:
            log.warning("config invalid, keeping generation %d: %s", self._generation, exc)
            self._logged_error = exc.message
        self._publish(ConfigRejected(path=exc.file, error=exc.message))
        return ReloadOutcome(generation=self._generation, changed=False, error=exc)

    def _publish(self, event: ConfigEvent) -> None:
        if threading.get_ident() != self._home_thread:
            anyio.from_thread.run_sync(self._deliver, event)
        else:
            self._deliver(event)

    def _deliver(self, event: ConfigEvent) -> None:
        for callback in list(self._subscribers):
            callback(event)

    def __repr__(self) -> str:
        error = self.error
        state = f"error: {error}" if error is not None else "ok"
        return f"<ConfigStore generation={self._generation} {self.path} {state}>"
