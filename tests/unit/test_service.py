"""The job service (service/submit.py): admission, the one submit pipeline, owners."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from codexctl.protocol import ErrorKind, RpcError
from codexd.config.load import load_file
from codexd.config.schema import ConfigSnapshot
from codexd.events import EventHub
from codexd.gateway.server import submit_request
from codexd.jobs import Job, JobLimits, JobManager, JobState
from codexd.service import Admission, JobService, ResolvedJob, SubmitRequest, resolve
from codexd.upstream.runner import JobRequest
from codexd.usage.catalog import Catalog
from codexd.usage.cost import estimate_cost_usd
from codexd.usage.ledger import UsageRecord

# Dearest prices per million tokens in the built-in catalog: gpt-5-pro 120, gpt-5-nano 0.4.
DEAR, CHEAP = "gpt-5-pro", "gpt-5-nano"


def snapshot(tmp_path: Path, toml: str = "") -> ConfigSnapshot:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    return load_file(str(path))


class FakeLedger:
    def __init__(self, spent: float = 0.0) -> None:
        self.spent = spent
        self.rows: list[UsageRecord] = []

    async def spend(self, since: float, until: float) -> float:
        return self.spent

    async def commit(self, row: UsageRecord) -> bool:
        self.rows.append(row)
        return True


@dataclass
class Running:
    model: str
    request: JobRequest
    api: str = "responses"


def job_for(snap: ConfigSnapshot, model: str, tokens: int) -> ResolvedJob:
    resolved = resolve(
        snap,
        Catalog.for_snapshot(snap),
        SubmitRequest(body={"model": model, "input": "hi"}, client="t"),
    )
    return dataclasses.replace(
        resolved, request=JobRequest(defaults=resolved.request.defaults, estimated_tokens=tokens)
    )


def tokens_for(model: str, usd: float, catalog: Catalog) -> int:
    price = catalog.price_for(model)
    assert price is not None
    return round(usd / estimate_cost_usd(1_000_000, price) * 1_000_000)


def admission(snap: ConfigSnapshot, running: list[Running]) -> Admission:
    catalog = Catalog.for_snapshot(snap)
    return Admission(
        credentials=lambda provider, api: None,
        ledger=FakeLedger(),
        catalog=lambda s: catalog,
        running=lambda: running,
    )


@pytest.mark.anyio
async def test_the_budget_prices_each_running_job_at_its_own_model(tmp_path: Path) -> None:
    """A dear model running and a cheap one submitted: the running job counts at its own
    price (0.9 + 0.2 passes the 1.0 cap), not at the new job's (which would let it through)."""
    snap = snapshot(tmp_path, "[codexd.budget]\ndaily_usd = 1.0\n")
    catalog = Catalog.for_snapshot(snap)
    dear_running = Running(DEAR, JobRequest(None, tokens_for(DEAR, 0.9, catalog)))
    new = job_for(snap, CHEAP, tokens_for(CHEAP, 0.2, catalog))
    with pytest.raises(RpcError) as refused:
        await admission(snap, [dear_running]).check(new)
    assert refused.value.kind == ErrorKind.BUDGET_EXCEEDED


@pytest.mark.anyio
async def test_a_cheap_running_job_is_not_priced_at_a_dear_new_one(tmp_path: Path) -> None:
    """0.2 running + 0.6 new fits under 1.0; at the new job's price the running one alone
    would be 60 dollars and refuse it."""
    snap = snapshot(tmp_path, "[codexd.budget]\ndaily_usd = 1.0\n")
    catalog = Catalog.for_snapshot(snap)
    cheap_running = Running(CHEAP, JobRequest(None, tokens_for(CHEAP, 0.2, catalog)))
    await admission(snap, [cheap_running]).check(
        job_for(snap, DEAR, tokens_for(DEAR, 0.6, catalog))
    )


