"""The Chat Completions stream (`POST /chat/completions`) as job events.

Chunks carry `choices[0].delta.{content, reasoning|reasoning_content, tool_calls}`, a
`finish_reason`, and (with `stream_options.include_usage`) a last chunk with `usage` and no
choices; `data: [DONE]` ends the stream. They become
the event types a Responses stream gives for the same reply:
`response.output_text.delta {delta}`, `response.reasoning_text.delta {delta}` and, when the
choice finishes, `response.output_item.done {item}` per message and function call, with the
item shapes of the Responses API. Only the first choice is followed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from codexctl.protocol import Usage
from codexd.jobs import UpstreamEvent
from codexd.security.scrub import GENERIC, Scrubber
from codexd.upstream.errors import classify_stream_event
from codexd.upstream.wire import (
    Event,
    Outcome,
    StreamNormalizer,
    StreamResult,
    usage_from_chat,
)


class _ToolCall:
    __slots__ = ("arguments", "call_id", "name")

    def __init__(self) -> None:
        self.call_id = ""
        self.name = ""
        self.arguments: list[str] = []


class ChatStream(StreamNormalizer):
    def __init__(
        self, wall_now: Callable[[], float] = time.time, scrubber: Scrubber = GENERIC
    ) -> None:
        super().__init__(wall_now, scrubber)
        self._response_id: str | None = None
        self._usage: Usage | None = None
        self._tools: dict[int, _ToolCall] = {}
        self._finished = False

    def _special_data(self, data: str) -> list[Event] | None:
        if data.strip() != "[DONE]":
            return None
        events = self._finish_choice()
        self.outcome = self._result()
        return events

    def feed(self, obj: Mapping[str, Any]) -> list[Event]:
        if self.outcome is not None:
            return []
        if obj.get("error") is not None:
            self.outcome = classify_stream_event(obj, self._wall_now(), scrubber=self._scrubber)
            return []
        chunk_id = obj.get("id")
        if isinstance(chunk_id, str) and self._response_id is None:
            self._response_id = chunk_id
        if obj.get("usage") is not None:
            self._usage = usage_from_chat(obj.get("usage"))
        events: list[Event] = []
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                events += self._delta(delta)
            if choice.get("finish_reason") is not None:
                events += self._finish_choice()
        return events

    def _delta(self, delta: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        reasoning = delta.get("reasoning")
        if not isinstance(reasoning, str):
            reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            events.append(
                UpstreamEvent({"type": "response.reasoning_text.delta", "delta": reasoning})
            )
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._text.append(content)
            events.append(UpstreamEvent({"type": "response.output_text.delta", "delta": content}))
        tool_calls = delta.get("tool_calls")
        for call in tool_calls if isinstance(tool_calls, list) else []:
            if isinstance(call, Mapping):
                self._tool_delta(call)
        return events

    def _tool_delta(self, call: Mapping[str, Any]) -> None:
        index = call.get("index", 0)
        if not isinstance(index, int):
            return
        acc = self._tools.setdefault(index, _ToolCall())
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            acc.call_id = call_id
        function = call.get("function")
        if isinstance(function, Mapping):
            name, arguments = function.get("name"), function.get("arguments")
            if isinstance(name, str) and name:
                acc.name = name
            if isinstance(arguments, str):
                acc.arguments.append(arguments)

    def _finish_choice(self) -> list[Event]:
        if self._finished:
            return []
        self._finished = True
        events: list[Event] = []
        text = self.output_text
        if text:
            item = {
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
            events.append(UpstreamEvent({"type": "response.output_item.done", "item": item}))
        for index in sorted(self._tools):
            acc = self._tools[index]
            call = {
                "type": "function_call",
                "call_id": acc.call_id,
                "name": acc.name,
                "arguments": "".join(acc.arguments),
                "status": "completed",
            }
            events.append(UpstreamEvent({"type": "response.output_item.done", "item": call}))
        return events

    def _result(self) -> StreamResult:
        return StreamResult(
            output_text=self.output_text, usage=self._usage, response_id=self._response_id
        )

    def _at_eof(self) -> Outcome:
        # The choice finished but `[DONE]` (and perhaps the usage chunk) never came: the
        # reply is whole, so it completes; Codex does the same on EOF.
        if self._finished:
            return self._result()
        return super()._at_eof()
