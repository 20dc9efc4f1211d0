"""Logging for `codexd run`: one line per event on stderr.

Plain lines carry a UTC timestamp, except under journald (`JOURNAL_STREAM` names our stderr),
which stamps lines itself and reads a `<N>` syslog priority prefix instead. `--log-format json`
writes one JSON object per line. A traceback never splits a record: plain mode escapes its
newlines, JSON keeps it in `exc`. Token-shaped strings and credentials inside URLs are masked
as a last line of defence; the code that logs must still never pass a secret.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import msgspec

from codexd.security.scrub import mask

LogFormat = Literal["plain", "json"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# sd-daemon(3) priorities: journald strips the prefix and files the line at that level.
SYSLOG_PRIORITY: dict[int, int] = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
# Libraries that log every request at INFO (URLs, headers): only wanted when debugging.
CHATTY_LOGGERS = ("httpx", "httpcore", "hpack", "watchfiles")

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, None, None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

mask_secrets = mask  # token-shaped strings and credentials inside URLs (codexd/security/scrub.py)


def parse_level(level: str) -> int:
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")


def journal_attached(env: Mapping[str, str], stream: TextIO) -> bool:
    """True when `JOURNAL_STREAM` is set and, if we can tell, names this stream's file.

    A child of a journald-logged process inherits the variable even when its stderr goes
    elsewhere; systemd.exec(5) recommends comparing device and inode for that reason.
    """
    value = env.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True  # no file behind the stream: trust the variable
    return value == f"{st.st_dev}:{st.st_ino}"


def rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts) if parts else None


def _plain_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if text and not any(c.isspace() or c in "\"'=" for c in text):
        return text
    return msgspec.json.encode(text).decode()


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class PlainFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        for key, value in extra_fields(record).items():
            text += f" {key}={_plain_value(value)}"
        exc = _exception_text(self, record)
        if exc:
            text += " | " + exc
        text = _one_line(mask_secrets(text))
        if self.journal:
            priority = SYSLOG_PRIORITY.get(record.levelno, 6)
            return f"<{priority}>{record.name}: {text}"
        return f"{rfc3339(record.created)} {record.levelname:<7} {record.name}: {text}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = extra_fields(record)
        event.update(
            ts=rfc3339(record.created),
            level=record.levelname.lower(),
            logger=record.name,
            msg=record.getMessage(),
        )
        exc = _exception_text(self, record)
        if exc:
            event["exc"] = exc
        # Mask before encoding, so a match can never swallow JSON punctuation.
        masked = {k: mask_secrets(v) if isinstance(v, str) else v for k, v in event.items()}
        return msgspec.json.encode(masked, enc_hook=lambda v: mask_secrets(repr(v))).decode()


class _CodexdHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so a second configure_logging replaces it."""


def configure_logging(
    level: str,
    fmt: LogFormat = "plain",
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record to stderr (or `stream`), one line each; returns the handler.

    Raises ValueError for an unknown level or format (the CLI turns it into a usage error).
    """
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    levelno = parse_level(level)
    formatter: logging.Formatter
    if fmt == "plain":
        formatter = PlainFormatter(journal=journal_attached(env, stream))
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}: use plain or json")
    handler = _CodexdHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CodexdHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if levelno <= logging.DEBUG else logging.WARNING
        )
    return handler
