"""The results clients decode are codexctl.protocol's types, the very ones the table sends."""

from __future__ import annotations

import msgspec
import pytest

from codexctl import protocol
from codexd.rpc.methods import TABLE


@pytest.mark.parametrize(
    ("method", "result"),
    [
        ("job/submit", protocol.SubmitResult),
        ("job/list", protocol.ListResult),
        ("job/get", protocol.JobView),
        ("job/cancel", protocol.JobView),
        ("job/subscribe", protocol.SubscribeResult),
        ("daemon/status", protocol.DaemonStatus),
    ],
)
def test_the_method_table_sends_the_protocol_result_types(method: str, result: type) -> None:
    assert TABLE.methods[method].result_type is result


def test_a_client_decodes_a_status_reply_into_its_type() -> None:
    raw = (
        b'{"version":"0.1.0","protocol_version":1,"pid":7,"started_at":"2026-01-01T00:00:00Z",'
        b'"started_by":"manual","uptime_s":1.5,"socket":"/s","codex_home":"/h","state_dir":"/d",'
        b'"connections":1,"jobs":{"queued":0,"running":1,"retained":2},'
        b'"config":{"path":"/h/config.toml","generation":1,"loaded_at":"x","error":null},'
        b'"account":null,"budget":null}'
    )
    status = msgspec.json.decode(raw, type=protocol.DaemonStatus)
    assert status.jobs == protocol.JobCounts(queued=0, running=1, retained=2)
    assert msgspec.json.decode(msgspec.json.encode(status), type=protocol.DaemonStatus) == status
