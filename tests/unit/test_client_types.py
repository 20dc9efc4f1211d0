"""codexctl's library types: error classes by kind, typed notifications, the follow rules."""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

import msgspec
import pytest

import codexctl
from codexctl import errors, protocol, results
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
from codexd.docsgen.protocol import NOTIFICATIONS


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


# The notifications whose params the daemon sends as codexctl's own classes: one definition
# of each wire shape, in codexctl.results, which codexctl.events re-exports.
SHARED_NOTIFICATIONS = (LoginCompleted, ConfigReloaded, ConfigRejected, SubscriptionDropped)


@pytest.mark.parametrize("cls", SHARED_NOTIFICATIONS)
def test_the_shared_notification_types_are_codexctls_and_documented(cls: Any) -> None:
    assert cls.__module__ == results.__name__
    documented = {n.method: n.params for n in NOTIFICATIONS}
    assert documented[cls.method] is cls, (
        f"docs list {cls.method} as {documented[cls.method]!r}, not {cls.__qualname__} "
        "of codexctl.results"
    )


def _daemon_structs() -> list[type[msgspec.Struct]]:
    """Every struct class defined in a codexd module the daemon and its docs import."""
    importlib.import_module("codexd.daemon")
    found: list[type[msgspec.Struct]] = []
    for name, module in sorted(sys.modules.items()):
        if name != "codexd" and not name.startswith("codexd."):
            continue
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, msgspec.Struct)
                and obj.__module__ == name
            ):
                found.append(obj)
    return found


def test_the_daemon_defines_no_notification_type_again() -> None:
    """A struct of the daemon with the members of a shared notification type is a second
    copy of its wire shape, free to drift: import codexctl.results' class instead."""
    shapes = {cls.__struct_fields__: cls for cls in SHARED_NOTIFICATIONS}
    structs = _daemon_structs()
    assert any(cls.__name__ == "JobEventParams" for cls in structs)  # the walk sees the daemon
    again = [
        f"{cls.__module__}.{cls.__qualname__} (as {shapes[cls.__struct_fields__].__name__})"
        for cls in structs
        if cls.__struct_fields__ in shapes
    ]
    assert again == [], "define notification params once, in codexctl.results"


@pytest.mark.parametrize(
    "params",
    [n.params for n in NOTIFICATIONS if n.method != "job/event"],
    ids=[n.method for n in NOTIFICATIONS if n.method != "job/event"],
)
def test_every_notification_but_job_event_is_a_codexctl_type(params: Any) -> None:
    """`job/event` carries its event as it was logged (`Any`); every other notification's
    params are a class of codexctl.protocol or codexctl.results."""
    assert params.__module__ in {protocol.__name__, results.__name__}


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
