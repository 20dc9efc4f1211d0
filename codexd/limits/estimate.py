"""The token cost of a request before it runs.

OpenAI charges a request against TPM as "the maximum of `max_tokens` and the estimated number
of tokens based on the character count of your request"; we estimate the same way, so the
local budget and the server agree closely enough for the rolling window to keep clear of 429s.
An embeddings request produces no output: its estimate is its input alone.
The rate limiter and the usage ledger's budget check both call `estimate_tokens`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

CHARS_PER_TOKEN: Final = 4
# Wire APIs whose requests produce no output tokens: their estimate is their input alone.
INPUT_ONLY_APIS: Final = frozenset({"embeddings"})

# Output caps by wire API, first found wins; the other API's names are honoured too because a
# body may carry either spelling before the daemon normalises it.
_OUTPUT_CAP_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "responses": ("max_output_tokens", "max_completion_tokens", "max_tokens"),
    "chat": ("max_completion_tokens", "max_tokens", "max_output_tokens"),
}
_INPUT_KEYS: Final = ("instructions", "input", "messages")

# Structural members and binary payloads: counting a base64 image as text would make one
# screenshot cost more than a minute's budget.
_SKIPPED_KEYS: Final = frozenset(
    {
        "type",
        "role",
        "id",
        "call_id",
        "status",
        "detail",
        "format",
        "image_url",
        "file_data",
        "file_id",
        "file_url",
        "data",
        "audio",
        "input_audio",
        "encrypted_content",
    }
)


def output_cap(body: Mapping[str, Any], api: str) -> int | None:
    """The body's own output-token cap, or None when it sets none."""
    for key in _OUTPUT_CAP_KEYS.get(api, _OUTPUT_CAP_KEYS["responses"]):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def input_chars(body: Mapping[str, Any]) -> int:
    """Characters of text in `instructions`, `input` and `messages` (walked without recursion)."""
    total = 0
    stack: list[Any] = [body.get(key) for key in _INPUT_KEYS]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, Mapping):
            stack.extend(v for k, v in value.items() if k not in _SKIPPED_KEYS)
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return total


def embedding_input_tokens(body: Mapping[str, Any]) -> int:
    """An embeddings request's `input`: a token array counts its length, text ceil(characters
    / 4), summed over a list of inputs. It has no output tokens."""
    inp = body.get("input")
    items = inp if isinstance(inp, list) else [inp]
    if items and all(is_token(t) for t in items):
        return len(items)  # one token array
    chars = tokens = 0
    for item in items:
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, list):
            tokens += len(item)
    return tokens - (-chars // CHARS_PER_TOKEN)


def is_token(value: Any) -> bool:
    """A token id of an embeddings `input` token array."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def estimate_tokens(body: Mapping[str, Any], api: str, default_output_tokens: int) -> int:
    """max(output cap or `default_output_tokens`, ceil(input characters / 4)); for
    embeddings, their input tokens alone."""
    if api in INPUT_ONLY_APIS:
        return embedding_input_tokens(body)
    cap = output_cap(body, api)
    out = cap if cap is not None else max(0, default_output_tokens)
    chars = input_chars(body)
    return max(out, -(-chars // CHARS_PER_TOKEN))
