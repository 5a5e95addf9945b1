"""Input ``onvif_events``: a camera's ONVIF events (motion, tampering, its own analytics), each one a message
routed by tag like a frame, so the HTTP, TCP, UDP and ``onvif`` outputs deliver camera events too.

The client is onvif-zeep-async, the library Home Assistant uses: the event service's address from the device
(``update_xaddrs``), a PullPoint subscription that it renews before it expires, PullMessages in a loop. A camera
that reboots, a subscription it lost, or any failure ends the attempt: the base reconnects with backoff and
subscribes again, and SetSynchronizationPoint has the camera send its current states again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal

from onvif import ONVIFCamera
from pydantic import Field

from ..config import registry
from ..config.schema import InputOptions
from ..config.types import Duration
from ..errors import SourceUnavailable
from .base import Input

DEFAULT_PORT = 80
UNSUBSCRIBE_S = 2.0  # a camera gone away is not waited for longer when the attempt ends
PULL_S = 2.0  # each PullMessages waits this long at most: how soon a stop is noticed
MESSAGE_LIMIT = 100
TOPIC_PREFIX = "tns1:"


class OnvifEventsOptions(InputOptions):
    name: Literal["onvif_events"] = Field(description="Subscribe to a camera's ONVIF events (PullPoint).")
    host: str = Field(description="The camera's address.")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="Its ONVIF (HTTP) port.")
    user: str | None = Field(None, description="Login (WS-Security).")
    password: str | None = Field(None, description="Its password (from ${VAR} in practice).")
    topics: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Globs on the topic, with or without tns1: (RuleEngine/*, VideoSource/MotionAlarm); default all.",
    )
    subscription: Duration = Field(600.0, ge=60, description="How long a subscription lives between renewals.")
    open_timeout: Duration = Field(10.0, gt=0, description="Longest wait for any one call to the camera.")


def simple_items(part: Any) -> dict[str, str]:
    """An event's Source or Data simple items as name -> value."""
    return {str(item.Name): str(item.Value) for item in (getattr(part, "SimpleItem", None) or [])}


def to_event(notification: Any) -> dict[str, Any]:
    """One of PullMessages' NotificationMessage (as zeep reads it) as the ``event`` of a message."""
    payload = notification.Message._value_1
    utc = getattr(payload, "UtcTime", None)
    return {
        "topic": str(notification.Topic._value_1).strip(),
        "source": simple_items(getattr(payload, "Source", None)),
        "data": simple_items(getattr(payload, "Data", None)),
        "utc": utc.timestamp() if utc is not None else None,
        "operation": getattr(payload, "PropertyOperation", None),  # None: a plain event, not a property's change
    }


@registry.inputs.register
class OnvifEvents(Input[OnvifEventsOptions]):
    @property
    def source(self) -> str:
        return f"onvif://{self.options.host}:{self.options.port}"

    def wanted(self, topic: str) -> bool:
        bare = topic.removeprefix(TOPIC_PREFIX)
        return any(fnmatchcase(topic, glob) or fnmatchcase(bare, glob) for glob in self.options.topics)

    def read(self, stop: threading.Event) -> None:
        asyncio.run(self.pull(stop))

    async def pull(self, stop: threading.Event) -> None:
        options = self.options
        camera = ONVIFCamera(options.host, options.port, options.user, options.password)
        lost = asyncio.Event()
        manager = None
        try:
            await asyncio.wait_for(camera.update_xaddrs(), options.open_timeout)
            manager = await asyncio.wait_for(
                camera.create_pullpoint_manager(timedelta(seconds=options.subscription), lost.set),
                options.open_timeout,
            )
            await asyncio.wait_for(manager.set_synchronization_point(), options.open_timeout)
            self.ctx.log.info("subscribed to the events of %s", self.source)
            service = manager.get_service()
            while not stop.is_set():
                if lost.is_set():
                    raise SourceUnavailable(f"{self.source}: the camera lost the subscription")
                asked = {"MessageLimit": MESSAGE_LIMIT, "Timeout": timedelta(seconds=PULL_S)}
                result = await asyncio.wait_for(service.PullMessages(asked), PULL_S + options.open_timeout)
                for notification in result.NotificationMessage or []:
                    event = to_event(notification)
                    if self.wanted(event["topic"]):
                        self.publisher.publish_event(event, source=self.source)
        except SourceUnavailable:
            raise
        except Exception as exc:  # zeep, aiohttp, httpx and onvif errors alike: the camera failed this attempt
            reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            raise SourceUnavailable(f"{self.source}: {reason}") from None
        finally:
            if manager is not None:  # unsubscribe, or the camera keeps the subscription (it has few) until it expires
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(manager.shutdown(), UNSUBSCRIBE_S)
            await camera.close()
