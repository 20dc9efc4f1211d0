"""The application layer both front doors call (rpc/ and gateway/); it imports neither.

`Services` is what the composition root (daemon.py) hands them: job submission and
cancellation by owner, accounts, status, and the parts a handler reads directly (config,
catalog, limiters, ledger, topics).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from codexd.config.schema import ConfigSnapshot
from codexd.config.store import ConfigStore, ReloadOutcome
from codexd.events import EventHub
from codexd.jobs import Subscriber
from codexd.paths import Paths
from codexd.service.accounts import Accounts
from codexd.service.registry import Catalogs, Limiters
from codexd.service.status import Identity, Status
from codexd.service.submit import (
    Admission,
    InvalidSubmit,
    JobService,
    ResolvedJob,
    SubmitRequest,
    resolve,
    running_cost_usd,
)
from codexd.service.token import TokenFile
from codexd.usage.ledger import LedgerWriter


@dataclass(frozen=True, slots=True)
class Services:
    paths: Paths
    config: ConfigStore
    events: EventHub
    catalogs: Catalogs
    limiters: Limiters
    ledger: LedgerWriter
    jobs: JobService
    accounts: Accounts
    status: Status
    tokens: TokenFile  # the gateway's bearer token for TCP
    # Re-read config.toml now (the service manager hears of it); and drain and stop.
    reload_config: Callable[[], Awaitable[ReloadOutcome]]
    request_shutdown: Callable[[], None]
    # Before `ratelimits/read`: read a provider's ChatGPT plan windows when a read is due.
    read_plan: Callable[[str, ConfigSnapshot], Awaitable[None]]

    def waiting(self) -> set[object]:
        """Owners that wait for something: subscribers of running jobs and of topics,
        owners of logins in progress or of running jobs that end with them."""
        waiting: set[object] = set(self.events.subscribers())
        waiting.update(self.jobs.manager.live_subscribers())
        waiting.update(self.accounts.owners())
        waiting.update(self.jobs.owners())
        return waiting

    def disconnected(self, conn: Subscriber) -> None:
        """A connection went away: forget its subscriptions and cancel the running jobs it
        submitted with cancel-on-disconnect (`JobService.release`)."""
        self.jobs.manager.forget_subscriber(conn)
        self.events.forget(conn)
        self.jobs.release(conn)


__all__ = [
    "Accounts",
    "Admission",
    "Catalogs",
    "Identity",
    "InvalidSubmit",
    "JobService",
    "Limiters",
    "ResolvedJob",
    "Services",
    "Status",
    "SubmitRequest",
    "TokenFile",
    "resolve",
    "running_cost_usd",
]
