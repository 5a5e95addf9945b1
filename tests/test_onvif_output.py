"""Output ``onvif``: what a VMS sees. onvif-zeep-async (the client Home Assistant uses) logs in, finds the event
service, subscribes with a PullPoint and pulls; Home Assistant's own parsers (onvif-parsers) read the events."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import onvif_parsers
import pytest
from onvif import ONVIFCamera
from test_network_outputs import DETECTIONS, count, free_port, output, send
from zeep.exceptions import Fault

from framefarm.modules import counters
from framefarm.onvif.events import MAX_QUEUED, Event, PullPoints
from framefarm.onvif.soap import CONTENT_TYPE, DIGEST, NS, Logins, Request, SoapFault, parse
from framefarm.outputs.onvif import OnvifOutput

from harness import running, server_certificate
from peers import NODE_CLIENT, NODE_MODULES, node_binary, port_open, stop_process, wait_for

PERSON = [{"class_id": 0, "class_name": "person", "confidence": 0.8, "box": [10, 20, 110, 220], "yolo": [0] * 4}]


@contextmanager
def serving(out: OnvifOutput, port: int) -> Iterator[None]:
    """The output running, once its port takes connections."""
    with running(out):
        wait_for(lambda: port_open(port), 10, "the ONVIF port")
        yield


async def pull_entities(service: Any, seconds: float) -> dict[str, list[bool]]:
    """Every event pulled for ``seconds``, as Home Assistant parses it: "<topic's last part>: <entity name>" ->
    the values it took."""
    seen: dict[str, list[bool]] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        result = await service.PullMessages({"MessageLimit": 100, "Timeout": timedelta(seconds=1)})
        for message in result.NotificationMessage:
            topic = message.Topic._value_1
            for entity in await onvif_parsers.parse(topic, "framefarm", message) or []:
                seen.setdefault(f"{topic.rpartition('/')[2]}: {entity.name}", []).append(entity.value)
    return seen


def test_home_assistants_client_gets_person_detection_true_then_false_after_the_hold(tmp_path, bus_url) -> None:
    port = free_port()
    out = output(OnvifOutput, tmp_path, bus_url, listen=f"127.0.0.1:{port}", username="admin",
                 password="s3cret", hold="1s")  # fmt: skip

    async def client() -> tuple[dict[str, list[bool]], dict[str, list[bool]]]:
        camera = ONVIFCamera("127.0.0.1", port, "admin", "s3cret")
        await camera.update_xaddrs()
        manager = await camera.create_pullpoint_manager(timedelta(minutes=10), lambda: None)
        service = manager.get_service()
        await asyncio.to_thread(send, out.ctx.bus, 0, PERSON)
        first = await pull_entities(service, 3)
        await asyncio.to_thread(send, out.ctx.bus, 1, DETECTIONS)
        await asyncio.to_thread(wait_for, lambda: count(out, counters.delivered("out")) == 2, 10, "the dog's frame")
        await manager.set_synchronization_point()
        second = await pull_entities(service, 3)
        await manager.shutdown()
        await camera.close()
        return first, second

    with serving(out, port):
        first, second = asyncio.run(client())
    assert first["PeopleDetect: Person Detection"] == [True, False]  # false once the hold ran out
    assert first["Object: Person Detection"] == [True, False]
    # The dog (an Animal: a pet to Home Assistant) and the car and bicycle: true, true again as the synchronization
    # point's current state, then false after the hold; people were already false, which the point says again.
    assert second["DogCatDetect: Pet Detection"] == [True, True, False]
    assert second["VehicleDetect: Vehicle Detection"] == [True, True, False]
    assert second["PeopleDetect: Person Detection"] == [False]


def test_a_wrong_password_is_not_authorized(tmp_path, bus_url) -> None:
    port = free_port()
    out = output(OnvifOutput, tmp_path, bus_url, listen=f"127.0.0.1:{port}", username="admin", password="s3cret")

    async def client() -> None:
        camera = ONVIFCamera("127.0.0.1", port, "admin", "wrong")
        try:
            await camera.update_xaddrs()
            events = await camera.create_events_service()
            await events.GetEventProperties()
        finally:
            await camera.close()

    with serving(out, port), pytest.raises(Fault, match="not authorized"):
        asyncio.run(client())


def test_the_npm_onvif_client_subscribes_and_pulls_a_detection(tmp_path: Path, bus_url: str) -> None:
    """A second client, written independently of the first: Node's ``onvif`` package."""
    port = free_port()
    out = output(OnvifOutput, tmp_path, bus_url, listen=f"127.0.0.1:{port}", username="admin", password="s3cret")
    with serving(out, port):
        send(out.ctx.bus, 0, [])  # a frame of stream "cam": its media profile exists from now on
        wait_for(lambda: count(out, counters.filtered("out")) == 1, 10, "the first frame taken")
        client = subprocess.Popen(
            [node_binary(), str(NODE_CLIENT), str(port), "admin", "s3cret"],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )  # fmt: skip
        try:
            first = json.loads(client.stdout.readline() or '{"error": "no output"}')
            send(out.ctx.bus, 1, PERSON)
            second = json.loads(client.stdout.readline() or '{"error": "no output"}')
            assert client.wait(30) == 0
        finally:
            stop_process(client)
    assert first == {"profiles": ["cam"]}, first
    states = {m["topic"]["_"]: m["message"]["message"]["data"]["simpleItem"] for m in second["messages"]}
    assert states["tns1:RuleEngine/MyRuleDetector/PeopleDetect"] == {"$": {"Name": "State", "Value": True}}, second


