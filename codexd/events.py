"""Daemon notifications by topic (`events/subscribe`).

Each notification is encoded once and offered to every subscribed connection without
waiting; a connection whose outbound buffer is full loses that topic with
`subscription/dropped {topic, reason: "slow_consumer"}` and may subscribe again.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Literal

import msgspec

from codexctl.protocol import Notification
from codexctl.results import SubscriptionDropped
from codexd.jobs import Subscriber

log = logging.getLogger("codexd.events")

Topic = Literal["account", "config", "ratelimits", "jobs"]
TOPICS: Final[tuple[str, ...]] = ("account", "config", "ratelimits", "jobs")

_encoder = msgspec.json.Encoder()


def _line(method: str, params: Any) -> bytes:
    buf = bytearray()
    _encoder.encode_into(Notification(method=method, params=params), buf)
    buf += b"\n"
    return bytes(buf)


class EventHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscriber]] = {t: set() for t in TOPICS}

    def subscribe(self, sub: Subscriber, topics: list[str]) -> None:
        for topic in topics:
            self._subscribers[topic].add(sub)

    def forget(self, sub: Subscriber) -> None:
        for subs in self._subscribers.values():
            subs.discard(sub)

    def subscribers(self) -> set[Subscriber]:
        """Everyone subscribed to any topic."""
        return set().union(*self._subscribers.values())

    def subscribed(self, sub: Subscriber, topic: str) -> bool:
        return sub in self._subscribers[topic]

    def count(self, topic: str) -> int:
        return len(self._subscribers[topic])

    def publish(self, topic: str, method: str, params: Any) -> None:
        subs = self._subscribers[topic]
        if not subs:
            return
        line = _line(method, params)
        dropped = [s for s in subs if not s.send_nowait(line)]
        for sub in dropped:
            subs.discard(sub)
            if not sub.closed:
                log.info("dropped a slow subscriber of topic %s", topic)
                dropped_params = SubscriptionDropped("slow_consumer", topic=topic)
                sub.defer(_line("subscription/dropped", dropped_params))