@pytest.mark.anyio
async def test_embeddings_are_priced_at_the_input_price_for_the_budget(tmp_path: Path) -> None:
    """An embeddings job's estimate is all input: a running one counts at its model's input
    price, not the dearest of its prices (here 0.5 at input, 4.0 at output)."""
    snap = snapshot(
        tmp_path,
        "[codexd.budget]\ndaily_usd = 1.0\n"
        '[codexd.prices."embedder"]\ninput = 0.5\ncached_input = 0.5\noutput = 4.0\n',
    )
    catalog = Catalog.for_snapshot(snap)
    embedding = Running("embedder", JobRequest(None, 1_000_000), api="embeddings")
    await admission(snap, [embedding]).check(job_for(snap, CHEAP, tokens_for(CHEAP, 0.4, catalog)))
    as_text = Running("embedder", JobRequest(None, 1_000_000))
    with pytest.raises(RpcError) as refused:
        await admission(snap, [as_text]).check(
            job_for(snap, CHEAP, tokens_for(CHEAP, 0.4, catalog))
        )
    assert refused.value.kind == ErrorKind.BUDGET_EXCEEDED


# --------------------------------------------------------------------------- the pipeline


async def wait_for_cancel(job: Job, mgr: JobManager) -> None:
    await anyio.sleep_forever()


def service(snap: ConfigSnapshot, ledger: FakeLedger) -> JobService:
    catalog = Catalog.for_snapshot(snap)
    return JobService(
        wait_for_cancel,
        limits=JobLimits,
        credentials=lambda provider, api: None,
        ledger=ledger,
        events=EventHub(),
        snapshot=lambda: snap,
        catalog=lambda s=None: catalog,
    )


def responses(**kw: Any) -> SubmitRequest:
    return SubmitRequest(body={"input": "hi"}, client="t", **kw)


@pytest.mark.anyio
async def test_the_submit_pipeline_keeps_client_request_id(tmp_path: Path) -> None:
    """The one pipeline both front doors call carries client_request_id onto the job: a
    repeat from the same client gets that job back instead of a second one."""
    jobs = service(snapshot(tmp_path), FakeLedger())
    async with anyio.create_task_group() as tg:
        await tg.start(jobs.manager.run)
        first = await jobs.submit(responses(client_request_id="r1"))
        assert first.client_request_id == "r1"
        assert await jobs.submit(responses(client_request_id="r1")) is first
        assert await jobs.submit(responses(client_request_id="r2")) is not first
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_releasing_an_owner_cancels_only_the_jobs_that_asked_for_it(
    tmp_path: Path,
) -> None:
    jobs = service(snapshot(tmp_path), FakeLedger())
    conn, other = object(), object()
    async with anyio.create_task_group() as tg:
        await tg.start(jobs.manager.run)
        tied = await jobs.submit(responses(cancel_on_disconnect=True), owner=conn)
        kept = await jobs.submit(responses(), owner=conn)
        elsewhere = await jobs.submit(responses(cancel_on_disconnect=True), owner=other)
        assert jobs.owners() == {conn, other}
        jobs.release(conn)
        await tied.finished.wait()
        assert tied.state is JobState.CANCELLED
        assert not kept.is_terminal and not elsewhere.is_terminal
        assert jobs.owners() == {other}
        # A job that ends on its own no longer holds its owner busy.
        jobs.cancel(elsewhere)
        await elsewhere.finished.wait()
        assert jobs.owners() == set()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_gateway_request_is_owned_by_the_request(tmp_path: Path) -> None:
    """The gateway's request goes through the same pipeline, tied to its HTTP request."""
    jobs = service(snapshot(tmp_path), FakeLedger())
    headers = {"x-codexd-client": "sdk", "x-codexd-profile": ""}
    request = submit_request(headers, {"messages": [{"role": "user", "content": "hi"}]}, "chat")
    assert request.cancel_on_disconnect and request.client == "sdk" and request.api == "chat"
    owner = object()
    async with anyio.create_task_group() as tg:
        await tg.start(jobs.manager.run)
        job = await jobs.submit(request, owner=owner)
        assert (job.client, job.api) == ("sdk", "chat")
        jobs.release(owner)
        await job.finished.wait()
        assert job.state is JobState.CANCELLED
        tg.cancel_scope.cancel()
