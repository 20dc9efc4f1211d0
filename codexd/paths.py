"""Every daemon-side location and the checks that guard them.

The socket rule itself is `codexctl.protocol.default_socket_path` (stdlib only), so client and
daemon always agree on where the socket is.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

import platformdirs

from codexctl.protocol import GATEWAY_SOCKET_NAME, LOCK_NAME, resolve_socket_path


class StartupError(Exception):
    """A start-up failure: `codexd run` prints the message (one located line) and exits 1."""


@dataclass(frozen=True, slots=True)
class Paths:
    socket: str
    codex_home: str
    state_dir: str

    @property
    def runtime_dir(self) -> str:
        return os.path.dirname(self.socket)

    @property
    def lock(self) -> str:
        return os.path.join(self.runtime_dir, LOCK_NAME)

    @property
    def gateway_socket(self) -> str:
        return os.path.join(self.runtime_dir, GATEWAY_SOCKET_NAME)

    @property
    def config_file(self) -> str:
        return os.path.join(self.codex_home, "config.toml")

    @property
    def auth_file(self) -> str:
        return os.path.join(self.codex_home, "auth.json")


def resolve(socket: str | None = None, env: Mapping[str, str] | None = None) -> Paths:
    """Where everything is, from `--socket` and the environment; touches nothing on disk."""
    env = os.environ if env is None else env
    codex_home = env.get("CODEX_HOME") or os.path.join(os.path.expanduser("~"), ".codex")
    state_dir = env.get("CODEXD_STATE_DIR") or platformdirs.user_state_dir("codexd")
    return Paths(
        socket=os.path.abspath(resolve_socket_path(socket, env)),
        codex_home=os.path.abspath(codex_home),
        state_dir=os.path.abspath(state_dir),
    )


def check_codex_home(paths: Paths, env: Mapping[str, str] | None = None) -> None:
    """`$CODEX_HOME`, when set, must exist (as in Codex); `~/.codex` may be missing."""
    env = os.environ if env is None else env
    if env.get("CODEX_HOME") and not os.path.isdir(paths.codex_home):
        raise StartupError(
            f"CODEX_HOME={env['CODEX_HOME']} does not exist: create it "
            f"(mkdir -p {paths.codex_home}) or unset CODEX_HOME to use ~/.codex"
        )


def ensure_private_dir(path: str, what: str) -> None:
    """Create `path` 0700 if missing, then insist it is ours, a real directory, and private.

    Like gpg-agent we refuse to run with a directory another user could enter or swap: the
    socket's 0600 mode is not enough on every platform, the directory is the real fence.
    """
    uid = os.getuid()
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StartupError(f"cannot create the {what} {path}: {exc.strerror}") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise StartupError(
            f"the {what} {path} is a symlink; refusing to follow it: remove it (rm {path}) "
            "and start codexd again"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"the {what} {path} is not a directory: remove it and start again")
    if st.st_uid != uid:
        raise StartupError(
            f"the {what} {path} belongs to uid {st.st_uid}, not to you (uid {uid}): "
            f"remove it or choose another place with --socket / CODEXD_SOCKET"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise StartupError(
            f"the {what} {path} has mode {mode:04o}; it must not be open to group or others: "
            f"run chmod 700 {path}"
        )
