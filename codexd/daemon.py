"""The composition root: builds the parts, owns the one task group, handles signals.

Start-up order matters: directories are checked, then the single-instance lock is taken,
and only then is the listener created (creating it unlinks a socket at the path).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import time
from dataclasses import dataclass

import anyio
import anyio.abc

from codexctl.protocol import PROTOCOL_VERSION
from codexd import __version__
from codexd.clock import rfc3339
from codexd.lock import InstanceLock
from codexd.paths import Paths, StartupError, check_codex_home, ensure_private_dir
from codexd.rpc.methods import TABLE, DaemonStatus
from codexd.rpc.server import RpcServer
from codexd.sdnotify import Notifier

log = logging.getLogger("codexd")

LISTEN_BACKLOG = 4096


@dataclass(frozen=True, slots=True)
class Settings:
    """The `[codexd]` values the running parts read (defaults from SPEC §5)."""

    max_message_bytes: int = 1 << 20
    max_connections: int = 256


class Daemon:
    def __init__(
        self,
        paths: Paths,
        *,
        settings: Settings | None = None,
        started_by: str = "manual",
        notifier: Notifier | None = None,
    ) -> None:
        self.paths = paths
        self.settings = settings or Settings()
        self.started_by = started_by
        self.notifier = notifier or Notifier()
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._shutdown = anyio.Event()
        self.server = RpcServer(
            self,
            TABLE,
            max_message_bytes=lambda: self.settings.max_message_bytes,
            max_connections=lambda: self.settings.max_connections,
        )

    # ------------------------------------------------------------------ state for RPC

    def status(self) -> DaemonStatus:
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
            jobs=None,
            config=None,
            account=None,
        )

    def request_shutdown(self) -> None:
        self._shutdown.set()

    # ------------------------------------------------------------------ lifecycle

    def prepare(self) -> None:
        """Every check that can refuse to start, before anything is created."""
        check_codex_home(self.paths)
        ensure_private_dir(self.paths.runtime_dir, "runtime directory")
        ensure_private_dir(self.paths.state_dir, "state directory")

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.prepare()
        lock = InstanceLock(self.paths.lock, self.paths.socket)
        lock.acquire()
        listener: anyio.abc.SocketListener | None = None
        socket_ino: int | None = None
        try:
            listener, socket_ino = await self._listen()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.server.serve, listener)
                await tg.start(self._signals, tg.cancel_scope)
                log.info(
                    "codexd %s serving on %s (pid %d)", __version__, self.paths.socket, os.getpid()
                )
                self.notifier.ready(status="serving")
                task_status.started()
                await self._shutdown.wait()
                self.notifier.stopping()
                log.info("shutting down")
                tg.cancel_scope.cancel()
        finally:
            if socket_ino is not None:
                _unlink_if_ours(self.paths.socket, socket_ino)
            lock.release()

    async def _listen(self) -> tuple[anyio.abc.SocketListener, int]:
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
                    log.info("SIGHUP: nothing to reload yet")
                    continue
                if self._shutdown.is_set():
                    log.warning("second %s: stopping now", signal.Signals(signum).name)
                    scope.cancel()
                    return
                log.info("%s: draining", signal.Signals(signum).name)
                self.request_shutdown()


def _unlink_if_ours(path: str, ino: int) -> None:
    """Remove the socket only if it is still the one we created."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode) and st.st_ino == ino:
        os.unlink(path)
