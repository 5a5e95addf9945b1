"""Output ``image_files``: which frames it writes, where (``{tag}`` and strftime in its path) and for how long
(retention by age and by size), on the in-memory bus."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from test_network_outputs import count, output, send

from framefarm.config.registry import CheckContext
from framefarm.config.schema import ServiceOptions
from framefarm.modules import counters
from framefarm.outputs.image_files import ImageFiles
from framefarm.outputs.retention import RetentionOptions, sweep

from harness import running
from peers import wait_for


def test_every_nth_frame_with_detections_into_a_dated_folder_per_tag(tmp_path: Path, bus_url: str) -> None:
    out = output(ImageFiles, tmp_path, bus_url, path="results/%Y/{tag}-%m", every_n=2, only_with_detections=True)
    with running(out):
        for seq in range(6):
            send(out.ctx.bus, seq, detections=[] if seq == 4 else None, source=f"p{seq}.jpg")
        wait_for(lambda: count(out, counters.delivered("out")) + count(out, counters.filtered("out")) == 6)
    folder = tmp_path / "results" / time.strftime("%Y") / time.strftime("cam-%m")
    assert sorted(p.name for p in folder.iterdir()) == ["p0.json", "p0.txt", "p2.json", "p2.txt"]
    assert count(out, counters.filtered("out")) == 4  # seq 1, 3, 5 by every_n; seq 4 has no detection


def test_a_path_without_tag_still_gets_one_folder_per_tag(tmp_path: Path, bus_url: str) -> None:
    out = output(ImageFiles, tmp_path, bus_url, path="out")
    with running(out):
        send(out.ctx.bus, 0, source="dog.jpg")
        wait_for(lambda: (tmp_path / "out" / "cam" / "dog.json").exists())
    assert ImageFiles.Options(name="image_files", path="out/{tag}/%Y").root == Path("out")


def test_retention_removes_what_is_too_old_then_the_oldest_until_the_size_fits(tmp_path: Path) -> None:
    now = time.time()
    for age, name in [(50, "a/old.json"), (40, "a/older-day/x.json"), (30, "b/mid.json"), (20, "b/new.json")]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - age * 3600, now - age * 3600))
    by_age = sweep(tmp_path, RetentionOptions(max_age="45h"), now)
    assert by_age == [tmp_path / "a" / "old.json"]
    by_size = sweep(tmp_path, RetentionOptions(max_size=150), now)
    assert by_size == [tmp_path / "a" / "older-day" / "x.json", tmp_path / "b" / "mid.json"]  # oldest first
    assert not (tmp_path / "a").exists()  # emptied folders go too
    assert [p.name for p in tmp_path.rglob("*.json")] == ["new.json"]


def test_retention_runs_in_the_background_while_results_are_written(tmp_path: Path, bus_url: str) -> None:
    out = output(ImageFiles, tmp_path, bus_url, path="out", retention={"max_size": 4000, "interval": "100ms"})
    with running(out):
        for seq in range(30):
            send(out.ctx.bus, seq, source=f"p{seq:02d}.jpg")
        wait_for(lambda: count(out, counters.delivered("out")) == 30)
        wait_for(lambda: sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()) <= 4000)
    left = sorted(p.name for p in (tmp_path / "out" / "cam").glob("*.json"))
    assert left and left[-1] == "p29.json" and "p00.json" not in left  # the newest kept, the oldest gone


def test_results_as_json_lines_one_per_frame_appended_by_every_thread(tmp_path: Path, bus_url: str) -> None:
    out = output(ImageFiles, tmp_path, bus_url, path="out", results="jsonl", threads=4)
    with running(out):
        for seq in range(40):
            send(out.ctx.bus, seq, source=f"p{seq}.jpg")
        wait_for(lambda: count(out, counters.delivered("out")) == 40)
    folder = tmp_path / "out" / "cam"
    assert [p.name for p in folder.iterdir()] == ["results.jsonl"]
    lines = (folder / "results.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and sorted(json.loads(line)["seq"] for line in lines[:-1]) == list(range(40))


def test_json_lines_with_retention_need_a_date_in_their_path(tmp_path: Path) -> None:
    """Retention removes whole files: an undated results.jsonl would go all at once, or never."""
    ctx = CheckContext(base_dir=tmp_path, service=ServiceOptions())
    for path, refused in (("out", True), ("out/{tag}/%Y-%m-%d", False), ("out/100%%", True)):
        options = ImageFiles.Options(name="image_files", path=path, results="jsonl", retention={"max_age": 3600})
        assert [loc for loc, _ in ImageFiles.check(options, ctx)] == ([("retention",)] if refused else []), path


def test_a_frame_whose_folder_cannot_exist_is_rejected_at_once_not_retried(tmp_path: Path, bus_url: str) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "cam").write_text("a file where the tag's folder goes")
    out = output(ImageFiles, tmp_path, bus_url, path="out")
    with running(out):
        send(out.ctx.bus, 0, source="dog.jpg")
        wait_for(lambda: count(out, counters.rejected("out")) == 1)
    assert count(out, counters.retried("out")) == 0
