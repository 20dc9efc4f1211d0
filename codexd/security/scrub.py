"""What counts as a secret, and how it is cut out of text that leaves the daemon.

The one home of that rule. Text that came from outside (an upstream's error body and
headers, an OAuth issuer's error, an exception's text) is made safe to show by a `Scrubber`,
in this order:

1. every value we sent that could come back (the bearer, an API key, configured header
   values, query values, OAuth tokens) is cut out, as sent and in its URL-encoded forms, on
   the text exactly as it came: nothing before this step may change the text;
2. whitespace runs become one space, and the values are cut again in that form;
3. `mask`: credentials inside URLs and anything shaped like a key or token;
4. the length is bounded last, so a bound can never cut a secret in half and leave a part.

`mask` alone serves log lines (no values are known there). `looks_like_secret`,
`secret_name` and `redact_url` decide what the config view hides: by a value's shape (the
same `_TOKENS` pattern `mask` uses, or a long unspaced string with digits), by a header or
parameter name, and inside URLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Final
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

REDACTED: Final = "[redacted]"
MAX_TEXT: Final = 500  # an upstream message, as a client reads it
MAX_WORD: Final = 120  # a code, type, param or request id
# A value shorter than this is not cut out of text: it would mangle ordinary words, and it is
# no credential either.
MIN_HIDDEN_LEN: Final = 8

# Request headers whose values are ours to show (content negotiation, Codex's identity, ids).
PUBLIC_HEADERS: Final = frozenset(
    {
        "content-type",
        "accept",
        "user-agent",
        "originator",
        "session-id",
        "thread-id",
        "x-client-request-id",
        "chatgpt-account-id",
        "version",
    }
)

# What a credential looks like, wherever it is met (the one pattern: text, log lines and a
# config value are all judged by it): OpenAI keys (also masked ones such as
# `sk-proj-abcd****wxyz`) and session keys, JWTs (ChatGPT tokens), GitHub and Slack tokens,
# and an HTTP auth scheme's parameter. Each needs enough characters after its prefix to be a
# credential, so that words such as `sk-short` or `bearer` alone are left as they are.
_TOKENS: Final = re.compile(
    r"(?P<scheme>\b(?i:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(?:sk|sess)-[A-Za-z0-9_*.-]{6,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{8,}"
    r"|\bxox[a-z]-[A-Za-z0-9-]{6,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}"
)
# A URL in text ends before whitespace, quotes and brackets, and before closing punctuation.
_URL: Final = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]*[^\s\"'<>`.,;:!?)\]}]")
_SPACES: Final = re.compile(r"\s+")
_SECRET_NAME_PARTS: Final = ("auth", "token", "secret", "key", "password", "cookie", "signature")


def looks_like_secret(value: str) -> bool:
    """A value that may be a key or token: it holds what `mask` would cut out of text
    (`_TOKENS`), or it is long, without spaces and holds a digit (a random token)."""
    if _TOKENS.search(value):
        return True
    return len(value) >= 32 and " " not in value and any(c.isdigit() for c in value)


def secret_name(name: str) -> bool:
    """A header or parameter name whose value is a credential whatever it looks like."""
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_NAME_PARTS)


def redact_url(url: str, marker: str = REDACTED) -> str:
    """`url` without its userinfo and with every query value replaced by `marker`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url if "@" not in url and "?" not in url else marker
    netloc = parts.netloc
    if "@" in netloc:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{marker}@{host}" + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{quote_plus(name)}={marker}" for name, _ in pairs) or marker
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_urls(text: str, marker: str = REDACTED) -> str:
    """`redact_url` applied to every URL inside `text`."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(), marker), text)


def mask(text: str, marker: str = REDACTED) -> str:
    """Credentials inside URLs and key- or token-shaped strings replaced by `marker`; nothing
    else."""
    text = redact_urls(text, marker)
    return _TOKENS.sub(lambda m: (m.group("scheme") or "") + marker, text)


def _forms(value: str) -> Iterator[str]:
    """Every form in which a value we sent may be quoted back."""
    yield value
    yield quote(value, safe="")
    yield quote_plus(value)
    scheme, _, rest = value.partition(" ")
    if rest and scheme.isalpha():  # `Bearer <token>`: the token alone, too
        yield rest.strip()


def _hidden(values: Iterable[str]) -> tuple[str, ...]:
    found: set[str] = set()
    for value in values:
        value = value.strip()
        for form in _forms(value):
            for variant in (form, _SPACES.sub(" ", form).strip()):
                if len(variant) >= MIN_HIDDEN_LEN:
                    found.add(variant)
    return tuple(sorted(found, key=len, reverse=True))  # a longer form before its parts


def request_values(headers: Mapping[str, str], url: str | None = None) -> Iterator[str]:
    """What a request carried that is ours to hide: every header value but the public
    ones, the URL's userinfo and every query value."""
    for name, value in headers.items():
        if name.lower() not in PUBLIC_HEADERS:
            yield value
    if not url:
        return
    try:
        parts = urlsplit(url)
        userinfo = [v for v in (parts.username, parts.password) if v]
    except ValueError:  # not a URL we could have sent: nothing of it went out
        return
    yield from userinfo
    yield from (value for _, value in parse_qsl(parts.query, keep_blank_values=True))


class Scrubber:
    """Makes outside text safe to show (the four steps of this module's docstring).

    The values to hide are expanded on first use only: most requests never fail, and
    building the scrubber must cost them nothing.
    """

    __slots__ = ("_hidden", "_values")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: Iterable[str] | None = values
        self._hidden: tuple[str, ...] = ()

    @classmethod
    def for_request(cls, headers: Mapping[str, str], url: str | None = None) -> Scrubber:
        return cls(request_values(headers, url))

    def __repr__(self) -> str:
        return "Scrubber()"

    def _cut(self, text: str) -> str:
        if self._values is not None:
            self._hidden, self._values = _hidden(self._values), None
        for value in self._hidden:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def __call__(self, text: str, limit: int = MAX_TEXT) -> str:
        text = _SPACES.sub(" ", self._cut(text)).strip()
        text = mask(self._cut(text))
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        return text

    def word(self, text: str | None) -> str | None:
        """A code, type, param or request id: scrubbed and bounded at `MAX_WORD`."""
        if text is None:
            return None
        return self(text, MAX_WORD) or None


GENERIC: Final = Scrubber()  # for text no request of ours went into


def scrub(text: str, limit: int = MAX_TEXT) -> str:
    """`text` with credentials masked, whitespace normalised and its length bounded."""
    return GENERIC(text, limit)
