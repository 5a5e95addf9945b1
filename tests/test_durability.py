"""Kills of the embedded broker and of supervisord, end to end: no frame of a file input is lost, no delivered
frame comes back, and no process of a runtime dir outlives its master (issue 9, items 1-3)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from peers import wait_for
from workspace import PHOTOS, Workspace

BROKER = "embedded-broker"


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path)
    workspace.write(workspace.yaml())
    yield workspace
    workspace.force_stop()


def with_input_option(yaml: str, option: str) -> str:
    """The workspace's pipeline with one more option for its dir_images input."""
    anchor = "      incomplete_timeout: 2s\n"
    return yaml.replace(anchor, f"{anchor}      {option}\n")


def drop_photos(ws: Workspace, count: int) -> list[str]:
    names = [f"img{i:03d}.jpg" for i in range(count)]
    for i, name in enumerate(names):
        ws.drop(name, PHOTOS[i % len(PHOTOS)])
    return names


def kill_broker(ws: Workspace) -> None:
    """kill -9 of the embedded Redis; returns once supervisord has started a new one."""
    pid = ws.pids()[BROKER]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: ws.pids().get(BROKER, pid) != pid, 30, "supervisord to restart the broker")


def counters(ws: Workspace) -> dict[str, int]:
    """The input's counters from ``pipectl status``."""
    line = next(line for line in ws.pipectl("status").stdout.splitlines() if line.startswith("uploads:"))
    return {k: int(v) for k, v in (item.split("=") for item in line.removeprefix("uploads:").strip().split(", "))}


@pytest.mark.parametrize(
    ("in_flight", "kills"),
    [(200, 1), (10, 2)],
    ids=["all-published-then-killed", "killed-twice-while-publishing"],
)
def test_broker_killed_with_frames_in_flight_loses_no_frame(ws: Workspace, in_flight: int, kills: int) -> None:
    """100 images; the broker is killed once every file is published (all in .done, results still to come), or
    twice while the input is still publishing (max_in_flight holds it back). Every image gets its result, and
    the counters survive the kill."""
    count = 100
    ws.write(with_input_option(ws.yaml(), f"max_in_flight: {in_flight}"))
    ws.pipectl("start")
    names = drop_photos(ws, count)
    if in_flight >= count:
        wait_for(lambda: len(list((ws.inbox / ".done").glob("*.jpg"))) == count, 60, "every file published")
    for kill in range(kills):
        wait_for(lambda n=kill: len(ws.result_files()) >= 3 + 10 * n, 60, "results before the kill")
        kill_broker(ws)
    assert len(ws.result_files()) < count, "killed too late to test anything"
    results = ws.wait_results(count, timeout=60)
    assert sorted(r["source"] for r in results) == names
    wait_for(lambda: counters(ws)["published"] == count, 10, f"published={count} ({counters(ws)})")


def broker_client(ws: Workspace) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(ws.root / "run" / "broker.sock"))


def inodes(ws: Workspace) -> dict[str, int]:
    """Results are written to a temporary file and renamed: a result written again has a new inode."""
    return {p.name: p.stat().st_ino for p in ws.result_files()}


def test_broker_killed_after_a_fast_stop_and_restart_replays_nothing(ws: Workspace) -> None:
    """``-s stop`` with a backlog, ``start``, all done, then kill -9 of the broker: it must come back with the
    state it had, not with the backlog of the stop (the snapshot an older framefarm took at stop, saved here
    by hand as well, must not be loaded)."""
    count = 100
    ws.write(with_input_option(ws.yaml(), "max_in_flight: 200"))  # a backlog in the queues, not in the inbox
    ws.pipectl("start")
    names = drop_photos(ws, count)
    wait_for(lambda: len(ws.result_files()) >= 2, 60, "first results")
    with contextlib.closing(broker_client(ws)) as client:
        client.save()  # what an older framefarm wrote at -s stop: the backlog
    ws.pipectl("-s", "stop")
    assert len(ws.result_files()) < count, "stopped too late to test anything"

    started = ws.pipectl("start")
    assert "queues.rdb: older than the embedded broker's append-only file" in started.stderr
    assert sorted(r["source"] for r in ws.wait_results(count, timeout=60)) == names
    before = inodes(ws)
    kill_broker(ws)
    ws.drop("sentinel.jpg", "eagle.jpg")  # queued behind anything the restarted broker brought back
    ws.wait_results(count + 1, timeout=60)
    after = inodes(ws)
    rewritten = sorted(name for name, inode in before.items() if after.get(name) != inode)
    assert not rewritten, f"{len(rewritten)} delivered results were written again"
    assert len(ws.result_files()) == count + 1


