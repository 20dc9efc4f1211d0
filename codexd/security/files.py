"""What a file or directory of ours may be open to: nothing, for group and others alike.

One rule (`too_open`: any group or other bit) and one message (`open_problem`, which names
the place, its mode and the `chmod` that fixes it). Where a too-open place is met:

- the runtime dir (sockets, lock) and the state dir (ledger, gateway token): codexd refuses
  to start (`ensure_private_dir`, like gpg-agent: the directory is the real fence, a socket's
  0600 is not enough on every platform);
- the service's environment file (it holds API keys): `codexd install-service` refuses
  (`codexd/install.py`);
- a file codexd itself creates 0600 inside the checked state dir (`usage.sqlite3`,
  `gateway.token`): found wider, it is made 0600 again with a warning in the log
  (`restore_private`). Refusing would stop the ledger or every gateway request over a mode
  only the owner could have changed, in a directory nobody else can enter.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Final

from codexd.paths import StartupError

PRIVATE_DIR: Final = 0o700
PRIVATE_FILE: Final = 0o600
_OPEN_BITS: Final = 0o077

log = logging.getLogger("codexd.security")


def too_open(mode: int) -> bool:
    """Whether a `st_mode` lets group or others in at all."""
    return bool(stat.S_IMODE(mode) & _OPEN_BITS)


def open_problem(path: str, what: str, mode: int, private: int = PRIVATE_FILE) -> str | None:
    """Why the `what` at `path` (of `st_mode` `mode`) is too open, with the `chmod` to run
    (to `private`), or None when it is not."""
    if not too_open(mode):
        return None
    return (
        f"the {what} {path} has mode {stat.S_IMODE(mode):04o}; it must not be open to group "
        f"or others: run chmod {private:o} {path}"
    )


def ensure_private_dir(path: str, what: str) -> None:
    """Create `path` 0700 if missing, then insist it is ours, a real directory, and private;
    `StartupError` (with the `rm` or `chmod` to run) otherwise."""
    uid = os.getuid()
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, mode=PRIVATE_DIR, exist_ok=True)
    try:
        os.mkdir(path, PRIVATE_DIR)
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
    problem = open_problem(path, what, st.st_mode, PRIVATE_DIR)
    if problem is not None:
        raise StartupError(problem)


def restore_private(fd: int, path: str, what: str) -> None:
    """Make the file open on `fd` (one codexd creates 0600) exactly 0600 again, with a
    warning when it had been opened to group or others."""
    mode = os.fstat(fd).st_mode
    if too_open(mode):
        log.warning(
            "the %s %s had mode %04o, open to group or others: made it %04o again",
            what,
            path,
            stat.S_IMODE(mode),
            PRIVATE_FILE,
        )
    if stat.S_IMODE(mode) != PRIVATE_FILE:
        os.fchmod(fd, PRIVATE_FILE)
