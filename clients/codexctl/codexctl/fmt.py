"""How codexctl (and the daemon's messages) write money for people and for scripts.

One home for these rules, so every command agrees: people read `$0.000081` (never `$0.0001`
for a smaller amount, never exponent notation), `~` marks an estimate; JSON and CSV carry
plain decimal numbers (`0.00000005`, not `5e-8`). Stdlib only: imported per command.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


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
