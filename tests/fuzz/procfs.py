"""What a daemon process holds, read from /proc (Linux): file descriptors by kind, RSS."""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from collections import Counter
from dataclasses import dataclass

_SYS_PIDFD_GETFD = 438  # the same number on every architecture Linux has


def _tcp_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for row in f:
                    inodes.add(row.split()[9])
        except OSError:
            continue
    return inodes


def _is_tcp(pidfd: int | None, fd: int) -> bool:
    """Whether `fd` of the process behind `pidfd` is a TCP socket, asked of the socket itself
    (pidfd_getfd): one the peer reset is gone from /proc/net/tcp while its owner still holds
    it, and is a pooled connection to be dropped at its next use, not a leaked descriptor."""
    if pidfd is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    dup = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    if dup < 0:
        return False
    try:
        with socket.socket(fileno=dup) as sock:
            return sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == (
                socket.SOCK_STREAM
            )
    except OSError:
        os.close(dup)
        return False


def _pidfd(pid: int) -> int | None:
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


@dataclass(frozen=True)
class FdCensus:
    total: int
    tcp: int  # HTTP keep-alive connections upstream: a bounded pool, not a leak
    other: Counter[str]  # unix sockets, files, pipes, eventfds... by kind

    @property
    def non_tcp(self) -> int:
        return sum(self.other.values())


def fd_census(pid: int) -> FdCensus:
    tcp_inodes = _tcp_inodes()
    other: Counter[str] = Counter()
    tcp = total = 0
    base = f"/proc/{pid}/fd"
    pidfd = _pidfd(pid)
    try:
        for name in os.listdir(base):
            try:
                target = os.readlink(os.path.join(base, name))
            except OSError:
                continue  # closed while we looked
            total += 1
            if target.startswith("socket:["):
                if target[8:-1] in tcp_inodes or _is_tcp(pidfd, int(name)):
                    tcp += 1
                    continue
                other["socket"] += 1
            elif target.startswith("/"):
                other["file:" + target] += 1
            else:
                other[target.split(":")[0].split("[")[0]] += 1
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return FdCensus(total, tcp, other)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
