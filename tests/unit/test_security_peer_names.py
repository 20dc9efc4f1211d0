"""Peer admission (codexd/security/peer.py): the uid rule without an explicit own uid, and the
name the daemon gives a peer process, against real processes: each test starts one with a
chosen argv and reads it back through /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from codexd.security.peer import PeerCred, peer_allowed, process_name

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process names come from Linux's /proc"
)

# A child that says it runs, then blocks until its stdin closes: alive while the test looks.
WAIT = "import sys; print('ready', flush=True); sys.stdin.read()"


@contextmanager
def running(argv: list[str], cwd: Path | None = None) -> Iterator[int]:
    """A live process whose /proc cmdline is exactly `argv` (the interpreter is Python's)."""
    with subprocess.Popen(
        argv, executable=sys.executable, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd
    ) as p:
        try:
            # Popen can return before the kernel has set the new argv up: wait for the child
            # to run its code, as a peer does before it connects.
            assert p.stdout is not None
            assert p.stdout.readline() == b"ready\n"
            yield p.pid
        finally:
            p.communicate(b"")


def test_without_own_uid_the_process_uid_is_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    assert peer_allowed(PeerCred(pid=None, uid=4242, gid=None))
    assert peer_allowed(PeerCred(pid=None, uid=0, gid=None))
    assert not peer_allowed(PeerCred(pid=None, uid=1000, gid=None))
    # An explicit own_uid wins over the process's.
    assert peer_allowed(PeerCred(pid=None, uid=1000, gid=None), own_uid=1000)
    assert not peer_allowed(PeerCred(pid=None, uid=4242, gid=None), own_uid=1000)


def test_a_program_is_named_by_its_executable() -> None:
    with running(["/opt/tools/my-agent", "-c", WAIT, "--flag", "x.py"]) as pid:
        assert process_name(pid) == "my-agent"


def test_an_interpreter_is_named_by_its_script(tmp_path: Path) -> None:
    script = tmp_path / "review_bot.py"
    script.write_text(WAIT)
    with running(["/usr/bin/python3", str(script), "--verbose"]) as pid:
        assert process_name(pid) == "review_bot.py"
    with running(["python3.12", "-u", "-B", str(script)]) as pid:
        assert process_name(pid) == "review_bot.py"


def test_an_interpreter_running_a_module_is_named_by_the_module(tmp_path: Path) -> None:
    (tmp_path / "agent_main.py").write_text(WAIT)
    with running(["python3", "-m", "agent_main"], cwd=tmp_path) as pid:
        assert process_name(pid) == "agent_main"


def test_an_interpreter_running_inline_code_is_named_by_the_interpreter() -> None:
    with running(["/usr/local/bin/node", "-c", WAIT]) as pid:
        assert process_name(pid) == "node"


def test_an_argv_that_is_not_utf8_is_named_with_replacement_characters() -> None:
    with running([os.fsdecode(b"/usr/bin/t\xffool"), "-c", WAIT]) as pid:
        assert process_name(pid) == "t\ufffdool"


def test_no_pid_no_process_or_no_argv_has_no_name() -> None:
    assert process_name(None) is None
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert process_name(pid_max + 1) is None
    # An exited process that is not reaped yet (a zombie) has an empty cmdline.
    with subprocess.Popen([sys.executable, "-c", "pass"]) as p:
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
        assert process_name(p.pid) is None
