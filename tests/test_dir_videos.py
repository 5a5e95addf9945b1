"""dir_videos against a real Redis: every frame once, resume after a restart, broken files aside."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from framefarm.config.schema import FramesOptions, ServiceOptions
from framefarm.ingest.dir_videos import DirVideos
from framefarm.outputs.image_files import file_stem
from framefarm.vision.codec import decode_frame

from harness import make_input, queued, running
from peers import wait_for

FRAMES = 24


def write_video(path: Path, frames: int = FRAMES, fps: int = 12) -> None:
    """An H.264 clip whose frame i is filled with grey level 8*i, so decoded frames can be told apart."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((96, 160, 3), 8 * i, np.uint8), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


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
    assert messages[10].format == ("raw" if fmt == "auto" else fmt)  # auto: raw where frames have a store
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
