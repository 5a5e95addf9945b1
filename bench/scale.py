"""Throughput with one and two worker hosts on one broker, each host a Linux network namespace on its own core.

    python bench/scale.py [--brokers redis,nats,nsq] [--model M.onnx] [--batch 4] [--copies 1]

Run as root (it creates network namespaces). The root namespace holds a bridge (10.77.0.1/24), the broker listening
on it, and the input host: `pipectl start --role inputs` with a dir_videos input fed ``--copies`` copies of
vtest.avi. Worker host i is the namespace ``ffscale-i``, joined to the bridge by a veth pair (10.77.0.(10+i)), its
processes pinned with taskset to core i-1 (modulo the cores): `pipectl start --role workers` with one single-threaded
detector and the image_files output, on its own runtime dir, every host with the same pipeline file.

Per broker: (1) one worker host, (2) two, (3) two with the second killed (SIGKILL to every process in its
namespace) once a third of the frames have results: every frame must still get its result from the first host
(``lost`` counts those that did not). fps runs from the first frame's capture to the last result written. The last
lines are ``broker=... hosts=2 speedup=<fps with 2 hosts / fps with 1> lost=<frames>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
from machine import machine, usable_cores
from stages import detector_and_results

from framefarm.vision.model import YoloModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from peers import nats_server, nsqd_server, redis_server, wait_for

SHARED = Path(__file__).resolve().parents[2] / "shared"
REPO = Path(__file__).resolve().parents[1]
BRIDGE, SUBNET, GATEWAY = "ffscale0", "10.77.0", "10.77.0.1"
RESULT_TIMEOUT_S = 600
KILL_AT = 1 / 3
BROKERS = {"redis": redis_server, "nats": nats_server, "nsq": nsqd_server}
PIPECTL = [sys.executable, "-m", "framefarm.cli"]


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="redis,nats,nsq")
    parser.add_argument("--video", type=Path, default=SHARED / "media" / "vtest.avi")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "yolov3-tiny-coco.onnx")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--copies", type=int, default=1, help="copies of the video fed to the input")
    args = parser.parse_args(argv)
    args.device, args.workers, args.worker_threads = "cpu", 1, 1  # one single-threaded detector per host
    return args


def sh(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: {done.stderr.strip()}")


@contextlib.contextmanager
def network(hosts: int) -> Iterator[list[str]]:
    """The bridge and ``hosts`` namespaces joined to it; their names. Everything is removed at the end."""
    names = [f"ffscale-{i}" for i in range(1, hosts + 1)]
    try:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for i, name in enumerate(names, 1):
            outside, inside = f"ffsv{i}", f"ffsv{i}p"
            sh("ip", "netns", "add", name)
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", inside, "netns", name)
            sh("ip", "link", "set", outside, "master", BRIDGE)
            sh("ip", "link", "set", outside, "up")
            sh("ip", "-n", name, "addr", "add", f"{SUBNET}.{10 + i}/24", "dev", inside)
            sh("ip", "-n", name, "link", "set", inside, "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for i, name in enumerate(names, 1):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            subprocess.run(["ip", "link", "del", f"ffsv{i}"], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def pipeline_yaml(args: argparse.Namespace, broker: str, root: Path) -> str:
    return f"""\
service:
  broker: {broker}
  runtime_dir: ${{FF_RUNTIME}}
  heartbeat_timeout: 5s
  stop_timeout: 10s
  http: {{listen: 127.0.0.1:0}}
pipeline:
  inputs:
    - name: dir_videos
      alias: video
      tag: video
      path: {root / "in"}
      settle: 50ms
      max_in_flight: 64
