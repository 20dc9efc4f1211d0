"""Subscriptions, replay, slow consumers, cancellation, idempotent submits, queue limits, the
Job's members and its cost, through a real daemon and the fake OpenAI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codexctl import Client, RpcError
from codexctl.protocol import ClientInfo
from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import (
    DEFAULT_REPLY_TEXT,
    FakeOpenAI,
    Reply,
    server_error,
    stalled,
)
from tests.conftest import LineConn, write_config

TERMINAL = {"job.completed", "job.failed", "job.cancelled"}
JOB_MEMBERS = {
    "id",
    "state",
    "client",
    "provider",
    "model",
    "api",
    "created_at",
    "started_at",
    "finished_at",
    "attempts",
    "output_text",
    "usage",
    "cost_usd",
    "error",
}
USAGE_MEMBERS = {
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
}


@pytest.fixture
def start_daemon(
    upstream_env: dict[str, str], fake_openai: FakeOpenAI
) -> Iterator[Callable[..., DaemonProcess]]:
    """Start a daemon with extra config text after the fake's provider lines."""
    started: list[DaemonProcess] = []

    def start(codexd: str = "", extra: str = "") -> DaemonProcess:
        write_config(
            upstream_env,
            f'openai_base_url = "{fake_openai.base_url}"\nmodel = "gpt-5"\n'
            + (f"[codexd]\n{codexd}\n" if codexd else "")
            + "[model_providers.fake]\n"
            f'name = "fake"\nbase_url = "{fake_openai.base_url}"\nenv_key = "FAKE_KEY"\n' + extra,
        )
        proc = DaemonProcess(upstream_env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


class Inbox:
    """Notifications of one client sorted by job, so waiting on one job loses no other's."""

    def __init__(self) -> None:
        self.by_client: dict[int, dict[str, deque[dict[str, Any]]]] = {}

    def events(
        self, client: Client, job_id: str, until: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        """`job/event` params of `job_id` up to and including the first `until` accepts."""
        jobs = self.by_client.setdefault(id(client), defaultdict(deque))
        out: list[dict[str, Any]] = []
        while True:
            if jobs[job_id]:
                out.append(jobs[job_id].popleft())
                if until(out[-1]):
                    return out
                continue
            n = client.next_notification(timeout=30)
            assert n is not None, f"timed out after {len(out)} events of {job_id}"
            if n.method == "job/event":
                jobs[n.params["job_id"]].append(n.params)
            elif n.method == "subscription/dropped":
                assert n.params.get("job_id") != job_id, f"dropped as a slow consumer: {n.params}"


_inbox = Inbox()


def job_events(
    client: Client, job_id: str, *, until: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    return _inbox.events(client, job_id, until)


def is_terminal(params: dict[str, Any]) -> bool:
    return params["event"]["type"] in TERMINAL


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params["event"]["type"] == kind


def assert_no_notification_before_a_ping(client: Client) -> None:
    """Absence with a barrier: the daemon answers a ping on this connection after every
    notification it had queued for it, and `call` keeps what arrived before the answer."""
    assert client.call("daemon/ping") == {}
    assert client.next_notification(timeout=0) is None


def submit(client: Client, body: dict[str, Any] | None = None, **params: Any) -> str:
    result = client.call("job/submit", {"body": body or {"input": "Say hello"}, **params})
    return str(result["job_id"])


def many_deltas(n: int, size: int = 0) -> tuple[str, ...]:
    return tuple(f" word{i}".ljust(size, "x") for i in range(n))


# --------------------------------------------------------------------------- replay


def test_replay_from_every_seq_gives_exactly_the_missing_events(
    upstream_daemon: DaemonProcess,
) -> None:
    with Client(upstream_daemon.socket) as a:
        job_id = submit(a)
        full = job_events(a, job_id, until=is_terminal)
    assert [e["seq"] for e in full] == list(range(1, len(full) + 1))
    with Client(upstream_daemon.socket) as b:
        for after in range(len(full)):
            reply = b.call("job/subscribe", {"job_id": job_id, "after_seq": after})
            assert reply == {"job_id": job_id, "next_seq": len(full) + 1}
            assert job_events(b, job_id, until=is_terminal) == full[after:]
        # After the last event there is nothing to replay, and nothing arrives.
        reply = b.call("job/subscribe", {"job_id": job_id, "after_seq": len(full)})
        assert reply["next_seq"] == len(full) + 1
        assert_no_notification_before_a_ping(b)


def test_replay_then_live_on_a_second_connection_misses_nothing(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(deltas=many_deltas(40), delta_delay_s=0.02))
    with Client(upstream_daemon.socket) as a, Client(upstream_daemon.socket) as b:
        job_id = submit(a)
        seen = job_events(a, job_id, until=lambda p: p["seq"] >= 10)
        full = seen + job_events(a, job_id, until=is_terminal)
        # Subscribe mid-stream from seq 7: the replay and the live tail join without a gap.
        assert b.call("job/subscribe", {"job_id": job_id, "after_seq": 7})["next_seq"] > 10
        assert job_events(b, job_id, until=is_terminal) == full[7:]
    assert full[-1]["event"]["output_text"] == "".join(many_deltas(40))


def test_replay_unavailable_once_the_bounded_log_wrapped(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(deltas=many_deltas(30)))
    daemon = start_daemon(codexd="max_job_log_events = 10")
    with Client(daemon.socket) as a:
        with Client(daemon.socket) as watcher:
            job_id = submit(watcher)
            full = job_events(watcher, job_id, until=is_terminal)
        last = full[-1]["seq"]
        # The log keeps the first event and the newest nine.
        oldest = last - 8
        for after in (0, 1, oldest - 2):
            with pytest.raises(RpcError) as info:
                a.call("job/subscribe", {"job_id": job_id, "after_seq": after})
            assert info.value.kind == "replay_unavailable"
            assert info.value.code == -32042
            assert info.value.data.oldest_seq == oldest
        assert a.call("job/subscribe", {"job_id": job_id, "after_seq": oldest - 1}) == {
            "job_id": job_id,
            "next_seq": last + 1,
        }
        tail = job_events(a, job_id, until=is_terminal)
    assert tail == full[oldest - 1 :]
    assert tail[-1]["event"]["output_text"] == "".join(many_deltas(30))


# --------------------------------------------------------------------------- slow consumers


def test_a_never_reading_subscriber_is_dropped_and_can_reattach(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    # Lines of about 1 KiB, paced so that a reading client keeps up: the never-reader's
    # buffers (1024 lines in the daemon, a few hundred KiB in the kernel) fill long before
    # the end.
    n_deltas = 3000
    fake_openai.script(
        Reply(deltas=many_deltas(n_deltas, 1000), first_byte_delay_s=0.3, delta_delay_s=0.001)
    )
    with Client(upstream_daemon.socket) as fast:
        job_id = submit(fast)
        slow = LineConn(upstream_daemon.socket, timeout=30)
        slow.send(
            {"jsonrpc": "2.0", "id": 1, "method": "job/subscribe", "params": {"job_id": job_id}}
        )
        # The other subscriber gets the whole job while the slow one has read nothing.
        events = job_events(fast, job_id, until=is_terminal)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["event"]["output_text"] == "".join(many_deltas(n_deltas, 1000))

        # Now the slow one reads: its reply, events from seq 1 without a gap, and the notice.
        reply = slow.recv()
        assert reply["id"] == 1 and reply["result"]["job_id"] == job_id  # type: ignore[index]
        received: list[int] = []
        notice: dict[str, Any] | None = None
        while notice is None or received[-1] < notice["next_seq"] - 1:
            msg: Any = slow.recv()
            if msg["method"] == "subscription/dropped":
                assert notice is None, "one notice"
                notice = msg["params"]
            else:
                assert msg["method"] == "job/event"
                received.append(msg["params"]["seq"])
        # Events still queued for it when it was dropped may follow the notice; together they
        # are an unbroken run that ends right before next_seq.
        assert notice == {
            "job_id": job_id,
            "reason": "slow_consumer",
            "next_seq": notice["next_seq"],
        }
        next_seq = notice["next_seq"]
        assert 1 < next_seq < len(events)
        assert received == list(range(1, next_seq))

        # Re-attaching from where it stopped gives exactly the rest.
        again = slow.call("job/subscribe", {"job_id": job_id, "after_seq": next_seq - 1}, rid=2)
        assert again["result"] == {"job_id": job_id, "next_seq": len(events) + 1}
        rest = [slow.recv() for _ in range(len(events) - next_seq + 1)]
        assert [m["params"] for m in rest] == events[next_seq - 1 :]
        slow.close()


# --------------------------------------------------------------------------- cancel


def test_cancel_reaches_upstream_and_is_idempotent(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(deltas=many_deltas(100), delta_delay_s=0.1))
    with Client(upstream_daemon.socket) as c:
        job_id = submit(c)
        job_events(c, job_id, until=of_type("response.output_text.delta"))
        job = c.call("job/cancel", {"job_id": job_id})
        assert job["state"] == "cancelled"
        assert job["error"]["data"]["kind"] == "cancelled"
        assert job["error"]["code"] == -32041
        rest = job_events(c, job_id, until=is_terminal)
        assert rest[-1]["event"] == {"type": "job.cancelled"}
        fake_openai.wait_for(lambda s: s.disconnects == 1 and s.in_flight == 0)
        again = c.call("job/cancel", {"job_id": job_id})
        assert again == c.call("job/get", {"job_id": job_id})
        assert again["state"] == "cancelled"
        assert again["finished_at"] == job["finished_at"]
        # No second terminal event.
        assert_no_notification_before_a_ping(c)
    assert fake_openai.stats().completed_streams == 0


def test_cancel_on_disconnect_cancels_when_the_submitter_goes(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(stalled(5), Reply())
    with Client(upstream_daemon.socket) as watcher:
        submitter = Client(upstream_daemon.socket)
        job_id = submit(submitter, cancel_on_disconnect=True)
        job_events(submitter, job_id, until=of_type("response.output_text.delta"))
        watcher.call("job/subscribe", {"job_id": job_id})
        job_events(watcher, job_id, until=of_type("response.output_text.delta"))
        submitter.close()
        assert job_events(watcher, job_id, until=is_terminal)[-1]["event"]["type"] == (
            "job.cancelled"
        )
        fake_openai.wait_for(lambda s: s.disconnects == 1)

        # Without the flag, the job outlives its submitter.
        other = Client(upstream_daemon.socket)
        kept = submit(other)
        job_events(other, kept, until=of_type("job.started"))
        other.close()
        watcher.call("job/subscribe", {"job_id": kept})
        assert job_events(watcher, kept, until=is_terminal)[-1]["event"]["type"] == (
            "job.completed"
        )


# --------------------------------------------------------------------------- submit


def test_client_request_id_repeat_returns_the_existing_job(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    with Client(upstream_daemon.socket) as c:
        first = c.call("job/submit", {"body": {"input": "hi"}, "client_request_id": "req-1"})
        events = job_events(c, first["job_id"], until=is_terminal)
        again = c.call("job/submit", {"body": {"input": "hi"}, "client_request_id": "req-1"})
        assert again == {"job_id": first["job_id"], "state": "completed"}
        # The repeat's subscription replays the same job.
        assert job_events(c, first["job_id"], until=is_terminal) == events
        other = c.call("job/submit", {"body": {"input": "hi"}, "client_request_id": "req-2"})
        assert other["job_id"] != first["job_id"]
        job_events(c, other["job_id"], until=is_terminal)
    assert len(fake_openai.model_requests()) == 2


def test_client_request_id_is_per_client_name(
    upstream_daemon: DaemonProcess, fake_openai: FakeOpenAI
) -> None:
    ids = []
    for name in ("tool-a", "tool-b"):
        with Client(upstream_daemon.socket, client=ClientInfo(name=name)) as c:
            job_id = submit(c, client_request_id="same")
            job_events(c, job_id, until=is_terminal)
            ids.append(job_id)
    assert ids[0] != ids[1]
    assert len(fake_openai.model_requests()) == 2


def test_submit_reply_comes_before_the_jobs_first_event(upstream_daemon: DaemonProcess) -> None:
    conn = LineConn(upstream_daemon.socket)
    try:
        # Pipelined: every submit is on the wire before any reply is read.
        n = 8
        conn.send(
            b"".join(
                msgspec.json.encode(
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "job/submit",
                        "params": {"body": {"input": f"q{i}"}},
                    }
                )
                + b"\n"
                for i in range(n)
            )
        )
        replied: set[str] = set()
        finished = 0
        while finished < n:
            msg = conn.recv()
            if "id" in msg:
                replied.add(msg["result"]["job_id"])  # type: ignore[index]
                continue
            assert msg["method"] == "job/event"
            params: Any = msg["params"]
            assert params["job_id"] in replied, "an event came before its job/submit reply"
            if params["event"]["type"] in TERMINAL:
                finished += 1
        assert len(replied) == n
    finally:
        conn.close()


def test_max_queued_jobs_is_overloaded_at_submit(
    start_daemon: Callable[..., DaemonProcess], fake_openai: FakeOpenAI
) -> None:
    daemon = start_daemon(
        codexd="max_queued_jobs = 2", extra="[codexd.rate_limits.fake]\nmax_concurrency = 1\n"
    )
    fake_openai.script(stalled(5))
    with Client(daemon.socket) as c:
        running = submit(c, provider="fake")
        first = job_events(c, running, until=of_type("job.started"))
        assert first[0]["event"] == {"type": "job.queued", "position": 0}
        queued = [submit(c, provider="fake") for _ in range(2)]
        positions = [
            job_events(c, job_id, until=of_type("job.queued"))[-1]["event"]["position"]
            for job_id in queued
        ]
        assert positions == [1, 2]
        with pytest.raises(RpcError) as info:
            submit(c, provider="fake")
        assert info.value.kind == "overloaded"
        assert info.value.code == -32001
        assert "max_queued_jobs" in info.value.message
        assert len(c.call("job/list")["jobs"]) == 3
        assert [j["state"] for j in c.call("job/list", {"state": "queued"})["jobs"]] == [
            "queued",
            "queued",
        ]
        assert len(fake_openai.model_requests()) == 1
        # Cancelling a queued job frees its place at once, without an upstream request.
        assert c.call("job/cancel", {"job_id": queued[0]})["state"] == "cancelled"
        submit(c, provider="fake")
        assert len(fake_openai.model_requests()) == 1
        assert c.call("job/cancel", {"job_id": running})["state"] == "cancelled"
        assert job_events(c, queued[1], until=is_terminal)[-1]["event"]["type"] == ("job.completed")


def test_a_retrying_job_back_in_the_rate_limit_line_is_never_refused_there(
    start_daemon: Callable[..., DaemonProcess],
    fake_openai: FakeOpenAI,
    upstream_env: dict[str, str],
) -> None:
    """`max_queued_jobs` is the one bound of waiting jobs, applied at submit: a job that waits
    again before a retry was counted when it came in and is never refused later, and a job
    taken at submit is never turned away inside the daemon (that ended it as an internal
    error)."""
    daemon = start_daemon(
        codexd="max_queued_jobs = 1", extra="[codexd.rate_limits.fake]\nmax_concurrency = 1\n"
    )
    # The first job's first attempt is told to come back in 3 s; the holder keeps the only
    # slot meanwhile, so the retry waits in line behind it.
    fake_openai.script(
        dataclasses.replace(server_error(500), headers=(("retry-after", "3"),)), stalled(5)
    )
    with Client(daemon.socket) as c, Client(daemon.socket) as watcher:
        assert watcher.call("events/subscribe", {"topics": ["ratelimits"]}) == {}
        retrying = submit(c, provider="fake")
        job_events(c, retrying, until=of_type("job.retrying"))
        holder = submit(c, provider="fake")
        job_events(c, holder, until=of_type("job.started"))
        while True:  # the retry is back in the line
            note = watcher.next_notification(timeout=30)
            assert note is not None, "the retrying job never waited for a slot"
            budget = note.params["budget"]
            if note.params["provider"] == "fake" and budget["queued"] == 1:
                break
        assert [j["state"] for j in c.call("job/list", {"state": "retrying"})["jobs"]] == [
            "retrying"
        ]
        # No job is queued: this one is taken, and waits its turn.
        waiting = submit(c, provider="fake")
        event = job_events(c, waiting, until=lambda p: of_type("job.queued")(p) or is_terminal(p))
        assert event[-1]["event"] == {"type": "job.queued", "position": 2}, event[-1]
        # Now one job is queued: the next submit is refused, and no job is created.
        with pytest.raises(RpcError) as info:
            submit(c, provider="fake")
        assert info.value.kind == "overloaded"
        assert "max_queued_jobs" in info.value.message
        assert len(c.call("job/list")["jobs"]) == 3
        # The bound is read at each submit: a reload that raises it takes the next one.
        write_config(
            upstream_env,
            f'openai_base_url = "{fake_openai.base_url}"\nmodel = "gpt-5"\n'
            "[codexd]\nmax_queued_jobs = 2\n[model_providers.fake]\n"
            f'name = "fake"\nbase_url = "{fake_openai.base_url}"\nenv_key = "FAKE_KEY"\n'
            "[codexd.rate_limits.fake]\nmax_concurrency = 1\n",
        )
        assert c.call("config/reload")["changed"] is True
        second = submit(c, provider="fake")
        assert len(c.call("job/list")["jobs"]) == 4
        assert c.call("job/cancel", {"job_id": holder})["state"] == "cancelled"
        for job_id in (retrying, waiting, second):
            last = job_events(c, job_id, until=is_terminal)[-1]["event"]
            assert last["type"] == "job.completed", last


# --------------------------------------------------------------------------- the Job


def test_job_get_and_list_members_are_specs(upstream_daemon: DaemonProcess) -> None:
    with Client(upstream_daemon.socket, client=ClientInfo(name="my-editor", version="2.1")) as c:
        job_id = submit(c)
        job_events(c, job_id, until=is_terminal)
        job = c.call("job/get", {"job_id": job_id})
        listed = c.call("job/list")["jobs"]
    assert set(job) == JOB_MEMBERS
    assert listed == [job]
    assert job["id"] == job_id
    assert job["client"] == "my-editor"
    assert job["provider"] == "openai"
    assert job["model"] == "gpt-5"
    assert job["api"] == "responses"
    assert job["state"] == "completed"
    assert job["attempts"] == 1
    assert job["output_text"] == DEFAULT_REPLY_TEXT
    assert job["error"] is None
    assert set(job["usage"]) == USAGE_MEMBERS
    for member in ("created_at", "started_at", "finished_at"):
        assert job[member].endswith("Z"), member
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_client_name_defaults_to_the_peers_script_name(
    upstream_daemon: DaemonProcess, tmp_path: Path
) -> None:
    script = tmp_path / "probe_tool.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from codexctl import Client
            with Client({upstream_daemon.socket!r}) as c:
                print(c.call("job/submit", {{"body": {{"input": "hi"}}, "subscribe": False}})[
                    "job_id"
                ])
            """
        )
    )
    job_id = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    with Client(upstream_daemon.socket) as c:
        assert c.call("job/get", {"job_id": job_id})["client"] == "probe_tool.py"


def test_cost_uses_the_catalog_price_and_the_default_for_unknown_models(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    # A default price of our own, so that "catalog" and "default" cannot coincide.
    default = {"input": 3.0, "cached_input": 0.5, "output": 20.0}
    daemon = start_daemon(
        extra='[codexd.prices."*"]\ninput = 3.0\ncached_input = 0.5\noutput = 20.0\n'
    )
    with Client(daemon.socket) as c:
        models = {m["slug"]: m for m in c.call("models/list")["models"]}
        price = {k: models["gpt-5.1"]["price"][k] for k in default}
        assert price != default
        known = completed(c, {"input": "price me " * 40, "model": "gpt-5.1"})
        mini = completed(c, {"input": "price me " * 40, "model": "gpt-5-nano"})
        unknown = completed(c, {"input": "price me " * 40, "model": "my-unpriced-model"})
        rows = {r["model"]: r for r in c.call("usage/read", {"group_by": ["model"]})["rows"]}

    def expected(usage: dict[str, int], p: dict[str, float]) -> float:
        uncached = usage["input_tokens"] - usage["cached_input_tokens"]
        return (
            uncached * p["input"]
            + usage["cached_input_tokens"] * p["cached_input"]
            + usage["output_tokens"] * p["output"]
        ) / 1e6

    assert known["usage"]["input_tokens"] > 0
    assert known["cost_usd"] == pytest.approx(expected(known["usage"], price))
    mini_price = {k: models["gpt-5-nano"]["price"][k] for k in default}
    assert mini["cost_usd"] == pytest.approx(expected(mini["usage"], mini_price))
    assert mini["cost_usd"] < known["cost_usd"]
    assert unknown["cost_usd"] == pytest.approx(expected(unknown["usage"], default))
    assert rows["gpt-5.1"]["estimated"] is False
    assert rows["my-unpriced-model"]["estimated"] is True
    assert rows["my-unpriced-model"]["cost_usd"] == pytest.approx(unknown["cost_usd"])


def completed(c: Client, body: dict[str, Any]) -> dict[str, Any]:
    job_id = submit(c, body)
    done: dict[str, Any] = job_events(c, job_id, until=is_terminal)[-1]["event"]
    assert done["type"] == "job.completed"
    return done
