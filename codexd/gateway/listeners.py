"""The gateway's listeners, following the config: started, stopped and moved on reload.

`GatewayListeners.run` serves for the daemon's whole life. At start and after every reload
(`follow`) it compares `[codexd.gateway] enabled` and `tcp` with what it listens on and
changes only what differs: `gateway.sock` is made or removed, the TCP listener is started,
stopped or moved (the new address is bound before the old one is closed, so a failed move
keeps the old one). Every change is logged. A stopped listener accepts no more connections;
the connections it accepted stay in this module's task group, so a request in flight (a
stream included) is answered in full, and the connection is closed after it; idle
kept-alive connections are closed at once.

A `gateway.sock` passed in by a service manager is never closed or removed: it is served for
the daemon's life, and while the gateway is off every request on it is answered with a 503
that says how to turn the gateway on (`Gateway.off`).

`status()` is `daemon/status.gateway`: null while off, else where it listens now.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import anyio.abc
import anyio.streams.stapled

from codexctl.protocol import GatewayStatus
from codexd.gateway.server import Gateway, Served, parse_tcp_address
from codexd.paths import StartupError
from codexd.security.listeners import LISTEN_BACKLOG, listen_private, unlink_if_ours

if TYPE_CHECKING:
    from codexd.service import Services

log = logging.getLogger("codexd.gateway")

# After a failed accept (out of file descriptors, say), before the next one.
ACCEPT_BACKOFF_S: Final = 0.1


@dataclass(eq=False)
class _Door:
    """One listener being served: `where` is its path or HOST:PORT."""

    where: str
    tcp: bool
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    closed: anyio.Event = field(default_factory=anyio.Event)
    connections: set[Served] = field(default_factory=set)

    def stop(self) -> None:
        """Accept no more; close idle connections now and busy ones after their request."""
        self.scope.cancel()
        for served in self.connections:
            served.close_when_idle()


class GatewayListeners:
    def __init__(self, services: Services, adopted: socket.socket | None = None) -> None:
        self.services = services
        self.adopted = adopted  # gateway.sock made by a service manager: never closed here
        self.gateway = Gateway(services)
        self._unix: _Door | None = None
        self._tcp: _Door | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._wanted = 0  # reloads asked for
        self._applied = 0  # reloads applied
        self._changed = anyio.Event()
        self._progress = anyio.Event()

    # ---------------------------------------------------------------- what clients see

    def status(self) -> GatewayStatus | None:
        """`daemon/status.gateway`: null when the gateway is off."""
        if self.gateway.off or self._unix is None:
            return None
        return GatewayStatus(unix=self._unix.where, tcp=self._tcp.where if self._tcp else None)

    def follow(self) -> None:
        """The config was reloaded: bring the listeners in line with it (soon; `settled`
        waits for it)."""
        self._wanted += 1
        self._changed.set()

    async def settled(self) -> None:
        """Return once every reload asked for so far has been applied."""
        target = self._wanted
        while self._applied < target:
            await self._progress.wait()

    # ---------------------------------------------------------------- the supervisor

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled. At start a listener that cannot be made is a StartupError;
        after a reload it is logged and the listeners stay as they were."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                if self.adopted is not None:
                    await self._open_unix()
                await self._apply(starting=True)
                task_status.started()
                while True:
                    await self._changed.wait()
                    self._changed = anyio.Event()
                    target = self._wanted
                    try:
                        await self._apply(starting=False)
                    finally:
                        self._applied = target
                        self._progress.set()
                        self._progress = anyio.Event()
            finally:
                for door in (self._unix, self._tcp):
                    if door is not None:
                        door.stop()
                tg.cancel_scope.cancel()

    async def _apply(self, *, starting: bool) -> None:
        settings = self.services.config.snapshot.codexd.gateway
        tcp = settings.tcp if settings.enabled else None
        was_off = self.gateway.off
        was_tcp = self._tcp.where if self._tcp is not None else None
        if settings.enabled and self._unix is None:
            try:
                await self._open_unix()
            except StartupError as exc:
                if starting:
                    raise
                log.error("gateway: %s; the gateway stays off", exc)
                return
        self.gateway.off = not settings.enabled
        if tcp != was_tcp:
            await self._move_tcp(was_tcp, tcp, starting=starting)
        if not settings.enabled and self._unix is not None and self.adopted is None:
            await self._close(self._unix)
            self._unix = None
        now_tcp = self._tcp.where if self._tcp is not None else None
        if settings.enabled and (was_off or starting):
            assert self._unix is not None
            log.info(
                "gateway serving on %s%s",
                self._unix.where,
                f" and http://{now_tcp}" if now_tcp else "",
            )
        elif not settings.enabled and not was_off:
            log.info("gateway stopped (it is off in the config)")
        elif now_tcp != was_tcp and not was_off:
            if now_tcp is None:
                log.info("gateway: stopped listening on http://%s", was_tcp)
            elif was_tcp is None:
                log.info("gateway: now also listening on http://%s", now_tcp)
            else:
                log.info("gateway: moved from http://%s to http://%s", was_tcp, now_tcp)

    async def _open_unix(self) -> None:
        path = self.services.paths.gateway_socket
        listener, ino = await listen_private(path, adopted=self.adopted)
        where = path
        if self.adopted is not None:
            name = self.adopted.getsockname()
            where = name if isinstance(name, str) and name else path
        self._unix = await self._start(listener, where, tcp=False, path=path, ino=ino)

    async def _move_tcp(self, old: str | None, new: str | None, *, starting: bool) -> None:
        door: _Door | None = None
        if new is not None:
            try:
                _token_ready(self.services)
                door = await self._start(await _listen_tcp(new), new, tcp=True)
            except StartupError as exc:
                if starting:
                    raise
                log.error("gateway: %s; %s", exc, _kept(old))
                return
        if self._tcp is not None:
            await self._close(self._tcp)
        self._tcp = door

    async def _start(
        self,
        listener: anyio.abc.Listener[Any],
        where: str,
        *,
        tcp: bool,
        path: str | None = None,
        ino: int | None = None,
    ) -> _Door:
        assert self._tg is not None
        door = _Door(where, tcp)
        self._tg.start_soon(self._accept, door, listener, path, ino)
        return door

    async def _close(self, door: _Door) -> None:
        door.stop()
        await door.closed.wait()

    async def _accept(
        self,
        door: _Door,
        listener: anyio.abc.Listener[Any],
        path: str | None,
        ino: int | None,
    ) -> None:
        # A TCP name such as localhost may stand for several addresses, one listener each.
        sockets = cast(
            "list[anyio.abc.SocketListener]",
            list(listener.listeners)
            if isinstance(listener, anyio.streams.stapled.MultiListener)
            else [listener],
        )
        try:
            with door.scope:
                async with listener, anyio.create_task_group() as tg:
                    for one in sockets:
                        tg.start_soon(self._accept_on, door, one)
        finally:
            if path is not None:
                unlink_if_ours(path, ino)
            door.closed.set()

    async def _accept_on(self, door: _Door, listener: anyio.abc.SocketListener) -> None:
        assert self._tg is not None
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                log.warning("gateway: accepting on %s failed: %s", door.where, exc)
                await anyio.sleep(ACCEPT_BACKOFF_S)
                continue
            self._tg.start_soon(self._connection, door, stream)

    async def _connection(self, door: _Door, stream: anyio.abc.SocketStream) -> None:
        served = Served()
        door.connections.add(served)
        try:
            with served.scope:
                if door.scope.cancel_called:
                    served.close_when_idle()
                await self.gateway.connection(stream, door.tcp, served)
        finally:
            door.connections.discard(served)


async def _listen_tcp(address: str) -> anyio.abc.Listener[anyio.abc.SocketStream]:
    host, port = parse_tcp_address(address)
    try:
        return await anyio.create_tcp_listener(
            local_host=host, local_port=port, backlog=LISTEN_BACKLOG, reuse_port=False
        )
    except OSError as exc:
        raise StartupError(
            f"cannot listen on [codexd.gateway] tcp = {address!r}: {exc.strerror}"
        ) from None


def _kept(old: str | None) -> str:
    return f"still listening on http://{old}" if old else "no TCP listener"


def _token_ready(services: Services) -> None:
    """TCP needs the bearer token: made now, or the reason it cannot be (as a StartupError,
    so a reload keeps the listeners it has)."""
    try:
        services.tokens.current()
    except OSError as exc:
        path = services.tokens.path
        reason = exc.strerror or exc
        raise StartupError(f"cannot read or create the gateway token {path}: {reason}") from exc


async def serve_gateway(
    services: Services,
    adopted: socket.socket | None = None,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the gateway as the config says until cancelled (tests; the daemon keeps its
    `GatewayListeners` to follow reloads and report status)."""
    await GatewayListeners(services, adopted).run(task_status=task_status)
