"""How codexctl (and the daemon's messages) write money and times for people and scripts.

One home for these rules, so every command agrees: people read `$0.000081` (never `$0.0001`
for a smaller amount, never exponent notation), `~` marks an estimate; JSON and CSV carry
plain decimal numbers (`0.00000005`, not `5e-8`). Times a person reads are in the local zone
with its offset (`2026-12-05 15:12:31 +01:00`); JSON keeps the daemon's RFC 3339 UTC.
Stdlib only: imported per command.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

# The footnote under a table that holds a `~` estimate (`usage`, `models`).
ESTIMATE_NOTE: Final = "~ estimated: a model without a published price is charged the default price"


def format_usd(value: float, estimated: bool = False) -> str:
    """`$1,234.50`, `$0.0420`, `$0.000081`, `$0.00`; `~` in front for an estimate.

    Below a dollar, at least four places and as many more as it takes to show two
    significant digits, so a small cost never reads as zero or as a rounded-up amount.
    """
    sign = "-" if value < 0 else ""
    amount = abs(value)
    if amount >= 1:
        text = f"{amount:,.2f}"
    elif amount == 0 or not math.isfinite(amount):
        text = "0.00" if amount == 0 else str(amount)
    else:
        places = max(4, 1 - math.floor(math.log10(amount)))
        text = f"{amount:.{places}f}"
    return ("~" if estimated else "") + sign + "$" + text


def plain_number(value: Any) -> Any:
    """A float as a plain decimal string (shortest round-trip digits, no exponent); any
    other value unchanged. For CSV cells and JSON numbers."""
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        if "e" in text or "E" in text:
            text = format(Decimal(text), "f")
        return text
    return value


def json_ready(value: Any) -> Any:
    """`value` with every finite float replaced by a raw JSON number in plain decimal form
    (msgspec writes `5e-8` for small floats)."""
    import msgspec

    def walk(v: Any) -> Any:
        if isinstance(v, float) and math.isfinite(v):
            return msgspec.Raw(plain_number(v).encode())
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk(value)


def local_time(stamp: str | None) -> str:
    """An RFC 3339 time as the local `YYYY-MM-DD HH:MM:SS +HH:MM`; "" for none; a stamp
    that does not parse is shown as it is."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return stamp
    return date_time_of(moment)


def date_time_of(moment: datetime) -> str:
    """An aware time as `YYYY-MM-DD HH:MM:SS +HH:MM` in its own zone."""
    return moment.strftime("%Y-%m-%d ") + clock_of(moment)


def clock_of(moment: datetime) -> str:
    """An aware time as `HH:MM:SS +HH:MM` in its own zone."""
    return moment.strftime("%H:%M:%S ") + utc_offset(moment)


def local_clock(stamp: str) -> str:
    """An RFC 3339 time as the local `HH:MM:SS +HH:MM` (for what happens within the day)."""
    full = local_time(stamp)
    return full.split(" ", 1)[1] if full != stamp else stamp


def utc_offset(moment: datetime) -> str:
    offset = moment.utcoffset()
    minutes = round(offset.total_seconds() / 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


# One vocabulary for how a person is logged in, shared by `status`, `whoami` and `login`.
MODES: dict[str, str] = {"chatgpt": "ChatGPT", "api_key": "API key"}
SOURCES: dict[str, str] = {
    "env": "from the daemon's environment",
    "auth_file": "stored in auth.json",
    "keyring": "stored in the keyring",
    "config": "from config.toml (experimental_bearer_token)",
}
STORES: dict[str, str] = {"file": "auth.json file", "keyring": "keyring"}


def mode_words(mode: str | None) -> str:
    return MODES.get(mode or "", mode or "not logged in")