""" + detector_and_results(args).replace("      path: out\n", f"      path: {root / 'out'}\n")


class Host:
    """One `pipectl start` of the pipeline, in a namespace (or the root one) and pinned to a core (or not)."""

    def __init__(self, config: Path, runtime: Path, namespace: str | None, core: int | None) -> None:
        self.config, self.runtime, self.namespace, self.core = config, runtime, namespace, core

    def pipectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        pinned = ["taskset", "-c", str(self.core)] if self.core is not None else []
        env = {**os.environ, "FF_RUNTIME": str(self.runtime)}
        done = subprocess.run(
            [*prefix, *pinned, *PIPECTL, *args, "-c", str(self.config)], capture_output=True, text=True, env=env
        )
        if check and done.returncode != 0:
            raise SystemExit(f"pipectl {' '.join(args)} failed: {done.stderr}")
        return done

    def kill(self) -> None:
        """SIGKILL to every process of the namespace: the host's power cord."""
        pids = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def detector_ready(self) -> bool:
        log = self.runtime / "logs" / "detector.log"
        return log.exists() and "providers" in log.read_text()


def run_once(
    args: argparse.Namespace, broker: str, namespaces: list[str], kill: bool, frames: int
) -> tuple[float, int]:
    """(fps, frames without a result) for one run with a worker host in each of ``namespaces``."""
    cores = usable_cores()
    with tempfile.TemporaryDirectory(prefix="ffscale-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        config = root / "pipeline.yaml"
        config.write_text(pipeline_yaml(args, broker, root))
        inputs = Host(config, root / "inputs", None, None)
        workers = [Host(config, root / f"host-{i}", ns, (i - 1) % cores) for i, ns in enumerate(namespaces, 1)]
        try:
            for host in workers:
                host.pipectl("start", "--role", "workers")
            wait_for(lambda: all(h.detector_ready() for h in workers), 120, "the detectors")
            inputs.pipectl("start", "--role", "inputs")
            for copy in range(args.copies):
                shutil.copyfile(args.video, root / f".v{copy}.avi")
                os.replace(root / f".v{copy}.avi", root / "in" / f"v{copy}{args.video.suffix}")
            results = root / "out" / "video"
            if kill:
                wait_for(lambda: count(results) >= frames * KILL_AT, RESULT_TIMEOUT_S, "a third of the results")
                workers[-1].kill()
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: count(results) >= frames, RESULT_TIMEOUT_S, "every result")
        finally:
            for host in [inputs, *workers]:
                host.pipectl("-s", "stop", check=False)
            for host in workers:
                host.kill()  # whatever a failed stop left: pinned processes must not outlive the run
        done = [(json.loads(p.read_text())["captured_at"], p.stat().st_mtime) for p in results.glob("*.json")]
    if not done:
        raise SystemExit(f"broker {broker}: no result with {len(namespaces)} hosts")
    seconds = max(written for _, written in done) - min(captured for captured, _ in done)
    return len(done) / seconds, frames - len(done)


def count(results: Path) -> int:
    return len(list(results.glob("*.json"))) if results.is_dir() else 0


@contextlib.contextmanager
def broker_on_bridge(name: str, tmp: Path) -> Iterator[str]:
    with BROKERS[name](tmp, host=GATEWAY) as started:
        yield started if isinstance(started, str) else started[0]


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench/scale.py creates network namespaces: run it as root")
    args.model, args.video = args.model.resolve(), args.video.resolve()
    with av.open(str(args.video)) as container:
        frames = args.copies * sum(1 for _ in container.decode(video=0))
    lines = []
    for name in args.brokers.split(","):
        with (
            network(2) as namespaces,
            tempfile.TemporaryDirectory(prefix=f"ffscale-{name}-") as tmp,
            broker_on_bridge(name, Path(tmp)) as url,
        ):
            one, _ = run_once(args, url, namespaces[:1], False, frames)
            two, _ = run_once(args, url, namespaces, False, frames)
            _, lost = run_once(args, url, namespaces, True, frames)
        print(f"broker={name}: 1 host {one:.1f} fps, 2 hosts {two:.1f} fps, 2 hosts with one killed: {lost} lost")
        lines.append(f"broker={name} hosts=2 speedup={two / one:.2f} lost={lost} fps_1={one:.1f} fps_2={two:.1f}")
    print(machine(YoloModel(args.model, threads=1, device="cpu"), 1))
    print(f"{frames} frames of {args.video.name}, {args.model.stem} at batch {args.batch}, one detector a host")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
