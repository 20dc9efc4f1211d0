"""The usage ledger, cost and budgets through a real daemon.

What the fake upstream reported (its request log keeps each reply's usage) is the truth the
ledger's totals are checked against.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from codexctl import Client, RpcError
from codexctl.protocol import ClientInfo
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import DEFAULT_MODELS, FakeOpenAI, RecordedRequest, Reply
from tests.conftest import write_config
from tests.integration.test_jobs_upstream import run_job

HANG_GUARD_S = 5.0
UNPRICED = "acme-unpriced-1"
DEFAULT_PRICE = {"input": 1.25, "cached_input": 0.125, "output": 10.0}
PER_TOKEN = 1e-6  # prices are USD per 1M tokens


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """The fake, also serving a model that no catalog prices."""
    with FakeOpenAI.running(models=(*DEFAULT_MODELS, UNPRICED)) as fake:
        yield fake


def tool(socket: str, name: str) -> Client:
    return Client(socket, client=ClientInfo(name=name), timeout=30)


@contextmanager
def daemon_at(env: dict[str, str], **changes: str) -> Iterator[DaemonProcess]:
    with DaemonProcess({**env, **changes}) as proc:
        yield proc


def reported(requests: list[RecordedRequest]) -> dict[str, int]:
    """The usage the fake reported, summed over successful replies."""
    out = {"requests": 0, "input": 0, "cached": 0, "output": 0, "reasoning": 0}
    for r in requests:
        if r.usage is None:
            continue
        out["requests"] += 1
        out["input"] += r.usage.input_tokens
        out["cached"] += r.usage.cached_tokens
        out["output"] += r.usage.output_tokens
        out["reasoning"] += r.usage.reasoning_tokens
    return out


def as_reported(total: dict[str, Any]) -> dict[str, int]:
    return {
        "requests": total["requests"],
        "input": total["input_tokens"],
        "cached": total["cached_input_tokens"],
        "output": total["output_tokens"],
        "reasoning": total["reasoning_tokens"],
    }


def cost_of(req: RecordedRequest, price: dict[str, float]) -> float:
    """Uncached input × input + cached × cached price + output × output."""
    assert req.usage is not None
    u = req.usage
    return (
        (u.input_tokens - u.cached_tokens) * price["input"]
        + u.cached_tokens * price["cached_input"]
        + u.output_tokens * price["output"]
    ) * PER_TOKEN


def price_of(client: Client, model: str) -> dict[str, float]:
    models = {m["slug"]: m for m in client.call("models/list")["models"]}
    price: dict[str, float] = models[model]["price"]
    return price


# --------------------------------------------------------------------------- totals


WORKLOAD = [
    # models whose price the catalog confirmed, so no total is an estimate
    # (client, model, api, reply)
    ("editor", "gpt-5.1", "responses", Reply()),
    ("editor", "gpt-5-nano", "chat", Reply(cached_tokens=3)),
    ("linter", "gpt-5-codex", "responses", Reply(reasoning_tokens=7)),
    ("linter", "gpt-5.1", "chat", Reply(text="A longer reply to count.")),
    ("batch", "gpt-5-nano", "responses", Reply(cached_tokens=2, reasoning_tokens=4)),
    ("batch", "gpt-5-codex", "responses", Reply()),
    ("batch", "gpt-5.1", "responses", Reply(reasoning_tokens=11)),
]


def body_for(api: str, model: str, prompt: str) -> dict[str, Any]:
    if api == "chat":
        return {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return {"model": model, "input": prompt}


def run_workload(socket: str, fake: FakeOpenAI, tag: str) -> list[dict[str, Any]]:
    """Run WORKLOAD (one job after another, so each takes its scripted reply); returns the
    terminal events."""
    done = []
    for i, (name, model, api, reply) in enumerate(WORKLOAD):
        fake.script(reply)
        with tool(socket, name) as c:
            prompt = f"{tag} job {i}: " + "words " * (5 + 3 * i)
            _, events = run_job(c, body_for(api, model, prompt), api=api)
        assert events[-1]["event"]["type"] == "job.completed", events[-1]
        done.append(events[-1]["event"])
    return done


def test_totals_equal_what_the_upstream_reported(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    completed = run_workload(upstream_daemon.socket, fake_openai, "totals")
    truth = reported(fake_openai.model_requests())
    assert truth["requests"] == len(WORKLOAD) and truth["cached"] > 0 and truth["reasoning"] > 0
    with Client(upstream_daemon.socket) as c:
        everything = c.call("usage/read")
        by_model = c.call("usage/read", {"group_by": ["model"]})
        by_client = c.call("usage/read", {"group_by": ["client", "provider"]})
        by_day = c.call("usage/read", {"group_by": ["day"]})
    assert as_reported(everything["total"]) == truth
    assert math.isclose(
        everything["total"]["cost_usd"], sum(e["cost_usd"] for e in completed), rel_tol=1e-9
    )
    assert everything["total"]["estimated"] is False
    for grouped in (by_model, by_client, by_day):
        assert grouped["total"] == everything["total"]
        assert sum(r["requests"] for r in grouped["rows"]) == len(WORKLOAD)
    per_model = {r["model"]: r for r in by_model["rows"]}
    assert set(per_model) == {"gpt-5.1", "gpt-5-nano", "gpt-5-codex"}
    for model, row in per_model.items():
        of_model = [r for r in fake_openai.model_requests() if r.body["model"] == model]
        assert as_reported(row) == reported(of_model), model
        assert set(row) >= {"model", "requests", "cost_usd", "estimated"}
        assert "client" not in row and "day" not in row
    per_client = {(r["client"], r["provider"]): r["requests"] for r in by_client["rows"]}
    assert per_client == {("batch", "openai"): 3, ("editor", "openai"): 2, ("linter", "openai"): 2}
    assert [r["day"] for r in by_day["rows"]] == [time.strftime("%Y-%m-%d")]


def test_cost_math_for_cached_tokens(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(cached_tokens=800, reasoning_tokens=50))
    with tool(upstream_daemon.socket, "cache-user") as c:
        price = price_of(c, "gpt-5.1")
        job_id, events = run_job(c, {"model": "gpt-5.1", "input": "x" * 4000})
        job = c.call("job/get", {"job_id": job_id})
        usage_total = c.call("usage/read")["total"]
    (req,) = fake_openai.model_requests()
    assert req.usage is not None and (req.usage.input_tokens, req.usage.cached_tokens) == (
        1000,
        800,
    )
    done = events[-1]["event"]
    assert done["usage"]["cached_input_tokens"] == 800
    assert done["usage"]["input_tokens"] == 1000  # the cached ones included, as OpenAI counts
    expected = cost_of(req, price)
    uncached_everything = (1000 * price["input"] + req.usage.output_tokens * price["output"]) * (
        PER_TOKEN
    )
    assert expected < uncached_everything  # the cached price is what makes the difference
    assert math.isclose(done["cost_usd"], expected, rel_tol=1e-9)
    assert math.isclose(job["cost_usd"], expected, rel_tol=1e-9)
    assert math.isclose(usage_total["cost_usd"], expected, rel_tol=1e-6)
    assert usage_total["cached_input_tokens"] == 800


def test_an_unknown_model_is_priced_by_default_and_estimated(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    with tool(upstream_daemon.socket, "explorer") as c:
        assert UNPRICED not in {m["slug"] for m in c.call("models/list")["models"]}
        _, unpriced = run_job(c, {"model": UNPRICED, "input": "what do you cost?"})
        _, priced = run_job(c, {"model": "gpt-5.1", "input": "and you?"})
        rows = {r["model"]: r for r in c.call("usage/read", {"group_by": ["model"]})["rows"]}
        total = c.call("usage/read")["total"]
    unpriced_req, _ = fake_openai.model_requests()
    assert math.isclose(
        unpriced[-1]["event"]["cost_usd"], cost_of(unpriced_req, DEFAULT_PRICE), rel_tol=1e-9
    )
    assert rows[UNPRICED]["estimated"] is True
    assert rows["gpt-5.1"]["estimated"] is False
    assert total["estimated"] is True  # a total holding an estimate says so
    assert priced[-1]["event"]["cost_usd"] > 0


def test_a_catalog_model_without_a_confirmed_price_is_estimated_at_the_default(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    """The default model is in the catalog without a price (none confirmed on the provider's
    page): `models/list` says so, and its ledger row is charged the default price and marked
    estimated. A `[codexd.prices]` entry gives a model a price of its own, sourced "config"."""
    write_config(
        upstream_env,
        f'openai_base_url = "{fake_openai.base_url}"\n'
        '[codexd.prices."gpt-5-mini"]\ninput = 0.5\ncached_input = 0.05\noutput = 4.0\n',
    )
    with DaemonProcess(upstream_env) as daemon, tool(daemon.socket, "explorer") as c:
        listed = c.call("models/list")
        _, unpriced = run_job(c, {"input": "what does the default model cost?"})
        _, configured = run_job(c, {"model": "gpt-5-mini", "input": "and a configured one?"})
        rows = {r["model"]: r for r in c.call("usage/read", {"group_by": ["model"]})["rows"]}
    models = {m["slug"]: m for m in listed["models"]}
    assert listed["models"][0]["slug"] == "gpt-5.1-codex-max"
    assert models["gpt-5.1-codex-max"]["price"] is None
    assert listed["default_price"] == {**DEFAULT_PRICE, "source": "default", "as_of": None}
    assert models["gpt-5.1"]["price"] == {
        **DEFAULT_PRICE,  # the same numbers, but confirmed: not an estimate
        "source": "https://developers.openai.com/api/docs/models/gpt-5.1",
        "as_of": "2026-12-05",
    }
    mini = {"input": 0.5, "cached_input": 0.05, "output": 4.0}
    assert models["gpt-5-mini"]["price"] == {**mini, "source": "config", "as_of": None}
    default_req, mini_req = fake_openai.model_requests()
    assert default_req.body["model"] == "gpt-5.1-codex-max"
    assert math.isclose(
        unpriced[-1]["event"]["cost_usd"], cost_of(default_req, DEFAULT_PRICE), rel_tol=1e-9
    )
    assert rows["gpt-5.1-codex-max"]["estimated"] is True
    assert math.isclose(
        configured[-1]["event"]["cost_usd"], cost_of(mini_req, mini), rel_tol=1e-9
    )
    assert rows["gpt-5-mini"]["estimated"] is False


# --------------------------------------------------------------------------- durability


def test_the_ledger_survives_a_restart_and_a_sigkill(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    with daemon_at(upstream_env) as d, tool(d.socket, "first-run") as c:
        for i in range(3):
            run_job(c, {"input": f"before the restart {i}"})
    # A drained daemon (SIGTERM) wrote every finished job.
    with daemon_at(upstream_env) as d:
        with tool(d.socket, "second-run") as c:
            assert c.call("usage/read")["total"]["requests"] == 3
            _, events = run_job(c, {"input": "the last one before the kill"})
            assert events[-1]["event"]["type"] == "job.completed"
            # Recorded: usage/read answers from committed rows (it waits for the writer).
            assert c.call("usage/read")["total"]["requests"] == 4
        d.signal(signal.SIGKILL)
        assert d.proc is not None and d.proc.wait(timeout=10) == -signal.SIGKILL
    with daemon_at(upstream_env) as d, tool(d.socket, "after-the-kill") as c:
        result = c.call("usage/read", {"group_by": ["client"]})
    assert result["total"]["requests"] == 4
    assert {r["client"]: r["requests"] for r in result["rows"]} == {
        "first-run": 3,
        "second-run": 1,
    }
    assert as_reported(result["total"]) == reported(fake_openai.model_requests())


def _killed_at_once(d: DaemonProcess) -> None:
    d.signal(signal.SIGKILL)
    assert d.proc is not None and d.proc.wait(timeout=10) == -signal.SIGKILL


def _requests_after_restart(env: dict[str, str]) -> int:
    with daemon_at(env) as d, tool(d.socket, "after-the-kill") as c:
        return int(c.call("usage/read")["total"]["requests"])


def test_a_job_told_completed_is_in_the_ledger_when_the_daemon_dies_at_once(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    # The row is committed before the terminal event is delivered, so no usage/read
    # (which would commit it) and no drain come between the client's job.completed and the kill.
    with daemon_at(upstream_env) as d, tool(d.socket, "told-then-killed") as c:
        _, events = run_job(c, {"input": "the reply, then the kill"})
        assert events[-1]["event"]["type"] == "job.completed"
        _killed_at_once(d)
    assert _requests_after_restart(upstream_env) == 1


def test_a_gateway_reply_is_in_the_ledger_when_the_daemon_dies_at_once(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    config = os.path.join(upstream_env["CODEX_HOME"], "config.toml")
    with open(config, "a") as f:
        f.write("[codexd.gateway]\nenabled = true\n")
    with daemon_at(upstream_env) as d:
        sock = os.path.join(os.path.dirname(d.socket), "gateway.sock")
        with httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=30) as http:
            reply = http.post(
                "http://codexd/v1/responses", json={"model": "gpt-5", "input": "then the kill"}
            )
            assert reply.status_code == 200, reply.text
            _killed_at_once(d)
    assert _requests_after_restart(upstream_env) == 1


def test_two_daemons_and_a_restart_never_double_count(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # Two daemons on two sockets share one state dir, so one ledger (as two shells may start
    # codexd with different CODEXD_SOCKET but the same user state).
    other_socket = str(tmp_path / "other-run" / "codexd.sock")
    with (
        daemon_at(upstream_env) as one,
        daemon_at(upstream_env, CODEXD_SOCKET=other_socket) as two,
        tool(one.socket, "shell-1") as a,
        tool(two.socket, "shell-2") as b,
    ):
        for i in range(3):
            run_job(a, {"input": f"one {i}"})
            run_job(b, {"input": f"two {i}"})
        # A retried submit (same client_request_id) is one job, one request, one row.
        first, _ = run_job(a, {"input": "idempotent"}, client_request_id="req-42")
        again = a.call(
            "job/submit",
            {"body": {"input": "idempotent"}, "client_request_id": "req-42", "subscribe": False},
        )
        assert again["job_id"] == first
        # Each daemon commits its rows when read (read your writes); the other daemon's rows
        # are visible once that daemon committed them: read two (commits its rows), then one
        # (commits its own, sees two's), then two again.
        b.call("usage/read")
        seen_by_one = a.call("usage/read")["total"]
        seen_by_two = b.call("usage/read")["total"]
    truth = reported(fake_openai.model_requests())
    assert truth["requests"] == 7
    assert as_reported(seen_by_one) == as_reported(seen_by_two) == truth
    with daemon_at(upstream_env) as d, tool(d.socket, "after") as c:
        assert as_reported(c.call("usage/read")["total"]) == truth


# --------------------------------------------------------------------------- budgets


def test_a_budget_cap_refuses_the_next_job_before_any_request(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> None:
    config = Path(upstream_env["CODEX_HOME"]) / "config.toml"
    base = config.read_text()
    with daemon_at(upstream_env) as d, tool(d.socket, "spender") as c:
        for i in range(2):
            run_job(c, {"input": f"spend {i}"})
        spent = c.call("usage/read")["total"]["cost_usd"]
        assert spent > 0
        budget = c.call("usage/read")["budget"]
        assert (budget["daily_usd"], budget["monthly_usd"]) == (None, None)
        assert math.isclose(budget["spent_today_usd"], spent, rel_tol=1e-9)

        with Client(d.socket) as events:
            events.call("events/subscribe", {"topics": ["config"]})
            tmp = config.with_name(".config.toml.tmp")
            tmp.write_text(base + "[codexd.budget]\ndaily_usd = 0.00001\nmonthly_usd = 50.0\n")
            os.replace(tmp, config)
            deadline = time.monotonic() + HANG_GUARD_S
            while True:
                note = events.next_notification(timeout=max(deadline - time.monotonic(), 0.001))
                assert note is not None, "the new cap was not loaded"
                if note.method == "config/reloaded":
                    break

        sent_before = fake_openai.stats().model_requests
        jobs_before = len(c.call("job/list")["jobs"])
        with pytest.raises(RpcError) as info:
            c.call("job/submit", {"body": {"input": "one more"}})
        err = info.value
        assert (err.code, err.kind) == (-32023, "budget_exceeded")
        assert "daily" in err.message
        assert fake_openai.stats().model_requests == sent_before, "the refused job was sent"
        assert len(c.call("job/list")["jobs"]) == jobs_before, "a refused job is no job"

        budget = c.call("usage/read")["budget"]
        assert (budget["daily_usd"], budget["monthly_usd"]) == (0.00001, 50.0)
        assert budget["spent_today_usd"] > budget["daily_usd"]
        assert budget["spent_month_usd"] >= budget["spent_today_usd"]
        assert budget["day_resets_at"].endswith("Z")
