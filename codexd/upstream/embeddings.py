"""The embeddings reply (`POST /embeddings`, one JSON object, not streamed) as job events.

Upstream's object (`{object: "list", data: [{object: "embedding", index, embedding}], model,
usage: {prompt_tokens, total_tokens}}`) passes through whole, members kept, as one
`embeddings.result` event (codexctl.results.EmbeddingsResult): a socket client reads the
vectors there, and the gateway sends the object back as it came, so base64 vectors stay
base64. Its usage is input tokens only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from codexctl.results import EMBEDDINGS_RESULT
from codexd.jobs import UpstreamEvent
from codexd.upstream.errors import reply_malformed
from codexd.upstream.wire import Event, StreamNormalizer, StreamResult, usage_from_chat

_decoder = msgspec.json.Decoder()


class EmbeddingsReply(StreamNormalizer):
    streamed: ClassVar[bool] = False

    def feed_body(self, body: bytes) -> list[Event]:
        if self.outcome is not None:
            return []
        try:
            obj: Any = _decoder.decode(body)
        except msgspec.DecodeError as exc:
            self.outcome = reply_malformed(f"not JSON: {exc}")
            return []
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
            self.outcome = reply_malformed("not an embeddings list: no `data` array")
            return []
        # `type` first: the gateway cuts it off the encoded event to send the rest as it came.
        event = {"type": EMBEDDINGS_RESULT, **{k: v for k, v in obj.items() if k != "type"}}
        # Embeddings usage has Chat's names (prompt_tokens, total_tokens) and no output.
        self.outcome = StreamResult(
            output_text=None, usage=usage_from_chat(obj.get("usage")), response_id=None
        )
        return [UpstreamEvent(event)]
