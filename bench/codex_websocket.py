"""Codex CLI through the gateway: wall time of one `codex exec`, over HTTP (POST /v1/responses)
and over the Responses WebSocket (`supports_websockets = true`), side by side in one run.

    .venv/bin/python bench/codex_websocket.py [--runs 5]

Each run is a whole `codex exec --ephemeral "Say hello"` against codexd's gateway on loopback
TCP and the bundled fake upstream (no delay per delta): start-up, the request (after a
warm-up, on the WebSocket) and exit. The two transports alternate, run by run, so a load
change on the machine hits both alike. Prints each time and the medians; asserts nothing.
Needs Codex CLI (tests/codex_cli.py installs it with npm, or `CODEXD_TEST_CODEX_BIN`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from codexctl import Client
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.codex_cli import codex_binary
from tests.conftest import free_port


def codex_home(root: str, name: str, gateway: str, websockets: bool) -> str:
    home = os.path.join(root, name)
    os.mkdir(home, 0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(
            'model_provider = "codexd"\nmodel = "gpt-5"\n'
            "[model_providers.codexd]\n"
            f'name = "codexd"\nbase_url = "http://{gateway}/v1"\nwire_api = "responses"\n'
            'env_key = "CODEXD_GATEWAY_TOKEN"\nstream_max_retries = 0\n'
            f"supports_websockets = {'true' if websockets else 'false'}\n"
            "[analytics]\nenabled = false\n"
            "[features]\nplugins = false\napps = false\nshell_snapshot = false\n"
        )
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    codex = codex_binary()
    with tempfile.TemporaryDirectory() as root, FakeOpenAI.running() as fake:
        port = free_port()
        daemon_home = os.path.join(root, "codexd-home")
        os.mkdir(daemon_home, 0o700)
        with open(os.path.join(daemon_home, "config.toml"), "w") as f:
            f.write(
                f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n'
                f'[codexd.gateway]\nenabled = true\ntcp = "127.0.0.1:{port}"\n'
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("XDG_RUNTIME_DIR", None)
        env.update(
            CODEXD_SOCKET=os.path.join(root, "run", "codexd.sock"),
            CODEXD_STATE_DIR=os.path.join(root, "state"),
            CODEX_HOME=daemon_home,
            OPENAI_API_KEY="sk-bench",
        )
        with DaemonProcess(env, args=["--log-level", "warning"]) as daemon:
            with Client(daemon.socket) as c:
                token = c.call("gateway/token", {})["token"]
            gateway = f"127.0.0.1:{port}"
            homes = {
                "http": codex_home(root, "codex-http", gateway, websockets=False),
                "websocket": codex_home(root, "codex-ws", gateway, websockets=True),
            }
            times: dict[str, list[float]] = {name: [] for name in homes}
            for _ in range(args.runs):
                for name, home in homes.items():
                    run_env = {
                        k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))
                    }
                    run_env.update(CODEX_HOME=home, CODEXD_GATEWAY_TOKEN=token)
                    start = time.perf_counter()
                    done = subprocess.run(
                        [codex, "exec", "--skip-git-repo-check", "--ephemeral", "Say hello"],
                        cwd=root,
                        env=run_env,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                    elapsed = time.perf_counter() - start
                    if done.returncode != 0 or fake.reply_text not in done.stdout:
                        raise SystemExit(f"codex exec ({name}) failed:\n{done.stderr[-2000:]}")
                    times[name].append(elapsed)
            with Client(daemon.socket) as c:
                jobs = c.call("job/list", {})["jobs"]
    print(f"codex exec wall time, {args.runs} runs each (alternating), seconds:")
    for name, values in times.items():
        each = " ".join(f"{v:.3f}" for v in values)
        print(f"  {name:9s} median {statistics.median(values):.3f}   ({each})")
    ratio = statistics.median(times["websocket"]) / statistics.median(times["http"])
    print(f"  websocket / http: {ratio:.2f}")
    print(f"  jobs: {len(jobs)} (one per exec; the WebSocket's warm-ups make none)")


if __name__ == "__main__":
    main()
