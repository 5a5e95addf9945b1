"""Frames per second through each bus: store + message + fetch + ack, one producer and one worker process.

    python bench/bus.py                      # starts redis-server, nats-server and nsqd itself
    python bench/bus.py --url redis://127.0.0.1:6379/0 --url nats://127.0.0.1:4222

For each broker, two figures: 100 KB frames (put into the frame store, message sent; the worker fetches
the frame, releases it and acks) and tiny messages (message only). First the baseline, measured in the same
run on the same Redis: Dramatiq's own RedisBroker and Worker with the same threads and prefetch, tiny
messages, nothing of framefarm. Then one line per broker, with its rates as ratios of the baseline, then
the machine:

    baseline=dramatiq-redis tiny_per_s=... cpu_ms_per_tiny=... tiny_ceiling_per_s=...
    broker=... frames_per_s=... tiny_per_s=... frames_vs_baseline=... tiny_vs_baseline=...
    cpu_ms_per_frame=producer:P,worker:W,server:S ceiling_per_s=C cpu_ms_per_tiny=... tiny_ceiling_per_s=...

The CPU each process spent per message shows what limits the rate: the worker (one Python process, so at
most one core of Python), or all three together against the machine's cores (a ceiling is the lower of
cores / total and 1 / the busiest process). Server CPU is counted for the servers the benchmark started
itself (none with --url).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from machine import child_pids, cpu_model, cpu_seconds, usable_cores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from framefarm.bus import connect
from framefarm.bus.base import Bus
from framefarm.message import FrameMessage
from framefarm.bus.worker import WORKER_TIMEOUT_MS, serve_queue
from framefarm.config.schema import ServiceOptions

from peers import free_port, nats_server, nsqd_server, redis_server

FRAME_BYTES = 100 * 1024
FRAMES = 3000
TINY = 5000
WORKER_THREADS = 8
PREFETCH = 128  # messages a worker fetches ahead: fewer, larger fetches
QUEUE = "bench"
TIMEOUT_S = 300
BROKERS = ("redis", "nats", "nsq")


class _Count:
    """Messages handled by the worker process, and its CPU seconds from the first to the latest."""

    def __init__(self, done: Any, cpu: Any) -> None:
        self.done, self.cpu, self.first = done, cpu, None

    def __call__(self) -> None:
        with self.done.get_lock():
            now = time.process_time()
            if self.first is None:
                self.first = now
            self.done.value += 1
            self.cpu.value = now - self.first


def _worker(url: str, done: Any, cpu: Any, ready: Any, stop: Any) -> None:
    """framefarm's consumer: fetch the frame (when the message has one), release it, ack."""
    bus = connect(url, ServiceOptions(broker=url))
    count = _Count(done, cpu)

    def handle(payload: dict[str, Any]) -> None:
        if "key" in payload:
            message = FrameMessage.model_validate(payload)
            bus.frames.fetch(message)
            bus.frames.release(message.key, message.input)
        count()

    ready.set()
    serve_queue(bus, QUEUE, handle, threads=WORKER_THREADS, stop=_Flag(stop), stop_timeout=10, prefetch=PREFETCH)
    bus.close()


def _dramatiq_actor(url: str, body: Any) -> dramatiq.Actor:
    return dramatiq.actor(body, actor_name="tick", queue_name=QUEUE, broker=RedisBroker(url=url))


def _dramatiq_worker(url: str, done: Any, cpu: Any, ready: Any, stop: Any) -> None:
    """The baseline's consumer: Dramatiq's RedisBroker and Worker as shipped, an actor that only counts.

    Same idle poll period as framefarm's workers: Dramatiq's default (1 s) would leave an idle consumer
    asleep for up to a second after the first send, which is a third of a run.
    """
    count = _Count(done, cpu)
    actor = _dramatiq_actor(url, lambda seq: count())
    worker = dramatiq.Worker(actor.broker, worker_threads=WORKER_THREADS, worker_timeout=WORKER_TIMEOUT_MS)
    worker.queue_prefetch = PREFETCH
    worker.start()
    ready.set()
    stop.wait()
    worker.stop()


class _Flag(threading.Event):
    """A threading.Event view of a multiprocessing.Event, which serve_queue waits on."""

    def __init__(self, flag: Any) -> None:
        super().__init__()
        self.flag = flag

    def wait(self, timeout: float | None = None) -> bool:
        return self.flag.wait(timeout)


def _produce(bus: Bus, count: int, frame: bytes | None) -> None:
    for seq in range(count):
        if frame is None:
            bus.send(QUEUE, {"seq": seq})
            continue
        key = f"framefarm:frame:bench:{seq}"
        inline = bus.frames.put(key, frame, ttl=120, refs=1)
        message = FrameMessage(
            stream="bench", input="bench", source="bench", seq=seq, captured_at=time.time(), width=1, height=1,
            key=key, format="jpeg",
        )  # fmt: skip
        bus.send(QUEUE, {**message.model_dump(exclude_none=True), **inline})


