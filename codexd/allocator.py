"""Keep the daemon's memory from creeping up under sustained load (glibc only).

Every socket read allocates a buffer of the transport's maximum read size (256 KiB in
asyncio) and shrinks it to what arrived. glibc serves allocations that large with mmap, but
its *dynamic* threshold rises to the size of the largest mmapped block freed so far, after
which those buffers come from the heap; shrunk and freed among long-lived objects, they leave
holes that the heap never gives back. Under sustained load (bench/soak.py) RSS kept
rising while the Python heap stayed flat (tracemalloc); with the threshold pinned at glibc's
default of 128 KiB it stays level. Pinning it also turns off the dynamic adjustment, which
is the point.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Final

log = logging.getLogger("codexd")

M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES: Final = 128 * 1024


def pin_mmap_threshold() -> bool:
    """True when glibc took the setting; False elsewhere (macOS, musl), where it is not needed
    or not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:  # no C library to load, or not glibc's
        log.debug("mallopt is not available (%s); memory may creep under load", exc)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    if not applied:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused; memory may creep under load")
    return applied
