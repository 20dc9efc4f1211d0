"""The Responses stream (`POST /responses`) as job events.

Every event passes through as upstream sent it (members kept, `sequence_number` included),
so `response.output_text.delta {delta}`, `response.reasoning_summary_text.delta {delta}` and
`response.output_item.done {item}` need no translation. The exceptions are the failures
(`response.failed`, `error`): they become the attempt's `UpstreamError` instead, which the
job turns into `job.retrying` or `job.failed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codexd.jobs import UpstreamEvent
from codexd.upstream.errors import classify_stream_event
from codexd.upstream.wire import Event, StreamNormalizer, StreamResult, usage_from_responses

_FAILURES = frozenset({"response.failed", "error"})


class ResponsesStream(StreamNormalizer):
    def feed(self, obj: Mapping[str, Any]) -> list[Event]:
        if self.outcome is not None:
            return []
        kind = obj.get("type")
        if not isinstance(kind, str):
            return []  # Codex skips events without a type; so do we
        if kind in _FAILURES:
            self.outcome = classify_stream_event(obj, self._wall_now(), scrubber=self._scrubber)
            return []
        if kind == "response.output_text.delta":
            delta = obj.get("delta")
            if isinstance(delta, str):
                self._text.append(delta)
        elif kind in ("response.completed", "response.incomplete"):
            self.outcome = self._result(obj)
        return [UpstreamEvent(dict(obj))]

    def _result(self, obj: Mapping[str, Any]) -> StreamResult:
        response = obj.get("response")
        response = response if isinstance(response, Mapping) else {}
        response_id = response.get("id")
        text = self.output_text or _text_of_output(response.get("output"))
        return StreamResult(
            output_text=text,
            usage=usage_from_responses(response.get("usage")),
            response_id=response_id if isinstance(response_id, str) else None,
        )


def _text_of_output(output: Any) -> str:
    """The assistant text of a final `response.output`, for servers that send no deltas."""
    if not isinstance(output, list):
        return ""
    parts: list[str] = []
    for item in output:
        if not isinstance(item, Mapping) or item.get("type") != "message":
            continue
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, Mapping) and part.get("type") == "output_text":
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
    return "".join(parts)
