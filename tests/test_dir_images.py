"""dir_images against a real Redis: settling, exactly-once across restarts, bad files, backpressure."""

from __future__ import annotations

import threading
from pathlib import Path

from framefarm.config.routing import Routes, Stage
from framefarm.ingest.dir_images import DirImages

from conftest import MEDIA
from harness import QUEUE, make_input, png_of_size, queued, running, write_video
from peers import wait_for


def test_waits_for_a_file_to_be_complete_then_publishes_its_bytes(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirImages, tmp_path, bus_url, after="keep")
    data = (MEDIA / "dog.jpg").read_bytes()
    with running(module):
        with (tmp_path / "in" / "dog.jpg").open("wb") as handle:
            handle.write(data[:5000])
            handle.flush()
            threading.Event().wait(0.6)  # longer than settle, but the file is still being written
            assert queued(module.ctx.bus) == []
            handle.write(data[5000:])
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)
    (message,) = queued(module.ctx.bus)
    assert (message.source, message.width, message.height, message.format) == ("dog.jpg", 768, 576, "jpeg")
    assert module.ctx.bus.frames.get(message.key) == data
    assert module.ctx.bus.flow.in_flight("uploads") == 1


def test_a_restart_never_publishes_a_file_twice(tmp_path: Path, bus_url: str) -> None:
    for name in ("a.jpg", "b.png"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
    (tmp_path / "in" / "a.jpg").write_bytes((MEDIA / "dog.jpg").read_bytes())
    (tmp_path / "in" / "b.jpg").write_bytes((MEDIA / "eagle.jpg").read_bytes())
    first = make_input(DirImages, tmp_path, bus_url, after="keep")
    with running(first):
        wait_for(lambda: len(queued(first.ctx.bus)) == 2)
    second = make_input(DirImages, tmp_path, bus_url, after="keep")
    with running(second):
        threading.Event().wait(1.0)
    assert sorted(m.source for m in queued(second.ctx.bus)) == ["a.jpg", "b.jpg"]
    (tmp_path / "in" / "a.jpg").write_bytes((MEDIA / "horses.jpg").read_bytes())  # new content, same name
    with running(make_input(DirImages, tmp_path, bus_url, after="keep")):
        wait_for(lambda: len(queued(second.ctx.bus)) == 3)


def test_bad_files_are_moved_aside_with_a_reason(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirImages, tmp_path, bus_url, failed_dir="bad")
    jpeg = (MEDIA / "dog.jpg").read_bytes()
    corrupt = jpeg[:2000] + bytes(range(256)) * 40 + jpeg[-2:]
    (tmp_path / "in" / "corrupt.jpg").write_bytes(corrupt)
    (tmp_path / "in" / "text.jpg").write_text("hello")
    (tmp_path / "in" / "good.jpg").write_bytes(jpeg)
    with running(module):
        wait_for(lambda: (tmp_path / "bad" / "text.jpg.error.txt").exists() and len(queued(module.ctx.bus)) == 1)
        wait_for(lambda: (tmp_path / "bad" / "corrupt.jpg.error.txt").exists())
    assert (tmp_path / "bad" / "corrupt.jpg").read_bytes() == corrupt
    assert (tmp_path / "in" / ".done" / "good.jpg").exists()
    assert module.ctx.bus.flow.counters()["uploads"]["failed"] == 2


def test_a_file_input_waits_at_max_in_flight_instead_of_dropping(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirImages, tmp_path, bus_url, max_in_flight=2)
    for i in range(5):
        (tmp_path / "in" / f"{i}.jpg").write_bytes((MEDIA / "eagle.jpg").read_bytes())
    bus = module.ctx.bus
    with running(module):
        wait_for(lambda: len(queued(bus)) == 2)
        threading.Event().wait(0.5)
        assert len(queued(bus)) == 2  # waiting, not dropping
        for message in queued(bus):
            bus.frames.release(message.key, "uploads")  # the output is done with them
        wait_for(lambda: len(queued(bus)) == 4)
    assert "dropped_full" not in bus.flow.counters()["uploads"]


def test_an_image_with_a_video_after_its_end_is_published_whole(tmp_path: Path, bus_url: str) -> None:
    """A Motion Photo: a JPEG, then an MP4 after its end-of-image marker. The bytes go on as they are."""
    write_video(tmp_path / "clip.mp4", frames=6)
    photo = (MEDIA / "dog.jpg").read_bytes() + (tmp_path / "clip.mp4").read_bytes()
    module = make_input(DirImages, tmp_path, bus_url, incomplete_timeout=0.3)
    (tmp_path / "in" / "PXL_MP.jpg").write_bytes(photo)
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".done" / "PXL_MP.jpg").exists())
    (message,) = queued(module.ctx.bus)
    assert (message.width, message.height) == (768, 576)
    assert module.ctx.bus.frames.get(message.key) == photo


