"""Kills of the embedded broker and of supervisord, end to end: no frame of a file input is lost, no delivered
frame comes back, and no process of a runtime dir outlives its master (issue 9, items 1-3)."""

from __future__ import annotations

import configparser
import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from framefarm.supervisord import leftovers
from framefarm.supervisord.render import Layout

from peers import wait_for
from workspace import PHOTOS, Workspace, broker_processes, exited, proc_status, runner_processes, supervisord_pid

BROKER = "embedded-broker"
TEARDOWN_STOP_S = 5.0


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path)
    workspace.write(workspace.yaml())
    yield workspace
    workspace.force_stop()
    leftovers.clear(Layout(tmp_path / "run"), TEARDOWN_STOP_S)  # what a failed test left behind


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
    wait_for(lambda: counters(ws)["published"] >= count, 10, f"published={count}, not reset ({counters(ws)})")


def broker_client(ws: Workspace) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(ws.root / "run" / "broker.sock"))


def stop_as_an_older_version(ws: Workspace) -> None:
    """``-s stop`` as an older framefarm did it: the modules stopped, then the broker's queues saved to
    queues.rdb (the backlog); here the AOF is written as well."""
    ws.supervisorctl("stop", "uploads", "detector", "results")
    with contextlib.closing(broker_client(ws)) as client:
        client.save()
    ws.pipectl("-s", "stop")


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
    stop_as_an_older_version(ws)
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
    stop_as_an_older_version(ws)
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


def module_pids(ws: Workspace) -> dict[str, int]:
    programs = {"uploads", "detector", "results", "web-face", BROKER}
    wait_for(lambda: set(ws.pids()) == programs, 30, "every program running")
    return ws.pids()


def assert_one_set_runs_and_delivers_once(ws: Workspace, count: int) -> None:
    """Each image dropped now gives one result, once, from exactly one input, detector, output and broker.

    Counted once the results are in, when every process is surely up; a process starting up may show twice for
    a moment (ctypes.util.find_library, in lifeline, forks to run ldconfig), so the count may take that moment.
    """
    names = drop_photos(ws, count)
    assert sorted(r["source"] for r in ws.wait_results(count, timeout=60)) == names
    wait_for(lambda: len(runner_processes(ws.root)) == 3, 5, f"one set of modules: {runner_processes(ws.root)}")
    wait_for(lambda: len(broker_processes(ws.root)) == 1, 5, f"one broker: {broker_processes(ws.root)}")
    want = {"published": count, "delivered.results": count}
    wait_for(lambda: {k: counters(ws).get(k) for k in want} == want, 10, f"{want} ({counters(ws)})")


def test_supervisord_killed_takes_its_modules_and_broker_with_it(ws: Workspace) -> None:
    ws.pipectl("start")
    stop_supervisord(ws)
    assert "not running" in ws.pipectl("status", check=False).stderr

    started = ws.pipectl("start")
    assert "leftover" not in started.stderr  # nothing was left: they went by themselves
    assert_one_set_runs_and_delivers_once(ws, 12)


def by_hand(ws: Workspace, program: str) -> subprocess.Popen[bytes]:
    """A program of the runtime dir started by hand from supervisord.conf, as an operator might: supervisord
    is not its parent, so nothing stops it with supervisord. It is SIGSTOPped, as under a debugger: it can act
    on a SIGTERM only once it runs again."""
    conf = configparser.RawConfigParser()
    conf.read(ws.root / "run" / "supervisord.conf")
    args = shlex.split(conf[f"program:{program}"]["command"].replace("%%", "%"))
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if program != BROKER:  # a module: stopped once it handles SIGTERM (however slow a loaded machine starts it)
        wait_for(lambda: catches_sigterm(process.pid), 60, f"{program} started by hand to handle SIGTERM")
    time.sleep(0.2)
    os.kill(process.pid, signal.SIGSTOP)
    return process


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (its SigCgt mask in /proc)."""
    return bool(int(proc_status(pid, "SigCgt") or "0", 16) & (1 << (signal.SIGTERM - 1)))


def stop_supervisord(ws: Workspace) -> None:
    """kill -9 of supervisord; returns once what it ran has exited with it."""
    pids = module_pids(ws)
    os.kill(supervisord_pid(ws.root), signal.SIGKILL)
    wait_for(lambda: all(exited(pid) for pid in pids.values()), 30, f"{pids} to exit with supervisord")


def test_start_stops_what_an_earlier_run_left_running(ws: Workspace) -> None:
    """An input started by hand and stopped (SIGSTOP), and a process that ignores SIGTERM, both holding the
    runtime dir's snapshot: ``start`` stops them (SIGTERM with SIGCONT, then SIGKILL) before the new set."""
    ws.pipectl("start")
    stop_supervisord(ws)
    snapshot = next((ws.root / "run" / "modules").glob("uploads-*.json"))
    ignores_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    strays = [by_hand(ws, "uploads"), subprocess.Popen([sys.executable, "-c", ignores_term, str(snapshot)])]
    try:
        started = ws.pipectl("start")
        for process in strays:
            assert f"pid {process.pid} (" in started.stderr, started.stderr
        assert [p.wait(timeout=5) for p in strays] == [0, -signal.SIGKILL]  # the input stopped gracefully
        assert started.stderr.count("(SIGKILL)") == 1, started.stderr
        assert_one_set_runs_and_delivers_once(ws, 12)
    finally:
        for process in strays:
            process.kill()
            process.wait()


def test_stop_without_a_master_stops_its_leftovers(ws: Workspace) -> None:
    """``-s stop`` when supervisord is gone stops what it left; with nothing left it says it is not running."""
    ws.pipectl("start")
    stop_supervisord(ws)
    broker = by_hand(ws, BROKER)
    try:
        stopped = ws.pipectl("-s", "stop")
        assert f"pid {broker.pid} (" in stopped.stderr and "broker.sock" in stopped.stderr, stopped.stderr
        assert broker.wait(timeout=5) == 0  # SIGTERM: Redis shuts down cleanly, its AOF fsynced
        result = ws.pipectl("-s", "stop", check=False)
        assert result.returncode == 1 and "not running in" in result.stderr
    finally:
        broker.kill()
        broker.wait()


def test_without_persist_nothing_is_kept_and_no_older_state_is_left_to_load(ws: Workspace) -> None:
    """``persist: false`` writes nothing; what an earlier persisting run left (an AOF, an older version's
    snapshot) is removed at start, so that turning persist on again can never load it."""
    ws.write(ws.yaml().replace("  stop_timeout: 10s\n", "  stop_timeout: 10s\n  persist: false\n"))
    data = ws.root / "run" / "broker"
    (data / "appendonlydir").mkdir(parents=True)
    (data / "appendonlydir" / "appendonly.aof.1.incr.aof").write_bytes(b"*1\r\n$8\r\nFLUSHALL\r\n")
    (data / "queues.rdb").write_bytes(b"REDIS0010")
    data.chmod(0o755)
    conf = Path(ws.pipectl("render").stdout.strip())
    assert "--appendonly no" in conf.read_text()
    assert len(list(data.iterdir())) == 2  # render may run beside a broker: it never touches its files
    started = ws.pipectl("start")
    assert sorted(data.iterdir()) == [] and stat.S_IMODE(data.stat().st_mode) == 0o700
    assert started.stderr.count("service.persist is off") == 2, started.stderr
    ws.pipectl("-s", "stop")
    assert sorted(data.iterdir()) == []  # nothing written, at stop either


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
