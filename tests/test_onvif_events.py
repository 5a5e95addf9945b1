"""framefarm as an ONVIF client. Input ``onvif_events``: a camera's events in, through the bus, relayed by the
``onvif`` output to a VMS; and ``rtsp`` with a camera given by its ONVIF address.

The camera is framefarm's own ``onvif`` output on a bus of its own (no installable ONVIF camera simulator
implements the events service, ../shared/PEERS.md): its detections are the camera's events. The VMS is
onvif-zeep-async, the client Home Assistant uses."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import onvif.client as onvif_client
import pytest
from onvif import ONVIFCamera
from test_network_outputs import free_port, output, send, udp_receiver
from test_onvif_output import PERSON, serving

from framefarm.bus.base import frame_key
from framefarm.config.routing import Routes, Stage
from framefarm.ingest.onvif_events import OnvifEvents
from framefarm.ingest.rtsp import Rtsp
from framefarm.message import FrameMessage
from framefarm.modules import counters
from framefarm.outputs.onvif import OnvifOutput
from framefarm.outputs.udp import UdpOutput
from framefarm.outputs.video_file import VideoFile

from harness import QUEUE, memory_url, queued, running, stage_context
from livehelp import counts, live_input
from peers import rtsp_server, wait_for

TOPIC = "tns1:RuleEngine/MyRuleDetector/PeopleDetect"


@pytest.fixture(autouse=True, scope="module")
def _one_wsdl_cache() -> None:
    """onvif-zeep-async makes its shared WSDL cache under a module-level asyncio.Lock; two event loops racing for it
    (the input's thread and the test's client, here in one process) can leave one waiting forever. A framefarm
    process runs one loop at a time; the test makes the cache once, before any loop races for it."""
    asyncio.run(onvif_client._get_shared_sqlite_cache())


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
            reconnects = count(events, counters.RECONNECTS)  # before the camera goes: its going is what counts
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


def test_a_camera_event_goes_out_over_udp_and_video_outputs_count_it_filtered(tmp_path: Path, bus_url: str) -> None:
    """An event is a message with no frame: the network outputs send it (even with only_with_detections), the
    outputs that show frames skip it, counted, and nothing is looked up in the frame store."""
    receiver = udp_receiver()
    port = receiver.getsockname()[1]
    sender = output(UdpOutput, tmp_path, bus_url, host="127.0.0.1", port=port, only_with_detections=True)
    video = output(VideoFile, tmp_path, memory_url(), path=str(tmp_path / "{tag}.mkv"))
    event = {"topic": "tns1:VideoSource/MotionAlarm", "source": {"Source": "vs1"}, "data": {"State": "true"},
             "utc": time.time(), "operation": "Changed"}  # fmt: skip
    message = FrameMessage(stream="front", input="front", source="onvif://10.0.0.5:80", seq=1, captured_at=time.time(),
                           width=0, height=0, key=frame_key("front"), format="event", event=event)  # fmt: skip
    with running(sender), running(video):
        for module in (sender, video):
            module.ctx.bus.send("out", message.model_dump(exclude_none=True))
        sent = json.loads(receiver.recv(65536))
        wait_for(lambda: video.ctx.bus.flow.counters().get("front", {}).get(counters.filtered("out")) == 1, 10)
    assert sent["event"] == event and sent["detections"] == [] and sent["stream"] == "front"
    assert not (tmp_path / "front.mkv").exists()
