"""dir_videos against a real Redis: every frame once, resume after a restart, broken files aside."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import FramesOptions, ServiceOptions
from framefarm.config.types import say_duration
from framefarm.errors import BadInput
from framefarm.ingest import dir_videos
from framefarm.ingest.dir_videos import DirVideos
from framefarm.ingest.video import frame_to_bgr, frame_to_i420
from framefarm.outputs.image_files import file_stem
from framefarm.vision.codec import decode_frame

from harness import QUEUE, make_input, queued, running, write_video
from peers import wait_for

FRAMES = 24


@pytest.mark.parametrize("fmt", ["auto", "raw", "jpeg"])
def test_every_frame_is_published_in_order_with_its_index(tmp_path: Path, bus_url: str, fmt: str) -> None:
    service = ServiceOptions(runtime_dir=tmp_path / "run", frames=FramesOptions(format=fmt))
    module = make_input(DirVideos, tmp_path, bus_url, service, max_in_flight=100)
    write_video(tmp_path / "in" / "clip.mp4")
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".done" / "clip.mp4").exists())
    messages = queued(module.ctx.bus)
    assert [m.frame_index for m in messages] == list(range(FRAMES))
    assert file_stem(messages[3]) == "clip_000003"
    assert messages[12].pts == pytest.approx(1.0)
    assert messages[10].format == ("jpeg" if fmt == "jpeg" else "i420")  # auto: raw where frames have a store
    image = decode_frame(module.ctx.bus.frames.get(messages[10].key), messages[10].format, 160, 96)
    assert abs(float(image.mean()) - 80) < 4  # frame 10 is grey level 80


def test_a_restart_resumes_at_the_first_unpublished_frame(tmp_path: Path, bus_url: str) -> None:
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "clip.mp4")
    first = make_input(DirVideos, tmp_path, bus_url, max_in_flight=10)
    with running(first):
        wait_for(lambda: len(queued(first.ctx.bus)) == 10)  # blocked at max_in_flight: stop here
    for message in queued(first.ctx.bus):
        first.ctx.bus.frames.release(message.key, "uploads")
    second = make_input(DirVideos, tmp_path, bus_url, max_in_flight=100)
    with running(second):
        wait_for(lambda: (tmp_path / "in" / ".done" / "clip.mp4").exists())
    assert [m.frame_index for m in queued(second.ctx.bus)] == list(range(FRAMES))  # no frame twice


def test_fps_limit_and_broken_files(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirVideos, tmp_path, bus_url, fps=4, max_in_flight=100, incomplete_timeout=0.3)
    write_video(tmp_path / "in" / "clip.mp4")
    (tmp_path / "in" / "notes.mp4").write_text("not a video")
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".failed" / "notes.mp4.error.txt").exists())
        wait_for(lambda: (tmp_path / "in" / ".done" / "clip.mp4").exists())
    assert [m.frame_index for m in queued(module.ctx.bus)] == [0, 3, 6, 9, 12, 15, 18, 21]
    assert "cannot open as video" in (tmp_path / "in" / ".failed" / "notes.mp4.error.txt").read_text()


def test_realtime_paces_frames_by_their_timestamps(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirVideos, tmp_path, bus_url, realtime=True, max_in_flight=100)
    write_video(tmp_path / "in" / "clip.mp4")  # 24 frames at 12 fps: two seconds of video
    with running(module):
        wait_for(lambda: len(queued(module.ctx.bus)) == FRAMES)
    messages = queued(module.ctx.bus)
    spread = messages[-1].captured_at - messages[0].captured_at
    assert 1.8 < spread < 3.0, spread  # published over about the video's own duration (23/12 s)


def white_corner(image: np.ndarray) -> str:
    """Which corner of a frame holds write_video's white marker."""
    height, width = image.shape[:2]
    corners = {
        "top-left": image[: height // 4, : width // 4],
        "top-right": image[: height // 4, -width // 4 :],
        "bottom-left": image[-height // 4 :, : width // 4],
        "bottom-right": image[-height // 4 :, -width // 4 :],
    }
    return max(corners, key=lambda name: float(corners[name].mean()))


@pytest.mark.parametrize(
    ("rotation", "hflip", "size", "corner"),
    [
        (90, False, (96, 160), "bottom-left"),  # counter-clockwise, as a phone held upright records
        (-90, False, (96, 160), "top-right"),
        (180, False, (160, 96), "bottom-right"),
        (0, True, (160, 96), "top-right"),
        (90, True, (96, 160), "bottom-right"),
    ],
)
def test_frames_are_published_as_the_video_is_displayed(
    tmp_path: Path, bus_url: str, rotation: int, hflip: bool, size: tuple[int, int], corner: str
) -> None:
    """A video's display matrix is applied, as EXIF orientation is for images: same size, same picture."""
    module = make_input(DirVideos, tmp_path, bus_url, max_in_flight=100)
    write_video(tmp_path / "in" / "phone.mp4", frames=3, rotation=rotation, hflip=hflip)
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".done" / "phone.mp4").exists())
    message = queued(module.ctx.bus)[0]
    assert (message.width, message.height) == size
    image = decode_frame(module.ctx.bus.frames.get(message.key), message.format, *message.stored_size)
    assert image.shape[1::-1] == size
    assert white_corner(image) == corner


def test_frames_are_stored_no_larger_than_their_route_needs_and_still_upright(tmp_path: Path, bus_url: str) -> None:
    """A stage that needs 64 pixels a side: the frame is shrunk in the conversion, then turned; the message keeps
    the size as displayed, so boxes are reported in the video's own pixels."""
    routes = Routes(processors=(), outputs=(Stage(QUEUE, "*", 64),))
    module = make_input(DirVideos, tmp_path, bus_url, routes=routes, max_in_flight=100)
    write_video(tmp_path / "in" / "phone.mp4", frames=3, rotation=90)
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".done" / "phone.mp4").exists())
    message = queued(module.ctx.bus)[0]
    image = decode_frame(module.ctx.bus.frames.get(message.key), message.format, *message.stored_size)
    assert (message.width, message.height, message.scale) == (96, 160, 0.4)
    assert image.shape[1::-1] == message.stored_size == (38, 64)
    assert white_corner(image) == "bottom-left"


