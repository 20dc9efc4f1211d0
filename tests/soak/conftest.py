"""The soak's CI version; `make soak` runs bench/soak.py for 10 minutes."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: a minute of continuous load (make soak: ten)")
