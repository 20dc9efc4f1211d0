"""Job submission, one pipeline for both front doors: resolve → admit → create.

`resolve` turns a `SubmitRequest` (what a client asked for) into a frozen `ResolvedJob`
against the config snapshot in force: provider, api, model, request defaults, the token
estimate. `Admission` refuses at submit time what could never run (no credentials at all)
or must not (a budget cap). The job manager creates it (or refuses: draining, queue full).
`job/submit` (rpc/job_methods.py) and every model request of the gateway
(gateway/server.py) call `JobService.submit`, so both get the same checks and fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import msgspec

from codexctl.protocol import ErrorKind, JobChange, RpcError
from codexctl.results import ModelInfo
from codexd.auth.session import ProviderAuth
from codexd.config.load import ConfigError, ProfileNotFound
from codexd.config.schema import ConfigSnapshot
from codexd.events import EventHub
from codexd.jobs import Job, JobLimits, JobManager, JobState, Runner, Usage
from codexd.limits.estimate import INPUT_ONLY_APIS, is_token
from codexd.upstream.runner import JobRequest, estimate_for
from codexd.upstream.wire import RequestDefaults
from codexd.usage import budget as usage_budget
from codexd.usage.catalog import Catalog
from codexd.usage.cost import PriceLike, estimate_cost_usd
from codexd.usage.ledger import UsageRecord

Api = Literal["responses", "chat", "embeddings"]


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """What a front door decoded from its client: the body and the optional choices."""

    body: dict[str, Any]
    client: str
    api: Api | None = None
    provider: str | None = None
    profile: str | None = None
    client_request_id: str | None = None
    # Cancel the job when its owner goes away (see `JobService.release`).
    cancel_on_disconnect: bool = False


@dataclass(frozen=True, slots=True)
class ResolvedJob:
    """A request resolved against one config snapshot: everything a job is created from."""

    provider: str
    model: str
    api: str
    body: dict[str, Any]
    profile: str | None
    client: str
    client_request_id: str | None
    config: ConfigSnapshot
    request: JobRequest


class InvalidSubmit(RpcError):
    """`invalid_params` from submission that keeps where it was found, so that each front
    door names it in its own words: `member` is the params member (`provider`, `profile`,
    `body.model`), `problem` what is wrong with it, `hint` what would do (may be empty),
    `plain` the problem for a reader who does not know the params' types (defaults to
    `problem`)."""

    def __init__(self, member: str, problem: str, hint: str = "", plain: str | None = None):
        self.member = member
        self.problem = problem
        self.hint = hint
        self.plain = plain or problem
        said = f"{problem} {hint}" if hint else problem
        super().__init__(
            ErrorKind.INVALID_PARAMS, f"invalid params for job/submit: {said} - at `$.{member}`"
        )


def _invalid(member: str, problem: str, hint: str = "", plain: str | None = None) -> RpcError:
    return InvalidSubmit(member, problem, hint, plain)


def _check_body(body: dict[str, Any], api: str) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid("body.model", "Expected `str`", plain="'model' must be a string")
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _invalid("body.messages", "a chat request needs a non-empty `messages` array")
    elif api == "embeddings":
        _check_embeddings_body(body)
    else:
        inp = body.get("input")
        if not isinstance(inp, str | list) or not inp:
            raise _invalid("body.input", "a responses request needs `input` (a string or an array)")


def _check_embeddings_body(body: dict[str, Any]) -> None:
    """OpenAI's embeddings `input`: a string, an array of strings, an array of tokens (ints)
    or an array of token arrays, none empty; and a `model` (the config's is a text model)."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _invalid(
            "body.model",
            "an embeddings request needs `model` (an embedding model, e.g. "
            "text-embedding-3-small)",
        )
    inp = body.get("input")
    if isinstance(inp, str) and inp:
        return
    if isinstance(inp, list) and inp:
        if all(is_token(t) for t in inp):
            return
        if all(isinstance(s, str) and s for s in inp):
            return
        if all(isinstance(a, list) and a and all(is_token(t) for t in a) for a in inp):
            return
    raise _invalid(
        "body.input",
        "an embeddings request needs `input`: a non-empty string, or a non-empty array of "
        "non-empty strings, of tokens (integers) or of token arrays",
    )


def _check_reasoning(body: dict[str, Any], api: str, model: ModelInfo | None) -> None:
    """A reasoning effort the catalog says the model does not take is refused, naming the
    ones it does; a model the catalog does not know (or lists no levels for) goes as asked."""
    if api == "chat":
        effort, member = body.get("reasoning_effort"), "body.reasoning_effort"
    else:
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        member = "body.reasoning.effort"
    if not isinstance(effort, str) or model is None or not model.supported_reasoning_levels:
        return
    levels = model.supported_reasoning_levels
    if effort not in levels:
        raise _invalid(
            member,
            f"{model.slug} does not take reasoning effort {effort!r}: "
            f"choose one of {', '.join(levels)}",
        )


