"""Benchmark the client's start: `codexctl --version` and `codexctl status` (no daemon
answering) against `python -I -c pass` of the same interpreter, whole-process wall time.

Give it one or more installed environments (a regular, non-editable install: `make install`
with UV_TOOL_DIR pointed somewhere, or a venv with `pip install clients/codexctl`); each
environment's own interpreter is its baseline. The commands run in rounds, every command of
every environment once per round, so that a change in the machine's load falls on all of them
alike. Prints the median of each (one run) and its ratio to the baseline; nothing is asserted.

    .venv/bin/python bench/client_start.py --venv /tmp/after-venv [--venv /tmp/before-venv]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--venv", action="append", required=True, help="an environment with codexctl installed"
    )
    ap.add_argument("--runs", type=int, default=20, help="samples of each command (default 20)")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="codexctl-start-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "PYTHON"))}
    env["CODEXD_SOCKET"] = os.path.join(tmp, "nobody-listens.sock")  # status: unreachable
    commands: dict[tuple[str, str], list[str]] = {}
    for venv in args.venv:
        python = os.path.join(venv, "bin", "python")
        codexctl = os.path.join(venv, "bin", "codexctl")
        commands[(venv, "python -I -c pass")] = [python, "-I", "-c", "pass"]
        commands[(venv, "codexctl --version")] = [codexctl, "--version"]
        commands[(venv, "codexctl status")] = [codexctl, "status"]
    times: dict[tuple[str, str], list[float]] = {key: [] for key in commands}
    print(f"load average at start: {load()}")
    for cmd in commands.values():  # warm the page cache once
        wall(cmd, env)
    for _ in range(args.runs):
        for key, cmd in commands.items():
            times[key].append(wall(cmd, env))
    print(f"load average at end:   {load()}")
    os.rmdir(tmp)

    for venv in args.venv:
        base = statistics.median(times[(venv, "python -I -c pass")])
        print(f"\n{venv}")
        for what in ("python -I -c pass", "codexctl --version", "codexctl status"):
            median = statistics.median(times[(venv, what)])
            print(f"  {what:22}{median * 1e3:8.1f} ms{median / base:8.2f}x")


if __name__ == "__main__":
    main()
