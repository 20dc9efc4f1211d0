"""The descriptor census the soak and the protocol fuzzer compare before and after a run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fuzz.procfs import fd_census

HOLDER = r"""
import contextlib, socket, struct, sys
pair = socket.socketpair()
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
client = socket.create_connection(server.getsockname())
accepted, _ = server.accept()
accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
accepted.close()  # the peer resets: `client` leaves /proc/net/tcp, its descriptor stays
with contextlib.suppress(ConnectionResetError):
    client.recv(1)  # returns once the reset has arrived
print("ready", flush=True)
sys.stdin.read()  # hold everything until the test is done with us
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc (Linux)")
def test_a_tcp_socket_its_peer_reset_counts_as_tcp_not_as_another_descriptor() -> None:
    """A pooled upstream connection the server reset is still TCP (dropped at its next use);
    counting it among the other descriptors made a run look like it leaked two."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.stderr
        census = fd_census(proc.pid)
        assert census.tcp == 2  # the listener and the reset client
        assert census.other["socket"] == 2  # the socketpair
    finally:
        proc.kill()
        proc.wait()
