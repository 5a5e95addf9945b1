"""Video outputs (``video_file``, ``rtmp``, ``rtsp``): frames on the in-memory bus, files and servers read back
with PyAV, nginx-rtmp, GStreamer's RTSP server and ffmpeg as the receivers."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import av
import cv2
import numpy as np
from test_network_outputs import count, output, state

from framefarm.bus import connect
from framefarm.bus.base import Bus, frame_key
from framefarm.config.registry import CheckContext
from framefarm.config.routing import Routes
from framefarm.config.routing import Stage as RouteStage
from framefarm.config.schema import ServiceOptions
from framefarm.ingest.base import Publisher, Sent
from framefarm.ingest.rtsp import Rtsp
from framefarm.message import FrameMessage
from framefarm.modules import counters
from framefarm.modules.context import ModuleContext
from framefarm.outputs.encoder import nvenc_refusal, pick_encoder
from framefarm.outputs.rtmp import RtmpOutput
from framefarm.outputs.rtsp import RtspOutput
from framefarm.outputs.video_file import VideoFile
from framefarm.vision.draw import PALETTE_BGR

from conftest import MODEL, NAMES
from harness import queued, repeating, running, write_video
from peers import free_port, nginx_rtmp, port_listening, rtsp_server, stop_process, wait_for
from workspace import Workspace

WIDTH, HEIGHT, FPS = 320, 240, 25
BOX = (180.0, 60.0, 300.0, 200.0)  # x1, y1, x2, y2 of the detection drawn on every frame
PERSON = [{"class_id": 0, "class_name": "person", "confidence": 0.9, "box": list(BOX)}]


def level(seq: int) -> int:
    """Frame ``seq``'s grey level, so that decoded frames tell their order (H.264 moves a level by a few)."""
    return 16 + (seq % 50) * 4


def send_frame(
    bus: Bus,
    seq: int,
    *,
    tag: str = "cam",
    fps: float = FPS,
    start: float = 0.0,
    detections: list | None = PERSON,
    tapped: bool = False,
) -> None:
    """Frame ``seq`` of a 25 fps clip (a grey level per frame) with a person detected, queued for the output."""
    image = np.full((HEIGHT, WIDTH, 3), level(seq), np.uint8)
    key = frame_key("cam")
    message = FrameMessage(
        stream=tag, input="cam", source="clip.mp4", seq=seq, pts=seq / fps, rate=fps,
        captured_at=(start or time.time()) + seq / fps, width=WIDTH, height=HEIGHT, key=key, format="jpeg",
        model="m", detections=detections, tapped=tapped,
    )  # fmt: skip
    assert bus.flow.admit("cam", key, limit=10_000, ttl=600)
    bus.frames.put(key, cv2.imencode(".jpg", image)[1].tobytes(), ttl=600, refs=1)
    bus.send("out", message.model_dump(exclude_none=True))


def decoded(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of a video file (BGR) and its time in seconds."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="bgr24") for f in frames], [float(f.time) for f in frames]


def grey(image: np.ndarray) -> float:
    """The frame's grey level, read away from the box."""
    return float(image[10:50, 10:100].mean())


def in_order(images: list[np.ndarray]) -> bool:
    """Whether the frames are consecutive ones of ``send_frame`` (their grey levels go up by 4 each)."""
    levels = np.array([grey(image) for image in images])
    return bool(np.all((np.diff(levels) > 2) & (np.diff(levels) < 6)))


def files(folder: Path, suffix: str = "") -> list[Path]:
    return sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file())


def test_frames_out_of_order_are_written_in_order_with_their_timestamps(tmp_path: Path, bus_url: str) -> None:
    out = output(VideoFile, tmp_path, bus_url, path=str(tmp_path / "rec" / "{tag}.mkv"), annotated=False)
    order = list(range(50))
    for start in range(0, 50, 5):  # each run of 5 frames arrives shuffled, as worker threads finish them
        chunk = order[start : start + 5]
        random.Random(start).shuffle(chunk)
        order[start : start + 5] = chunk
    with running(out):
        for seq in order:
            send_frame(out.ctx.bus, seq)
        wait_for(lambda: count(out, counters.delivered("out")) == 50, 30, "50 frames written")
    images, times = decoded(tmp_path / "rec" / "cam.mkv")
    assert len(images) == 50
    assert times == sorted(times) and times[0] == 0 and abs(times[-1] - 49 / FPS) < 0.002
    assert in_order(images)


