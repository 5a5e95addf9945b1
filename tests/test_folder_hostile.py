"""The folder inputs against whatever a folder can hold: odd names, special files, files that vanish, huge files.

Whatever is in the folder, the input must neither crash, nor block, nor stop taking the other files.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from framefarm.errors import BadInput
from framefarm.ingest.dir_images import DirImages
from framefarm.ingest.dir_videos import DirVideos
from framefarm.ingest.files import OpenedFile, read_bounded
from framefarm.ingest.folder import FolderInput
from framefarm.ingest.ledger import FileId, Ledger

from conftest import MEDIA
from harness import make_input, queued, running, write_video
from peers import wait_for

KINDS = {"images": (DirImages, ".jpg"), "videos": (DirVideos, ".mp4")}


def put_good_file(kind: type[FolderInput], folder: Path, stem: str = "good") -> Path:
    path = folder / (stem + KINDS["images" if kind is DirImages else "videos"][1])
    if kind is DirImages:
        path.write_bytes((MEDIA / "eagle.jpg").read_bytes())
    else:
        write_video(path, frames=3)
    return path


def test_names_that_are_not_utf8_are_taken_and_shown_escaped(tmp_path: Path, bus_url: str) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    raw_inbox = os.fsencode(inbox)
    good, bad = raw_inbox + b"/caf\xe9.jpg", raw_inbox + b"/\xff\xfe bad.jpg"
    with open(good, "wb") as handle:
        handle.write((MEDIA / "dog.jpg").read_bytes())
    with open(bad, "wb") as handle:
        handle.write(b"not an image at all")
    put_good_file(DirImages, inbox)
    module = make_input(DirImages, tmp_path, bus_url, incomplete_timeout=0.3)
    with running(module):
        wait_for(lambda: os.path.exists(raw_inbox + b"/.failed/\xff\xfe bad.jpg.error.txt"))
        wait_for(lambda: len(queued(module.ctx.bus)) == 2)
        wait_for(lambda: not os.path.exists(good))
    sources = sorted(m.source for m in queued(module.ctx.bus))
    assert sources == ["caf\\xe9.jpg", "good.jpg"]  # valid text on the bus, the odd byte escaped
    assert os.path.exists(raw_inbox + b"/.done/caf\xe9.jpg")  # the file itself keeps its name
    with open(raw_inbox + b"/.failed/\xff\xfe bad.jpg.error.txt", "rb") as handle:
        reason = handle.read().decode()  # valid UTF-8
    assert "not a JPEG, PNG, BMP or WebP" in reason


def test_a_non_utf8_name_is_published_once_across_restarts(tmp_path: Path, bus_url: str) -> None:
    (tmp_path / "in").mkdir()
    odd = os.fsencode(tmp_path / "in") + b"/\xe9t\xe9.jpg"
    with open(odd, "wb") as handle:
        handle.write((MEDIA / "dog.jpg").read_bytes())
    first = make_input(DirImages, tmp_path, bus_url, after="keep")
    with running(first):
        wait_for(lambda: len(queued(first.ctx.bus)) == 1)
    with running(make_input(DirImages, tmp_path, bus_url, after="keep")):
        threading.Event().wait(0.8)
    assert len(queued(first.ctx.bus)) == 1  # the ledger knew it


def make_special_files(inbox: Path, outside: Path, suffix: str) -> dict[str, str]:
    """Every kind of non-regular thing a folder can hold, under a name the input wants; -> name: expected reason."""
    os.mkfifo(inbox / f"fifo{suffix}")
    os.mkfifo(outside / "fifo")
    (inbox / f"to-fifo{suffix}").symlink_to(outside / "fifo")
    (inbox / f"to-null{suffix}").symlink_to("/dev/null")
    (inbox / f"dangling{suffix}").symlink_to(outside / "missing")
    (inbox / f"loop{suffix}").symlink_to(inbox / f"loop{suffix}")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(inbox / f"socket{suffix}"))
    server.close()
    return {
        f"fifo{suffix}": "FIFO",
        f"to-fifo{suffix}": "FIFO",
        f"to-null{suffix}": "character device",
        f"dangling{suffix}": "symbolic link to nothing",
        f"loop{suffix}": "symbolic links",
        f"socket{suffix}": "socket",
    }


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_special_files_are_never_opened_and_go_aside(
    tmp_path: Path, bus_url: str, kind_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    kind, suffix = KINDS[kind_name]
    inbox, outside = tmp_path / "in", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    expected = make_special_files(inbox, outside, suffix)
    (inbox / f"dir{suffix}").mkdir()
    put_good_file(kind, inbox)
    module = make_input(kind, tmp_path, bus_url, max_in_flight=100)
    caplog.set_level(logging.INFO, logger="test")
    with running(module):  # fails if the input blocked on the FIFO and could not stop
        wait_for(lambda: all((inbox / ".failed" / f"{name}.error.txt").exists() for name in expected))
        wait_for(lambda: (inbox / ".done" / f"good{suffix}").exists())
        wait_for(lambda: f"dir{suffix} is a directory" in caplog.text)
    for name, reason in expected.items():
        assert reason in (inbox / ".failed" / f"{name}.error.txt").read_text(), name
        assert os.path.lexists(inbox / ".failed" / name)  # the thing itself, moved (a link stays a link)
    assert (inbox / f"dir{suffix}").is_dir()  # a directory is skipped, not moved
    assert (outside / "fifo").exists()
    assert module.ctx.bus.flow.counters()["uploads"]["failed"] == len(expected)
    assert caplog.text.count(f"dir{suffix} is a directory") == 1  # said once, not at every rescan


def test_reads_are_bounded_by_max_file_size(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirImages, tmp_path, bus_url, max_file_size="300KiB")
    (tmp_path / "in" / "big.jpg").write_bytes((MEDIA / "dog.jpg").read_bytes() + bytes(400_000))
    put_good_file(DirImages, tmp_path / "in")
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".failed" / "big.jpg.error.txt").exists())
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)
    assert "over max_file_size (307200 bytes)" in (tmp_path / "in" / ".failed" / "big.jpg.error.txt").read_text()


def test_a_file_that_grew_past_the_limit_after_it_was_opened_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "growing.jpg"
    path.write_bytes(bytes(1000))
    with path.open("rb") as handle:
        path.write_bytes(bytes(5000))  # the writer goes on after the size was checked
        with pytest.raises(BadInput, match=r"over max_file_size \(4096 bytes\)"):
            read_bounded(handle, 4096)


def test_an_entry_that_cannot_be_moved_aside_is_left_and_the_rest_goes_on(
    tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "blocker").write_text("a file where failed_dir's parent should be")
    module = make_input(DirImages, tmp_path, bus_url, failed_dir="blocker/failed", rescan=0.3)
    (tmp_path / "in" / "text.jpg").write_text("not an image")
    caplog.set_level(logging.INFO, logger="test")
    with running(module):
        wait_for(lambda: "text.jpg cannot be moved to" in caplog.text)
        put_good_file(DirImages, tmp_path / "in")
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)
        threading.Event().wait(0.8)  # more rescans: the entry is not taken (nor logged) again
    assert (tmp_path / "in" / "text.jpg").exists()
    assert caplog.text.count("text.jpg cannot be moved to") == 1
    assert module.ctx.bus.flow.counters()["uploads"]["failed"] == 1


def test_files_taken_by_a_second_input_on_the_same_folder_are_skipped(tmp_path: Path, bus_url: str) -> None:
    """Two inputs race for every file: each one that loses a file at any step skips it and goes on."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    data = (MEDIA / "eagle.jpg").read_bytes()
    names = [f"{i:03d}.jpg" for i in range(150)]
    for name in names:
        (inbox / name).write_bytes(data)
    one = make_input(DirImages, tmp_path, bus_url, settle=0.05, max_in_flight=1000)
    two = make_input(DirImages, tmp_path, bus_url, alias="uploads2", settle=0.05, max_in_flight=1000)
    with running(one), running(two):
        wait_for(lambda: sorted(os.listdir(inbox / ".done")) == names if (inbox / ".done").exists() else False, 60)
        wait_for(lambda: not [p for p in inbox.iterdir() if p.is_file()])
    assert {m.source for m in queued(one.ctx.bus)} == set(names)  # every file published (some twice)
    assert not (inbox / ".failed").exists()