def test_raw_video_frames_travel_as_their_i420_planes_where_those_stand_for_the_picture() -> None:
    """Half the bytes of BGR and the same picture once decoded; frames the planes cannot stand for as they are
    (odd sizes, full-range levels, a BT.709 matrix, another pixel format) go as BGR."""
    rng = np.random.default_rng(7)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8), (9, 9), 0)
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
    for max_side in (None, 80):
        planes, scale = frame_to_i420(frame, max_side)
        image, same_scale = frame_to_bgr(frame, max_side)
        height, width = image.shape[:2]
        assert scale == same_scale and planes.size == width * height * 3 // 2
        decoded = decode_frame(planes.tobytes(), "i420", width, height)
        assert float(np.abs(decoded.astype(int) - image.astype(int)).mean()) < 3
    assert frame_to_i420(frame, 81) is None  # 81x49: no 4:2:0 planes of that size
    assert frame_to_i420(av.VideoFrame.from_ndarray(bgr, format="bgr24")) is None
    full_range = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
    full_range.color_range = 2  # AVCOL_RANGE_JPEG
    assert frame_to_i420(full_range) is None
    hd = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
    hd.colorspace = 1  # BT.709, which OpenCV's conversion does not do
    assert frame_to_i420(hd) is None
    with pytest.raises(BadInput, match="not 160x96 4:2:0"):
        decode_frame(bytes(100), "i420", 160, 96)


def test_a_truncated_video_says_how_far_it_got(tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture) -> None:
    write_video(tmp_path / "whole.mp4", frames=48, noise=True, faststart=True)
    data = (tmp_path / "whole.mp4").read_bytes()
    module = make_input(DirVideos, tmp_path, bus_url, max_in_flight=100)
    (tmp_path / "in" / "cut.mp4").write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.INFO, logger="test")
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".done" / "cut.mp4").exists())
    published = len(queued(module.ctx.bus))
    assert 0 < published < 48
    assert f"cut.mp4 ended early: {published} of 48 frames decoded" in caplog.text


def test_a_video_over_max_pixels_goes_aside(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirVideos, tmp_path, bus_url, max_pixels=10_000, max_in_flight=100)
    write_video(tmp_path / "in" / "big.mp4", frames=3)  # 160x96 = 15360 pixels
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".failed" / "big.mp4.error.txt").exists())
    assert queued(module.ctx.bus) == []
    reason = (tmp_path / "in" / ".failed" / "big.mp4.error.txt").read_text()
    assert "160x96 is 0.0 megapixels, over max_pixels" in reason


