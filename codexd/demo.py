"""`codexd demo`: the offline main job, end to end, with nothing but this checkout.

A fake OpenAI on a free loopback port, a daemon on a private temp socket, one streamed
`codexctl ask` through it, then the job's usage and cost. No key, no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

DEMO_PROMPT = "What does codexd do for the tools on my machine?"
DEMO_REPLY = (
    "codexd keeps one login, one rate-limit budget and one usage ledger for every tool on "
    "your machine: they talk to it over a private socket, and it talks to OpenAI."
)


def run_demo() -> int:
    from codexctl.client import Client
    from codexctl.fmt import format_usd
    from codexd.testing.daemon_process import DaemonFailed, DaemonProcess
    from codexd.testing.fake_openai import FakeOpenAI, Reply

    with tempfile.TemporaryDirectory(prefix="codexd-demo-") as tmp:
        os.chmod(tmp, 0o700)
        home = os.path.join(tmp, "codex-home")
        os.mkdir(home, 0o700)
        words = DEMO_REPLY.split(" ")
        deltas = (*(w + " " for w in words[:-1]), words[-1])
        with FakeOpenAI.running(reply=Reply(deltas=deltas, delta_delay_s=0.03)) as fake:
            with open(os.path.join(home, "config.toml"), "w") as f:
                f.write(f'openai_base_url = "{fake.base_url}"\n')
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX", "OPENAI"))}
            env.pop("NOTIFY_SOCKET", None)
            env.update(
                CODEXD_SOCKET=os.path.join(tmp, "run", "codexd.sock"),
                CODEXD_STATE_DIR=os.path.join(tmp, "state"),
                CODEX_HOME=home,
                OPENAI_API_KEY="sk-demo-offline-not-a-real-key",
            )
            print(f"fake OpenAI upstream: {fake.base_url}")
            try:
                daemon = DaemonProcess(env).start()
            except DaemonFailed as exc:
                print(f"codexd demo: the daemon did not start: {exc}", file=sys.stderr)
                return 1
            try:
                print(f"codexd is running:    {daemon.socket}\n")
                print(f"$ codexctl ask --stream {DEMO_PROMPT!r}")
                rc = subprocess.call(
                    [sys.executable, "-m", "codexctl", "ask", "--stream", DEMO_PROMPT], env=env
                )
                if rc != 0:
                    print(f"codexd demo: codexctl ask exited {rc}", file=sys.stderr)
                    return rc
                with Client(daemon.socket) as client:
                    job = client.call("job/list", {"limit": 1})["jobs"][0]
                    models = client.call("models/list")["models"]
                priced = any(m["slug"] == job["model"] and m["price"] for m in models)
                usage = job["usage"]
                print(
                    f"\njob {job['id']}: {job['state']} after {job['attempts']} attempt(s), "
                    f"model {job['model']}"
                )
                print(
                    f"usage: {usage['input_tokens']} input tokens "
                    f"({usage['cached_input_tokens']} cached), {usage['output_tokens']} output "
                    f"tokens ({usage['reasoning_tokens']} reasoning)"
                )
                if priced:
                    print(
                        f"cost:  {format_usd(job['cost_usd'])} at the catalog price of "
                        f"{job['model']}"
                    )
                else:
                    print(
                        f"cost:  {format_usd(job['cost_usd'], estimated=True)} estimated: "
                        f"{job['model']} has no published price, so the default price applies"
                    )
                print(f"upstream saw {fake.stats().model_requests} request(s); stopping.")
            finally:
                code = daemon.stop()
                daemon.close()
            if code != 0:
                print(f"codexd demo: the daemon exited {code}", file=sys.stderr)
                return 1
    return 0