def test_a_file_that_killed_the_input_is_set_aside(tmp_path: Path, bus_url: str) -> None:
    """A decoder that crashes the process (a segfault, the OOM killer) on a file must not crash-loop the input:
    the ledger counts attempts that never ended, and after ``max_crashes`` of them the file goes aside."""
    module = make_input(DirImages, tmp_path, bus_url)
    poison = put_good_file(DirImages, tmp_path / "in", "poison")
    stat = poison.stat()
    ledger = Ledger(module.ctx.state_dir() / "uploads.sqlite")
    file = FileId(poison, stat.st_size, stat.st_mtime_ns)
    for _ in range(2):  # what two processes that died while reading it left behind
        ledger.mark(file)
    ledger.close()
    put_good_file(DirImages, tmp_path / "in")
    with running(module):
        wait_for(lambda: (tmp_path / "in" / ".failed" / "poison.jpg.error.txt").exists())
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)
    assert "died 2 times" in (tmp_path / "in" / ".failed" / "poison.jpg.error.txt").read_text()
    assert [m.source for m in queued(module.ctx.bus)] == ["good.jpg"]


class DirImagesWithADecoderBug(DirImages):
    """dir_images with a decoder that fails in a way nobody foresaw, on one file."""

    def publish_file(
        self, file: OpenedFile, start: int, progress: Callable[[int], None], stop: threading.Event
    ) -> bool:
        with file.reading():
            if file.source.startswith("poison"):
                raise ZeroDivisionError("a bug in the decoder")
        return super().publish_file(file, start, progress, stop)


