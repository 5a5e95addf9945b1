"""Frames per second through each bus: store + message + fetch + ack, one producer and one worker process.

    python bench/bus.py                      # starts redis-server, nats-server and nsqd itself
    python bench/bus.py --url redis://127.0.0.1:6379/0 --url nats://127.0.0.1:4222
    python bench/bus.py --rounds 3           # everything three times, interleaved; medians
    python bench/bus.py --gogc 400           # the Go servers (nats-server, nsqd) collect garbage less often

For each broker, two figures: 100 KB frames (put into the frame store, message sent; the worker fetches
the frame, releases it and acks) and tiny messages (message only). First the baseline, measured in the same
run on the same Redis: Dramatiq's own RedisBroker and Worker with the same threads, prefetch and poll
period, nothing of framefarm; for frames the producer SETs a 100 KB key before sending its name and the
actor GETs and DELs it, for tiny messages the actor only counts. Then one line per broker, with its rates
as ratios of the baseline's, then the machine:

    baseline=dramatiq-redis frames_per_s=... tiny_per_s=... cpu_ms_per_frame=... ceiling_per_s=...
    cpu_ms_per_tiny=... tiny_ceiling_per_s=...
    broker=... frames_vs_dramatiq=... tiny_vs_dramatiq=... frames_per_s=... tiny_per_s=...
    cpu_ms_per_frame=producer:P,worker:W,server:S ceiling_per_s=C cpu_ms_per_tiny=... tiny_ceiling_per_s=...

The CPU each process spent per message shows what limits the rate: the worker (one Python process, so at
most one core of Python), or all three together against the machine's cores (a ceiling is the lower of
cores / total and 1 / the busiest process). Server CPU is counted for the servers the benchmark started
itself (none with --url). A round measures every frame run (baseline and brokers back to back), then every tiny
run, every other round in reverse order. With ``--rounds N`` each figure is the median over N rounds and each
ratio the median of the rounds' own ratios: on a machine shared with other work, load that comes and goes
then weighs on a broker and its baseline alike.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from machine import child_pids, cpu_model, cpu_seconds, usable_cores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from framefarm.bus import connect
from framefarm.bus.base import Bus
from framefarm.bus.worker import WORKER_TIMEOUT_MS, serve_queue
from framefarm.config.schema import ServiceOptions
from framefarm.message import FrameMessage

from peers import free_port, nats_server, nsqd_server, redis_server

FRAME_BYTES = 100 * 1024
FRAME_TTL_S = 120
FRAMES = 3000
TINY = 5000
WORKER_THREADS = 8
PREFETCH = 128  # messages a worker fetches ahead: fewer, larger fetches
QUEUE = "bench"
TIMEOUT_S = 300
BROKERS = ("redis", "nats", "nsq")
BASELINE = "dramatiq-redis"


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
    """The baseline's consumer: Dramatiq's RedisBroker and Worker as shipped; its actor GETs and DELs the key
    a message names (a frame), or only counts (a tiny message).

    Same idle poll period as framefarm's workers: Dramatiq's default (1 s) would leave an idle consumer
    asleep for up to a second after the first send, which is a third of a run.
    """
    count, client = _Count(done, cpu), redis.Redis.from_url(url)

    def tick(key: str | None) -> None:
        if key is not None:
            client.get(key)
            client.delete(key)
        count()

    actor = _dramatiq_actor(url, tick)
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


def _produce_baseline(url: str, actor: dramatiq.Actor, count: int, frame: bytes | None) -> None:
    client = redis.Redis.from_url(url)
    for seq in range(count):
        if frame is None:
            actor.send(None)
            continue
        key = f"bench:frame:{seq}"
        client.set(key, frame, px=FRAME_TTL_S * 1000)
        actor.send(key)


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

    ``baseline``: through Dramatiq's own RedisBroker and a Redis key per frame instead of framefarm's bus.
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
            _produce_baseline(url, actor, count, frame)
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


class Rates(NamedTuple):
    frames: Run
    tiny: Run


def _median(runs: list[Run]) -> Run:
    """Each figure's median over the rounds."""
    cpu = {name: statistics.median(run.cpu_ms[name] for run in runs) for name in runs[0].cpu_ms}
    return Run(statistics.median(run.per_s for run in runs), cpu)


def _round(
    urls: dict[str, str], redis_url: str, args: argparse.Namespace, frame: bytes, index: int
) -> dict[str, Rates]:
    """The baseline's rates and every broker's, measured once: all the frame runs, then all the tiny ones, so that
    each broker is measured close in time to its baseline; every other round in reverse order, so that load that
    grows or fades during a round weighs on both sides alike."""
    order = [(BASELINE, redis_url), *urls.items()]
    if index % 2:
        order.reverse()
    runs = {}
    for count, payload in ((args.frames, frame), (args.tiny, None)):
        for name, url in order:
            runs[name, payload is None] = measure(url, count, payload, baseline=name == BASELINE)
    return {name: Rates(runs[name, False], runs[name, True]) for name, _ in order}


def _ratios(rounds: list[dict[str, Rates]], name: str) -> str:
    """``name``'s rates over the baseline's: the median of each round's ratio."""
    frames = statistics.median(r[name].frames.per_s / r[BASELINE].frames.per_s for r in rounds)
    tiny = statistics.median(r[name].tiny.per_s / r[BASELINE].tiny.per_s for r in rounds)
    return f"frames_vs_dramatiq={frames:.2f} tiny_vs_dramatiq={tiny:.2f}"


def _rates(frames: Run, tiny: Run) -> str:
    """A line's figures: rates, CPU per message and the ceilings it allows."""
    return (
        f"frames_per_s={frames.per_s:.0f} tiny_per_s={tiny.per_s:.0f} cpu_ms_per_frame={frames.cpu()} "
        f"ceiling_per_s={frames.ceiling():.0f} cpu_ms_per_tiny={tiny.cpu()} tiny_ceiling_per_s={tiny.ceiling():.0f}"
    )


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
    parser.add_argument("--rounds", type=int, default=1, help="measure everything this many times; print medians")
    parser.add_argument(
        "--gogc", type=int, help="GOGC for the Go servers the bench starts (nats-server, nsqd); default: Go's own (100)"
    )
    args = parser.parse_args()
    if args.gogc is not None:
        os.environ["GOGC"] = str(args.gogc)  # inherited by the servers started below
    frame = bytes(range(256)) * (FRAME_BYTES // 256)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ffbus-") as tmp:
        urls = {urlsplit(u).scheme: u for u in args.url} if args.url else _servers(stack, Path(tmp), BROKERS)
        redis_url = urls.get("redis") or _servers(stack, Path(tmp), ("redis",))["redis"]
        rounds = [_round(urls, redis_url, args, frame, index) for index in range(args.rounds)]
    for name in [BASELINE, *urls]:
        frames, tiny = (_median([r[name][i] for r in rounds]) for i in range(2))
        label = f"baseline={name}" if name == BASELINE else f"broker={name} {_ratios(rounds, name)}"
        print(f"{label} {_rates(frames, tiny)}", flush=True)
    print(
        f"frame={FRAME_BYTES} bytes, worker threads={WORKER_THREADS}, prefetch={PREFETCH}, rounds={args.rounds}, "
        f"GOGC={os.environ.get('GOGC', 'default')}, cpu: {cpu_model()}, cores={usable_cores()}"
    )


if __name__ == "__main__":
    main()
