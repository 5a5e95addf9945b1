"""Run one module in a thread on the in-memory bus, read what it queued, and make the files it takes."""

from __future__ import annotations

import itertools
import logging
import ssl
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import dramatiq
import numpy as np
import trustme

from framefarm.bus import connect
from framefarm.bus.base import Bus
from framefarm.bus.memory import MemoryBus
from framefarm.config.routing import Routes, Stage
from framefarm.config.schema import ServiceOptions, StageOptions
from framefarm.ingest.base import Input
from framefarm.message import FrameMessage
from framefarm.modules.base import Module
from framefarm.modules.context import ModuleContext

QUEUE = "sink"
STOP_TIMEOUT_S = 10.0


def write_video(
    path: Path,
    frames: int = 24,
    fps: int = 12,
    rotation: float | None = None,
    hflip: bool = False,
    noise: bool = False,
    faststart: bool = False,
) -> None:
    """An H.264 clip whose frame i is filled with grey level 8*i, so decoded frames can be told apart.

    The top-left 16x8 corner is white, so a test can see where a display rotation put it; ``rotation``
    (counter-clockwise degrees) and ``hflip`` set the display matrix, as a phone held upright does. ``noise``
    fills frames with random pixels instead (big frames, so a cut file ends mid-frame); ``faststart`` puts the
    MP4 index first, so that a cut file still opens.
    """
    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        if rotation is not None or hflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip)
        for i in range(frames):
            image = rng.integers(0, 255, (96, 160, 3), np.uint8) if noise else np.full((96, 160, 3), 8 * i, np.uint8)
            image[:8, :16] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode())


def png_of_size(width: int, height: int) -> bytes:
    """A valid black 1-bit PNG, tiny on disk whatever its size (what a decompression bomb looks like)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)
    idat = b"".join(packer.compress(row * min(1000, height - y)) for y in range(0, height, 1000)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def memory_url() -> str:
    """A fresh in-memory bus; inputs made with the same URL share its queues, frames and flow state."""
    return f"memory://{uuid.uuid4().hex}"


def make_input(
    kind: type[Input],
    tmp_path: Path,
    bus_url: str,
    service: ServiceOptions | None = None,
    alias: str = "uploads",
    routes: Routes | None = None,
    **options: object,
) -> Input:
    service = service or ServiceOptions(runtime_dir=tmp_path / "run")
    (tmp_path / "in").mkdir(exist_ok=True)
    raw = {"name": kind.kind_name(), "alias": alias, "tag": "t", "path": "in", "settle": 0.2, **options}
    ctx = ModuleContext(
        alias=alias,
        options=kind.Options.model_validate(raw),
        service=service,
        routes=routes or Routes(processors=(), outputs=(Stage(QUEUE, "*"),)),
        bus=connect(bus_url, service),
        base_dir=tmp_path,
        runtime_dir=tmp_path / "run",
        log=logging.getLogger("test"),
    )
    return kind(ctx)


@contextmanager
def running(module: Module) -> Iterator[None]:
    """Run ``module`` (setup, run, teardown) in a thread; on leaving, stop it, and fail if it did not stop in time
    or had crashed.

    A module whose ``run`` raised would have been restarted by supervisord: for a test that is a failure, and
    one that would otherwise go unseen, as the thread just ends.
    """
    stop = threading.Event()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            module.serve(stop)
        except BaseException as exc:
            crashed.append(exc)
            raise

    thread = threading.Thread(target=run, name=f"module {module.ctx.alias}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(STOP_TIMEOUT_S)
    assert not thread.is_alive(), f"{module.ctx.alias} did not stop within {STOP_TIMEOUT_S}s (blocked?)"
    assert not crashed, f"{module.ctx.alias} crashed: {crashed[0]!r}"


def stage_context(bus_url: str, tmp_path: Path, options: StageOptions) -> ModuleContext:
    """A context for a stage (processor or output) on the bus at ``bus_url``, fed by its own queue."""
    service = ServiceOptions(runtime_dir=tmp_path)
    return ModuleContext(
        alias=str(options.alias),
        options=options,
        service=service,
        routes=Routes(processors=(), outputs=(Stage(str(options.alias), "*"),)),
        bus=connect(bus_url, service),
        base_dir=tmp_path,
        runtime_dir=tmp_path,
        log=logging.getLogger(str(options.alias)),
    )


def queued(bus: Bus, queue: str = QUEUE) -> list[FrameMessage]:
    """Messages waiting in ``queue`` (the sink), oldest first (read without consuming)."""
    assert isinstance(bus, MemoryBus)
    waiting = bus.broker.queues.get(queue)
    encoded = list(waiting.queue) if waiting is not None else []
    return [FrameMessage.model_validate(dramatiq.Message.decode(data).args[0]) for data in encoded]


@contextmanager
def repeating(send: Callable[[int], None], every: float) -> Iterator[None]:
    """Call ``send(0)``, ``send(1)``... every ``every`` seconds in a thread until the block ends (a live camera)."""
    done = threading.Event()

    def loop() -> None:
        for seq in itertools.count():
            if done.wait(every):
                return
            send(seq)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def server_certificate(folder: Path) -> tuple[dict[str, str], ssl.SSLContext]:
    """A certificate for 127.0.0.1 from a CA made here, written to ``folder`` as server.pem and server.key: (the
    ``tls`` option naming them relative to ``folder``, the pipeline's folder; a client context that trusts the CA)."""
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    cert.private_key_pem.write_to_path(str(folder / "server.key"))
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    return {"cert": "server.pem", "key": "server.key"}, trusted