def recorded_reports(module: DirVideos, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every report the input makes from now on, in order (the flow itself keeps only the latest)."""
    flow = module.ctx.bus.flow
    reports: list[dict[str, Any]] = []
    report = flow.report

    def keep(stream: str, fields: dict[str, Any]) -> None:
        if stream == module.ctx.alias:
            reports.append(fields)
        report(stream, fields)

    monkeypatch.setattr(flow, "report", keep)
    return reports


def test_progress_per_file_is_reported_and_logged(
    tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dir_videos, "LOG_EVERY_S", 0)  # a progress line for every frame
    module = make_input(DirVideos, tmp_path, bus_url, max_in_flight=100)
    reports = recorded_reports(module, monkeypatch)
    write_video(tmp_path / "in" / "clip.mp4")
    caplog.set_level(logging.INFO, logger="test")
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".done" / "clip.mp4").exists())
        last = module.ctx.bus.flow.reports()["uploads"]
    assert {key: last[key] for key in ("role", "state", "file", "done", "total", "files_done")} == {
        "role": "files",
        "state": "idle",
        "file": "clip.mp4",
        "done": FRAMES,
        "total": FRAMES,
        "files_done": 1,
    }
    assert last["fps"] > 0 and last["eta_s"] == 0 and last["since"] <= last["at"]
    first = reports[0]
    assert (first["state"], first["file"], first["done"], first["total"], first["files_done"]) == (
        "reading",
        "clip.mp4",
        0,
        FRAMES,
        0,
    )
    assert len(reports) < FRAMES  # at most one a second while reading, not one per frame
    assert re.search(rf"clip\.mp4: 12 of {FRAMES} frames \(50\.0%\), [\d.]+ fps, about \d+s left", caplog.text)
    assert re.search(rf"clip\.mp4: done, {FRAMES} frames in [\d.]+s \([\d.]+ fps\)$", caplog.text, re.MULTILINE)


def test_a_resumed_file_counts_its_progress_from_where_it_resumes(
    tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "clip.mp4")
    first = make_input(DirVideos, tmp_path, bus_url, max_in_flight=10)
    caplog.set_level(logging.INFO, logger="test")
    with running(first):
        wait_for(lambda: len(queued(first.ctx.bus)) == 10)  # blocked at max_in_flight: stop here
    stopped = first.ctx.bus.flow.reports()["uploads"]
    assert (stopped["state"], stopped["done"], stopped["files_done"]) == ("idle", 10, 0)  # stopped, not done
    assert "clip.mp4: done" not in caplog.text
    for message in queued(first.ctx.bus):
        first.ctx.bus.frames.release(message.key, "uploads")
    second = make_input(DirVideos, tmp_path, bus_url, max_in_flight=100)
    with running(second):
        wait_for(lambda: (tmp_path / "in" / ".done" / "clip.mp4").exists())
        last = second.ctx.bus.flow.reports()["uploads"]
    assert (last["state"], last["done"], last["total"], last["files_done"]) == ("idle", FRAMES, FRAMES, 1)
    assert f"clip.mp4: done, {FRAMES} frames, the last {FRAMES - 10} in " in caplog.text
    assert "after resuming at frame 10" in caplog.text


def test_progress_without_a_known_total_has_no_time_left(
    tmp_path: Path, bus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dir_videos, "REPORT_PERIOD_S", 3600.0)  # however slow the machine, the advance comes sooner
    module = make_input(DirVideos, tmp_path, bus_url)
    progress = dir_videos.FileProgress(module.ctx.bus.flow, "files", logging.getLogger("test"))
    progress.begin("stream.ts", 0, None)
    progress.advance(30)  # within REPORT_PERIOD_S of the report that the start made: not reported
    fields = module.ctx.bus.flow.reports()["files"]
    assert (fields["state"], fields["done"], fields["total"], fields["eta_s"]) == ("reading", 0, None, None)
    assert re.fullmatch(r"stream\.ts: 30 frames, [\d.]+ fps", progress.summary())
    assert [say_duration(s) for s in (39.4, 725, 7620)] == ["39s", "12m05s", "2h07m"]
