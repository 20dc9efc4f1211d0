"""sd_notify without libsystemd: one datagram to `$NOTIFY_SOCKET`.

No `NOTIFY_SOCKET` means no service manager is listening: every call is a no-op.
With `WatchdogSec=` systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`); the `watchdog` task then
sends `WATCHDOG=1` at half that interval, as sd_watchdog_enabled(3) recommends, for as long as
the event loop runs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final

import anyio

log = logging.getLogger("codexd.sdnotify")

# Sent once the config watcher is live (an edit saved from then on is seen by it). Not one of
# systemd's variables, which it ignores (sd_notify(3) allows any assignment); what waits for it
# is a harness that starts codexd and then edits its files (codexd.testing.daemon_process).
CONFIG_WATCHED: Final = "X_CODEXD_CONFIG_WATCHED=1"


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if addr.startswith("/"):
            self._address = addr
        elif addr.startswith("@"):
            self._address = "\0" + addr[1:]
        elif addr:
            log.warning("ignoring NOTIFY_SOCKET=%r: not an absolute or abstract path", addr)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        if self._address is None:
            return False
        payload = "\n".join(fields).encode()
        try:
            with socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            ) as s:
                s.connect(self._address)
                # Never block the event loop on a receiver that is not reading: drop instead.
                s.send(payload)
        except BlockingIOError:
            log.warning("sd_notify to %s dropped: its queue is full", self._address.lstrip("\0"))
            return False
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self._address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def config_watched(self) -> bool:
        return self.send(CONFIG_WATCHED)

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog_ping(self) -> bool:
        return self.send("WATCHDOG=1")


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between keep-alive pings, or None when no watchdog is asked of this process."""
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid:
        if not watchdog_pid.isdigit():
            log.warning("ignoring WATCHDOG_PID=%r: not a process id", watchdog_pid)
            return None
        if int(watchdog_pid) != (os.getpid() if pid is None else pid):
            return None
    if not raw.isdigit() or int(raw) == 0:
        log.warning("ignoring WATCHDOG_USEC=%r: not a positive number of microseconds", raw)
        return None
    return int(raw) / 2 / 1_000_000


def next_ping_deadline(last_ping: float, interval: float, now: float) -> float:
    """When the next ping is due: one interval after the last, or now if that is past (a loop
    that stalled pings at once rather than trying to catch up)."""
    return max(last_ping + interval, now)


async def watchdog(
    notifier: Notifier,
    env: Mapping[str, str] | None = None,
    *,
    clock: Callable[[], float] = anyio.current_time,
) -> None:
    """Ping systemd's watchdog until cancelled; returns at once when there is none."""
    interval = watchdog_interval(env)
    if interval is None or not notifier.enabled:
        return
    while True:
        notifier.watchdog_ping()
        sent = clock()
        await anyio.sleep_until(next_ping_deadline(sent, interval, clock()))
