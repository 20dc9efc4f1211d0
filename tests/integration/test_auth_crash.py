"""SIGKILL a process at random points while it rewrites auth.json: the file always parses and
holds one whole document, the old or the new one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from codexd.auth.authfile import AuthDocument, read_auth_file

WRITER = textwrap.dedent(
    """
    import sys
    from codexd.auth.authfile import AuthDocument, write_auth_file
    path, a, b = sys.argv[1], open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
    docs = [AuthDocument.from_bytes(a), AuthDocument.from_bytes(b)]
    print("ready", flush=True)
    i = 0
    while True:
        write_auth_file(path, docs[i % 2])
        print(i, flush=True)
        i += 1
    """
)


def document(tag: str) -> bytes:
    tokens = {
        "id_token": f"id-{tag}",
        "access_token": f"at-{tag}",
        "refresh_token": f"rt-{tag}",
        "account_id": "acct",
    }
    # padding makes each write long enough for kills to land inside it
    raw = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": tokens, "pad": tag * 40000}
    return msgspec.json.encode(raw)


@pytest.mark.slow
def test_sigkill_while_writing_never_leaves_a_broken_auth_json(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    auth = home / "auth.json"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    (tmp_path / "a.json").write_bytes(document("a"))
    (tmp_path / "b.json").write_bytes(document("b"))
    auth.write_bytes(document("a"))
    rng = random.Random(1234)
    seen = set()
    for _ in range(200):
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(auth),
                str(tmp_path / "a.json"),
                str(tmp_path / "b.json"),
            ],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        for _ in range(rng.randrange(0, 4)):
            proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        doc = read_auth_file(str(auth))
        assert isinstance(doc, AuthDocument), doc
        assert doc.tokens is not None
        refresh = doc.tokens.refresh_token.reveal()
        assert refresh in ("rt-a", "rt-b")
        tag = refresh[-1]
        assert doc.tokens.access_token.reveal() == f"at-{tag}"
        assert doc.raw()["pad"] == tag * 40000
        assert os.stat(auth).st_mode & 0o777 == 0o600
        seen.add(tag)
    assert seen == {"a", "b"}
    # a kill between mkstemp and rename leaves a temp file behind; never the real name
    leftovers = [p.name for p in home.iterdir() if p.name != "auth.json"]
    assert all(name.startswith(".auth-") for name in leftovers)
