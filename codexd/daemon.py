"""The composition root: builds the parts inside `run()`, owns the one task group, handles
signals. Nothing imports this module but the entry point (cli.py).

Start-up order matters: directories and the config are checked (`Daemon.prepare`), then the
single-instance lock is taken, and only then is the listener created (creating it unlinks a
socket at the path). The front doors (rpc/, gateway/) get one typed `Services` object
(service/). Shutdown drains: no new jobs, running jobs get `drain_timeout_s`, the rest are
cancelled, the ledger is flushed, the socket removed.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc

from codexctl.protocol import GatewayStatus
from codexctl.results import ConfigRejected, ConfigReloaded
from codexd import __version__
from codexd.activation import ActivatedSockets
from codexd.auth.oauth import OAuthClient
from codexd.auth.session import AuthSession
from codexd.auth.stores import open_store
from codexd.config.load import ConfigError
from codexd.config.store import ConfigStore, ReloadOutcome
from codexd.config.watch import watch_config
from codexd.eventloop import running_loop_name
from codexd.events import EventHub
from codexd.gateway import GatewayListeners
from codexd.jobs import Job, JobLimits, Usage
from codexd.lock import InstanceLock
from codexd.paths import Paths, StartupError, check_codex_home
from codexd.rpc.methods import TABLE
from codexd.rpc.server import RpcServer
from codexd.sdnotify import Notifier, watchdog
from codexd.security.files import ensure_private_dir
from codexd.security.listeners import listen_private, unlink_if_ours
from codexd.service import (
    Accounts,
    Catalogs,
    Identity,
    JobService,
    Limiters,
    Services,
    Status,
    TokenFile,
)
from codexd.upstream.model_list import RemoteModels, chatgpt_models
from codexd.upstream.plan import PlanWatch
from codexd.upstream.runner import HttpClients, JobRunner
from codexd.usage.cost import cost_usd
from codexd.usage.ledger import Ledger, LedgerWriter

log = logging.getLogger("codexd")

LEDGER_CLOSE_TIMEOUT_S = 10.0
# How often the file watcher's thread looks up: it bounds how long stopping it takes.
WATCH_POLL_MS = 200
USAGE_RETENTION_INTERVAL_S = 86_400.0
FLUSH_TIMEOUT_S = 2.0
OAUTH_HTTP = "__oauth__"
PLAN_HTTP = "__plan_usage__"


class Daemon:
    """`Daemon.prepare(paths)` checks what can refuse to start; `run()` does the rest."""

    def __init__(
        self,
        paths: Paths,
        config: ConfigStore,
        *,
        env: Mapping[str, str],
        passed: ActivatedSockets,
        started_by: str,
        notifier: Notifier,
    ) -> None:
        self.paths = paths
        self.config = config
        self.env = env
        self.passed = passed
        self.identity = Identity(paths=paths, started_by=started_by)
        self.notifier = notifier
        self._shutdown = anyio.Event()
        self._gateway: GatewayListeners | None = None

    @classmethod
    def prepare(
        cls,
        paths: Paths,
        *,
        env: Mapping[str, str] | None = None,
        started_by: str | None = None,
        notifier: Notifier | None = None,
        passed: ActivatedSockets | None = None,
    ) -> Daemon:
        """Every check that can refuse to start, before anything is created."""
        env = os.environ if env is None else env
        passed = passed or ActivatedSockets(None, None, None)
        check_codex_home(paths)
        try:
            config = ConfigStore.open(paths.codex_home, env)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        ensure_private_dir(paths.runtime_dir, "runtime directory")
        ensure_private_dir(paths.state_dir, "state directory")
        return cls(
            paths,
            config,
            env=env,
            passed=passed,
            started_by=started_by or detect_started_by(passed, env),
            notifier=notifier or Notifier(),
        )

    def request_shutdown(self) -> None:
        self._shutdown.set()

    # ------------------------------------------------------------------ building

    async def _open_auth(self, http: HttpClients) -> AuthSession:
        snapshot = self.config.snapshot
        store = await open_store(snapshot.cli_auth_credentials_store, self.paths.codex_home)
        oauth = OAuthClient(http.get(OAUTH_HTTP), snapshot.codexd.auth_issuer, self.env)
        auth = AuthSession(
            codex_home=self.paths.codex_home,
            store=store,
            refresher=oauth.refresh,
            env=self.env,
            forced_login_method=_forced(snapshot.forced_login_method),
        )
        await auth.load()
        return auth

    def _build(
        self,
        auth: AuthSession,
        ledger: LedgerWriter,
        http: HttpClients,
        plan: PlanWatch,
        remote_models: RemoteModels,
    ) -> tuple[Services, RpcServer]:
        config = self.config
        events = EventHub()
        catalogs = Catalogs(lambda: config.snapshot, remote_models)
        limiters = Limiters(events)

        def price(job: Job, usage: Usage) -> tuple[float, bool]:
            catalog = catalogs.catalog(job.config)
            return cost_usd(usage, catalog.price_for(job.model), catalog.default_price)

        runner = JobRunner(
            auth=auth,
            limiter_for=limiters.limiter_for,
            http=http,
            price=price,
            env=self.env,
            plan=plan,
        )
        jobs = JobService(
            runner,
            limits=self._job_limits,
            credentials=auth.check_credentials,
            ledger=ledger,
            events=events,
            snapshot=lambda: config.snapshot,
            catalog=catalogs.catalog,
            profile=config.for_profile,
        )
        accounts = Accounts(
            session=auth,
            config=config,
            events=events,
            runner=runner,
            oauth_http=http.get(OAUTH_HTTP),
            codex_home=self.paths.codex_home,
            env=self.env,
        )

        def connections() -> int:
            return server.stats.connections

        def gateway() -> GatewayStatus | None:
            return self._gateway.status() if self._gateway is not None else None

        status = Status(
            self.identity,
            config=config,
            jobs=jobs.manager,
            session=auth,
            ledger=ledger,
            connections=connections,
            gateway=gateway,
        )

        async def reload_config() -> ReloadOutcome:
            self.notifier.reloading()
            try:
                outcome = await anyio.to_thread.run_sync(config.reload)
                if self._gateway is not None:  # answer once its listeners follow the config
                    await self._gateway.settled()
                return outcome
            finally:
                self.notifier.ready()

        services = Services(
            paths=self.paths,
            config=config,
            events=events,
            catalogs=catalogs,
            limiters=limiters,
            ledger=ledger,
            jobs=jobs,
            accounts=accounts,
            status=status,
            tokens=TokenFile(self.paths.state_dir),
            reload_config=reload_config,
            request_shutdown=self.request_shutdown,
            read_plan=runner.read_plan,
        )
        server = RpcServer(
            services,
            TABLE,
            max_message_bytes=lambda: config.snapshot.codexd.max_message_bytes,
            max_connections=lambda: config.snapshot.codexd.max_connections,
            idle_timeout=lambda: config.snapshot.codexd.connection_idle_timeout_s,
            waiting=services.waiting,
            on_close=services.disconnected,
        )
        return services, server

    def _job_limits(self) -> JobLimits:
        s = self.config.snapshot.codexd
        return JobLimits(
            max_queued_jobs=s.max_queued_jobs,
            job_retention_s=float(s.job_retention_s),
            max_job_log_events=s.max_job_log_events,
        )

    # ------------------------------------------------------------------ config

    def _reload_config(self, services: Services) -> None:
        self.notifier.reloading()
        try:
            self.config.reload()
        finally:
            self.notifier.ready(status=services.status.line())

    def _config_event(self, services: Services, event: ConfigReloaded | ConfigRejected) -> None:
        if isinstance(event, ConfigReloaded):
            snapshot = self.config.snapshot
            services.limiters.reconfigure(snapshot)
            logging.getLogger().setLevel(snapshot.codexd.log_level.upper())
            if self._gateway is not None:
                self._gateway.follow()
            services.events.publish("config", "config/reloaded", event)
        else:
            services.events.publish("config", "config/invalid", event)

    async def _watch_config(self, services: Services) -> None:
        async def changed() -> None:
            self._reload_config(services)

        armed = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._config_watched, armed)
            await watch_config(
                self.paths.codex_home, changed, ready=armed, rust_timeout_ms=WATCH_POLL_MS
            )

    async def _config_watched(self, armed: anyio.Event) -> None:
        """Say once that the watcher is live: an edit saved from now on reloads."""
        await armed.wait()
        log.info("config: watching %s for changes", self.paths.codex_home)
        self.notifier.config_watched()

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        lock = InstanceLock(self.paths.lock, self.paths.socket)
        lock.acquire()
        socket_ino: int | None = None
        http = HttpClients()
        ledger: LedgerWriter | None = None
        try:
            try:
                opened = Ledger.in_state_dir(self.paths.state_dir)
            except Exception as exc:
                raise StartupError(f"cannot open the usage ledger in {self.paths.state_dir}: {exc}")
            ledger = LedgerWriter(opened, caps=lambda: self.config.snapshot.codexd.budget)
            auth = await self._open_auth(http)
            plan = PlanWatch(lambda: http.transport(PLAN_HTTP))
            remote_models = RemoteModels(chatgpt_models(auth, http, self.env))
            services, server = self._build(auth, ledger, http, plan, remote_models)
            self.config.subscribe(lambda event: self._config_event(services, event))
            listener, socket_ino = await listen_private(
                self.paths.socket, adopted=self.passed.control
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(ledger.run, name="ledger writer")
                tg.start_soon(self._usage_retention, ledger, name="usage retention")
                await tg.start(services.jobs.manager.run)
                await tg.start(services.accounts.run)
                await tg.start(services.limiters.run)
                await tg.start(plan.run, name="plan usage")
                await tg.start(remote_models.run, name="remote model list")
                await tg.start(self._signals, services, tg.cancel_scope)
                tg.start_soon(watchdog, self.notifier, name="sd_notify watchdog")
                tg.start_soon(server.serve, listener, name="rpc server")
                self._gateway = GatewayListeners(services, self.passed.gateway)
                await tg.start(self._gateway.run, name="gateway")
                tg.start_soon(self._watch_config, services, name="config watcher")
                log.info(
                    "codexd %s serving on %s (pid %d, %s event loop)",
                    __version__,
                    self.paths.socket,
                    os.getpid(),
                    running_loop_name(),
                )
                self.notifier.ready(status=services.status.line())
                task_status.started()
                await self._shutdown.wait()
                await self._drain(services)
                await server.flush(FLUSH_TIMEOUT_S)
                tg.cancel_scope.cancel()
        finally:
            unlink_if_ours(self.paths.socket, socket_ino)
            with anyio.CancelScope(shield=True):
                await http.aclose()
                if ledger is not None:
                    with anyio.move_on_after(LEDGER_CLOSE_TIMEOUT_S):
                        await ledger.close()
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

    async def _drain(self, services: Services) -> None:
        self.notifier.stopping()
        mgr = services.jobs.manager
        mgr.stop_accepting()
        active = mgr.active()
        timeout = float(self.config.snapshot.codexd.drain_timeout_s)
        log.info("draining: %d job(s) running, waiting up to %.0fs", len(active), timeout)
        with anyio.move_on_after(timeout):
            for job in active:
                await job.finished.wait()
        for job in mgr.active():
            mgr.cancel(job)
        with anyio.move_on_after(5):
            for job in active:
                await job.finished.wait()
        with anyio.move_on_after(LEDGER_CLOSE_TIMEOUT_S):
            await services.ledger.flush()
        log.info("drained; stopping")

    async def _signals(
        self,
        services: Services,
        scope: anyio.CancelScope,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading the config")
                    self._reload_config(services)
                    continue
                if self._shutdown.is_set():
                    log.warning("second %s: stopping now", signal.Signals(signum).name)
                    scope.cancel()
                    return
                log.info("%s: draining", signal.Signals(signum).name)
                self.request_shutdown()


def detect_started_by(passed: ActivatedSockets, env: Mapping[str, str]) -> str:
    """`daemon/status.started_by`: socket_activation whenever a socket was passed in."""
    if passed.control is not None or passed.gateway is not None:
        return "socket_activation"
    if env.get("INVOCATION_ID"):
        return "systemd"
    if env.get("XPC_SERVICE_NAME", "0") not in ("0", "") and env.get("LAUNCH_JOB_LABEL", "x"):
        return "launchd"
    return "manual"


def _forced(method: str | None) -> Any:
    return {"chatgpt": "chatgpt", "api": "api"}.get(method or "")