def test_renew_expiry_unsubscribe_and_malformed_requests(tmp_path: Path, bus_url: str) -> None:
    """Renew moves the termination time; a subscription left to expire is gone; a malformed body is a fault and
    the device keeps serving."""
    port = free_port()
    out = output(OnvifOutput, tmp_path, bus_url, listen=f"127.0.0.1:{port}")

    async def client() -> tuple[Any, Any, str]:
        camera = ONVIFCamera("127.0.0.1", port, "any", "any")
        await camera.update_xaddrs()
        manager = await camera.create_pullpoint_manager(timedelta(minutes=1), lambda: None)
        subscription = await camera.create_subscription_service("PullPointSubscription")
        renewed = await subscription.Renew("PT30M")
        events = await camera.create_events_service()
        short = await events.CreatePullPointSubscription({"InitialTerminationTime": "PT1S"})
        await asyncio.sleep(1.5)
        expired = short.SubscriptionReference.Address._value_1
        await manager.shutdown()
        await camera.close()
        return renewed, short, expired

    with serving(out, port):
        renewed, short, expired = asyncio.run(client())
        pull = (
            '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            '<PullMessages xmlns="http://www.onvif.org/ver10/events/wsdl"><Timeout>PT1S</Timeout>'
            "<MessageLimit>1</MessageLimit></PullMessages></s:Body></s:Envelope>"
        )
        gone = httpx.post(expired, content=pull, headers={"content-type": CONTENT_TYPE})
        garbage = httpx.post(f"http://127.0.0.1:{port}/onvif/events_service", content=b"<not soap", timeout=5)
        bomb = httpx.post(f"http://127.0.0.1:{port}/onvif/events_service", content=b"x" * 300_000, timeout=5)
        still = httpx.post(f"http://127.0.0.1:{port}/onvif/device_service", content=SYSTEM_TIME, timeout=5)
    assert (renewed.TerminationTime - renewed.CurrentTime).total_seconds() > 25 * 60
    assert (short.TerminationTime - short.CurrentTime).total_seconds() <= 1.5
    assert gone.status_code == 400 and b"no such subscription" in gone.content
    assert garbage.status_code == 400 and b"ter:WellFormed" in garbage.content
    assert bomb.status_code == 400 and b"over the limit (262144)" in bomb.content
    assert still.status_code == 200 and b"UTCDateTime" in still.content


def test_the_device_speaks_https_with_its_certificate(tmp_path: Path, bus_url: str) -> None:
    tls, trusted = server_certificate(tmp_path)
    port = free_port()
    out = output(OnvifOutput, tmp_path, bus_url, listen=f"127.0.0.1:{port}", tls=tls)
    with serving(out, port):
        answer = httpx.post(f"https://127.0.0.1:{port}/onvif/device_service", content=SYSTEM_TIME, verify=trusted)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # no answer in plain HTTP
            httpx.post(f"http://127.0.0.1:{port}/onvif/device_service", content=SYSTEM_TIME, timeout=5)
    assert answer.status_code == 200 and b"UTCDateTime" in answer.content


def test_logins_by_digest_and_by_text_and_a_queue_bounded_for_a_client_that_never_pulls() -> None:
    def request(password: str, digest: bool) -> Request:
        nonce, created = os.urandom(16), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        value = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
        kind = DIGEST if digest else DIGEST.replace("PasswordDigest", "PasswordText")
        token = (
            f'<wsse:Security xmlns:wsse="{NS["wsse"]}" xmlns:wsu="{NS["wsu"]}"><wsse:UsernameToken>'
            f"<wsse:Username>admin</wsse:Username><wsse:Password Type='{kind}'>{value if digest else password}"
            f"</wsse:Password><wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
            f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
        )
        return parse(
            f'<s:Envelope xmlns:s="{NS["s"]}"><s:Header>{token}</s:Header><s:Body><GetServices/></s:Body>'
            "</s:Envelope>".encode()
        )

    logins = Logins("admin", "s3cret")
    for digest in (True, False):
        logins.check(request("s3cret", digest))
        with pytest.raises(SoapFault, match="not authorized"):
            logins.check(request("wrong", digest))
    replayed = request("s3cret", True)
    logins.check(replayed)
    with pytest.raises(SoapFault, match="repeated"):
        logins.check(replayed)  # the same digest again: a replay
    points = PullPoints()
    sid = points.create(time.time() + 60)
    for n in range(3 * MAX_QUEUED):
        points.publish(Event("tns1:VideoSource/MotionAlarm", {"Source": "cam"}, {"State": str(n % 2 == 0)}))
    assert len(points.subscriptions[sid].queue) == MAX_QUEUED  # the oldest went first


SYSTEM_TIME = (
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
    b'<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
)
