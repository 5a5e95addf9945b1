"""What every input kind shares: the reconnect loop around ``read`` and the publisher that puts frames on the bus."""

from __future__ import annotations

import enum
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, TypeVar

from ..backoff import Backoff
from ..bus.base import frame_key
from ..config.schema import InputOptions
from ..errors import BusError, SourceError
from ..message import FrameMessage
from ..modules import counters
from ..modules.base import Module
from ..modules.context import ModuleContext
from ..results import reply_payload
from ..vision.codec import encode_frame, shrink
from .images import CheckedImage

ADMIT_POLL_S = 0.02  # how often a lossless input that hit max_in_flight looks again
EVENT_FORMAT = "event"  # the format of a message that carries a camera's event, not a frame

IO = TypeVar("IO", bound=InputOptions)


class Input(Module[IO]):
    """An input kind implements ``read``; the base reconnects it with backoff whenever its source fails.

    The backoff grows with jitter up to ``reconnect.max`` while attempts publish nothing, and starts over at
    ``reconnect.initial`` once a frame was published: a dead camera is not hammered, a flaky one recovers fast.
    """

    def __init__(self, ctx: ModuleContext[IO]) -> None:
        super().__init__(ctx)
        self.publisher = Publisher(ctx)

    @abstractmethod
    def read(self, stop: threading.Event) -> None:
        """Read the source and publish its frames until ``stop`` is set.

        Raise SourceUnavailable (cannot open), SourceStalled (open but silent) or another SourceError to be
        reconnected with backoff; returning before ``stop`` means the source ended, and it is opened again.
        """

    def run(self, stop: threading.Event) -> None:
        reconnect = self.options.reconnect
        backoff = Backoff(initial=reconnect.initial, maximum=reconnect.max)
        retryable = (SourceError, BusError, *self.ctx.bus.transient_errors)
        while not stop.is_set():
            published = self.publisher.published
            try:
                self.ctx.bus.ping()
                self.read(stop)
                reason = "the source ended"
            except retryable as exc:
                reason = str(exc) or type(exc).__name__
            if stop.is_set():
                return
            if self.publisher.published > published:
                backoff.reset()
            delay = backoff.next_delay()
            self.ctx.bus.flow.count(self.ctx.alias, counters.RECONNECTS)
            self.ctx.log.warning("%s; reconnecting in %.1fs (attempt %d)", reason, delay, backoff.attempts)
            stop.wait(delay)


@dataclass(frozen=True)
class StoredImage:
    """An image as it goes on the bus (see Publisher.stored_image): no decoded pixels are kept."""

    data: bytes
    format: str
    width: int  # of the picture as displayed: results are reported in its pixels
    height: int
    scale: float  # stored size / displayed size


class Sent(enum.Enum):
    """What ``publish`` did with a frame; true only when it went down its whole route."""

    PUBLISHED = counters.PUBLISHED
    RAW_ONLY = counters.RAW_ONLY  # no room at the detectors: only the taps took it
    DROPPED_FULL = counters.DROPPED_FULL
    STOPPED = "stopped"  # ``stop`` came while a lossless input waited for room

    def __bool__(self) -> bool:
        return self is Sent.PUBLISHED


@dataclass(frozen=True)
class Route:
    """Where a tag's frames go: the first stage of their route, the outputs that take them before detection
    too (taps), and how many releases a frame gets (one per output, two for a tap)."""

    first_hop: list[str]
    taps: list[str]
    refs: int


