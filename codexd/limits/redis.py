"""A provider's rolling window kept in Redis, so several daemons share one organisation's limits.

`backend = "redis://[user:password@]host:port/db"` (also `rediss://` for TLS and
`unix:///path/to/redis.sock?db=N`). Each admission is ONE atomic Lua script (one round trip):
it drops what the window has passed, checks the shared pause, the request starts (a sorted
set, at most `requests_per_minute` members) and the tokens (a hash of one-second buckets, at
most ~62 fields), and records the admission only when all fit; otherwise it answers how long
to wait. Every key carries an expiry a little past the window, so an abandoned budget
vanishes by itself. Tokens are recorded in the bucket of the second that ends at or after the
admission, so they expire up to a second later than they could, never earlier.

Time is the Redis server's (`TIME` inside the script), one clock for every machine; tests may
inject a wall clock instead. Concurrency, server caps learned from headers and the upstream
view stay local to each daemon: they describe this daemon's connections.

The client is a minimal RESP2 implementation on anyio sockets (no dependency): one
connection, one command at a time, bounded replies, a timeout on every call. Any failure
closes the connection and raises `RedisUnavailable`; the `Limiter` then falls back to its
local budget and retries later.
"""

from __future__ import annotations

import hashlib
import math
import os
import ssl
from collections.abc import Callable, Sequence
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.abc
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from codexd.limits.budget import BudgetLimits

DEFAULT_PORT: Final = 6379
MAX_LINE: Final = 64 * 1024
MAX_BULK: Final = 1 << 20
MAX_ARRAY: Final = 4096
MAX_DEPTH: Final = 4
DEFAULT_TIMEOUT_S: Final = 1.0
KEY_PREFIX: Final = "codexd:rl"

Reply = None | int | bytes | list["Reply"]


class RedisUnavailable(Exception):
    """The server cannot be reached or answered nonsense; use the local budget."""


class RedisReplyError(Exception):
    """The server answered a command with an error (`-ERR ...`)."""


class RedisUrl(msgspec.Struct, frozen=True):
    host: str | None
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    tls: bool

    @property
    def display(self) -> str:
        """The address without credentials, for logs and `ratelimits/read`."""
        if self.path is not None:
            return f"unix://{self.path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisUrl:
    """A `redis://`, `rediss://` or `unix://` URL → its parts; ValueError says what is wrong."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// Redis URL needs a socket path, e.g. unix:///run/redis.sock")
        db_text = query.get("db", ["0"])[0]
        host, port, path = None, 0, parts.path
    elif parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError("a redis:// URL needs a host, e.g. redis://127.0.0.1:6379/0")
        db_text = parts.path.lstrip("/") or query.get("db", ["0"])[0]
        host, port, path = parts.hostname, parts.port or DEFAULT_PORT, None
    else:
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    if not db_text.isdigit():
        raise ValueError(f"the Redis database must be a number, got {db_text!r}")
    return RedisUrl(
        host=host,
        port=port,
        path=path,
        db=int(db_text),
        username=username,
        password=password,
        tls=parts.scheme == "rediss",
    )


# --------------------------------------------------------------------------- RESP


def encode_command(args: Sequence[bytes | str | int]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespConnection:
    """One RESP2 connection; `command()` is serialised and bounded in time and size."""

    def __init__(
        self, stream: anyio.abc.ByteStream, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._lock = anyio.Lock()
        self._timeout_s = timeout_s
        self._closed = False

    @classmethod
    async def open(cls, url: RedisUrl, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> RespConnection:
        try:
            with anyio.fail_after(timeout_s):
                stream: anyio.abc.ByteStream
                if url.path is not None:
                    stream = await anyio.connect_unix(url.path)
                elif url.tls:
                    stream = await anyio.connect_tcp(
                        url.host or "", url.port, tls=True, ssl_context=ssl.create_default_context()
                    )
                else:
                    stream = await anyio.connect_tcp(url.host or "", url.port)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise RedisUnavailable(f"cannot connect: {exc.__class__.__name__}") from None
        conn = cls(stream, timeout_s=timeout_s)
        try:
            if url.password is not None:
                auth = [url.username, url.password] if url.username else [url.password]
                await conn.command("AUTH", *auth)
            if url.db:
                await conn.command("SELECT", url.db)
        except RedisReplyError as exc:
            await conn.aclose()
            raise RedisUnavailable(f"the server refused the connection setup: {exc}") from None
        return conn

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()

    async def command(self, *args: bytes | str | int) -> Reply:
        """Send one command and read its reply; an error reply raises `RedisReplyError`."""
        if self._closed:
            raise RedisUnavailable("the connection is closed")
        async with self._lock:
            try:
                with anyio.fail_after(self._timeout_s):
                    await self._stream.send(encode_command(args))
                    reply = await self._read(0)
            except (
                OSError,
                TimeoutError,
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                anyio.IncompleteRead,
                anyio.DelimiterNotFound,
                ValueError,
            ) as exc:
                await self.aclose()
                raise RedisUnavailable(f"lost the connection: {exc.__class__.__name__}") from None
            except BaseException:
                # cancelled mid-reply: the stream is out of step, so it cannot be reused
                await self.aclose()
                raise
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def _read(self, depth: int) -> Reply | RedisReplyError:
        line = await self._reader.receive_until(b"\r\n", MAX_LINE)
        if not line:
            raise ValueError("empty reply line")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            if size > MAX_BULK:
                raise ValueError("bulk reply too large")
            data = await self._reader.receive_exactly(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            if count > MAX_ARRAY or depth >= MAX_DEPTH:
                raise ValueError("array reply too large or too deep")
            items: list[Reply] = []
            error: RedisReplyError | None = None
            for _ in range(count):
                item = await self._read(depth + 1)
                if isinstance(item, RedisReplyError):
                    error = error or item  # read on: the stream must stay in step
                else:
                    items.append(item)
            return error if error is not None else items
        raise ValueError(f"unknown reply type {kind!r}")


# --------------------------------------------------------------------------- scripts

# ARGV[1] is the time in ms, or "" for the server's clock.
_NOW = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
"""