def resolve(snapshot: ConfigSnapshot, catalog: Catalog, req: SubmitRequest) -> ResolvedJob:
    """Provider, api, model and defaults from `snapshot` (raises invalid_params)."""
    try:
        selection = snapshot.selection(req.profile or None)
    except KeyError:
        known = ", ".join(sorted(snapshot.profiles)) or "none"
        raise _invalid("profile", f"unknown profile {req.profile!r}", f"(known: {known})") from None
    profile_name = selection.profile
    provider_id = req.provider or selection.model_provider
    provider = snapshot.providers.get(provider_id)
    if provider is None:
        known = ", ".join(sorted(snapshot.providers))
        raise _invalid("provider", f"unknown provider {provider_id!r}", f"(known: {known})")
    api = req.api or provider.wire_api
    _check_body(req.body, api)
    model = req.body.get("model") or selection.model or catalog.default_model
    if api != "embeddings":
        _check_reasoning(req.body, api, catalog.get(model))
    defaults = RequestDefaults(
        model=model,
        reasoning_effort=selection.model_reasoning_effort,
        reasoning_summary=selection.model_reasoning_summary,
        verbosity=selection.model_verbosity,
        model_params=msgspec.to_builtins(snapshot.model_params),
    )
    estimate = estimate_for(req.body, api, snapshot, provider_id)
    return ResolvedJob(
        provider=provider_id,
        model=model,
        api=api,
        body=req.body,
        profile=profile_name,
        client=req.client,
        client_request_id=req.client_request_id,
        config=snapshot,
        request=JobRequest(defaults=defaults, estimated_tokens=estimate),
    )


class Spend(Protocol):
    """What admission reads of the usage ledger."""

    async def spend(self, since: float, until: float) -> float: ...


class JobLedger(Spend, Protocol):
    """What the job service writes to the usage ledger: one row per started job."""

    async def commit(self, row: UsageRecord) -> bool: ...


class PricedJob(Protocol):
    """What admission reads of a running job."""

    @property
    def model(self) -> str: ...

    @property
    def api(self) -> str: ...

    @property
    def request(self) -> Any: ...


def running_cost_usd(jobs: Iterable[PricedJob], catalog: Catalog) -> float:
    """What the running jobs are estimated to cost, each at its own model's price."""
    total = 0.0
    for job in jobs:
        price = catalog.price_for(job.model) or catalog.default_price
        total += estimated_cost_usd(job.request.estimated_tokens, job.api, price)
    return total


def estimated_cost_usd(tokens: int, api: str, price: PriceLike) -> float:
    """The budget's guess for a job of `api` estimated at `tokens`."""
    return estimate_cost_usd(tokens, price, input_only=api in INPUT_ONLY_APIS)


class Admission:
    """Submit-time refusals: no credentials at all for the provider, a budget cap."""

    def __init__(
        self,
        *,
        credentials: Callable[[ProviderAuth, str], RpcError | None],
        ledger: Spend,
        catalog: Callable[[ConfigSnapshot], Catalog],
        running: Callable[[], Iterable[PricedJob]],
        now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    ) -> None:
        self._credentials = credentials
        self._ledger = ledger
        self._catalog = catalog
        self._running = running
        self._now = now

    async def check(self, job: ResolvedJob) -> None:
        snapshot = job.config
        missing = self._credentials(snapshot.provider_ref(job.provider), job.api)
        if missing is not None:
            raise missing
        caps = snapshot.codexd.budget
        if caps.daily_usd is None and caps.monthly_usd is None:
            return
        catalog = self._catalog(snapshot)
        price = catalog.price_for(job.model) or catalog.default_price
        estimate = estimated_cost_usd(job.request.estimated_tokens, job.api, price)
        now = self._now()
        day_start, day_end = usage_budget.day_bounds(now)
        month_start, month_end = usage_budget.month_bounds(now)
        today = await self._ledger.spend(day_start.timestamp(), day_end.timestamp())
        month = await self._ledger.spend(month_start.timestamp(), month_end.timestamp())
        running = running_cost_usd(self._running(), catalog)
        exceeded = usage_budget.check(estimate, today + running, month + running, caps, now=now)
        if exceeded is not None:
            raise exceeded.to_error()