def test_a_file_still_empty_when_it_settles_is_waited_for(tmp_path: Path, bus_url: str) -> None:
    """A writer that creates the file, then takes its time: the empty file is not judged before incomplete_timeout."""
    module = make_input(DirImages, tmp_path, bus_url, incomplete_timeout=30)
    data = (MEDIA / "dog.jpg").read_bytes()
    with running(module):
        for name, start in (("empty.jpg", b""), ("short.jpg", data[:3]), ("header.png", b"\x89PNG")):
            (tmp_path / "in" / name).write_bytes(start)
        threading.Event().wait(1.0)  # five times settle
        assert queued(module.ctx.bus) == [] and not (tmp_path / "in" / ".failed").exists()
        for name in ("empty.jpg", "short.jpg"):
            (tmp_path / "in" / name).write_bytes(data)
        wait_for(lambda: len(queued(module.ctx.bus)) == 2)
    assert sorted(m.source for m in queued(module.ctx.bus)) == ["empty.jpg", "short.jpg"]


def test_a_file_that_stays_empty_goes_aside_after_incomplete_timeout(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirImages, tmp_path, bus_url, incomplete_timeout=0.5)
    (tmp_path / "in" / "empty.jpg").write_bytes(b"")
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".failed" / "empty.jpg.error.txt").exists())
    assert "empty" in (tmp_path / "in" / ".failed" / "empty.jpg.error.txt").read_text()


def test_an_image_over_max_pixels_goes_aside_undecoded(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirImages, tmp_path, bus_url)  # the default max_pixels: 50 megapixels
    (tmp_path / "in" / "bomb.png").write_bytes(png_of_size(20000, 20000))
    (tmp_path / "in" / "dog.jpg").write_bytes((MEDIA / "dog.jpg").read_bytes())
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".failed" / "bomb.png.error.txt").exists())
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)
    reason = (tmp_path / "in" / ".failed" / "bomb.png.error.txt").read_text()
    assert "20000x20000 is 400.0 megapixels, over max_pixels (50.0)" in reason


def test_an_image_larger_than_its_route_needs_is_stored_shrunk_a_small_one_as_it_is(
    tmp_path: Path, bus_url: str
) -> None:
    routes = Routes(processors=(Stage("det", "*", 256),), outputs=(Stage(QUEUE, "*", 0),))
    module = make_input(DirImages, tmp_path, bus_url, routes=routes, max_in_flight=10)
    small = png_of_size(200, 100)
    (tmp_path / "in" / "dog.jpg").write_bytes((MEDIA / "dog.jpg").read_bytes())
    (tmp_path / "in" / "small.png").write_bytes(small)
    with running(module):
        wait_for(lambda: len(list((tmp_path / "in" / ".done").glob("*"))) == 2)
    bus = module.ctx.bus
    frames = {m.source: m for m in queued(bus, "det")}
    dog, tiny = frames["dog.jpg"], frames["small.png"]
    assert (dog.format, dog.width, dog.height, dog.stored_size) == ("raw", 768, 576, (256, 192))
    assert len(bus.frames.get(dog.key)) == 256 * 192 * 3
    assert (tiny.format, tiny.scale) == ("png", 1.0) and bus.frames.get(tiny.key) == small
