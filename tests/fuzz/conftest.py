"""Fuzz budgets: small and bounded in `make test`, large under `make fuzz`.

`CODEXD_FUZZ_EXAMPLES` scales every byte-level property (default 400 each, a few seconds in
all); `CODEXD_FUZZ_STEPS` the protocol state machine's examples (default 12 runs of up to 40
steps against one daemon).
"""

from __future__ import annotations

import os

import pytest

FUZZ_EXAMPLES = int(os.environ.get("CODEXD_FUZZ_EXAMPLES", "400"))
PROTOCOL_EXAMPLES = int(os.environ.get("CODEXD_FUZZ_STEPS", "12"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: property-based fuzzing (bounded in CI)")
