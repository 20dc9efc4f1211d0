"""The bytes clients get, pinned: `job/event` lines on the control socket (live and replayed)
and the gateway's four reply shapes, for fixed upstream streams of both APIs.

The upstream replies are scripted byte for byte (members codexd does not know, non-ASCII text
and `\\u` escapes, a function call, reasoning, usage), so any change to how events are
normalised, logged, encoded or translated shows here as a diff against the files in
`wire_bytes/`. Ids and clock values that differ per run are replaced before comparing.
Set CODEXD_WRITE_WIRE_BYTES=1 to write the files anew (then review the diff).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from codexd.testing.daemon_process import DaemonProcess
from codexd.testing.fake_openai import FakeOpenAI, RawReply
from tests.conftest import LineConn, free_port, write_config

HERE = Path(__file__).parent / "wire_bytes"
WRITE = os.environ.get("CODEXD_WRITE_WIRE_BYTES") == "1"

RESPONSES_SSE = b"".join(
    b"event: " + line.split(b'"type":', 1)[1].split(b'"')[1] + b"\ndata: " + line + b"\n\n"
    for line in [
        b'{"type":"response.created","sequence_number":0,"response":{"id":"resp_1",'
        b'"object":"response","status":"in_progress","output":[]}}',
        b'{"type": "response.in_progress", "sequence_number": 1, "response": {"id": "resp_1",'
        b' "object": "response", "status": "in_progress", "output": []}}',
        b'{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1",'
        b'"output_index":0,"content_index":0,"delta":"H\\u00e9llo"}',
        b'{"type":"response.output_text.delta","sequence_number":3,"delta":" w\xc3\xb6rld",'
        b'"unknown_member":{"x":[1,2.50,null,true,"\\/"]}}',
        b'{"type":"response.reasoning_summary_text.delta","sequence_number":4,"delta":"hm"}',
        b'{"type":"response.output_item.done","sequence_number":5,"output_index":1,'
        b'"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather",'
        b'"arguments":"{\\"city\\":\\"Paris\\"}","status":"completed"}}',
        b'{"type":"response.completed","sequence_number":6,"response":{"id":"resp_1",'
        b'"object":"response","status":"completed","output":[{"type":"message","id":"msg_1",'
        b'"role":"assistant","status":"completed","content":[{"type":"output_text",'
        b'"text":"H\xc3\xa9llo w\xc3\xb6rld","annotations":[]}]}],"usage":{"input_tokens":5,'
        b'"input_tokens_details":{"cached_tokens":1},"output_tokens":7,'
        b'"output_tokens_details":{"reasoning_tokens":2},"total_tokens":12}}}',
    ]
)


def _chunk(choices: str) -> bytes:
    return (
        b'data: {"id":"chatcmpl-up","object":"chat.completion.chunk","created":1,'
        b'"model":"gpt-5","choices":' + choices.encode() + b"}\n\n"
    )


CHAT_SSE = b"".join(
    [
        _chunk('[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]'),
        _chunk('[{"index":0,"delta":{"reasoning_content":"hm"},"finish_reason":null}]'),
        _chunk('[{"index":0,"delta":{"content":"H\\u00e9llo"},"finish_reason":null}]'),
        _chunk('[{"index":0,"delta":{"content":" wörld"},"finish_reason":null}]'),
        _chunk(
            '[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function",'
            '"function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]'
        ),
        _chunk(
            '[{"index":0,"delta":{"tool_calls":[{"index":0,'
            '"function":{"arguments":"{\\"city\\":\\"Paris\\"}"}}]},"finish_reason":null}]'
        ),
        _chunk('[{"index":0,"delta":{},"finish_reason":"tool_calls"}]'),
        b'data: {"id":"chatcmpl-up","object":"chat.completion.chunk","created":1,'
        b'"model":"gpt-5","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,'
        b'"total_tokens":12,"prompt_tokens_details":{"cached_tokens":1},'
        b'"completion_tokens_details":{"reasoning_tokens":2}}}\n\n',
        b"data: [DONE]\n\n",
    ]
)

UPSTREAM = {
    "responses": ("/v1/responses", RESPONSES_SSE),
    "chat": ("/v1/chat/completions", CHAT_SSE),
}
ERROR_BODY = (
    b'{"error":{"message":"Invalid value: \'x\'. Supported values are: \'low\'.",'
    b'"type":"invalid_request_error","param":"reasoning.effort","code":"invalid_value"}}'
)


@pytest.fixture
def daemon(daemon_env: dict[str, str], fake_openai: FakeOpenAI) -> Iterator[DaemonProcess]:
    write_config(
        daemon_env,
        f'openai_base_url = "{fake_openai.base_url}"\nmodel = "gpt-5"\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
        f'[codexd.gateway]\nenabled = true\ntcp = "127.0.0.1:{free_port()}"\n',
    )
    daemon_env["OPENAI_API_KEY"] = "sk-test-key-for-the-fake-0000"
    with DaemonProcess(daemon_env) as proc:
        yield proc


def _normalise(data: bytes, job_id: str) -> bytes:
    suffix = job_id.removeprefix("job_").encode()
    data = data.replace(job_id.encode(), b"JOB_ID").replace(suffix, b"JOB_HEX")
    return re.sub(rb'"created":\d+', b'"created":0', data)


def _check(name: str, data: bytes) -> None:
    path = HERE / name
    if WRITE:
        HERE.mkdir(exist_ok=True)
        path.write_bytes(data)
        pytest.skip(f"wrote {name}: review its diff, then run again without the variable")
    assert data == path.read_bytes(), f"{name} changed"


def _lines_until_terminal(conn: LineConn) -> bytes:
    out = []
    while True:
        while b"\n" not in conn.buf:
            chunk = conn.sock.recv(65536)
            assert chunk, "the daemon closed the connection"
            conn.buf += chunk
        line, conn.buf = conn.buf.split(b"\n", 1)
        out.append(line + b"\n")
        message = msgspec.json.decode(line)
        if message.get("method") == "job/event" and message["params"]["event"]["type"] in (
            "job.completed",
            "job.failed",
        ):
            return b"".join(out)


def _submit(daemon: DaemonProcess, api: str, body: dict[str, Any]) -> tuple[str, bytes, bytes]:
    """Submit on the socket subscribed from the start; the live lines and a full replay."""
    conn = LineConn(daemon.socket)
    try:
        reply = conn.call("job/submit", {"body": body, "api": api, "subscribe": True})
        result = reply["result"]
        assert isinstance(result, dict), reply
        job_id = str(result["job_id"])
        live = _lines_until_terminal(conn)
        reply = conn.call("job/subscribe", {"job_id": job_id, "after_seq": 0}, rid=2)
        assert "result" in reply, reply
        replay = _lines_until_terminal(conn)
    finally:
        conn.close()
    return job_id, live, replay


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_job_event_lines(daemon: DaemonProcess, fake_openai: FakeOpenAI, api: str) -> None:
    path, body = UPSTREAM[api]
    fake_openai.script(RawReply(200, body, content_type="text/event-stream"), path=path)
    request = (
        {"input": "hi"} if api == "responses" else {"messages": [{"role": "user", "content": "hi"}]}
    )
    job_id, live, replay = _submit(daemon, api, {"model": "gpt-5", **request})
    assert replay == live
    _check(f"job-{api}.ndjson", _normalise(live, job_id))


def test_job_event_lines_of_a_failed_job(daemon: DaemonProcess, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(RawReply(400, ERROR_BODY), path="/v1/responses")
    job_id, live, _ = _submit(daemon, "responses", {"model": "gpt-5", "input": "hi"})
    live = re.sub(rb'"request_id":"[^"]*"', b'"request_id":"REQ"', live)
    _check("job-failed.ndjson", _normalise(live, job_id))


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("stream", [True, False])
def test_gateway_replies(
    daemon: DaemonProcess, fake_openai: FakeOpenAI, api: str, stream: bool
) -> None:
    path, body = UPSTREAM[api]
    fake_openai.script(RawReply(200, body, content_type="text/event-stream"), path=path)
    request: dict[str, Any] = {"model": "gpt-5", "stream": stream}
    if api == "responses":
        request["input"] = "hi"
    else:
        request["messages"] = [{"role": "user", "content": "hi"}]
        if stream:
            request["stream_options"] = {"include_usage": True}
    sock = os.path.join(os.path.dirname(daemon.socket), "gateway.sock")
    transport = httpx.HTTPTransport(uds=sock)
    with httpx.Client(base_url="http://codexd", transport=transport, timeout=30) as http:
        reply = http.post(
            f"/v1/{'responses' if api == 'responses' else 'chat/completions'}", json=request
        )
    assert reply.status_code == 200, reply.text
    job_id = reply.headers["x-request-id"]
    head = f"content-type: {reply.headers['content-type']}\n\n".encode()
    _check(
        f"gateway-{api}-{'sse' if stream else 'json'}.txt", _normalise(head + reply.content, job_id)
    )
