"""Sixty seconds of bench/soak.py: 20 clients, faults, cancels, re-attaches, config edits and
a token refresh; every check of the soak must hold (see its docstring)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))

from soak import run_soak

SECONDS = float(os.environ.get("CODEXD_SOAK_SECONDS", "60"))


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + 300)
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="samples /proc (Linux)")
def test_soak(tmp_path: object) -> None:
    # A token that is due for refresh every 20 s: a one-minute run sees several.
    report = run_soak(SECONDS, clients=20, workdir=str(tmp_path), access_ttl_s=320)
    print("\n" + report.text())
    assert report.problems == []
    assert len(report.jobs) > 100
    assert sum(report.faults.values()) > 50
    assert report.refreshes >= 2
    assert report.config_edits >= 10
