"""What an HTTP/1.1 request header field may hold (RFC 9110 §5.1, §5.5), in one place.

The upstream transport refuses to write a field that would break the request's framing, and
config load refuses a configured header that the transport (or httpx before it, which encodes
values as ASCII) would refuse: a bad value then is a `config_invalid` naming its key, not a
failure of every job that uses the provider.
"""

from __future__ import annotations

import re
from typing import Final

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]")


def is_field_name(name: bytes) -> bool:
    return _TOKEN.fullmatch(name) is not None


def is_field_value(value: bytes) -> bool:
    """No NUL, CR or LF: a line break would end the field (and let a value add headers)."""
    return _BAD_VALUE.search(value) is None


def name_problem(name: str) -> str | None:
    """Why `name` cannot be sent as a header name, or None."""
    if name.isascii() and is_field_name(name.encode("ascii")):
        return None
    return "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"


def value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as a header value, or None. Never quotes the value."""
    if "\r" in value or "\n" in value:
        return "holds a line break (CR or LF), which an HTTP header cannot carry"
    if not value.isascii():
        return "holds a non-ASCII character, which an HTTP header cannot carry"
    if not is_field_value(value.encode("ascii")):
        return "holds a NUL character, which an HTTP header cannot carry"
    return None