def test_one_output_records_each_tag_to_its_own_file_with_the_capture_time_drawn(tmp_path: Path, bus_url: str) -> None:
    out = output(VideoFile, tmp_path, bus_url, path=str(tmp_path / "{tag}.mkv"), timestamp=True, annotated=False)
    with running(out):
        for seq in range(20):
            send_frame(out.ctx.bus, seq, tag="front")
            if seq % 2:
                send_frame(out.ctx.bus, seq // 2, tag="back")
        wait_for(lambda: count(out, counters.delivered("out")) == 30, 30, "30 frames written")
    front, _ = decoded(tmp_path / "front.mkv")
    back, _ = decoded(tmp_path / "back.mkv")
    assert len(front) == 20 and len(back) == 10
    corner = front[0][: HEIGHT // 10, : WIDTH // 2]
    assert corner.min() < 10 and corner.max() > 200  # white text on black, over a grey frame


def test_segments_and_a_constant_fps_and_mp4(tmp_path: Path, bus_url: str) -> None:
    rec = tmp_path / "rec"
    out = output(VideoFile, tmp_path, bus_url, path=str(rec / "%Y" / "{tag}-%H%M%S.mp4"), segment="1s", fps=10)
    with running(out):
        for seq in range(74):  # 0 to 2.92 s at 25 fps: 30 slots at 10 fps
            send_frame(out.ctx.bus, seq, start=time.time() - 10)
        wait_for(lambda: count(out, counters.delivered("out")) >= 30, 30, "3 s at 10 fps written")
        wait_for(lambda: sum(count(out, name) for name in (counters.delivered("out"), counters.filtered("out"))) == 74)
    segments = files(rec, ".mp4")
    assert [p.parent.name for p in segments] == [time.strftime("%Y")] * 3
    assert segments[1].name.endswith("-1.mp4") or segments[1].name != segments[0].name
    for segment in segments:
        images, times = decoded(segment)
        assert len(images) == 10, (segment, times)
        assert np.allclose(np.diff(times), 0.1, atol=0.002)  # 10 fps, whatever the source's 25
    assert count(out, counters.delivered("out")) == 30 and count(out, counters.filtered("out")) == 44


def test_retention_removes_the_oldest_segments_first(tmp_path: Path, bus_url: str) -> None:
    rec = tmp_path / "rec"
    retention = {"max_size": "10k", "interval": "100ms"}  # a segment here is about 3 kB
    out = output(VideoFile, tmp_path, bus_url, path=str(rec / "{tag}-%H%M%S.mkv"), segment="1s", retention=retention)
    start = time.time() - 60
    names = [time.strftime("cam-%H%M%S.mkv", time.localtime(start + second)) for second in range(8)]
    with running(out):
        for seq in range(8 * FPS):
            send_frame(out.ctx.bus, seq, start=start, detections=[])
        wait_for(lambda: count(out, counters.delivered("out")) == 8 * FPS, 30, "8 segments written")
        wait_for(lambda: len(files(rec)) < 8, 10, "a sweep")
    kept = [p.name for p in files(rec)]
    sizes = sum(p.stat().st_size for p in files(rec))
    assert 0 < len(kept) < 8 and kept == names[-len(kept) :], (kept, sizes)


KILLED_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import MODEL, NAMES
from harness import queued, repeating, running, write_video
from test_network_outputs import output
from test_video_outputs import send_frame
from framefarm.outputs.encoder import nvenc_refusal, pick_encoder
from framefarm.outputs.rtmp import RtmpOutput
from framefarm.outputs.rtsp import RtspOutput
from framefarm.outputs.video_file import VideoFile
out = output(VideoFile, Path({tmp!r}), "memory://killed", path={path!r}, segment="1h", queue=1000)
with running(out):
    for seq in range(100000):
        send_frame(out.ctx.bus, seq)
        time.sleep(0.01)
"""


def test_a_file_cut_off_by_kill_9_still_plays(tmp_path: Path) -> None:
    for suffix in (".mkv", ".mp4"):
        written = tmp_path / "cam" / f"cut{suffix}"  # without {tag}, a folder per tag
        script = KILLED_WRITER.format(
            tests=str(Path(__file__).parent), tmp=str(tmp_path), path=f"{tmp_path}/cut{suffix}"
        )
        writer = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, start_new_session=True)
        try:
            wait_for(lambda w=writer, f=written: w.poll() is not None or (f.exists() and f.stat().st_size > 8_000), 60)
            assert writer.poll() is None, "the writer died by itself"
        finally:
            os.killpg(writer.pid, signal.SIGKILL)
            writer.wait()
        images, times = decoded(written)
        assert len(images) > 25 and times == sorted(times), (suffix, len(images))
        assert in_order(images[:50])


FAST_RECONNECT = {"initial": "200ms", "max": "1s"}


def sending(bus: Bus, fps: float = FPS) -> AbstractContextManager[None]:
    """Frames at ``fps`` in real time, seq counting up, until the block ends (a live camera through a detector)."""
    return repeating(lambda seq: send_frame(bus, seq, fps=fps, start=time.time() - seq / fps), 1 / fps)


def class_pixels(image: np.ndarray, inside: bool) -> int:
    """Pixels of the person class's colour inside the detection's box (plus its label above it), or outside it."""
    close = np.abs(image.astype(int) - PALETTE_BGR[0]).sum(axis=2) < 90
    x1, y1, x2, y2 = (round(v) for v in BOX)
    region = np.zeros(close.shape, bool)
    region[max(0, y1 - 20) : y2 + 3, max(0, x1 - 3) : x2 + 3] = True
    return int((close & (region if inside else ~region)).sum())


def test_rtmp_into_nginx_reads_back_at_the_configured_rate_with_the_box_drawn(tmp_path: Path, bus_url: str) -> None:
    with nginx_rtmp(tmp_path) as port:
        url = f"rtmp://127.0.0.1:{port}/live/{{tag}}"
        out = output(RtmpOutput, tmp_path, bus_url, url=url, fps=20, reconnect=FAST_RECONNECT)
        with running(out), sending(out.ctx.bus):
            wait_for(lambda: count(out, counters.delivered("out")) > 10, 20, "frames pushed")
            frames = list(frames_of(f"rtmp://127.0.0.1:{port}/live/cam", 60))
    times = [float(f.time) for f in frames]
    images = [f.to_ndarray(format="bgr24") for f in frames]
    assert len(frames) == 60 and (frames[0].width, frames[0].height) == (WIDTH, HEIGHT)
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert abs(rate - 20) < 2, rate
    assert all(class_pixels(image, inside=True) > 200 for image in images[-10:])
    assert all(class_pixels(image, inside=False) < 20 for image in images[-10:])


def test_rtsp_into_a_gstreamer_record_mount_reconnects_after_a_server_restart(tmp_path: Path, bus_url: str) -> None:
    port = free_port()
    log = tmp_path / f"rtsp-{port}.log"

    def received() -> int:
        return log.read_text().count("frame 320x240") if log.exists() else 0

    url = f"rtsp://127.0.0.1:{port}/live/{{tag}}"
    out = output(RtspOutput, tmp_path, bus_url, url=url, reconnect=FAST_RECONNECT, write_timeout="2s")
    with running(out), sending(out.ctx.bus):
        with rtsp_server(tmp_path, port, path="/live/cam", record=True):
            wait_for(lambda: received() >= 50, 30, "50 frames at the server")
        dropped_before = count(out, counters.dropped("out"))
        wait_for(lambda: count(out, counters.dropped("out")) > dropped_before + 5, 30, "frames dropped while away")
        with rtsp_server(tmp_path, port, path="/live/cam", record=True):
            wait_for(lambda: received() >= 50, 30, "50 frames at the restarted server")
    assert state(out)["last_error"]


def test_rtsp_into_ffmpeg_listening(tmp_path: Path, bus_url: str) -> None:
    port = free_port()
    crc = tmp_path / "received.crc"
    listen = ["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_flags", "listen", "-timeout", "30"]
    receiver = subprocess.Popen(
        [*listen, "-i", f"rtsp://127.0.0.1:{port}/out", "-f", "framecrc", "-flush_packets", "1", str(crc)]
    )
    try:
        wait_for(lambda: port_listening(port), 10, "ffmpeg listening")
        out = output(RtspOutput, tmp_path, bus_url, url=f"rtsp://127.0.0.1:{port}/out", fps=FPS)
        with running(out), sending(out.ctx.bus):
            wait_for(lambda: crc.exists() and crc.read_text().count("\n0,") >= 50, 30, "50 frames at ffmpeg")
    finally:
        stop_process(receiver)
    assert "320x240" in crc.read_text()


def frames_of(url: str, wanted: int, timeout: float = 20) -> Iterator[av.VideoFrame]:
    """Up to ``wanted`` frames read from a live ``url`` (quick to open: small probe)."""
    options = {"analyzeduration": "500000", "probesize": "100000", "rtsp_transport": "tcp"}
    with av.open(url, options=options, timeout=(timeout, timeout)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            yield frame
            if index + 1 == wanted:
                return


def test_a_video_through_yolo_into_video_file_has_every_frame_and_quit_closes_it(tmp_path: Path) -> None:
    """End to end through pipectl, as a user would check it: the recording has as many frames as the source."""
    workspace = Workspace(tmp_path)
    workspace.write(f"""\
service:
  runtime_dir: run
  stop_timeout: 20s
  http:
    listen: 127.0.0.1:0
pipeline:
  inputs:
    - name: dir_videos
      alias: clips
      tag: clips
      path: in
  processors:
    - name: yolo
      alias: detector
      model: {MODEL}
      names: {NAMES}
      intra_threads: 1
  outputs:
    - name: video_file
      alias: recorder
      path: out/{{tag}}-%Y%m%d.mkv
""")
    write_video(tmp_path / "clip.mp4", frames=30, fps=12)  # grey levels up to 8 * 29
    try:
        workspace.pipectl("start")
        (tmp_path / "clip.mp4").rename(workspace.inbox / "clip.mp4")
        wait_for(lambda: (workspace.inbox / ".done" / "clip.mp4").exists(), 90, f"the clip read ({workspace.logs()})")
        workspace.pipectl("-s", "quit")
    finally:
        workspace.force_stop()
    recording = tmp_path / "out" / time.strftime("clips-%Y%m%d.mkv")
    images, times = decoded(recording)
    assert len(images) == 30 and (images[0].shape[1], images[0].shape[0]) == (160, 96)
    assert np.allclose(np.diff(times), 1 / 12, atol=0.002)
    with av.open(str(recording)) as container:
        assert container.duration is not None  # the trailer was written: the file was closed, not cut off


def test_boxes_latest_taps_live_frames_before_detection_and_keeps_them_when_detectors_are_full(
    tmp_path: Path, bus_url: str
) -> None:
    """The input side: with no room at the detector, a camera's frames still reach the output, and are counted."""
    routes = Routes(processors=(RouteStage("detector", "*"),), outputs=(RouteStage("out", "*", None, True),))
    options = Rtsp.Options.model_validate({"name": "rtsp", "alias": "cam", "tag": "cam", "url": "rtsp://h/x",
                                           "max_in_flight": 2})  # fmt: skip
    service = ServiceOptions(runtime_dir=tmp_path)
    ctx = ModuleContext(alias="cam", options=options, service=service, routes=routes,
                        bus=connect(bus_url, service), base_dir=tmp_path, runtime_dir=tmp_path,
                        log=logging.getLogger("cam"))  # fmt: skip
    publisher = Publisher(ctx)
    image = cv2.imencode(".jpg", np.zeros((HEIGHT, WIDTH, 3), np.uint8))[1].tobytes()
    sent = [
        publisher.publish(image, fmt="jpeg", width=WIDTH, height=HEIGHT, source="cam", stop=threading.Event())
        for _ in range(10)
    ]
    to_detector, to_output = queued(ctx.bus, "detector"), queued(ctx.bus, "out")
    counts = ctx.bus.flow.counters()["cam"]
    assert sent == [Sent.PUBLISHED] * 2 + [Sent.RAW_ONLY] * 2 + [Sent.DROPPED_FULL] * 6
    first = to_detector[0].seq
    assert [m.seq for m in to_detector] == [first, first + 1] and all(m.tapped for m in to_detector)
    assert [m.seq for m in to_output] == list(range(first, first + 4)) and not any(m.tapped for m in to_output)
    assert counts[counters.PUBLISHED] == 2 and counts[counters.RAW_ONLY] == 2 and counts[counters.DROPPED_FULL] == 6
    # The detector's copies come later, with boxes: the output writes each frame once, from its undetected copy.
    for message in to_detector:
        ctx.bus.send("out", message.model_copy(update={"detections": PERSON}).model_dump(exclude_none=True))
    out = output(VideoFile, tmp_path, bus_url, path=str(tmp_path / "{tag}.mkv"), boxes="latest")
    with running(out):
        wait_for(lambda: count(out, counters.filtered("out")) == 2, 30, "the detector's copies taken")
        wait_for(lambda: count(out, counters.delivered("out")) == 4, 30, "4 frames written")
    assert len(decoded(tmp_path / "cam.mkv")[0]) == 4
    assert ctx.bus.flow.in_flight("cam") == 0  # every frame released as often as it was stored for


def test_boxes_latest_shows_every_frame_with_the_latest_boxes(tmp_path: Path, bus_url: str) -> None:
    """The output side: undetected frames are written with the boxes last known; a detected copy adds no frame."""
    path = str(tmp_path / "{tag}.mkv")
    out = output(VideoFile, tmp_path, bus_url, path=path, boxes="latest", threads=1, reorder_ms=0)
    with running(out):
        for seq in range(5):
            send_frame(out.ctx.bus, seq, detections=None)
        send_frame(out.ctx.bus, 2, tapped=True)  # the detector's copy of frame 2: a person
        for seq in range(5, 10):
            send_frame(out.ctx.bus, seq, detections=None)
        wait_for(lambda: count(out, counters.delivered("out")) == 10, 30, "10 frames written")
    images, _ = decoded(tmp_path / "cam.mkv")
    boxed = [class_pixels(image, inside=True) > 200 for image in images]
    assert boxed == [False] * 5 + [True] * 5
    assert count(out, counters.filtered("out")) == 1


def test_the_encoder_choice_and_its_check(tmp_path: Path) -> None:
    """auto takes NVENC only where it opens; asking for NVENC where it does not is a config error (this machine
    has no GPU in CI: the refusal branch runs there, the other on a GPU host)."""
    refusal = nvenc_refusal()
    options = VideoFile.Options.model_validate(
        {"name": "video_file", "path": str(tmp_path / "{tag}.mkv"), "encoder": "h264_nvenc", "bitrate": "2M"}
    )
    problems = list(VideoFile.check(options, CheckContext(base_dir=tmp_path, service=ServiceOptions())))
    assert options.bitrate == 2_000_000
    if refusal is None:
        assert pick_encoder("auto") == "h264_nvenc" and problems == []
    else:
        assert pick_encoder("auto") == "libx264"
        message = f"h264_nvenc does not open on this machine ({refusal}); use auto or libx264"
        assert problems == [(("encoder",), message)]
