"""Fair waiting for a provider's budget, across clients; no I/O, time is an argument.

Policy: plain round-robin by job across client names. Each client has its own FIFO; the
clients form a rotation, and each turn serves the head job of the client whose turn it is,
which then goes to the back of the rotation. A client arriving with its first job joins at
the back. So a tool with 500 queued jobs and a tool with one: the one waits for at most one
of the other's jobs. Round-robin counts jobs, not tokens: a client of large jobs gets more
tokens per turn; we accept that for predictable positions (`job.queued {position}`).

Strict turns: when the job whose turn it is does not fit the budget, nothing behind it is
granted either, so a large job is never starved by a stream of small ones. Everything except
tokens (pause, concurrency, requests) blocks every job alike, so this costs little.

Unbounded by design: the one bound of waiting jobs is `[codexd] max_queued_jobs`, applied at
submit (`JobManager.create`). Every ticket here belongs to a job already taken — a new one, or
one back in line before a retry — and a taken job is never turned away while it runs.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable

from codexd.limits.budget import Admission, Budget

Ticket = Hashable


class FairQueue:
    __slots__ = ("_budget", "_clients", "_costs", "_name", "_owner")

    def __init__(self, budget: Budget, *, name: str = "") -> None:
        self._budget = budget
        self._name = name
        # Rotation order: the first client is the one whose turn it is.
        self._clients: OrderedDict[str, deque[Ticket]] = OrderedDict()
        self._owner: dict[Ticket, str] = {}
        self._costs: dict[Ticket, int] = {}

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, ticket: object) -> bool:
        return ticket in self._owner

    def __repr__(self) -> str:
        queued, clients = len(self._owner), len(self._clients)
        return f"<FairQueue {self._name!r}: {queued} queued, {clients} clients>"

    @property
    def budget(self) -> Budget:
        return self._budget

    def push(self, ticket: Ticket, client: str, cost: int) -> None:
        """Queue `ticket` behind its client's jobs."""
        if ticket in self._owner:
            raise ValueError(f"ticket {ticket!r} is already queued")
        self._clients.setdefault(client, deque()).append(ticket)
        self._owner[ticket] = client
        self._costs[ticket] = cost

    def remove(self, ticket: Ticket) -> bool:
        """Take a waiting ticket out (cancelled); False when it is not queued."""
        client = self._owner.pop(ticket, None)
        if client is None:
            return False
        del self._costs[ticket]
        line = self._clients[client]
        line.remove(ticket)
        if not line:
            del self._clients[client]
        return True

    def position(self, ticket: Ticket) -> int | None:
        """1-based place in the order `grant` would serve the waiting jobs; None if not queued."""
        client = self._owner.get(ticket)
        if client is None:
            return None
        line = self._clients[client]
        rank = line.index(ticket)
        ahead = rank
        seen_own = False
        for other, other_line in self._clients.items():
            if other == client:
                seen_own = True
                continue
            ahead += min(len(other_line), rank)
            if not seen_own and len(other_line) > rank:
                ahead += 1
        return ahead + 1

    def head(self) -> tuple[Ticket, int] | None:
        """The ticket whose turn it is, with its cost."""
        for line in self._clients.values():
            ticket = line[0]
            return ticket, self._costs[ticket]
        return None

    def check(self, now: float) -> Admission | None:
        """The budget's answer for the job whose turn it is; None when nobody waits."""
        head = self.head()
        return None if head is None else self._budget.can_admit(head[1], now)

    def grant(self, now: float, *, limit: int | None = None) -> list[Ticket]:
        """Admit waiting jobs in turn while the budget allows (at most `limit`); the returned
        tickets are admitted."""
        granted: list[Ticket] = []
        budget = self._budget
        clients = self._clients
        while clients and (limit is None or len(granted) < limit):
            client, line = next(iter(clients.items()))
            ticket = line[0]
            cost = self._costs[ticket]
            if not budget.can_admit(cost, now).ok:
                break
            budget.admit(ticket, cost, now)
            line.popleft()
            del self._owner[ticket], self._costs[ticket]
            if line:
                clients.move_to_end(client)
            else:
                del clients[client]
            granted.append(ticket)
        return granted

    def next_deadline(self, now: float) -> float | None:
        """When the job whose turn it is could be granted by time alone (None: nobody waits, or
        it waits for a release)."""
        decision = self.check(now)
        if decision is None or decision.ok:
            return None
        return decision.at