# KEYS: requests zset, tokens hash, pause string.
# ARGV: now, window_ms, rpm (0: none), tpm (0: none), cost, member.
# → {1, bucket} admitted, or {0, wait_ms, paused (0|1)}.
ADMIT_SCRIPT: Final = (
    _NOW
    + """
local window = tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local wait = 0
local paused = 0
local pause_until = tonumber(redis.call('GET', KEYS[3]) or '0')
if pause_until > now then
  wait = pause_until - now
  paused = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if rpm > 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + window - now)
  end
end
local bucket = math.floor((now + 999) / 1000)
if tpm > 0 then
  if cost > tpm then cost = tpm end
  local fields = redis.call('HGETALL', KEYS[2])
  local live = {}
  local total = 0
  for i = 1, #fields, 2 do
    local b = tonumber(fields[i])
    local v = tonumber(fields[i + 1])
    if b * 1000 + window <= now then
      redis.call('HDEL', KEYS[2], fields[i])
    else
      total = total + v
      table.insert(live, {b, v})
    end
  end
  if total + cost > tpm then
    table.sort(live, function(x, y) return x[1] < y[1] end)
    local excess = total + cost - tpm
    for _, entry in ipairs(live) do
      excess = excess - entry[2]
      if excess <= 0 then
        wait = math.max(wait, entry[1] * 1000 + window - now)
        break
      end
    end
  end
end
if wait > 0 then
  return {0, wait, paused}
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
if tpm > 0 then
  redis.call('HINCRBY', KEYS[2], bucket, cost)
  redis.call('PEXPIRE', KEYS[2], window + 2000)
end
return {1, bucket}
"""
)

# KEYS: tokens hash. ARGV: now, window_ms, bucket, delta.
CORRECT_SCRIPT: Final = (
    _NOW
    + """
local window = tonumber(ARGV[2])
local bucket = tonumber(ARGV[3])
if bucket * 1000 + window <= now or redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then
  return 0
end
local v = redis.call('HINCRBY', KEYS[1], ARGV[3], tonumber(ARGV[4]))
if v < 0 then redis.call('HSET', KEYS[1], ARGV[3], 0) end
return 1
"""
)

