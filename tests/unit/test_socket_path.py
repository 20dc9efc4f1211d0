"""The socket rule, in the one function client and daemon share."""

from __future__ import annotations

import os
from pathlib import Path

from codexctl.protocol import default_socket_path, resolve_socket_path


def test_explicit_env_wins() -> None:
    env = {"CODEXD_SOCKET": "/x/y.sock", "XDG_RUNTIME_DIR": "/run/user/5"}
    assert default_socket_path(env, 5) == "/x/y.sock"
    assert resolve_socket_path("/flag.sock", env) == "/flag.sock"


def test_xdg_runtime_dir() -> None:
    assert default_socket_path({"XDG_RUNTIME_DIR": "/r"}, 5) == "/r/codexd/codexd.sock"


def test_run_user_only_when_it_exists_and_is_ours(tmp_path: Path) -> None:
    uid = os.getuid()
    root = tmp_path / "run-user"
    root.mkdir()
    env: dict[str, str] = {"TMPDIR": "/tmpdir"}
    assert default_socket_path(env, uid, run_user_root=str(root)) == (
        f"/tmpdir/codexd-{uid}/codexd.sock"
    )
    (root / str(uid)).mkdir()
    assert default_socket_path(env, uid, run_user_root=str(root)) == (
        f"{root}/{uid}/codexd/codexd.sock"
    )
    # Another uid's directory exists but is not theirs (owned by us): skip it.
    (root / str(uid + 1)).mkdir()
    assert default_socket_path(env, uid + 1, run_user_root=str(root)) == (
        f"/tmpdir/codexd-{uid + 1}/codexd.sock"
    )


def test_tmp_fallback_without_tmpdir(tmp_path: Path) -> None:
    assert default_socket_path({}, 7, run_user_root=str(tmp_path)) == "/tmp/codexd-7/codexd.sock"
