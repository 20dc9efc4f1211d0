"""codexctl's library types: error classes by kind, typed notifications, the follow rules."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pytest

import codexctl
from codexctl import errors
from codexctl.events import (
    ConfigRejected,
    ConfigReloaded,
    Follower,
    JobEvent,
    LoginCompleted,
    Notification,
    RateLimitsUpdated,
    Step,
    SubscriptionDropped,
    TextDelta,
    UpstreamEvent,
    decode_notification,
    reconnect_delays,
)
from codexctl.protocol import ERROR_TABLE, ErrorData, ErrorKind, ErrorObject, JobRetrying, RpcError
from codexctl.results import BudgetSnapshot, LimitWindow, ProviderLimits, UpstreamLimits
from codexd.config.store import ConfigInvalid as ServerConfigInvalid
from codexd.config.store import ConfigReloaded as ServerConfigReloaded
from codexd.jobs import DroppedParams
from codexd.service.accounts import LoginCompleted as ServerLoginCompleted


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_kind_has_its_class(kind: ErrorKind) -> None:
    cls = errors.error_class(kind)
    assert kind == cls.KIND and issubclass(cls, RpcError)
    assert cls.__name__ == "".join(part.title() for part in kind.split("_"))
    assert getattr(codexctl, cls.__name__) is cls
    code, retryable = ERROR_TABLE[kind]
    err = errors.error_from_object(
        ErrorObject(code, "m", ErrorData(kind=kind.value, retryable=retryable))
    )
    assert type(err) is cls and err.code == code and err.retryable is retryable


def test_error_data_rides_on_the_exception() -> None:
    data = ErrorData(kind="usage_limit_reached", retryable=False, resets_at="2026-01-01T00:00:00Z")
    err = errors.error_from_object(ErrorObject(-32022, "limit", data))
    assert isinstance(err, errors.UsageLimitReached)
    assert err.resets_at == "2026-01-01T00:00:00Z" and err.retry_after_s is None
    raised = errors.RateLimited("slow down", retry_after_s=3.0)
    assert raised.kind == "rate_limited" and raised.code == -32020 and raised.retry_after_s == 3.0


def test_an_unknown_kind_is_the_base_class_and_no_data_goes_by_code() -> None:
    err = errors.error_from_object(ErrorObject(-32099, "new", ErrorData("brand_new", True)))
    assert type(err) is errors.CodexdError and err.kind == "brand_new" and err.retryable
    assert type(errors.error_from_object(ErrorObject(-32040, "gone"))) is errors.NotFound


def test_exports_are_the_lazy_names_and_import_nothing_heavy() -> None:
    assert set(codexctl.__all__) == set(codexctl._HOMES) | {"__version__"}
    code = "import codexctl, sys; codexctl.Client; codexctl.AsyncClient; " + (
        "print(sorted(m for m in ('httpx', 'anyio', 'keyring', 'codexd') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _shape(schema: Any) -> Any:
    if isinstance(schema, dict):
        skip = ("title", "description", "additionalProperties")
        return {k: _shape(v) for k, v in schema.items() if k not in skip}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


def _members(tp: Any) -> Any:
    """The type's own members (not its nested types'), by the schema's top `$ref`."""
    schema = _shape(msgspec.json.schema(tp))
    return schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]


@pytest.mark.parametrize(
    ("client", "server"),
    [
        (ConfigReloaded, ServerConfigReloaded),
        (ConfigRejected, ServerConfigInvalid),
        (LoginCompleted, ServerLoginCompleted),
        (SubscriptionDropped, DroppedParams),
    ],
)
def test_notification_types_have_the_daemons_shape(client: Any, server: Any) -> None:
    assert _members(client) == _members(server)
    assert msgspec.json.schema(client)["$defs"].keys() - {client.__name__} == (
        msgspec.json.schema(server)["$defs"].keys() - {server.__name__}
    )


def test_rate_limits_updated_decodes_what_the_daemon_sends() -> None:
    """The daemon sends a `codexctl.results.ProviderLimits`; the notification extends it."""
    assert issubclass(RateLimitsUpdated, ProviderLimits)
    budget = BudgetSnapshot(60, None, 4, 59, None, 1, 0, None)
    sent = ProviderLimits("openai", budget, UpstreamLimits(requests=LimitWindow(remaining=3)))
    params = msgspec.json.decode(msgspec.json.encode(sent))
    decoded = decode_notification(Notification("ratelimits/updated", params))
    assert isinstance(decoded, RateLimitsUpdated)
    assert msgspec.structs.asdict(decoded) == msgspec.structs.asdict(sent)


def _event(seq: int, event: dict[str, Any], job_id: str = "j1") -> Notification:
    return Notification("job/event", {"job_id": job_id, "seq": seq, "event": event})


def test_job_events_decode_to_their_classes() -> None:
    delta = decode_notification(_event(3, {"type": "response.output_text.delta", "delta": "a"}))
    assert delta == JobEvent("j1", 3, TextDelta("a"))
    retry = {
        "type": "job.retrying",
        "attempt": 2,
        "delay_s": 0.5,
        "reason": "stream dropped",
        "error_kind": "stream_error",
        "reset_output": True,
    }
    decoded = decode_notification(_event(4, retry))
    assert isinstance(decoded, JobEvent) and isinstance(decoded.event, JobRetrying)
    assert decoded.event.reset_output and not decoded.terminal
    other = {"type": "response.created", "response": {"id": "r1"}}
    assert decode_notification(_event(1, other)) == JobEvent(
        "j1", 1, UpstreamEvent("response.created", other)
    )
    unknown = Notification("brand/new", {"x": 1})
    assert decode_notification(unknown) is unknown
    with pytest.raises(msgspec.ValidationError):
        decode_notification(Notification("config/reloaded", {"generation": "x"}))


def test_follower_takes_each_event_once_in_order_to_the_end() -> None:
    f = Follower("j1", after_seq=1)
    delta = {"type": "response.output_text.delta", "delta": "a"}
    assert f.feed(_event(1, delta)) is Step.SKIP  # already seen (after_seq)
    assert f.feed(_event(2, delta, job_id="other")) is Step.SKIP
    assert f.feed(_event(2, delta)) is Step.EVENT and f.last == 2
    assert f.feed(_event(2, delta)) is Step.SKIP  # a replay's repeat
    dropped = Notification("subscription/dropped", {"job_id": "j1", "reason": "slow_consumer"})
    assert f.feed(dropped) is Step.RESUBSCRIBE
    assert f.feed(Notification("subscription/dropped", {"topic": "jobs"})) is Step.SKIP
    assert f.feed(_event(3, {"type": "job.cancelled"})) is Step.EVENT and f.done
    assert f.feed(_event(4, delta)) is Step.SKIP


def test_reconnect_delays_grow_and_stay_within_the_timeout() -> None:
    delays = list(reconnect_delays(5.0))
    assert delays[0] < delays[1] <= 1.0
    assert sum(delays) == pytest.approx(5.0)
    assert list(reconnect_delays(0)) == []
