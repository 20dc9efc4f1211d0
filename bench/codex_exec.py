"""Codex CLI's wall time for one `codex exec` through the gateway, against the fake directly.

One run, one fake OpenAI on loopback, one daemon with the gateway on TCP, the Codex CLI
version the tests pin (tests/codex_cli.py installs it). Three targets, run round-robin after
one warm-up each:

- direct: Codex to the fake, the key in an environment variable (`env_key`);
- direct+auth: Codex to the fake, the bearer from `codexctl gateway token` (the auth command
  costs a `codexctl` start, and Codex then also asks `GET /v1/models`);
- gateway: the recommended set-up of docs/gateway.md, through codexd.

"gateway - direct+auth" is what codexd's gateway adds to a Codex turn; the auth command's
own cost is printed apart. Prints the median, min and max of `--runs` runs per target;
asserts nothing.

    .venv/bin/python bench/codex_exec.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.codex_cli: the pin

from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI
from tests.codex_cli import codex_binary

OFFLINE = (
    "[features]\nunbounded_connection_retries = false\n"
    "plugins = false\napps = false\nshell_snapshot = false\n"
    "[analytics]\nenabled = false\n"
)
AUTH = '[model_providers.codexd.auth]\ncommand = "codexctl"\nargs = ["gateway", "token"]\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def codex_config(base_url: str, *, auth_command: bool) -> str:
    return (
        'model_provider = "codexd"\nmodel = "gpt-5"\n'
        "[model_providers.codexd]\n"
        f'name = "codexd"\nbase_url = "{base_url}"\nwire_api = "responses"\n'
        + ("" if auth_command else 'env_key = "BENCH_KEY"\n')
        + (AUTH if auth_command else "")
        + OFFLINE
    )


def run_once(codex: str, home: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [codex, "exec", "--skip-git-repo-check", "--ephemeral", "Say hello"],
        cwd=home,
        env={**env, "CODEX_HOME": str(home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"codex exec failed ({home.name}):\n{done.stderr[-2000:]}")
    return elapsed


def run_token_command(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(["codexctl", "gateway", "token"], env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    codex = codex_binary()
    with tempfile.TemporaryDirectory(prefix="codexd-bench-codex-") as tmp:
        root = Path(tmp)
        home = root / "codex-home"
        home.mkdir(mode=0o700)
        port = free_port()
        with FakeOpenAI.running() as fake:
            (home / "config.toml").write_text(
                f'openai_base_url = "{fake.base_url}"\nmodel = "gpt-5"\n'
                f'[codexd.gateway]\nenabled = true\ntcp = "127.0.0.1:{port}"\n'
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
            env.pop("NOTIFY_SOCKET", None)
            env.update(
                CODEXD_SOCKET=str(root / "run" / "codexd.sock"),
                CODEXD_STATE_DIR=str(root / "state"),
                CODEX_HOME=str(home),
                OPENAI_API_KEY="sk-test-key-for-the-fake-0000",
            )
            with DaemonProcess(env):
                codex_env = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
                codex_env["BENCH_KEY"] = "sk-test-key-for-the-fake-0001"
                codex_env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
                targets = {
                    "direct": codex_config(fake.base_url, auth_command=False),
                    "direct+auth": codex_config(fake.base_url, auth_command=True),
                    "gateway": codex_config(f"http://127.0.0.1:{port}/v1", auth_command=True),
                }
                homes: dict[str, Path] = {}
                for name, config in targets.items():
                    homes[name] = root / f"cli-{name.replace('+', '-')}"
                    homes[name].mkdir()
                    (homes[name] / "config.toml").write_text(config)
                    run_once(codex, homes[name], codex_env)  # warm-up, not counted
                times: dict[str, list[float]] = {name: [] for name in targets}
                token_times: list[float] = []
                for _ in range(args.runs):
                    for name in targets:
                        times[name].append(run_once(codex, homes[name], codex_env))
                    token_times.append(run_token_command(codex_env))
    print(f"codex exec wall time, {args.runs} runs each (seconds)")
    print(f"{'target':<14}{'median':>9}{'min':>9}{'max':>9}")
    medians = {}
    for name, values in times.items():
        medians[name] = statistics.median(values)
        print(f"{name:<14}{medians[name]:>9.3f}{min(values):>9.3f}{max(values):>9.3f}")
    print(f"{'(codexctl gateway token alone)':<32}{statistics.median(token_times):.3f}")
    print(f"gateway - direct+auth: {medians['gateway'] - medians['direct+auth']:+.3f} s")
    print(f"gateway - direct:      {medians['gateway'] - medians['direct']:+.3f} s")
    print(f"gateway / direct:      {medians['gateway'] / medians['direct']:.2f}x")


if __name__ == "__main__":
    main()
