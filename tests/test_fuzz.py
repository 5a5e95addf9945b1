"""Malformed input, property-based (Hypothesis) and mutated from real samples: whatever the bytes, each parser
answers with a value or its own clear error (the one its callers turn into a log line, a failed_dir reason, a
400 or a SOAP fault), never another exception, and holds no more memory than its bound.

Parsers under test: image headers (every file and upload is judged by its header before it is decoded), the
MJPEG multipart/x-mixed-replace reader, inline-frame message bodies (NATS, NSQ), ONVIF SOAP requests, pipeline
files (pipectl -t), and the http input's requests (bodies, content types, query parameters, paths) on a real
server. A fixed seed and a bounded number of examples keep the run short and repeatable."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from dramatiq import Message
from dramatiq.errors import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_input import server

from framefarm.bus import codec
from framefarm.config.pipeline import load_pipeline
from framefarm.errors import BadInput, ConfigError
from framefarm.ingest.multipart import MultipartReplace
from framefarm.onvif.soap import SoapFault, parse
from framefarm.vision.imageheader import read_header

from conftest import MEDIA, REPO

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SAMPLES = [(MEDIA / name).read_bytes() for name in ("dog.jpg", "eagle.jpg")]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (4000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """A real sample cut short, with bytes flipped, inserted or dropped near its start (where headers are)."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, min(len(data) - 1, 600)))
        action = draw(st.sampled_from(["flip", "insert", "drop"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data[: draw(st.integers(0, len(data)))])


@FUZZ
@given(st.one_of(st.binary(max_size=2048), mutated(SAMPLES), mutated([PNG])))
def test_an_image_header_is_read_or_refused_with_badinput(data: bytes) -> None:
    try:
        header = read_header(data)
    except BadInput as exc:
        assert str(exc)  # the reason that goes into the log line or failed_dir's .error.txt
        return
    assert header.width > 0 and header.height > 0


BOUNDARY = b"frame"
MAX_PART = 4096


def multipart(parts: list[bytes]) -> bytes:
    return b"".join(
        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(p), p) for p in parts
    )


@st.composite
def chopped_stream(draw: st.DrawFn) -> list[bytes]:
    """A multipart body of real-looking parts, garbage or both, mutated, in reads of any size."""
    parts = draw(st.lists(st.binary(max_size=300), max_size=5))
    body = bytearray(draw(st.one_of(st.just(multipart(parts)), st.binary(max_size=3000))))
    for _ in range(draw(st.integers(0, 4))):
        if body:
            at = draw(st.integers(0, len(body) - 1))
            body[at : at + draw(st.integers(0, 4))] = draw(st.binary(max_size=12))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=12)))
    return [bytes(body[a:b]) for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


@FUZZ
@given(chopped_stream())
def test_the_mjpeg_reader_takes_any_stream_in_any_reads_within_its_bound(reads: list[bytes]) -> None:
    reader = MultipartReplace(BOUNDARY, MAX_PART)
    for data in reads:
        try:
            parts = reader.feed(data)
        except BadInput as exc:
            assert str(exc)
            return
        assert all(len(part) <= MAX_PART for part in parts)
        assert len(reader.buffer) <= MAX_PART + len(data) + 1024  # never the whole stream


@FUZZ
@given(st.lists(st.binary(max_size=400), min_size=1, max_size=4), st.data())
def test_parts_come_out_whole_however_the_stream_is_cut(parts: list[bytes], data: st.DataObject) -> None:
    body = multipart(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=20)))
    reader = MultipartReplace(BOUNDARY, MAX_PART)
    got = [p for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) for p in reader.feed(body[a:b])]
    assert got == [p for p in parts if p]


def message(args: dict) -> Message:
    return Message(queue_name="q", actor_name="q", args=(args,), kwargs={}, options={})


@FUZZ
@given(st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(lambda b: codec.BINARY_MAGIC + b)))
def test_a_message_body_decodes_or_is_a_decode_error(body: bytes) -> None:
    try:
        decoded = codec.decode(body)
    except DecodeError:
        return
    assert isinstance(decoded, Message)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.binary(max_size=64), st.integers(), st.text(max_size=8))))
def test_inline_frames_survive_the_binary_body(args: dict) -> None:
    sent = message(args)
    decoded = codec.decode(b"".join(codec.encode(sent)))
    assert decoded.args == (args,) and decoded.message_id == sent.message_id


ENVELOPE = (
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
    b'<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
)
BOMB = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>'


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated([ENVELOPE, BOMB])))
def test_a_soap_body_is_a_request_or_a_fault(data: bytes) -> None:
    try:
        request = parse(data)
    except SoapFault as exc:
        assert exc.code == "s:Sender"
        return
    assert request.operation


PIPELINE = (REPO / "configs" / "demo.yaml").read_text()


@st.composite
def mutated_pipeline(draw: st.DrawFn) -> str:
    lines = PIPELINE.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        noise = draw(st.sampled_from(["", "  ", ":", "- ", "{", "[", "*x", "&x", "!tag ", "\t", "'", "<<: *x", "~"]))
        lines[at] = draw(
            st.sampled_from([noise + lines[at], lines[at] + noise, noise, lines[at][: len(lines[at]) // 2]])
        )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.one_of(mutated_pipeline(), st.text(max_size=300)))
def test_any_pipeline_file_loads_or_is_a_config_error_naming_its_file(folder: Path, text: str) -> None:
    path = folder / "pipeline.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_pipeline(path, {}, deep=False)
    except ConfigError as exc:
        assert "pipeline.yaml" in str(exc)


CONTENT_TYPES = [
    "image/jpeg", "image/png", "multipart/form-data; boundary=x", "multipart/form-data", "text/plain",
    "application/octet-stream", "", "image/jpeg; charset=\x7f", "multipart/form-data; boundary=",
]  # fmt: skip
MULTIPART = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'


def test_the_upload_server_answers_any_request_with_a_4xx_or_a_2xx_and_keeps_serving(
    tmp_path: Path, bus_url: str
) -> None:
    """Random and mutated bodies, content types, query parameters and paths against the real http input: never
    a 500 or a dropped connection, and a good upload still works after them."""
    bodies = st.one_of(
        st.binary(max_size=2048), mutated(SAMPLES), mutated([MULTIPART + SAMPLES[0][:3000] + b"\r\n--x--"])
    )
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
    params = st.dictionaries(st.sampled_from(["source", "tag", "wait", "token", "x"]), text, max_size=3)
    paths = st.sampled_from(["/v1/frames", "/v1/frames", "/v1/frames/abc", "/v1/frames/", "/v1/../healthz", "/nope"])
    with (
        server(tmp_path, bus_url) as (_upload, url),
        httpx.Client(base_url=url, timeout=20) as http,
    ):

        @FUZZ
        @given(bodies, st.sampled_from(CONTENT_TYPES), params, paths, st.sampled_from(["POST", "GET", "PUT"]))
        def request(body: bytes, content_type: str, query: dict[str, str], path: str, method: str) -> None:
            answer = http.request(method, path, content=body, params=query, headers={"content-type": content_type})
            assert answer.status_code < 500 or answer.status_code == 503, (answer.status_code, answer.text[:200])

        request()
        good = http.post("/v1/frames", content=SAMPLES[0], headers={"content-type": "image/jpeg"})
    assert good.status_code == 202, good.text
