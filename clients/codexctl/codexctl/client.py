"""The blocking client of the codexd control socket (`codexctl.aio` has the asyncio one).

Both speak NDJSON JSON-RPC 2.0, raise `RpcError` with the daemon's kind for a
failed call and `DaemonUnreachable` when nothing answers at the socket, or (`UntrustedSocket`)
when the socket is not provably the user's own daemon (`codexctl.trust`, checked before a byte
is sent). Neither imports anything beyond msgspec and the standard library.
"""

from __future__ import annotations

import collections
import itertools
import socket
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from codexctl.errors import ConnectionLost
from codexctl.protocol import (
    ClientInfo,
    ErrorKind,
    ReplyEnvelope,
    Request,
    RpcError,
    resolve_socket_path,
)
from codexctl.trust import open_checked

# Replies can carry a whole job's output; the daemon bounds what it accepts, we bound what
# we buffer from it.
MAX_REPLY_BYTES: Final = 64 << 20
NOTIFICATION_BUFFER: Final = 10_000

_encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(ReplyEnvelope)


class Notification(msgspec.Struct, frozen=True):
    method: str
    params: Any


def _encode_request(rid: int | None, method: str, params: Any) -> bytes:
    req = Request(method=method, params=params if params is not None else msgspec.UNSET)
    if rid is not None:
        req.id = rid
    return _encoder.encode(req) + b"\n"


def _decode_params(raw: msgspec.Raw | msgspec.UnsetType) -> Any:
    return None if raw is msgspec.UNSET else msgspec.json.decode(raw)


def _protocol_error(detail: str) -> RpcError:
    return RpcError(ErrorKind.INTERNAL_ERROR, f"unexpected reply from codexd: {detail}")


class Client:
    """A blocking client. Not thread-safe: one call at a time per `Client`."""

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        timeout: float | None = 30.0,
        client: ClientInfo | None = None,
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        # A path named by the caller lets root talk to another user's daemon (codexctl.trust).
        self._explicit = bool(socket_path)
        self._timeout = timeout
        self._client_info = client
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self._pending: collections.deque[Notification] = collections.deque(
            maxlen=NOTIFICATION_BUFFER
        )

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._sock is not None:
            return
        self._sock = open_checked(self.socket_path, explicit=self._explicit, timeout=self._timeout)
        if self._client_info is not None:
            self.call("initialize", {"client": msgspec.to_builtins(self._client_info)})

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, method: str, params: Any = None) -> Any:
        """Send one request and return its result (plain JSON values)."""
        self.connect()
        assert self._sock is not None
        rid = next(self._ids)
        self._send(_encode_request(rid, method, params))
        while True:
            env = self._read_message()
            if env.id is msgspec.UNSET:
                if not isinstance(env.method, msgspec.UnsetType):
                    self._pending.append(Notification(env.method, _decode_params(env.params)))
                continue
            if env.id != rid and env.id is not None:
                continue  # a reply to an earlier, abandoned call
            if not isinstance(env.error, msgspec.UnsetType):
                raise RpcError.from_object(env.error)
            if isinstance(env.result, msgspec.UnsetType):
                raise _protocol_error("a reply with neither result nor error")
            return msgspec.json.decode(env.result)

    def notify(self, method: str, params: Any = None) -> None:
        self.connect()
        self._send(_encode_request(None, method, params))

    def fileno(self) -> int:
        """The connected socket's descriptor, for a caller that waits on it with others."""
        self.connect()
        assert self._sock is not None
        return self._sock.fileno()

    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close()
            raise ConnectionLost(self.socket_path) from None

    def next_notification(self, timeout: float | None = None) -> Notification | None:
        """The next server notification; None when `timeout` passes without one."""
        if self._pending:
            return self._pending.popleft()
        assert self._sock is not None, "not connected"
        self._sock.settimeout(timeout)
        try:
            while True:
                try:
                    env = self._read_message()
                except (TimeoutError, BlockingIOError):  # timeout=0 makes the socket non-blocking
                    return None
                if env.id is msgspec.UNSET and not isinstance(env.method, msgspec.UnsetType):
                    return Notification(env.method, _decode_params(env.params))
        finally:
            if self._sock is not None:
                self._sock.settimeout(self._timeout)

    def notifications(self) -> Iterator[Notification]:
        while True:
            n = self.next_notification(timeout=None)
            if n is None:  # pragma: no cover - timeout None never returns None
                return
            yield n

    def _read_message(self) -> ReplyEnvelope:
        assert self._sock is not None
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                if not line.strip():
                    continue
                try:
                    return _reply_decoder.decode(line)
                except msgspec.DecodeError as exc:
                    raise _protocol_error(str(exc)) from None
            if len(self._buf) > MAX_REPLY_BYTES:
                raise _protocol_error(f"a message over {MAX_REPLY_BYTES} bytes")
            try:
                chunk = self._sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.close()
                raise ConnectionLost(self.socket_path)
            self._buf += chunk