def _produce_baseline(actor: dramatiq.Actor, count: int) -> None:
    for seq in range(count):
        actor.send(seq)


class Run(NamedTuple):
    per_s: float
    cpu_ms: dict[str, float]  # CPU per message: producer, worker, server

    def cpu(self) -> str:
        return ",".join(f"{process}:{ms:.2f}" for process, ms in self.cpu_ms.items())

    def ceiling(self) -> float:
        """The rate the CPU allows: every process on its own core at most, all of them on the cores there are."""
        total = sum(self.cpu_ms.values())
        return min(usable_cores() / total, 1 / max(self.cpu_ms.values())) * 1000


def measure(url: str, count: int, frame: bytes | None, *, baseline: bool = False) -> Run:
    """Messages per second from the first send until the worker has acked the last one.

    ``baseline``: through Dramatiq's own RedisBroker instead of framefarm's bus (tiny messages only).
    """
    ctx = mp.get_context("spawn")
    done, cpu, ready, stop = ctx.Value("i", 0), ctx.Value("d", 0.0), ctx.Event(), ctx.Event()
    worker = ctx.Process(target=_dramatiq_worker if baseline else _worker, args=(url, done, cpu, ready, stop))
    worker.start()
    bus = None if baseline else connect(url, ServiceOptions(broker=url))
    actor = _dramatiq_actor(url, lambda seq: None) if baseline else None
    try:
        ready.wait(60)
        time.sleep(1)  # the worker's consumer is subscribed
        servers = [pid for pid in child_pids() if pid != worker.pid]
        server_cpu = sum(map(cpu_seconds, servers))
        started, producer_cpu = time.perf_counter(), time.process_time()
        if actor is not None:
            _produce_baseline(actor, count)
        elif bus is not None:
            _produce(bus, count, frame)
        producer_cpu = time.process_time() - producer_cpu
        deadline = time.monotonic() + TIMEOUT_S
        while done.value < count and time.monotonic() < deadline:
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        server_cpu = sum(map(cpu_seconds, servers)) - server_cpu
    finally:
        stop.set()
        worker.join(30)
        if bus is not None:
            bus.close()
    if done.value < count:
        raise SystemExit(f"{url}: only {done.value} of {count} messages came through")
    per_message = {"producer": producer_cpu, "worker": cpu.value, "server": server_cpu}
    return Run(count / elapsed, {name: seconds * 1000 / count for name, seconds in per_message.items()})


def _servers(stack: ExitStack, tmp: Path, names: tuple[str, ...]) -> dict[str, str]:
    starters = {
        "redis": lambda d: redis_server(d),
        "nats": lambda d: nats_server(d, free_port()),
        "nsq": lambda d: nsqd_server(d),
    }
    started = {}
    for name in names:
        folder = tmp / name
        folder.mkdir()
        url = stack.enter_context(starters[name](folder))
        started[name] = url[0] if isinstance(url, tuple) else url
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", help="broker URL (repeatable); default: start all three")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--tiny", type=int, default=TINY)
    args = parser.parse_args()
    frame = bytes(range(256)) * (FRAME_BYTES // 256)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ffbus-") as tmp:
        urls = {urlsplit(u).scheme: u for u in args.url} if args.url else _servers(stack, Path(tmp), BROKERS)
        redis_url = urls.get("redis") or _servers(stack, Path(tmp), ("redis",))["redis"]
        base = measure(redis_url, args.tiny, None, baseline=True)
        print(
            f"baseline=dramatiq-redis tiny_per_s={base.per_s:.0f} cpu_ms_per_tiny={base.cpu()} "
            f"tiny_ceiling_per_s={base.ceiling():.0f}",
            flush=True,
        )
        for name, url in urls.items():
            frames, tiny = measure(url, args.frames, frame), measure(url, args.tiny, None)
            print(
                f"broker={name} frames_per_s={frames.per_s:.0f} tiny_per_s={tiny.per_s:.0f} "
                f"frames_vs_baseline={frames.per_s / base.per_s:.2f} tiny_vs_baseline={tiny.per_s / base.per_s:.2f} "
                f"cpu_ms_per_frame={frames.cpu()} ceiling_per_s={frames.ceiling():.0f} "
                f"cpu_ms_per_tiny={tiny.cpu()} tiny_ceiling_per_s={tiny.ceiling():.0f}",
                flush=True,
            )
    print(
        f"frame={FRAME_BYTES} bytes, worker threads={WORKER_THREADS}, prefetch={PREFETCH}, "
        f"cpu: {cpu_model()}, cores={usable_cores()}"
    )


if __name__ == "__main__":
    main()
