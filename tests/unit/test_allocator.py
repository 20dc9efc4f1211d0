"""The glibc allocator setting that keeps RSS flat under load (the soak checks the effect)."""

from __future__ import annotations

import platform
import sys

import pytest

from codexd.allocator import pin_mmap_threshold


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt(M_MMAP_THRESHOLD) is glibc's",
)
def test_glibc_takes_the_pinned_mmap_threshold() -> None:
    assert pin_mmap_threshold() is True
