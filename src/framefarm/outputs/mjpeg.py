"""Output ``mjpeg``: a live preview for browsers, ``/{tag}.mjpg`` (multipart/x-mixed-replace) and ``/{tag}.jpg``.

Each frame that reaches the output becomes one JPEG (annotated by default, no larger than ``max_side``) that
replaces its tag's previous one; nothing else is kept. Every client is sent the newest JPEG whenever it is ready
for one: a slow client skips frames and waits on its own connection's flow control, so it holds up neither the
pipeline nor any other client, and it costs one frame of memory. Served by the same HTTP stack as the ``http``
input (framefarm/web), on 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..config import registry
from ..config.registry import CheckContext
from ..config.schema import OutputOptions, TlsOptions
from ..config.yamlpos import Loc
from ..message import FrameMessage
from ..vision.picture import snapshot_jpeg
from ..web.server import bind, listen_field, problem, serve_socket, tls_files, token_refusal
from .base import Output

DEFAULT_LISTEN = "127.0.0.1:8090"
DEFAULT_MAX_SIDE = 1280
BOUNDARY = "framefarm-frame"
NO_CACHE = {"Cache-Control": "no-store"}


class MjpegOutputOptions(OutputOptions):
    name: Literal["mjpeg"] = Field(description="Serve a live MJPEG preview of each tag to browsers.")
    listen: str = listen_field(DEFAULT_LISTEN)
    token: str | None = Field(
        None, description="When set, clients need 'Authorization: Bearer <token>' or '?token=<token>'."
    )
    tls: TlsOptions = Field(default_factory=TlsOptions, description="Certificate and key for HTTPS.")
    annotated: bool = Field(True, description="Draw the boxes, class names and confidences.")
    max_side: int = Field(DEFAULT_MAX_SIDE, ge=16, description="The preview's longer side at most.")


@dataclass
class Latest:
    """A tag's newest JPEG and how many it has had."""

    jpeg: bytes
    version: int


@registry.outputs.register
class MjpegOutput(Output[MjpegOutputOptions]):
    @classmethod
    def check(cls, options: MjpegOutputOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        yield from options.tls.problems(ctx.resolve)

    @classmethod
    def frame_side(cls, options: MjpegOutputOptions, ctx: CheckContext) -> int | None:
        return options.max_side

    def setup(self) -> None:
        self.latest: dict[str, Latest] = {}
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, known once a client came
        self.waiting: dict[str, asyncio.Event] = {}  # tag -> what its clients wait on (used on the loop only)
        self.stopping = threading.Event()
        sock = bind(self.options.listen)  # an address in use fails the setup, and the process is restarted
        cert, key = tls_files(self.options.tls, self.ctx.resolve)
        serving = functools.partial(serve_socket, self.app(), sock, self.stopping, cert=cert, key=key)
        self.server = threading.Thread(target=serving, name="mjpeg-server", daemon=True)
        self.server.start()
        self.ctx.log.info("serving previews on %s://%s/{tag}.mjpg", self.options.tls.scheme, self.options.listen)

    def teardown(self) -> None:
        self.stopping.set()
        self.server.join()

    def deliver(self, message: FrameMessage) -> None:
        jpeg = snapshot_jpeg(
            self.ctx.bus.frames.fetch(message),
            message,
            annotated=self.options.annotated,
            max_side=self.options.max_side,
        )
        with self.lock:
            previous = self.latest.get(message.stream)
            self.latest[message.stream] = Latest(jpeg, previous.version + 1 if previous else 1)
            loop = self.loop
        if loop is not None:
            loop.call_soon_threadsafe(self.wake, message.stream)

    def wake(self, tag: str) -> None:
        """On the server's loop: the tag has a new JPEG for whoever waits."""
        event = self.waiting.pop(tag, None)
        if event is not None:
            event.set()

    def newest(self, tag: str) -> Latest | None:
        with self.lock:
            self.loop = self.loop or asyncio.get_running_loop()
            return self.latest.get(tag)

    def app(self) -> Starlette:
        async def stream(request: Request) -> Response:
            if (refusal := token_refusal(request, self.options.token, in_query=True)) is not None:
                return refusal
            media_type = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            return StreamingResponse(self.frames(request.path_params["tag"]), media_type=media_type, headers=NO_CACHE)

        async def still(request: Request) -> Response:
            if (refusal := token_refusal(request, self.options.token, in_query=True)) is not None:
                return refusal
            latest = self.newest(request.path_params["tag"])
            if latest is None:
                return problem(404, f"no frame of {request.path_params['tag']} yet")
            return Response(latest.jpeg, media_type="image/jpeg", headers=NO_CACHE)

        return Starlette(routes=[Route("/{tag}.mjpg", stream), Route("/{tag}.jpg", still)])

    async def frames(self, tag: str) -> AsyncIterator[bytes]:
        """The tag's newest JPEG each time there is a new one and the client has taken the one before."""
        seen = 0
        while True:
            latest = self.newest(tag)
            if latest is None or latest.version == seen:
                await self.waiting.setdefault(tag, asyncio.Event()).wait()
                continue
            seen = latest.version
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(latest.jpeg)}\r\n\r\n"
            yield head.encode() + latest.jpeg + b"\r\n"  # resumes once the connection took it (flow control)
