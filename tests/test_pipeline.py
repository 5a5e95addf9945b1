"""End to end through pipectl: embedded broker, supervisord, real model, real files."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from conftest import MEDIA
from peers import Restartable, wait_for
from workspace import PHOTOS, Workspace, runner_processes

EXPECTED = {"dog": {"dog"}, "person": {"person"}, "horses": {"horse"}, "eagle": {"bird"}}


@pytest.fixture
def ws(tmp_path: Path, broker: Restartable | None) -> Iterator[Workspace]:
    """A pipeline on each queue backend in turn (see the ``broker`` fixture)."""
    workspace = Workspace(tmp_path, broker.url if broker else None)
    workspace.write(workspace.yaml())
    yield workspace
    workspace.force_stop()


def classes(result: dict) -> set[str]:
    return {d["class_name"] for d in result["detections"]}


def test_photos_in_detections_out_bad_files_aside_and_quit_leaves_nothing(ws: Workspace) -> None:
    ws.pipectl("start")
    assert "already running" in ws.pipectl("start", check=False).stderr
    for photo in PHOTOS:
        ws.drop(photo, photo)
    (ws.inbox / "broken.jpg").write_bytes((MEDIA / "dog.jpg").read_bytes()[:20000])
    (ws.inbox / "notes.jpg").write_text("this is not an image\n")

    results = {Path(r["source"]).stem: r for r in ws.wait_results(len(PHOTOS))}
    for stem, wanted in EXPECTED.items():
        assert wanted <= classes(results[stem]), (stem, classes(results[stem]))
    assert classes(results["dog"]) & {"car", "truck"}
    assert results["dog"]["width"] == 768 and results["dog"]["model"] == "yolov3-tiny-coco"
    lines = (ws.results / "dog.txt").read_text().splitlines()
    assert len(lines) == len(results["dog"]["detections"]) and len(lines[0].split()) == 6

    failed = ws.inbox / ".failed"
    wait_for(lambda: (failed / "notes.jpg.error.txt").exists() and (failed / "broken.jpg.error.txt").exists())
    assert "truncated JPEG" in (failed / "broken.jpg.error.txt").read_text()
    assert "not a JPEG, PNG" in (failed / "notes.jpg.error.txt").read_text()
    assert sorted(p.name for p in (ws.inbox / ".done").iterdir()) == sorted(PHOTOS)

    assert len(runner_processes(ws.root)) == 3
    ws.pipectl("-s", "quit")
    assert runner_processes(ws.root) == []
    assert not (ws.root / "run" / "supervisord.pid").exists()


def test_reload_restarts_only_the_changed_module_and_keeps_running_on_error(ws: Workspace) -> None:
    ws.pipectl("start")
    programs = {"uploads", "detector", "results", "web-face"} | (set() if ws.broker else {"embedded-broker"})
    wait_for(lambda: set(ws.pids()) == programs)
    before = ws.pids()

    ws.write(ws.yaml(out_extra="      save_image: raw\n"))  # the output needs whole frames: the input restarts too
    assert "restarted ['results', 'uploads']" in ws.pipectl("-s", "reload").stdout
    wait_for(lambda: {"results", "uploads"} <= set(ws.pids()))
    after = ws.pids()
    assert after["results"] != before["results"] and after["uploads"] != before["uploads"]
    kept = set(before) - {"results", "uploads"}  # the detector and the broker go on
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}

    ws.write(ws.yaml(out_extra="      save_image: sideways\n"))
    result = ws.pipectl("-s", "reload", check=False)
    assert result.returncode == 1 and "pipeline.outputs[0].save_image" in result.stderr
    assert ws.pids() == after

    ws.drop("dog.jpg", "dog.jpg")
    ws.wait_results(1)
    assert (ws.results / "dog.jpg").read_bytes() == (MEDIA / "dog.jpg").read_bytes()  # the new option is live


def test_reopen_makes_every_process_reopen_its_log(ws: Workspace) -> None:
    ws.pipectl("start")
    log = ws.root / "run" / "logs" / "uploads.log"
    wait_for(lambda: log.exists() and "watching" in log.read_text())
    log.rename(log.with_suffix(".log.1"))
    ws.pipectl("-s", "reopen")
    assert log.exists()  # -s reopen returns once supervisord has reopened, so no line can land in the moved file
    ws.drop("notes.jpg", "dog.jpg")
    (ws.inbox / "bad.jpg").write_text("not an image")
    wait_for(lambda: log.exists() and "bad.jpg" in log.read_text())


def test_each_module_killed_in_turn_mid_run_still_gives_each_photo_exactly_one_result(ws: Workspace) -> None:
    """Chaos, one fault at a time on every broker: SIGKILL to the input, then the detector, then the output while
    60 photos go through. supervisord restarts each; nothing is lost (the folder input's ledger, unacknowledged
    messages redelivered), nothing is written twice or half (atomic writes under the frame's own name), nothing
    crash-loops, and the master answers status throughout."""
    count = 60
    ws.pipectl("start")
    for i in range(count):
        ws.drop(f"img{i:02d}.jpg", PHOTOS[i % len(PHOTOS)])
    for step, alias in enumerate(("uploads", "detector", "results"), 1):
        wait_for(lambda step=step: len(ws.result_files()) >= 3 * step, 90, f"results before killing {alias}")
        before = ws.pids()[alias]
        os.kill(before, signal.SIGKILL)
        wait_for(lambda a=alias, b=before: ws.pids().get(a, b) != b, 30, f"{alias} restarted")  # status answers
    results = ws.wait_results(count, timeout=180)
    assert sorted(r["source"] for r in results) == [f"img{i:02d}.jpg" for i in range(count)]
    # atomic writes: no half-written result; the output killed mid-write may leave that write's hidden temporary file
    assert len(list(ws.results.glob(".*.tmp"))) <= 2  # at most one per thread of the output
    assert not list(ws.inbox.glob("*.jpg"))  # every photo taken, none left behind by the killed input
    supervisord_log = (ws.root / "run" / "logs" / "supervisord.log").read_text()
    for alias in ("uploads", "detector", "results"):
        assert supervisord_log.count(f"exited: {alias} (terminated by SIGKILL") == 1, alias
    restarts = {p["name"]: p["restarts"] for p in json.loads(ws.pipectl("status", "--json").stdout)["processes"]}
    assert all(restarts[a] == 1 for a in ("uploads", "detector", "results")), restarts  # no crash loop


def test_fast_stop_loses_nothing_and_the_next_start_finishes(ws: Workspace) -> None:
    count = 60
    ws.pipectl("start")
    for i in range(count):
        ws.drop(f"img{i:02d}.jpg", PHOTOS[i % len(PHOTOS)])
    wait_for(lambda: len(ws.result_files()) >= 2, 60, "first results")
    ws.pipectl("-s", "stop")
    assert runner_processes(ws.root) == []
    assert len(ws.result_files()) < count, "stopped too late to test anything"
    if ws.broker is None:
        aof = ws.root / "run" / "broker" / "appendonlydir"  # the embedded queues are kept in the append-only file
        assert sum(p.stat().st_size for p in aof.iterdir()) > 0 and not (aof.parent / "queues.rdb").exists()

    ws.pipectl("start")
    results = ws.wait_results(count, timeout=120)
    assert sorted(r["source"] for r in results) == [f"img{i:02d}.jpg" for i in range(count)]


def test_graceful_quit_delivers_every_frame_already_published(ws: Workspace) -> None:
    ws.pipectl("start")
    names = [f"img{i:02d}.jpg" for i in range(20)]
    for i, name in enumerate(names):
        ws.drop(name, PHOTOS[i % len(PHOTOS)])
    wait_for(lambda: len(ws.result_files()) >= 1, 60, "first result")
    ws.pipectl("-s", "quit")
    assert runner_processes(ws.root) == []
    waiting = {p.name for p in ws.inbox.glob("*.jpg")}  # not yet taken: the next start takes them
    delivered = {Path(r["source"]).name for r in ws.wait_results(0)}
    assert delivered | waiting == set(names)
    assert delivered.isdisjoint(waiting)


def test_broker_restart_mid_run_every_file_still_gets_its_result(ws: Workspace, broker: Restartable | None) -> None:
    count = 30
    ws.pipectl("start")
    for i in range(count):
        ws.drop(f"img{i:02d}.jpg", PHOTOS[i % len(PHOTOS)])
    wait_for(lambda: len(ws.result_files()) >= 2, 60, "first results")
    if broker is None:  # the embedded one: supervisord stops it (snapshot on SIGTERM) and starts it again
        ws.supervisorctl("stop", "embedded-broker")
        time.sleep(2)
        ws.supervisorctl("start", "embedded-broker")
    else:
        broker.stop()
        time.sleep(2)
        broker.start()
    results = ws.wait_results(count, timeout=180)
    assert sorted(r["source"] for r in results) == [f"img{i:02d}.jpg" for i in range(count)]


def test_status_is_exact_two_seconds_after_the_last_frame(ws: Workspace) -> None:
    """Counts batched in each process reach the broker on a timer, not only with the next count."""
    ws.pipectl("start")
    for i in range(20):
        ws.drop(f"img{i:02d}.jpg", PHOTOS[i % len(PHOTOS)])
    ws.wait_results(20)
    time.sleep(2.0)
    line = next(line for line in ws.pipectl("status").stdout.splitlines() if line.startswith("uploads:"))
    counters = dict(item.split("=") for item in line.removeprefix("uploads:").strip().split(", "))
    assert counters["frames_in"] == counters["published"] == counters["delivered.results"] == "20", line


@pytest.mark.parametrize("broker", ["nsq"], indirect=True)
def test_a_photo_too_big_for_an_nsq_message_travels_at_the_networks_scale(ws: Workspace) -> None:
    """frames.store inline on NSQ (the default): a 12-megapixel JPEG of several MB is more than frames.max_inline,
    but the input stores it at the network's input size, so it fits, and the boxes come out in its own pixels."""
    big = cv2.resize(cv2.imread(str(MEDIA / "dog.jpg")), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    ok, jpeg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok and len(jpeg) > 786_432
    ws.pipectl("start")
    (ws.root / ".big.jpg").write_bytes(jpeg.tobytes())
    (ws.root / ".big.jpg").rename(ws.inbox / "big.jpg")
    (result,) = ws.wait_results(1)
    assert (result["width"], result["height"]) == (4000, 3000) and "dog" in classes(result)
    dog = next(d for d in result["detections"] if d["class_name"] == "dog")
    assert dog["box"][2] > 1000  # in the photo's pixels, not the stored frame's