# KEYS: pause string. ARGV: now, seconds_ms. A shorter pause never shortens a longer one.
PAUSE_SCRIPT: Final = (
    _NOW
    + """
local target = now + tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if target > current then
  redis.call('SET', KEYS[1], target, 'PX', tonumber(ARGV[2]) + 1000)
end
return 1
"""
)


class RemoteDecision(msgspec.Struct, frozen=True):
    ok: bool
    wait_s: float = 0.0
    paused: bool = False
    bucket: int = 0


class RedisWindow:
    """The shared window of one provider in one Redis; reconnects on the next call after a
    failure. `clock` (wall seconds) replaces the server's clock in tests."""

    def __init__(
        self,
        url: str,
        provider: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._url = parse_redis_url(url)
        self._timeout_s = timeout_s
        self._clock = clock
        self._conn: RespConnection | None = None
        self._connect_lock = anyio.Lock()
        self._node = os.urandom(6).hex()
        self._serial = 0
        self._busy = 0
        tag = "{" + provider + "}"  # one hash slot per provider (Redis Cluster)
        self._keys = (
            f"{KEY_PREFIX}:{tag}:requests",
            f"{KEY_PREFIX}:{tag}:tokens",
            f"{KEY_PREFIX}:{tag}:pause",
        )
        self._shas = {
            name: hashlib.sha1(body.encode()).hexdigest()
            for name, body in (
                ("admit", ADMIT_SCRIPT),
                ("correct", CORRECT_SCRIPT),
                ("pause", PAUSE_SCRIPT),
            )
        }
        self._bodies = {"admit": ADMIT_SCRIPT, "correct": CORRECT_SCRIPT, "pause": PAUSE_SCRIPT}

    @property
    def display(self) -> str:
        return self._url.display

    @property
    def keys(self) -> tuple[str, str, str]:
        return self._keys

    @property
    def busy(self) -> bool:
        """A command is on the wire (tests wait for quiet before judging)."""
        return self._busy > 0

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None

    async def ping(self) -> None:
        await self._call("PING")

    async def admit(self, limits: BudgetLimits, window_s: float, cost: int) -> RemoteDecision:
        self._serial += 1
        reply = await self._script(
            "admit",
            self._keys,
            [
                _ms(window_s),
                limits.requests_per_minute or 0,
                limits.tokens_per_minute or 0,
                max(0, cost),
                f"{self._node}:{self._serial}",
            ],
        )
        if (
            not isinstance(reply, list)
            or len(reply) < 2
            or not all(isinstance(x, int) for x in reply)
        ):
            raise RedisUnavailable("unexpected reply to the admission script")
        if reply[0] == 1:
            return RemoteDecision(True, bucket=int(reply[1]))  # type: ignore[arg-type]
        wait_ms = int(reply[1])  # type: ignore[arg-type]
        paused = len(reply) > 2 and reply[2] == 1
        return RemoteDecision(False, wait_s=wait_ms / 1000.0, paused=paused)

    async def correct(self, window_s: float, bucket: int, delta: int) -> None:
        await self._script("correct", self._keys[1:2], [_ms(window_s), bucket, delta])

    async def pause(self, seconds: float) -> None:
        await self._script("pause", self._keys[2:3], [max(1, _ms(seconds))])

    # ------------------------------------------------------------------ inside

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(_ms(self._clock()))

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[int | str]) -> Reply:
        argv = [self._now_arg(), *args]
        try:
            return await self._call("EVALSHA", self._shas[name], len(keys), *keys, *argv)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise RedisUnavailable(f"the script failed: {exc}") from None
        try:
            return await self._call("EVAL", self._bodies[name], len(keys), *keys, *argv)
        except RedisReplyError as exc:
            raise RedisUnavailable(f"the script failed: {exc}") from None

    async def _call(self, *args: bytes | str | int) -> Reply:
        self._busy += 1
        try:
            conn = await self._connection()
            return await conn.command(*args)
        finally:
            self._busy -= 1

    async def _connection(self) -> RespConnection:
        async with self._connect_lock:
            if self._conn is None or self._conn.closed:
                self._conn = await RespConnection.open(self._url, timeout_s=self._timeout_s)
            return self._conn


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)
