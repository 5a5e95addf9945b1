"""framefarm as an ONVIF client. Input ``onvif_events``: a camera's events in, through the bus, relayed by the
``onvif`` output to a VMS; and ``rtsp`` with a camera given by its ONVIF address.

The camera is framefarm's own ``onvif`` output on a bus of its own (no installable ONVIF camera simulator
implements the events service, ../shared/PEERS.md): its detections are the camera's events. The VMS is
onvif-zeep-async, the client Home Assistant uses."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from onvif import ONVIFCamera
from test_network_outputs import free_port, output, send
from test_onvif_output import PERSON, serving

from framefarm.config.routing import Routes, Stage
from framefarm.ingest.onvif_events import OnvifEvents
from framefarm.ingest.rtsp import Rtsp
from framefarm.modules import counters
from framefarm.outputs.onvif import OnvifOutput

from harness import QUEUE, memory_url, queued, running, stage_context
from livehelp import counts, live_input
from peers import rtsp_server, wait_for

TOPIC = "tns1:RuleEngine/MyRuleDetector/PeopleDetect"


def relay_output(tmp_path: Path, bus_url: str, port: int) -> OnvifOutput:
    raw = {"name": "onvif", "alias": "relay", "listen": f"127.0.0.1:{port}"}
    return OnvifOutput(stage_context(bus_url, tmp_path, OnvifOutput.Options.model_validate(raw)))


def camera(tmp_path: Path, port: int) -> OnvifOutput:
    """An ONVIF camera with an events service (framefarm's onvif output, fed on a bus of its own)."""
    return output(OnvifOutput, tmp_path, memory_url(), listen=f"127.0.0.1:{port}", username="cam",
                  password="cam-pass", hold="30s")  # fmt: skip


async def pulled(service: Any, wanted: int, seconds: float = 20) -> list[Any]:
    """Notification messages pulled until ``wanted`` of TOPIC came or ``seconds`` passed."""
    found: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and len([m for m in found if m.Topic._value_1 == TOPIC]) < wanted:
        result = await service.PullMessages({"MessageLimit": 100, "Timeout": timedelta(seconds=1)})
        found += result.NotificationMessage
    return [m for m in found if m.Topic._value_1 == TOPIC]


def test_camera_events_come_in_are_relayed_and_resubscribed_after_the_camera_restarts(
    tmp_path: Path, bus_url: str
) -> None:
    cam_port, relay_port = free_port(), free_port()
    relay = relay_output(tmp_path, bus_url, relay_port)
    routes = Routes(processors=(), outputs=(Stage("relay", "*"), Stage(QUEUE, "*")))
    login = {"user": "cam", "password": "cam-pass"}
    events = live_input(OnvifEvents, tmp_path, bus_url, alias="front", routes=routes, host="127.0.0.1",
                        port=cam_port, topics=["RuleEngine/MyRuleDetector/*"], **login)  # fmt: skip

    async def vms() -> list[Any]:
        client = ONVIFCamera("127.0.0.1", relay_port, "vms", "any")  # the relay asks for no login
        await client.update_xaddrs()
        manager = await client.create_pullpoint_manager(timedelta(minutes=10), lambda: None)
        service = manager.get_service()
        first = camera(tmp_path, cam_port)
        with serving(first, cam_port):
            await asyncio.to_thread(wait_for, lambda: subscribed(first), 20, "the input's subscription")
            await asyncio.to_thread(send, first.ctx.bus, 0, PERSON)
            got = await pulled(service, 1)
        reconnects = count(events, counters.RECONNECTS)
        second = camera(tmp_path, cam_port)  # the camera comes back (rebooted: no subscription of before)
        with serving(second, cam_port):
            await asyncio.to_thread(wait_for, lambda: subscribed(second), 30, "the input subscribed again")
            await asyncio.to_thread(send, second.ctx.bus, 0, PERSON)
            got += await pulled(service, 1)
        assert count(events, counters.RECONNECTS) > reconnects
        await manager.shutdown()
        await client.close()
        return got

    with serving(relay, relay_port), running(events):
        relayed = asyncio.run(vms())
    items = [{i.Name: i.Value for i in m.Message._value_1.Source.SimpleItem} for m in relayed]
    data = [{i.Name: i.Value for i in m.Message._value_1.Data.SimpleItem} for m in relayed]
    assert items[:2] == [{"Source": "cam", "Camera": "front"}] * 2 and data[:2] == [{"State": "true"}] * 2
    sent = [m for m in queued(events.ctx.bus) if m.event is not None]
    assert {m.event["topic"] for m in sent} == {TOPIC}  # ObjectDetection/Object was not asked for
    assert sent[0].source == f"onvif://127.0.0.1:{cam_port}" and sent[0].stream == "front"


def subscribed(device: OnvifOutput) -> bool:
    return bool(getattr(device, "pullpoints", None) and device.pullpoints.subscriptions)


def count(module: Any, name: str) -> int:
    return module.ctx.bus.flow.counters().get("front", {}).get(name, 0)


def test_an_rtsp_camera_given_by_its_onvif_address(tmp_path: Path, bus_url: str) -> None:
    """``rtsp`` with ``onvif:``: the stream URL comes from the camera's media service (GetProfiles, GetStreamUri),
    and the login goes into it, as cameras want the same one for their RTSP stream."""
    onvif_port = free_port()
    with rtsp_server(tmp_path, size="320x180", user="viewer", password="Right-Pass-1") as url:
        device = output(OnvifOutput, tmp_path, memory_url(), listen=f"127.0.0.1:{onvif_port}", username="viewer",
                        password="Right-Pass-1", stream_url=url.replace("/cam", "/{tag}"))  # fmt: skip
        onvif = {"host": "127.0.0.1", "port": onvif_port, "user": "viewer", "password": "Right-Pass-1"}
        cam = live_input(Rtsp, tmp_path, bus_url, onvif=onvif, max_in_flight=1000)
        with serving(device, onvif_port):
            send(device.ctx.bus, 0, [])  # the device's stream "cam": its profile
            wait_for(lambda: "cam" in device.tags, 10, "the device's profile")
            with running(cam):
                wait_for(lambda: counts(cam).get(counters.PUBLISHED, 0) >= 5, 30, "frames from the resolved URL")
    frames = queued(cam.ctx.bus)
    assert frames[0].source == url.replace("rtsp://", "rtsp://viewer:***@")
    assert (frames[0].width, frames[0].height) == (320, 180)
