"""Process hardening at start-up: no core dumps, no same-user ptrace (Linux).

A core dump of codexd would hold API keys and tokens in clear, written wherever
`core_pattern` says, often world-readable tooling (apport, systemd-coredump) included.
`PR_SET_DUMPABLE = 0` stops the kernel from writing one and, as a side effect, makes
`/proc/<pid>/` root-owned and refuses ptrace from other processes of the same user, as
ssh-agent and gpg-agent do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def disable_core_dumps() -> bool:
    """True when the process is now not dumpable; False where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            return False
        return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