def test_an_older_versions_stop_snapshot_is_carried_into_the_append_only_file(ws: Workspace) -> None:
    """An older framefarm kept the queues in queues.rdb at ``-s stop``; the first start after the upgrade
    must process that backlog (and then never load the snapshot again)."""
    count = 60
    ws.write(with_input_option(ws.yaml(), "max_in_flight: 200"))
    ws.pipectl("start")
    names = drop_photos(ws, count)
    wait_for(lambda: len(ws.result_files()) >= 2, 60, "first results")
    with contextlib.closing(broker_client(ws)) as client:
        client.save()
    ws.pipectl("-s", "stop")
    data = ws.root / "run" / "broker"
    shutil.rmtree(data / "appendonlydir")  # as the older version left it: the snapshot alone
    done = len(ws.result_files())
    assert done < count, "stopped too late to test anything"

    started = ws.pipectl("start")
    assert "moved the queues of" in started.stderr
    assert not (data / "queues.rdb").exists()
    assert sorted(r["source"] for r in ws.wait_results(count, timeout=60)) == names
    assert stat.S_IMODE((data / "appendonlydir").stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (data / "appendonlydir").iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes  # they hold frames: owner-only


def test_without_persist_nothing_is_kept_and_no_older_state_is_left_to_load(tmp_path: Path) -> None:
    """``persist: false`` writes nothing; what an earlier persisting run left (an AOF, an older version's
    snapshot) is removed, so that turning persist on again can never load it."""
    ws = Workspace(tmp_path)
    ws.write(ws.yaml().replace("  stop_timeout: 10s\n", "  stop_timeout: 10s\n  persist: false\n"))
    data = tmp_path / "run" / "broker"
    (data / "appendonlydir").mkdir(parents=True)
    (data / "appendonlydir" / "appendonly.aof.1.incr.aof").write_bytes(b"*1\r\n$8\r\nFLUSHALL\r\n")
    (data / "queues.rdb").write_bytes(b"REDIS0010")
    data.chmod(0o755)
    result = ws.pipectl("render")
    assert "--appendonly no" in Path(result.stdout.strip()).read_text()
    assert sorted(data.iterdir()) == [] and stat.S_IMODE(data.stat().st_mode) == 0o700
    assert result.stderr.count("service.persist is off") == 2, result.stderr


def module_pids(ws: Workspace) -> dict[str, int]:
    programs = {"uploads", "detector", "results", BROKER}
    wait_for(lambda: set(ws.pids()) == programs, 30, "every program running")
    return ws.pids()


def test_reload_keeps_the_running_brokers_persistence(ws: Workspace) -> None:
    """Switching persist restarts the broker, into an empty state (or an AOF older than its memory): a reload
    leaves the broker as it runs and says the change applies at the next start."""
    ws.pipectl("start")
    before = module_pids(ws)
    ws.write(ws.yaml().replace("  stop_timeout: 10s\n", "  stop_timeout: 10s\n  persist: false\n"))
    reloaded = ws.pipectl("-s", "reload")
    assert "service.persist: false applies at the next start" in reloaded.stderr, reloaded.stderr
    assert ws.pids()[BROKER] == before[BROKER]
    assert "--appendonly yes" in (ws.root / "run" / "supervisord.conf").read_text()