class Publisher:
    """Stores a frame's bytes and sends its message to the first stage of its route.

    Live inputs drop a frame (and count it) when the stream already has ``max_in_flight`` frames in the
    pipeline, or send it only to the outputs that take frames before detection (taps, counted ``raw_only``);
    lossless (file) inputs wait instead, so nothing is lost and memory stays bounded. A caller that must answer at
    once (an upload) is a live input: False means "full", and it says so to its client. It may choose the frame's
    key (to give its client an id) and a tag other than its input's (routed like that tag's frames).
    """

    def __init__(self, ctx: ModuleContext[InputOptions]) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self.lossless = type(self.options).lossless
        self.kept_long = self.lossless or type(self.options).promised
        self.ttl = ctx.service.frames.lossless_ttl if self.kept_long else ctx.service.frames.ttl
        self.routes: dict[str, Route] = {}
        self.max_side = self.store_side(self.options.tag)  # frames of this input's tag: stored no larger
        self.published = 0  # frames put on the bus by this process: progress, for the reconnect backoff

    def publish(
        self,
        data: bytes,
        *,
        fmt: str,
        width: int,
        height: int,
        source: str,
        stop: threading.Event,
        pts: float | None = None,
        frame_index: int | None = None,
        rate: float | None = None,
        captured_at: float | None = None,
        scale: float = 1.0,
        key: str | None = None,
        tag: str | None = None,
        reply: str | None = None,
    ) -> Sent:
        """Put one encoded frame on the bus; false when it was dropped (live), went to the taps only, or ``stop``
        came first.

        With ``reply``, the frame's result is sent to that queue once its detections are ready: by its route's last
        processor, or here and now when no processor takes the tag.
        """
        bus, alias = self.ctx.bus, self.ctx.alias
        key = key or frame_key(alias)
        route = self.route(tag or self.options.tag)
        queues, refs = [*route.first_hop, *route.taps], route.refs
        bus.flow.count(alias, counters.FRAMES_IN)
        while (seq := bus.flow.admit_numbered(alias, key, limit=self.options.max_in_flight, ttl=self.ttl)) is None:
            if not self.lossless:
                if not route.taps or not self.admit_raw(key):
                    bus.flow.count(alias, counters.DROPPED_FULL)
                    return Sent.DROPPED_FULL
                queues, refs = route.taps, len(route.taps)  # no room at the detectors: the taps show it as is
                seq = bus.flow.next_seq(alias)
                break
            if stop.wait(ADMIT_POLL_S):
                return Sent.STOPPED
        detected = queues is not route.taps
        captured_at = captured_at or time.time()
        message = FrameMessage(
            stream=tag or self.options.tag,
            input=alias,
            source=source,
            seq=seq,
            pts=pts,
            frame_index=frame_index,
            rate=rate,
            captured_at=captured_at,
            width=width,
            height=height,
            scale=scale,
            key=key,
            format=fmt,
            expires_at=captured_at + self.options.max_age if self.options.max_age else None,
            tapped=detected and bool(route.taps),
            reply=reply,
        )
        inline = bus.frames.put(key, data, ttl=self.ttl, refs=refs)
        payload = {**message.model_dump(exclude_none=True), **inline}
        for queue in queues:
            bus.send(queue, {**payload, "tapped": False} if queue in route.taps else payload)
        if reply and self.ctx.routes.last_processor(message.stream) is None:
            bus.send(reply, reply_payload(message))
        sent = Sent.PUBLISHED if detected else Sent.RAW_ONLY
        bus.flow.count(alias, sent.value)
        self.published += 1
        return sent

    def publish_event(self, event: dict[str, Any], *, source: str, captured_at: float | None = None) -> Sent:
        """Send a camera's event (topic, source, data, utc, operation) down its route like a frame: it holds no
        frame, so it takes no room in flight and nothing is stored; processors pass it on."""
        bus, alias, tag = self.ctx.bus, self.ctx.alias, self.options.tag
        message = FrameMessage(
            stream=tag, input=alias, source=source, seq=bus.flow.next_seq(alias),
            captured_at=captured_at or time.time(), width=0, height=0, key=frame_key(alias), format=EVENT_FORMAT,
            event=event,
        )  # fmt: skip
        for queue in self.route(tag).first_hop:
            bus.send(queue, message.model_dump(exclude_none=True))
        bus.flow.count(alias, counters.PUBLISHED)
        self.published += 1
        return Sent.PUBLISHED

    def admit_raw(self, key: str) -> bool:
        """Room for a frame that only the taps take: as many again as ``max_in_flight`` (they leave as soon as the
        outputs drew them), so a saturated detector does not starve the video, and memory stays bounded."""
        limit = 2 * self.options.max_in_flight
        return self.ctx.bus.flow.admit(self.ctx.alias, key, limit=limit, ttl=self.ttl)

    def stored_image(self, image: CheckedImage, tag: str | None = None) -> StoredImage:
        """An image file as ``tag``'s frames are stored: its own bytes when its route needs the whole picture or
        no more of it, else its checked pixels shrunk to the route's side, as ``frames.format`` (a 12-megapixel
        photo for a 640 network then fits inside a message). ``frames.max_side`` is for video: images are not
        shrunk by it."""
        side = self.ctx.routes.store_side(tag or self.options.tag)
        if side is None or max(image.width, image.height) <= side:
            return StoredImage(image.data, image.format, image.width, image.height, 1.0)
        pixels, scale = shrink(image.pixels, side)
        fmt = self.ctx.service.frame_format
        data = encode_frame(pixels, fmt, self.ctx.service.frames.quality)
        return StoredImage(data, fmt, image.width, image.height, scale)

    def publish_image(
        self,
        image: StoredImage,
        *,
        source: str,
        stop: threading.Event,
        captured_at: float | None = None,
        key: str | None = None,
        tag: str | None = None,
        reply: str | None = None,
    ) -> Sent:
        """``publish`` an image prepared by ``stored_image``."""
        return self.publish(
            image.data, fmt=image.format, width=image.width, height=image.height, scale=image.scale, source=source,
            stop=stop, captured_at=captured_at, key=key, tag=tag, reply=reply,
        )  # fmt: skip

    def store_side(self, tag: str) -> int | None:
        """The longest side ``tag``'s frames are stored with: what their route needs (Routes.store_side), within
        ``frames.max_side``; None keeps them whole."""
        sides = [side for side in (self.ctx.routes.store_side(tag), self.ctx.service.frames.max_side) if side]
        return min(sides) if sides else None

    def route(self, tag: str) -> Route:
        if tag not in self.routes:
            self.routes[tag] = self.make_route(tag)
        return self.routes[tag]

    def make_route(self, tag: str) -> Route:
        routes = self.ctx.routes
        taps = [] if self.kept_long else routes.taps(tag)  # a file's or an upload's frames are all detected
        return Route(routes.first_hop(tag), taps, len(routes.outputs_for(tag)) + len(taps))

    @property
    def taps(self) -> bool:
        """Whether frames of this input's own tag go to outputs that take them before detection."""
        return bool(self.route(self.options.tag).taps)
