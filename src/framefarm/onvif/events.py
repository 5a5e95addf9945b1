"""ONVIF event messages and the PullPoint subscriptions that hand them to clients.

Every subscription has its own bounded queue (the oldest messages go first when a client stops pulling) and
expires at its termination time unless renewed. A PullMessages call waits until a message is there or its
timeout ends. Properties (states such as PeopleDetect) are remembered, so that SetSynchronizationPoint can send
each one's current value again as ``Initialized``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from lxml import etree

from .soap import el, xsd_time

TOPIC_DIALECT = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
MAX_QUEUED = 1000  # messages a subscription keeps for a client that does not pull
MAX_SUBSCRIPTIONS = 64


@dataclass(frozen=True)
class Event:
    """One ONVIF notification: ``topic`` as ``tns1:...``, its Source and Data simple items."""

    topic: str
    source: dict[str, str]
    data: dict[str, str]
    utc: float = field(default_factory=time.time)
    operation: str = "Changed"  # Initialized, Changed, Deleted
    key: tuple[str, ...] | None = None  # a property's identity (topic + source): its latest value is kept

    def xml(self) -> etree._Element:
        def items(kind: str, values: dict[str, str]) -> etree._Element:
            return el(f"tt:{kind}", children=[el("tt:SimpleItem", Name=k, Value=v) for k, v in values.items()])

        stamp = xsd_time(datetime.fromtimestamp(self.utc, UTC))
        message = el("tt:Message", children=[items("Source", self.source), items("Data", self.data)],
                     UtcTime=stamp, PropertyOperation=self.operation)  # fmt: skip
        return el("wsnt:NotificationMessage", children=[
            el("wsnt:Topic", self.topic, Dialect=TOPIC_DIALECT), el("wsnt:Message", children=[message]),
        ])  # fmt: skip


@dataclass
class Subscription:
    expires: float
    queue: deque[Event] = field(default_factory=lambda: deque(maxlen=MAX_QUEUED))
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class SubscriptionLimit(Exception):
    pass


class PullPoints:
    """The subscriptions of one device; used on its server's event loop only."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.properties: dict[tuple[str, ...], Event] = {}
        self.ids = (f"{secrets.token_hex(8)}-{n}" for n in itertools.count())

    def create(self, expires: float) -> str:
        self.expire()
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise SubscriptionLimit(f"{MAX_SUBSCRIPTIONS} subscriptions already")
        sid = next(self.ids)
        self.subscriptions[sid] = Subscription(expires)
        return sid

    def get(self, sid: str) -> Subscription | None:
        self.expire()
        return self.subscriptions.get(sid)

    def remove(self, sid: str) -> bool:
        return self.subscriptions.pop(sid, None) is not None

    def expire(self) -> None:
        now = time.time()
        for sid in [sid for sid, sub in self.subscriptions.items() if sub.expires < now]:
            del self.subscriptions[sid]

    def publish(self, event: Event) -> None:
        if event.key is not None and event.operation == "Deleted":
            self.properties.pop(event.key, None)
        elif event.key is not None:
            self.properties[event.key] = event
        for sub in self.subscriptions.values():
            sub.queue.append(event)
            sub.arrived.set()

    def synchronize(self, sid: str) -> None:
        """Send every property's current value to ``sid`` again, as Initialized."""
        sub = self.subscriptions.get(sid)
        if sub is None:
            return
        for event in self.properties.values():
            sub.queue.append(replace(event, operation="Initialized", utc=time.time()))
        sub.arrived.set()

    async def pull(self, sub: Subscription, timeout: float, limit: int) -> list[Event]:
        """Up to ``limit`` messages, waiting up to ``timeout`` for the first."""
        if not sub.queue:
            sub.arrived.clear()
            try:
                await asyncio.wait_for(sub.arrived.wait(), timeout)
            except TimeoutError:
                return []
        return [sub.queue.popleft() for _ in range(min(limit, len(sub.queue)))]
