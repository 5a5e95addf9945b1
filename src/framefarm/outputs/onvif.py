"""Output ``onvif``: framefarm as an ONVIF device whose events are its detections, for a VMS or NVR that knows
ONVIF and nothing of YOLO (Home Assistant, Frigate, Milestone, Blue Iris).

SOAP 1.2 on the project's HTTP stack (127.0.0.1 by default): the device service, a media service with one H.264
profile per stream (pointing at ``stream_url``, an ``rtsp`` output's URL, where one is given), and the events
service with PullPoint subscriptions. Detections become the topics Home Assistant parses, as state changes with
a hold time, not one event per frame:

- ``tns1:RuleEngine/MyRuleDetector/PeopleDetect``, ``VehicleDetect``, ``DogCatDetect``: true when a person
  (vehicle, animal) is detected on the stream, false ``hold`` after the last one;
- ``tns1:RuleEngine/ObjectDetection/Object``: ``ClassTypes`` (the types present, "Human Vehicle Animal"), with the
  most confident detection's class, confidence and box.

Which COCO classes count as which type is ``classes``. With ``username``, every call but GetSystemDateAndTime
needs a WS-Security login (digest or text); a wrong one is answered ``ter:NotAuthorized``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from lxml import etree
from pydantic import Field, model_validator
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from ..config import registry
from ..config.registry import CheckContext
from ..config.schema import OutputOptions, TlsOptions
from ..config.types import Duration
from ..config.yamlpos import Loc
from ..message import FrameMessage
from ..onvif.events import Event, PullPoints, SubscriptionLimit
from ..onvif.soap import (
    CONTENT_TYPE,
    MAX_REQUEST,
    Logins,
    Request,
    SoapFault,
    el,
    envelope,
    fault,
    parse,
    q,
    xsd_time,
)
from ..web.server import BodyTooLarge, bind, listen_field, read_body, serve_socket, tls_files
from .base import Output

DEFAULT_LISTEN = "127.0.0.1:8000"
DEFAULT_HOLD_S = 5.0
DEFAULT_RATE = 25.0  # a stream's frame rate in its profile when its input does not say
SWEEP_S = 0.5
MAX_PULL_TIMEOUT_S = 60.0
MAX_TERMINATION_S = 24 * 3600.0
DEFAULT_TERMINATION_S = 600.0
TYPES = ("Human", "Vehicle", "Animal")
RULE_TOPICS = {
    "Human": "tns1:RuleEngine/MyRuleDetector/PeopleDetect",
    "Vehicle": "tns1:RuleEngine/MyRuleDetector/VehicleDetect",
    "Animal": "tns1:RuleEngine/MyRuleDetector/DogCatDetect",
}
OBJECT_TOPIC = "tns1:RuleEngine/ObjectDetection/Object"
COCO_TYPES = {
    "person": "Human",
    **dict.fromkeys(["bicycle", "car", "motorcycle", "bus", "train", "truck", "boat"], "Vehicle"),
    **dict.fromkeys(["bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"], "Animal"),
}
SERVICES = {  # namespace -> path
    "http://www.onvif.org/ver10/device/wsdl": "/onvif/device_service",
    "http://www.onvif.org/ver10/media/wsdl": "/onvif/media_service",
    "http://www.onvif.org/ver10/events/wsdl": "/onvif/events_service",
}
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


class OnvifOutputOptions(OutputOptions):
    name: Literal["onvif"] = Field(description="Serve detections as ONVIF events (an ONVIF device's services).")
    listen: str = listen_field(DEFAULT_LISTEN)
    tls: TlsOptions = Field(default_factory=TlsOptions, description="Certificate and key for HTTPS.")
    username: str | None = Field(None, description="The login clients must give (WS-Security); none: no login.")
    password: str | None = Field(None, description="Its password (from ${VAR} in practice).")
    hold: Duration = Field(DEFAULT_HOLD_S, gt=0, description="A detection state stays true this long after.")
    min_confidence: float = Field(0.0, ge=0, le=1, description="Detections below this raise no event.")
    classes: dict[str, Literal["Human", "Vehicle", "Animal"]] = Field(
        default_factory=lambda: dict(COCO_TYPES),
        description="Class name -> ONVIF type (Human, Vehicle, Animal); other classes raise no event.",
    )
    stream_url: str | None = Field(
        None, description="The video each media profile points at, {tag} filled in (an rtsp output's URL)."
    )
    manufacturer: str = Field("framefarm", description="GetDeviceInformation's manufacturer.")

    @model_validator(mode="after")
    def _login_whole(self) -> OnvifOutputOptions:
        if bool(self.username) != bool(self.password):
            raise ValueError("give both username and password, or neither")
        return self


def parse_duration(text: str, now: datetime) -> float:
    """Seconds from an xs:duration (``PT1M``) or until an absolute xs:dateTime; SoapFault if neither."""
    text = text.strip()
    if match := _DURATION.match(text):
        days, hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
        return days * 86400 + hours * 3600 + minutes * 60 + seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SoapFault("s:Sender", "ter:InvalidArgVal", f"not a duration or a time: {text}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() - now.timestamp()


def termination(asked: str | None, now: datetime) -> float:
    """Seconds a subscription lives: as asked (a duration or a time), at most a day; 10 minutes if not asked."""
    return min(parse_duration(asked, now), MAX_TERMINATION_S) if asked else DEFAULT_TERMINATION_S


def relayed(message: FrameMessage) -> Event:
    """A camera's event (from ``onvif_events``) as this device relays it: its topic and items, the camera (its
    stream's tag) added to the Source; a property keeps its latest value for SetSynchronizationPoint."""
    event = message.event or {}
    source = {**event.get("source", {}), "Camera": message.stream}
    operation = event.get("operation")  # a property's change; None for a plain event
    key = (event["topic"], *(f"{k}={v}" for k, v in sorted(source.items()))) if operation else None
    utc = event.get("utc") or message.captured_at
    return Event(event["topic"], source, event.get("data", {}), utc=utc, operation=operation or "Changed", key=key)


