"""What a daemon process holds, read from /proc (Linux): file descriptors by kind, RSS."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass


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
    for name in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, name))
        except OSError:
            continue  # closed while we looked
        total += 1
        if target.startswith("socket:["):
            if target[8:-1] in tcp_inodes:
                tcp += 1
                continue
            other["socket"] += 1
        elif target.startswith("/"):
            other["file:" + target] += 1
        else:
            other[target.split(":")[0].split("[")[0]] += 1
    return FdCensus(total, tcp, other)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
