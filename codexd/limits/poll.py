"""When a remote read may start: at most once per interval, on demand (no I/O, no clock).

One scheduler for every periodic read of the ChatGPT backend: the plan's usage windows
(`upstream/plan.py`, every `limits.plan.POLL_INTERVAL_S`) and Codex's model list
(`upstream/model_list.py`, every `REMOTE_MODELS_TTL_S`). A read counts when it starts, so a
failed one waits as long as a good one before the next try.
"""

from __future__ import annotations


class PollSchedule:
    """When a read may start: at most once per `interval_s` (monotonic time).

    `due(now)` says whether a read on demand may start; `wanted_since(t)` whether a read is
    still owed for something that happened at `t` (for the plan: a job that ended in
    `usage_limit_reached`): a read that started at or after `t` answers it, so a burst of such
    events costs one read.
    """

    __slots__ = ("_interval_s", "_last")

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._interval_s = interval_s
        self._last: float | None = None

    @property
    def last_started(self) -> float | None:
        return self._last

    def due(self, now: float) -> bool:
        return self._last is None or now - self._last >= self._interval_s

    def wanted_since(self, when: float) -> bool:
        return self._last is None or self._last < when

    def started(self, now: float) -> None:
        self._last = now

    def __repr__(self) -> str:
        return f"<PollSchedule every {self._interval_s:g}s, last={self._last}>"