class JobService:
    """Submit, look up, list and cancel jobs; cancel an owner's jobs when it goes away.

    An owner is any hashable the front door names (a control connection, one HTTP request
    of the gateway). A job submitted with `cancel_on_disconnect` belongs to its owner while
    it runs; `release(owner)` cancels those still running. This is the one mechanism behind
    cancel-on-disconnect, on both front doors.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        limits: Callable[[], JobLimits],
        credentials: Callable[[ProviderAuth, str], RpcError | None],
        ledger: JobLedger,
        events: EventHub,
        snapshot: Callable[[], ConfigSnapshot],
        catalog: Callable[[ConfigSnapshot], Catalog],
        profile: Callable[[str], ConfigSnapshot] | None = None,
    ) -> None:
        self.manager = JobManager(
            runner,
            limits=limits,
            on_created=self._created,
            on_finishing=self._finishing,
            on_finished=self._finished,
        )
        self._admission = Admission(
            credentials=credentials, ledger=ledger, catalog=catalog, running=self.manager.active
        )
        self._ledger = ledger
        self._events = events
        self._snapshot = snapshot
        self._profile = profile
        self._catalog = catalog
        self._owned: dict[object, set[Job]] = {}
        self._owner_of: dict[Job, object] = {}

    async def submit(self, req: SubmitRequest, *, owner: object | None = None) -> Job:
        """The job for `req`: the one already made for its `client_request_id`, else a new
        one (raises RpcError: invalid_params, unauthenticated, budget, overloaded)."""
        if req.client_request_id is not None:
            existing = self.manager.find_by_request_id(req.client, req.client_request_id)
            if existing is not None:
                return existing
        snapshot = self._snapshot_for(req.profile or None)
        resolved = resolve(snapshot, self._catalog(snapshot), req)
        await self._admission.check(resolved)
        job = self.create(resolved)
        if req.cancel_on_disconnect and owner is not None:
            self._own(owner, job)
        return job

    def _snapshot_for(self, profile: str | None) -> ConfigSnapshot:
        """The snapshot a request naming `profile` runs with: the one in force, or that of
        config.toml with the profile laid over it (invalid_params when there is no such
        profile, config_invalid when its file is invalid)."""
        snapshot = self._snapshot()
        if profile is None or profile == snapshot.profile or self._profile is None:
            return snapshot
        try:
            return self._profile(profile)
        except ProfileNotFound as exc:
            raise _invalid("profile", exc.problem, exc.hint) from None
        except ConfigError as exc:
            raise exc.to_rpc_error() from None

    def create(self, job: ResolvedJob) -> Job:
        return self.manager.create(
            client=job.client,
            provider=job.provider,
            model=job.model,
            api=job.api,
            body=job.body,
            config=job.config,
            request=job.request,
            client_request_id=job.client_request_id,
        )

    # ---------------------------------------------------------------- owners

    def _own(self, owner: object, job: Job) -> None:
        if job.is_terminal:
            return
        self._owned.setdefault(owner, set()).add(job)
        self._owner_of[job] = owner

    def release(self, owner: object) -> None:
        """`owner` went away: cancel the jobs it owns that are still running."""
        for job in self._owned.pop(owner, set()):
            self._owner_of.pop(job, None)
            self.manager.cancel(job)

    def _disown(self, job: Job) -> None:
        """A job ended: its owner no longer holds it (a long-lived connection does not keep
        every job it ever submitted alive)."""
        owner = self._owner_of.pop(job, None)
        if owner is not None:
            jobs = self._owned.get(owner)
            if jobs is not None:
                jobs.discard(job)
                if not jobs:
                    del self._owned[owner]

    def owners(self) -> set[object]:
        """Owners with running jobs that end with them (busy: never closed as idle)."""
        return set(self._owned)

    # ---------------------------------------------------------------- the job manager's hooks

    def _created(self, job: Job) -> None:
        if self._events.count("jobs"):  # a job's view is dear: built only when someone listens
            self._events.publish("jobs", "job/created", JobChange(job.view(with_output=False)))

    async def _finishing(self, job: Job, state: JobState, finished_at: float) -> None:
        """A started job's ledger row is committed before its terminal event goes out (the
        job manager awaits this first)."""
        if job.started_at is None:
            return
        usage = job.usage or Usage()
        await self._ledger.commit(
            UsageRecord(
                job_id=job.id,
                finished_at=finished_at,
                client=job.client,
                provider=job.provider,
                model=job.model,
                api=job.api,
                status=state.value,  # type: ignore[arg-type]
                attempts=job.attempts,
                input_tokens=usage.input_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                output_tokens=usage.output_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                cost_usd=job.cost_usd or 0.0,
                estimated=job.cost_estimated,
            )
        )

    def _finished(self, job: Job) -> None:
        self._disown(job)
        if self._events.count("jobs"):
            self._events.publish("jobs", "job/finished", JobChange(job.view(with_output=False)))

    # ---------------------------------------------------------------- queries

    def get(self, job_id: str) -> Job:
        return self.manager.get(job_id)

    def list(self, state: str | None, limit: int) -> list[Job]:
        """Known jobs, newest first, optionally in one state."""
        jobs = sorted(self.manager.jobs.values(), key=lambda j: j.created_at, reverse=True)
        if state is not None:
            jobs = [j for j in jobs if j.state.value == state]
        return jobs[:limit]

    def cancel(self, job: Job) -> None:
        self.manager.cancel(job)
