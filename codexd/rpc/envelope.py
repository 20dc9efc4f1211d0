"""One line in, one request envelope or one precise rejection out; no I/O."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from codexctl.protocol import Envelope, ErrorKind, RpcError

_envelope_decoder = msgspec.json.Decoder(Envelope)
_loose_decoder = msgspec.json.Decoder(dict[str, Any])


class Rejected(NamedTuple):
    """A line that is not a usable request. `answer` is False for a notification (no id),
    which gets no reply even when it is wrong."""

    request_id: int | str | None
    error: RpcError
    answer: bool = True


def parse_request(line: bytes) -> Envelope | Rejected:
    if not line.isascii():
        # msgspec checks UTF-8 only where it decodes a string: bytes inside an unknown member
        # or a `Raw` value would pass unseen. The whole line is checked once, here.
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejected(None, _parse_error(exc))
    try:
        env = _envelope_decoder.decode(line)
    except msgspec.ValidationError as exc:
        # The typed decoder stops at the first wrong type, before it has seen the whole line.
        not_json = _not_json(line)
        if not_json is not None:
            return Rejected(None, not_json)
        return Rejected(_salvage_id(line), _invalid_request(line, exc))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return Rejected(None, _parse_error(exc))
    if env.jsonrpc is not msgspec.UNSET and env.jsonrpc != "2.0":
        request_id = None if isinstance(env.id, msgspec.UnsetType) else env.id
        err = RpcError(
            ErrorKind.INVALID_REQUEST,
            f'invalid request: "jsonrpc" must be "2.0", got {env.jsonrpc!r}',
        )
        return Rejected(request_id, err, answer=env.id is not msgspec.UNSET)
    return env


def _parse_error(exc: Exception) -> RpcError:
    if isinstance(exc, UnicodeDecodeError):
        return RpcError(ErrorKind.PARSE_ERROR, "parse error: the line is not valid UTF-8")
    if isinstance(exc, RecursionError):
        return RpcError(ErrorKind.PARSE_ERROR, "parse error: the JSON is nested too deeply")
    return RpcError(ErrorKind.PARSE_ERROR, f"parse error: the line is not JSON ({exc})")


def _not_json(line: bytes) -> RpcError | None:
    try:
        msgspec.json.decode(line)
    except msgspec.ValidationError:
        return None  # JSON, but a number out of range: an invalid request
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return _parse_error(exc)
    return None


def _salvage_id(line: bytes) -> int | str | None:
    """The id to answer an invalid request with: its own when it is a valid id, else null."""
    try:
        obj = _loose_decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    rid = obj.get("id")
    return rid if isinstance(rid, int | str) and not isinstance(rid, bool) else None


def _invalid_request(line: bytes, exc: msgspec.ValidationError) -> RpcError:
    head = line.lstrip()[:1]
    if head == b"[":
        msg = "invalid request: batches are not supported; send one request object per line"
    elif head != b"{":
        msg = "invalid request: expected a JSON-RPC request object"
    else:
        msg = f"invalid request: {exc}"
    return RpcError(ErrorKind.INVALID_REQUEST, msg)
