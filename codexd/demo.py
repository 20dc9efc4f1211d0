"""`codexd demo`: the offline main job, end to end, with nothing but this checkout.

Starts a daemon on a private temp socket and runs `codexctl status` against it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="codexd-demo-") as tmp:
        os.chmod(tmp, 0o700)
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env["CODEXD_SOCKET"] = os.path.join(tmp, "run", "codexd.sock")
        env["CODEXD_STATE_DIR"] = os.path.join(tmp, "state")
        env["CODEX_HOME"] = os.path.join(tmp, "codex-home")
        os.mkdir(env["CODEX_HOME"], 0o700)
        from codexd.testing.daemon_process import DaemonProcess

        with DaemonProcess(env) as daemon:
            print(f"codexd is running on {daemon.socket}\n", flush=True)
            return subprocess.call([sys.executable, "-m", "codexctl", "status"], env=env)
