"""The composition root: builds the parts, owns the one task group, handles signals.

Start-up order matters: directories and the config are checked, then the single-instance
lock is taken, and only then is the listener created (creating it unlinks a socket at the
path). Shutdown drains: no new jobs, running jobs get `drain_timeout_s`, the rest are
cancelled, the ledger is flushed, the socket removed.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import stat
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio
import anyio.abc
import httpx

from codexctl.protocol import PROTOCOL_VERSION, ErrorKind, RpcError
from codexd import __version__
from codexd.activation import ActivatedSockets
from codexd.auth.oauth import OAuthClient
from codexd.auth.session import AuthSession
from codexd.auth.stores import open_store
from codexd.clock import rfc3339
from codexd.config.load import ConfigError
from codexd.config.schema import ConfigSnapshot
from codexd.config.store import ConfigInvalid, ConfigReloaded, ConfigStore
from codexd.config.watch import watch_config
from codexd.events import EventHub
from codexd.gateway import serve_gateway
from codexd.jobs import Job, JobLimits, JobManager, JobState, Usage
from codexd.limits.limiter import Limiter, ProviderLimits, budget_limits
from codexd.limits.redis import RedisWindow
from codexd.lock import InstanceLock
from codexd.paths import Paths, StartupError, check_codex_home, ensure_private_dir
from codexd.rpc.account_methods import Accounts
from codexd.rpc.methods import TABLE, AccountSummary, ConfigStatus, DaemonStatus, JobCounts
from codexd.rpc.server import Connection, RpcServer
from codexd.sdnotify import Notifier, watchdog
from codexd.upstream.runner import HttpClients, JobRunner
from codexd.usage import budget as usage_budget
from codexd.usage.catalog import Catalog
from codexd.usage.cost import cost_usd, estimate_cost_usd
from codexd.usage.ledger import Ledger, LedgerWriter, UsageRecord

log = logging.getLogger("codexd")

LISTEN_BACKLOG = 4096
LEDGER_CLOSE_TIMEOUT_S = 10.0
# How often the file watcher's thread looks up: it bounds how long stopping it takes.
WATCH_POLL_MS = 200
USAGE_RETENTION_INTERVAL_S = 86_400.0
FLUSH_TIMEOUT_S = 2.0


class Daemon:
    def __init__(
        self,
        paths: Paths,
        *,
        env: Mapping[str, str] | None = None,
        started_by: str | None = None,
        notifier: Notifier | None = None,
        passed: ActivatedSockets | None = None,
    ) -> None:
        self.paths = paths
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.passed = passed or ActivatedSockets(None, None, None)
        self.started_by = started_by or detect_started_by(self.passed, self.env)
        self.notifier = notifier or Notifier()
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._shutdown = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.config: ConfigStore = None  # type: ignore[assignment]  # set by prepare()
        self.events = EventHub()
        self.http = HttpClients()
        self.limiters: dict[str, Limiter] = {}
        self._catalog: tuple[ConfigSnapshot, Catalog] | None = None
        self.auth: AuthSession = None  # type: ignore[assignment]  # set by run()
        self.accounts = Accounts(self)
        self.ledger: LedgerWriter | None = None
        self.runner = self._make_runner()
        self.jobs = JobManager(
            self.runner,
            limits=self._job_limits,
            on_created=self._job_created,
            on_finishing=self._job_finishing,
            on_finished=self._job_finished,
        )
        self.server = RpcServer(
            self,
            TABLE,
            max_message_bytes=lambda: self.config.snapshot.codexd.max_message_bytes,
            max_connections=lambda: self.config.snapshot.codexd.max_connections,
            idle_timeout=lambda: self.config.snapshot.codexd.connection_idle_timeout_s,
            waiting=self._waiting_connections,
            on_close=self._connection_closed,
        )

    # ------------------------------------------------------------------ parts

    def _make_runner(self) -> JobRunner:
        return JobRunner(
            auth=_LazyAuth(self),
            limiter_for=self.limiter_for,
            http=self.http,
            price=self._price,
            env=self.env,
        )

    def _job_limits(self) -> JobLimits:
        s = self.config.snapshot.codexd
        return JobLimits(
            max_queued_jobs=s.max_queued_jobs,
            job_retention_s=float(s.job_retention_s),
            max_job_log_events=s.max_job_log_events,
        )

    def catalog(self, snapshot: ConfigSnapshot | None = None) -> Catalog:
        snapshot = snapshot or self.config.snapshot
        cached = self._catalog
        if cached is None or cached[0] is not snapshot:
            cached = self._catalog = (snapshot, Catalog.for_snapshot(snapshot))
        return cached[1]

    def limiter_for(self, provider: str, snapshot: ConfigSnapshot) -> Limiter:
        limiter = self.limiters.get(provider)
        if limiter is None:
            settings = snapshot.rate_limit(provider)
            limits = budget_limits(settings)
            backend = settings.backend
            limiter = Limiter(
                provider,
                limits,
                on_change=self._ratelimits_changed,
                watched=lambda: self.events.count("ratelimits") > 0,
                remote=RedisWindow(backend, provider) if backend else None,
            )
            self.limiters[provider] = limiter
            if self._tg is not None:
                self._tg.start_soon(limiter.run, name=f"limiter {provider}")
        return limiter

    def _ratelimits_changed(self, snapshot: ProviderLimits) -> None:
        self.events.publish("ratelimits", "ratelimits/updated", snapshot)

    def _price(self, job: Job, usage: Usage) -> tuple[float, bool]:
        catalog = self.catalog(job.config)
        return cost_usd(usage, catalog.price_for(job.model), catalog.default_price)

    # ------------------------------------------------------------------ job hooks

    def _job_created(self, job: Job) -> None:
        if self.events.count("jobs"):  # a job's view is dear: built only when someone listens
            self.events.publish("jobs", "job/created", {"job": job.view(with_output=False)})

    async def _job_finishing(self, job: Job, state: JobState, finished_at: float) -> None:
        """SPEC §7: a started job's ledger row is committed before its terminal event goes
        out (the job manager awaits this first)."""
        if self.ledger is None or job.started_at is None:
            return
        usage = job.usage or Usage()
        await self.ledger.commit(
            UsageRecord(
                job_id=job.id,
                finished_at=finished_at,
                client=job.client,
                provider=job.provider,
                model=job.model,
                api=job.api,
                status=state.value,  # type: ignore[arg-type]
                attempts=job.attempts,
                input_tokens=usage.input_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                output_tokens=usage.output_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                cost_usd=job.cost_usd or 0.0,
                estimated=job.cost_estimated,
            )
        )

    def _job_finished(self, job: Job) -> None:
        if job.cancel_with is not None:
            job.cancel_with.jobs_to_cancel.discard(job)
            job.cancel_with = None
        if self.events.count("jobs"):
            self.events.publish("jobs", "job/finished", {"job": job.view(with_output=False)})

    async def check_submit(self, client: str, prep: dict[str, Any]) -> None:
        """Submit-time refusals (SPEC §4): no credentials at all, a budget cap."""
        snapshot: ConfigSnapshot = prep["config"]
        choice = self.auth_session()._choose(snapshot.provider_ref(prep["provider"]))
        if isinstance(choice, RpcError):
            raise choice
        caps = snapshot.codexd.budget
        if (caps.daily_usd is None and caps.monthly_usd is None) or self.ledger is None:
            return
        catalog = self.catalog(snapshot)
        price = catalog.price_for(prep["model"]) or catalog.default_price
        estimate = estimate_cost_usd(prep["request"].estimated_tokens, price)
        now = datetime.now().astimezone()
        day_start, day_end = usage_budget.day_bounds(now)
        month_start, month_end = usage_budget.month_bounds(now)
        today = await self.ledger.spend(day_start.timestamp(), day_end.timestamp())
        month = await self.ledger.spend(month_start.timestamp(), month_end.timestamp())
        running = sum(
            estimate_cost_usd(j.request.estimated_tokens, price) for j in self.jobs.active()
        )
        exceeded = usage_budget.check(estimate, today + running, month + running, caps, now=now)
        if exceeded is not None:
            raise exceeded.to_error()

    async def logout(self) -> bool:
        session = self.auth_session()
        oauth = OAuthClient(self._oauth_http(), self.config.snapshot.codexd.auth_issuer, self.env)

        async def revoke(tokens: Any) -> bool:
            return await oauth.revoke(
                refresh_token=tokens.refresh_token, access_token=tokens.access_token
            )

        revoked = await session.logout(revoke)
        self._account_changed()
        return revoked

    def _account_changed(self) -> None:
        if self.auth is not None:
            info = self.auth.account_info()
            self.events.publish(
                "account",
                "account/updated",
                {"mode": info.mode, "email": info.email, "plan_type": info.plan_type},
            )

    def auth_session(self) -> AuthSession:
        if self.auth is None:
            raise RpcError(ErrorKind.OVERLOADED, "codexd is still starting: retry in a moment")
        return self.auth

    # ------------------------------------------------------------------ state for RPC

    def status(self) -> DaemonStatus:
        queued, running, retained = self.jobs.counts()
        cfg = self.config.status()
        account = None
        if self.auth is not None:
            info = self.auth.account_info()
            account = AccountSummary(mode=info.mode, email=info.email, plan_type=info.plan_type)
        return DaemonStatus(
            version=__version__,
            protocol_version=PROTOCOL_VERSION,
            pid=os.getpid(),
            started_at=rfc3339(self.started_at),
            started_by=self.started_by,
            uptime_s=round(time.monotonic() - self._started_mono, 3),
            socket=self.paths.socket,
            codex_home=self.paths.codex_home,
            state_dir=self.paths.state_dir,
            connections=self.server.stats.connections,
            jobs=JobCounts(queued=queued, running=running, retained=retained),
            config=ConfigStatus(
                path=cfg.path, generation=cfg.generation, loaded_at=cfg.loaded_at, error=cfg.error
            ),
            account=account,
        )

    def request_shutdown(self) -> None:
        self._shutdown.set()

    def _waiting_connections(self) -> set[object]:
        """Connections that wait for notifications: never closed as idle."""
        waiting: set[object] = set(self.events.subscribers())
        waiting.update(self.jobs.live_subscribers())
        waiting.update(login.owner for login in self.accounts.logins.active.values())
        return waiting

    def _connection_closed(self, conn: Connection) -> None:
        self.jobs.forget_subscriber(conn)
        self.events.forget(conn)
        for job in list(conn.jobs_to_cancel):
            self.jobs.cancel(job)

    # ------------------------------------------------------------------ config

    def reload_config(self) -> None:
        self.notifier.reloading()
        try:
            self.config.reload()
        finally:
            self.notifier.ready(status=self._status_line())

    def _config_event(self, event: ConfigReloaded | ConfigInvalid) -> None:
        if isinstance(event, ConfigReloaded):
            snapshot = self.config.snapshot
            for provider, limiter in self.limiters.items():
                settings = snapshot.rate_limit(provider)
                limiter.reconfigure(budget_limits(settings))
            logging.getLogger().setLevel(snapshot.codexd.log_level.upper())
            self.events.publish("config", "config/reloaded", event)
        else:
            self.events.publish("config", "config/invalid", event)

    async def _watch_config(self) -> None:
        async def changed() -> None:
            self.reload_config()

        await watch_config(self.paths.codex_home, changed, rust_timeout_ms=WATCH_POLL_MS)

    # ------------------------------------------------------------------ lifecycle

    def prepare(self) -> None:
        """Every check that can refuse to start, before anything is created."""
        check_codex_home(self.paths)
        try:
            self.config = ConfigStore.open(self.paths.codex_home, self.env)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        self.config.subscribe(self._config_event)
        ensure_private_dir(self.paths.runtime_dir, "runtime directory")
        ensure_private_dir(self.paths.state_dir, "state directory")

    async def _open_auth(self) -> None:
        snapshot = self.config.snapshot
        store = await open_store(snapshot.cli_auth_credentials_store, self.paths.codex_home)
        oauth = OAuthClient(self._oauth_http(), snapshot.codexd.auth_issuer, self.env)
        self.auth = AuthSession(
            codex_home=self.paths.codex_home,
            store=store,
            refresher=oauth.refresh,
            env=self.env,
            forced_login_method=_forced(snapshot.forced_login_method),
        )
        await self.auth.load()

    def _oauth_http(self) -> httpx.AsyncClient:
        return self.http.get("__oauth__")

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if self.config is None:
            self.prepare()
        lock = InstanceLock(self.paths.lock, self.paths.socket)
        lock.acquire()
        listener: anyio.abc.SocketListener | None = None
        socket_ino: int | None = None
        try:
            try:
                ledger = Ledger.in_state_dir(self.paths.state_dir)
            except Exception as exc:
                raise StartupError(f"cannot open the usage ledger in {self.paths.state_dir}: {exc}")
            self.ledger = LedgerWriter(ledger, caps=lambda: self.config.snapshot.codexd.budget)
            await self._open_auth()
            listener, socket_ino = await self._listen()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self.ledger.run, name="ledger writer")
                tg.start_soon(self._usage_retention, self.ledger, name="usage retention")
                await tg.start(self.jobs.run)
                await tg.start(self.accounts.run)
                for limiter in self.limiters.values():
                    tg.start_soon(limiter.run)
                await tg.start(self._signals, tg.cancel_scope)
                tg.start_soon(watchdog, self.notifier, name="sd_notify watchdog")
                tg.start_soon(self.server.serve, listener, name="rpc server")
                if self.config.snapshot.codexd.gateway.enabled:
                    await tg.start(serve_gateway, self)
                tg.start_soon(self._watch_config, name="config watcher")
                log.info(
                    "codexd %s serving on %s (pid %d)", __version__, self.paths.socket, os.getpid()
                )
                self.notifier.ready(status=self._status_line())
                task_status.started()
                await self._shutdown.wait()
                await self._drain()
                await self.server.flush(FLUSH_TIMEOUT_S)
                tg.cancel_scope.cancel()
        finally:
            if socket_ino is not None and self.passed.control is None:
                _unlink_if_ours(self.paths.socket, socket_ino)
            with anyio.CancelScope(shield=True):
                await self.http.aclose()
                if self.ledger is not None:
                    with anyio.move_on_after(LEDGER_CLOSE_TIMEOUT_S):
                        await self.ledger.close()
            lock.release()

    async def _usage_retention(self, ledger: LedgerWriter) -> None:
        """Fold rows past `usage_retention_days` into daily totals: at start, then daily."""
        while True:
            days = self.config.snapshot.codexd.usage_retention_days
            try:
                folded = await ledger.compact_expired(time.time(), days)
            except sqlite3.Error as exc:
                log.warning("usage ledger: retention compaction failed (again in a day): %s", exc)
            else:
                if folded:
                    log.info("usage ledger: %d row(s) older than %d days folded", folded, days)
            await anyio.sleep(USAGE_RETENTION_INTERVAL_S)

    async def _drain(self) -> None:
        self.notifier.stopping()
        self.jobs.stop_accepting()
        active = self.jobs.active()
        timeout = float(self.config.snapshot.codexd.drain_timeout_s)
        log.info("draining: %d job(s) running, waiting up to %.0fs", len(active), timeout)
        with anyio.move_on_after(timeout):
            for job in active:
                await job.finished.wait()
        for job in self.jobs.active():
            self.jobs.cancel(job)
        with anyio.move_on_after(5):
            for job in active:
                await job.finished.wait()
        if self.ledger is not None:
            with anyio.move_on_after(LEDGER_CLOSE_TIMEOUT_S):
                await self.ledger.flush()
        log.info("drained; stopping")

    def _status_line(self) -> str:
        queued, running, _ = self.jobs.counts()
        return f"{running} running, {queued} queued"

    async def _listen(self) -> tuple[anyio.abc.SocketListener, int | None]:
        if self.passed.control is not None:
            # A service manager made the socket and owns its file: adopt it, never unlink it.
            listener = await anyio.abc.SocketListener.from_socket(self.passed.control)
            return listener, None
        old_umask = os.umask(0o177)
        try:
            listener = await anyio.create_unix_listener(
                self.paths.socket, mode=0o600, backlog=LISTEN_BACKLOG
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on {self.paths.socket}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        return listener, os.lstat(self.paths.socket).st_ino

    async def _signals(
        self,
        scope: anyio.CancelScope,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading the config")
                    self.reload_config()
                    continue
                if self._shutdown.is_set():
                    log.warning("second %s: stopping now", signal.Signals(signum).name)
                    scope.cancel()
                    return
                log.info("%s: draining", signal.Signals(signum).name)
                self.request_shutdown()


class _LazyAuth:
    """The runner's view of the auth session, which exists only once `run()` opened it."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    async def credentials(self, provider: Any) -> Any:
        return await self._daemon.auth_session().credentials(provider)

    async def refresh(self, reason: Any = "unauthorized_recovery", *, stale: Any = None) -> Any:
        return await self._daemon.auth_session().refresh(reason, stale=stale)

    def rejected(self, credentials: Any, provider: Any, status: str) -> str:
        return self._daemon.auth_session().rejected(credentials, provider, status)


def detect_started_by(passed: ActivatedSockets, env: Mapping[str, str]) -> str:
    """SPEC §4 `daemon/status.started_by`: socket_activation whenever a socket was passed in."""
    if passed.control is not None or passed.gateway is not None:
        return "socket_activation"
    if env.get("INVOCATION_ID"):
        return "systemd"
    if env.get("XPC_SERVICE_NAME", "0") not in ("0", "") and env.get("LAUNCH_JOB_LABEL", "x"):
        return "launchd"
    return "manual"


def _forced(method: str | None) -> Any:
    return {"chatgpt": "chatgpt", "api": "api"}.get(method or "")


def _unlink_if_ours(path: str, ino: int) -> None:
    """Remove the socket only if it is still the one we created."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode) and st.st_ino == ino:
        os.unlink(path)