class DetectionStates:
    """Which types each stream shows, held ``hold`` seconds past their last detection; thread-safe."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.seen: dict[tuple[str, str], float] = {}  # (tag, type) -> last detected (monotonic)
        self.lock = threading.Lock()

    def detected(self, tag: str, types: set[str], best: dict[str, str]) -> list[Event]:
        now = time.monotonic()
        with self.lock:
            before = self.present(tag)
            for kind in types:
                self.seen[tag, kind] = now
            return self.changes(tag, before, best)

    def sweep(self) -> list[Event]:
        """States whose hold ran out: false now."""
        now = time.monotonic()
        events = []
        with self.lock:
            for tag in {tag for tag, _ in self.seen}:
                before = self.present(tag)
                for kind in [k for (t, k), at in self.seen.items() if t == tag and now - at > self.hold]:
                    del self.seen[tag, kind]
                events += self.changes(tag, before, {})
        return events

    def present(self, tag: str) -> set[str]:
        return {kind for (t, kind) in self.seen if t == tag}

    def changes(self, tag: str, before: set[str], best: dict[str, str]) -> list[Event]:
        after = self.present(tag)
        if after == before:
            return []
        events = [
            Event(
                RULE_TOPICS[kind], {"Source": tag}, {"State": str(kind in after).lower()}, key=(RULE_TOPICS[kind], tag)
            )
            for kind in TYPES
            if (kind in after) != (kind in before)
        ]
        data = {"ClassTypes": " ".join(kind for kind in TYPES if kind in after), **best}
        source = {"VideoSourceToken": tag, "Rule": "framefarm"}
        return [*events, Event(OBJECT_TOPIC, source, data, key=(OBJECT_TOPIC, tag))]


@registry.outputs.register
class OnvifOutput(Output[OnvifOutputOptions]):
    relays_events = True

    @classmethod
    def check(cls, options: OnvifOutputOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        yield from options.tls.problems(ctx.resolve)

    @classmethod
    def frame_side(cls, options: OnvifOutputOptions, ctx: CheckContext) -> int | None:
        return 0  # events only: no frame

    def setup(self) -> None:
        self.states = DetectionStates(self.options.hold)
        self.pullpoints = PullPoints()
        self.logins = Logins(self.options.username, self.options.password)
        self.deciding = threading.Lock()  # events are queued to the loop in the order they were decided
        self.tags: dict[str, tuple[int, int, float]] = {}  # streams seen: (width, height, frame rate)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = threading.Event()
        sock = bind(self.options.listen)
        cert, key = tls_files(self.options.tls, self.ctx.resolve)
        serving = functools.partial(serve_socket, self.app(), sock, self.stopping, lifespan=True, cert=cert, key=key)
        self.server = threading.Thread(target=serving, name="onvif-server", daemon=True)
        self.server.start()
        self.sweeper = threading.Thread(target=self.sweep, name="onvif-hold", daemon=True)
        self.sweeper.start()
        self.ctx.log.info("ONVIF device on %s://%s/onvif/device_service", self.options.tls.scheme, self.options.listen)

    def teardown(self) -> None:
        self.stopping.set()
        self.server.join()
        self.sweeper.join()

    def deliver(self, message: FrameMessage) -> bool:
        if message.event is not None:
            self.publish([relayed(message)])
            return True
        self.tags[message.stream] = (message.width, message.height, message.rate or DEFAULT_RATE)
        wanted = [
            d for d in message.detections or []
            if d["class_name"] in self.options.classes and d["confidence"] >= self.options.min_confidence
        ]  # fmt: skip
        best: dict[str, str] = {}
        if wanted:
            top = max(wanted, key=lambda d: d["confidence"])
            box = " ".join(f"{v:.0f}" for v in top["box"])
            best = {"ClassName": top["class_name"], "Confidence": f"{top['confidence']:.3f}", "BoundingBox": box}
        types = {self.options.classes[d["class_name"]] for d in wanted}
        with self.deciding:
            self.publish(self.states.detected(message.stream, types, best))
        return bool(wanted)

    def sweep(self) -> None:
        while not self.stopping.wait(SWEEP_S):
            with self.deciding:
                self.publish(self.states.sweep())

    def publish(self, events: list[Event]) -> None:
        """Hand events to the server's loop (where subscriptions live); none is lost once the server started."""
        if not events or self.loop is None:
            return
        try:
            for event in events:
                self.loop.call_soon_threadsafe(self.pullpoints.publish, event)
        except RuntimeError:  # the loop closed: the output is stopping
            if not self.stopping.is_set():
                raise

    # -- the SOAP services --

    def app(self) -> Starlette:
        operations: dict[str, Callable[[Request, HttpRequest], Any]] = {
            "GetSystemDateAndTime": self.get_system_date_and_time,
            "GetServices": self.get_services,
            "GetCapabilities": self.get_capabilities,
            "GetDeviceInformation": self.get_device_information,
            "GetProfiles": self.get_profiles,
            "GetStreamUri": self.get_stream_uri,
            "GetVideoSources": self.get_video_sources,
            "GetEventProperties": self.get_event_properties,
            "CreatePullPointSubscription": self.create_pull_point_subscription,
            "PullMessages": self.pull_messages,
            "Renew": self.renew,
            "Unsubscribe": self.unsubscribe,
            "SetSynchronizationPoint": self.set_synchronization_point,
        }

        async def endpoint(http: HttpRequest) -> Response:
            try:
                try:
                    body = await read_body(http, MAX_REQUEST)
                except BodyTooLarge as exc:
                    raise SoapFault("s:Sender", "ter:InvalidArgVal", str(exc)) from None
                request = parse(body)
                if request.operation != "GetSystemDateAndTime":
                    self.logins.check(request)
                handler = operations.get(request.operation)
                if handler is None:
                    raise SoapFault("s:Receiver", "ter:ActionNotSupported", f"{request.operation} is not supported")
                result = await handler(request, http)
            except SoapFault as error:
                return Response(fault(error), status_code=400 if error.code == "s:Sender" else 500,
                                media_type=CONTENT_TYPE)  # fmt: skip
            return Response(envelope(*result), media_type=CONTENT_TYPE)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.loop = asyncio.get_running_loop()  # from now on events reach the subscriptions and states
            yield

        paths = [*SERVICES.values(), "/onvif/subscription/{sid}"]
        return Starlette(routes=[Route(path, endpoint, methods=["POST"]) for path in paths], lifespan=lifespan)

    def base(self, http: HttpRequest) -> str:
        return f"{http.url.scheme}://{http.headers.get('host', self.options.listen)}"

    async def get_system_date_and_time(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        now = datetime.now(UTC)
        clock = el(
            "tt:Time", children=[el("tt:Hour", now.hour), el("tt:Minute", now.minute), el("tt:Second", now.second)]
        )
        date = el("tt:Date", children=[el("tt:Year", now.year), el("tt:Month", now.month), el("tt:Day", now.day)])
        answer = el("tds:SystemDateAndTime", children=[
            el("tt:DateTimeType", "NTP"), el("tt:DaylightSavings", "false"),
            el("tt:TimeZone", children=[el("tt:TZ", "UTC0")]),
            el("tt:UTCDateTime", children=[clock, date]),
        ])  # fmt: skip
        return [el("tds:GetSystemDateAndTimeResponse", children=[answer])]

    async def get_services(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        base = self.base(http)
        services = [
            el(
                "tds:Service",
                children=[
                    el("tds:Namespace", namespace),
                    el("tds:XAddr", base + path),
                    el("tds:Version", children=[el("tt:Major", 2), el("tt:Minor", 60)]),
                ],
            )
            for namespace, path in SERVICES.items()
        ]
        return [el("tds:GetServicesResponse", children=services)]

    async def get_capabilities(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        base = self.base(http)
        events = el("tt:Events", children=[
            el("tt:XAddr", base + SERVICES["http://www.onvif.org/ver10/events/wsdl"]),
            el("tt:WSSubscriptionPolicySupport", "false"), el("tt:WSPullPointSupport", "true"),
            el("tt:WSPausableSubscriptionManagerInterfaceSupport", "false"),
        ])  # fmt: skip
        media = el("tt:Media", children=[
            el("tt:XAddr", base + SERVICES["http://www.onvif.org/ver10/media/wsdl"]),
            el("tt:StreamingCapabilities", children=[
                el("tt:RTPMulticast", "false"), el("tt:RTP_TCP", "true"), el("tt:RTP_RTSP_TCP", "true"),
            ]),
        ])  # fmt: skip
        device = el("tt:Device", children=[el("tt:XAddr", base + SERVICES["http://www.onvif.org/ver10/device/wsdl"])])
        capabilities = el("tds:Capabilities", children=[device, events, media])
        return [el("tds:GetCapabilitiesResponse", children=[capabilities])]

    async def get_device_information(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        fields = [("Manufacturer", self.options.manufacturer), ("Model", "framefarm"), ("FirmwareVersion", "0.1"),
                  ("SerialNumber", self.ctx.alias), ("HardwareId", "framefarm")]  # fmt: skip
        return [el("tds:GetDeviceInformationResponse", children=[el(f"tds:{k}", v) for k, v in fields])]

    def streams(self) -> list[tuple[str, int, int, float]]:
        """(tag, width, height, frame rate) of each stream seen, for the media profiles."""
        return [(tag, *self.tags[tag]) for tag in sorted(self.tags)]

    async def get_profiles(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        profiles = []
        for tag, width, height, _ in self.streams():
            source = el("tt:VideoSourceConfiguration", token=tag, children=[
                el("tt:Name", tag), el("tt:UseCount", 1), el("tt:SourceToken", tag),
                el("tt:Bounds", x="0", y="0", width=str(width), height=str(height)),
            ])  # fmt: skip
            encoder = el("tt:VideoEncoderConfiguration", token=tag, children=[
                el("tt:Name", tag), el("tt:UseCount", 1), el("tt:Encoding", "H264"),
                el("tt:Resolution", children=[el("tt:Width", width), el("tt:Height", height)]), el("tt:Quality", 5),
            ])  # fmt: skip
            profiles.append(el("trt:Profiles", token=tag, fixed="true", children=[el("tt:Name", tag), source, encoder]))
        return [el("trt:GetProfilesResponse", children=profiles)]

    async def get_video_sources(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        sources = [
            el(
                "trt:VideoSources",
                token=tag,
                children=[
                    el("tt:Framerate", f"{rate:g}"),
                    el("tt:Resolution", children=[el("tt:Width", width), el("tt:Height", height)]),
                ],
            )
            for tag, width, height, rate in self.streams()
        ]
        return [el("trt:GetVideoSourcesResponse", children=sources)]

    async def get_stream_uri(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        tag = request.body.findtext(q("trt:ProfileToken")) or ""
        if tag not in self.tags or not self.options.stream_url:
            raise SoapFault("s:Sender", "ter:InvalidArgVal", f"no stream for profile {tag!r}")
        uri = el("trt:MediaUri", children=[
            el("tt:Uri", self.options.stream_url.replace("{tag}", tag)), el("tt:InvalidAfterConnect", "false"),
            el("tt:InvalidAfterReboot", "false"), el("tt:Timeout", "PT0S"),
        ])  # fmt: skip
        return [el("trt:GetStreamUriResponse", children=[uri])]

    async def get_event_properties(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        topic_set = el("wstop:TopicSet")
        engine = etree.SubElement(topic_set, q("tns1:RuleEngine"))
        for topic in (*RULE_TOPICS.values(), OBJECT_TOPIC):
            parent, _, leaf = topic.removeprefix("tns1:RuleEngine/").rpartition("/")
            group = engine.find(parent)
            if group is None:
                group = etree.SubElement(engine, parent)
            etree.SubElement(group, leaf).set(q("wstop:topic"), "true")
        answer = [
            el("tev:TopicNamespaceLocation", "http://www.onvif.org/onvif/ver10/topics/topicns.xml"),
            el("wsnt:FixedTopicSet", "true"),
            topic_set,
            el("wsnt:TopicExpressionDialect", "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"),
            el("tev:MessageContentFilterDialect", "http://www.onvif.org/ver10/tev/messageContentFilter/ItemFilter"),
            el("tev:MessageContentSchemaLocation", "http://www.onvif.org/onvif/ver10/schema/onvif.xsd"),
        ]
        return [el("tev:GetEventPropertiesResponse", children=answer)]

    async def create_pull_point_subscription(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        now = datetime.now(UTC)
        asked = request.body.findtext(q("tev:InitialTerminationTime"))
        seconds = termination(asked, now)
        try:
            sid = self.pullpoints.create(now.timestamp() + seconds)
        except SubscriptionLimit as exc:
            raise SoapFault("s:Receiver", "ter:OutofMemory", str(exc)) from None
        address = el(
            "tev:SubscriptionReference", children=[el("wsa:Address", f"{self.base(http)}/onvif/subscription/{sid}")]
        )
        return [el("tev:CreatePullPointSubscriptionResponse", children=[
            address, el("wsnt:CurrentTime", xsd_time(now)),
            el("wsnt:TerminationTime", xsd_time(now + timedelta(seconds=seconds))),
        ])]  # fmt: skip

    def subscription(self, http: HttpRequest) -> tuple[str, Any]:
        sid = http.path_params.get("sid", "")
        sub = self.pullpoints.get(sid)
        if sub is None:
            raise SoapFault("s:Sender", "ter:InvalidArgVal", "no such subscription (expired or unsubscribed)")
        return sid, sub

    async def pull_messages(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        _, sub = self.subscription(http)
        timeout_text = request.body.findtext(q("tev:Timeout")) or "PT10S"
        limit_text = (request.body.findtext(q("tev:MessageLimit")) or "100").strip()
        if not limit_text.isdigit():
            raise SoapFault("s:Sender", "ter:InvalidArgVal", f"MessageLimit is not a number: {limit_text[:40]}")
        timeout = min(max(0.0, parse_duration(timeout_text, datetime.now(UTC))), MAX_PULL_TIMEOUT_S)
        events = await self.pullpoints.pull(sub, timeout, max(1, int(limit_text)))
        now = datetime.now(UTC)
        return [el("tev:PullMessagesResponse", children=[
            el("tev:CurrentTime", xsd_time(now)),
            el("tev:TerminationTime", xsd_time(datetime.fromtimestamp(sub.expires, UTC))),
            *(event.xml() for event in events),
        ])]  # fmt: skip

    async def renew(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        _, sub = self.subscription(http)
        now = datetime.now(UTC)
        asked = request.body.findtext(q("wsnt:TerminationTime"))
        sub.expires = now.timestamp() + termination(asked, now)
        return [el("wsnt:RenewResponse", children=[
            el("wsnt:TerminationTime", xsd_time(datetime.fromtimestamp(sub.expires, UTC))),
            el("wsnt:CurrentTime", xsd_time(now)),
        ])]  # fmt: skip

    async def unsubscribe(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        sid, _ = self.subscription(http)
        self.pullpoints.remove(sid)
        return [el("wsnt:UnsubscribeResponse")]

    async def set_synchronization_point(self, request: Request, http: HttpRequest) -> list[etree._Element]:
        sid, _ = self.subscription(http)
        self.pullpoints.synchronize(sid)
        return [el("tev:SetSynchronizationPointResponse")]
