"""The embeddings reply (`POST /embeddings`, one JSON object, not streamed) as job events.

Upstream's object (`{object: "list", data: [{object: "embedding", index, embedding}], model,
usage: {prompt_tokens, total_tokens}}`) passes through whole, its bytes as they came with a
`type` member put first, as one `embeddings.result` event (codexctl.results.EmbeddingsResult,
the event's one wire type): a socket client decodes the vectors there, and the gateway sends
the object back as it came, so base64 vectors stay base64. The daemon decodes only what it
checks or reads (the shape, `model`, `usage`), never the vectors: a reply of many numbers
costs its bytes, not a Python float apiece. Its usage is input tokens only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import msgspec

from codexctl.results import EMBEDDINGS_RESULT
from codexd.jobs import UpstreamEvent
from codexd.upstream.errors import reply_malformed
from codexd.upstream.wire import Event, StreamNormalizer, StreamResult, usage_from_chat


class _Item(msgspec.Struct):
    """What is checked of one vector: its `index`, and an `embedding` that is an array (of
    numbers) or a string (base64), left undecoded."""

    index: int
    embedding: msgspec.Raw


class _Reply(msgspec.Struct):
    """What is read of the reply; every member stays in the bytes passed on."""

    data: list[_Item]
    model: str
    usage: msgspec.Raw = msgspec.Raw(b"null")
    type: Any = msgspec.UNSET  # not OpenAI's: when present, the event's own replaces it


_reply_decoder = msgspec.json.Decoder(_Reply)
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_TYPE_MEMBER: Final = b'{"type":' + _encoder.encode(EMBEDDINGS_RESULT) + b","
_VECTOR_STARTS: Final = frozenset(b'["')
_WHITESPACE: Final = frozenset(b" \t\r\n")


class EmbeddingsReply(StreamNormalizer):
    streamed: ClassVar[bool] = False

    def feed_body(self, body: bytes) -> list[Event]:
        if self.outcome is not None:
            return []
        try:
            reply = _reply_decoder.decode(body)
        except msgspec.ValidationError as exc:
            self.outcome = reply_malformed(f"not an embeddings list: {exc}")
            return []
        except msgspec.DecodeError as exc:
            self.outcome = reply_malformed(f"not JSON: {exc}")
            return []
        for item in reply.data:
            vector = memoryview(item.embedding)
            if not vector or vector[0] not in _VECTOR_STARTS:
                self.outcome = reply_malformed(
                    f"the embedding at index {item.index} is neither an array nor a string"
                )
                return []
        usage = usage_from_chat(_decoder.decode(reply.usage))
        # `type` first: the gateway cuts it off the event to send the rest as it came.
        if reply.type is msgspec.UNSET:
            start = 0
            while body[start] in _WHITESPACE:
                start += 1
            # One copy: the object's members after its `{`, behind the event's `type`.
            raw = b"".join((_TYPE_MEMBER, memoryview(body)[start + 1 :]))
        else:  # not OpenAI's: upstream's own `type` goes (decoded and encoded, vectors too)
            obj = _decoder.decode(body)
            raw = _encoder.encode(
                {"type": EMBEDDINGS_RESULT, **{k: v for k, v in obj.items() if k != "type"}}
            )
        # Embeddings usage has Chat's names (prompt_tokens, total_tokens) and no output.
        self.outcome = StreamResult(output_text=None, usage=usage, response_id=None)
        return [UpstreamEvent.from_json(EMBEDDINGS_RESULT, raw)]