def test_an_unforeseen_error_while_reading_a_file_sets_it_aside(tmp_path: Path, bus_url: str) -> None:
    module = make_input(DirImagesWithADecoderBug, tmp_path, bus_url)
    put_good_file(DirImages, tmp_path / "in", "poison")
    put_good_file(DirImages, tmp_path / "in")
    with running(module):  # fails if the input crashed
        wait_for(lambda: (tmp_path / "in" / ".failed" / "poison.jpg.error.txt").exists())
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)
    reason = (tmp_path / "in" / ".failed" / "poison.jpg.error.txt").read_text()
    assert reason == "ZeroDivisionError while reading it: a bug in the decoder\n"


def test_a_missing_folder_is_waited_for(tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture) -> None:
    module = make_input(DirImages, tmp_path, bus_url, reconnect={"initial": 0.1, "max": 0.2})
    (tmp_path / "in").rmdir()
    caplog.set_level(logging.INFO, logger="test")
    with running(module):
        wait_for(lambda: "reconnecting" in caplog.text)
        (tmp_path / "in").mkdir()
        put_good_file(DirImages, tmp_path / "in")
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)


def test_a_ledger_that_is_not_a_database_is_moved_aside(
    tmp_path: Path, bus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    module = make_input(DirImages, tmp_path, bus_url)
    (module.ctx.state_dir() / "uploads.sqlite").write_bytes(b"garbage from a disk fault " * 100)
    put_good_file(DirImages, tmp_path / "in")
    with running(module):
        wait_for(lambda: len(queued(module.ctx.bus)) == 1)
    assert "is unreadable" in caplog.text
    assert [p.name.startswith("uploads.sqlite.corrupt-") for p in module.ctx.state_dir().iterdir()].count(True) == 1
