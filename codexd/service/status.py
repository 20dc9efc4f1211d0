"""`daemon/status`: what the daemon is, how long it has run, and what it holds now."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from codexctl.protocol import (
    PROTOCOL_VERSION,
    AccountSummary,
    ConfigStatus,
    DaemonStatus,
    GatewayStatus,
    JobCounts,
)
from codexd import __version__
from codexd.auth.session import AuthSession
from codexd.clock import rfc3339
from codexd.config.store import ConfigStore
from codexd.jobs import JobManager
from codexd.paths import Paths
from codexd.usage.ledger import LedgerWriter


@dataclass(frozen=True, slots=True)
class Identity:
    """What the daemon was started as: fixed for its life."""

    paths: Paths
    started_by: str
    started_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)


class Status:
    def __init__(
        self,
        identity: Identity,
        *,
        config: ConfigStore,
        jobs: JobManager,
        session: AuthSession,
        ledger: LedgerWriter,
        connections: Callable[[], int],
        gateway: Callable[[], GatewayStatus | None] = lambda: None,
    ) -> None:
        self._identity = identity
        self._config = config
        self._jobs = jobs
        self._session = session
        self._ledger = ledger
        self._connections = connections
        self._gateway = gateway
        self._started_at = rfc3339(identity.started_at)  # fixed: formatted once

    async def status(self) -> DaemonStatus:
        """Read from memory: the budget's spend too, once the ledger writer has it (it reads
        the database again only after writing to it)."""
        st = self.now()
        caps = self._config.snapshot.codexd.budget
        if caps.daily_usd is not None or caps.monthly_usd is not None:
            st.budget = await self._ledger.budget_status(datetime.now().astimezone())
        return st

    def now(self) -> DaemonStatus:
        """Everything but the budget (which reads the ledger)."""
        me = self._identity
        queued, running, retained = self._jobs.counts()
        cfg = self._config.status()
        info = self._session.account_info()
        return DaemonStatus(
            version=__version__,
            protocol_version=PROTOCOL_VERSION,
            pid=os.getpid(),
            started_at=self._started_at,
            started_by=me.started_by,
            uptime_s=round(time.monotonic() - me.started_mono, 3),
            socket=me.paths.socket,
            codex_home=me.paths.codex_home,
            state_dir=me.paths.state_dir,
            connections=self._connections(),
            jobs=JobCounts(queued=queued, running=running, retained=retained),
            config=ConfigStatus(
                path=cfg.path, generation=cfg.generation, loaded_at=cfg.loaded_at, error=cfg.error
            ),
            account=AccountSummary(mode=info.mode, email=info.email, plan_type=info.plan_type),
            gateway=self._gateway(),
        )

    def line(self) -> str:
        """One line for the service manager (sd_notify STATUS=)."""
        queued, running, _ = self._jobs.counts()
        return f"{running} running, {queued} queued"
