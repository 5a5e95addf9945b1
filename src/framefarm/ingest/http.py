"""Input ``http``: an upload server, or (with ``url``) a snapshot poller (see snapshot.py).

Server: apps, scripts and cameras ``POST /v1/frames`` images (a raw body or ``multipart/form-data`` with one or
many files) and get one frame id per image, or with ``?wait=true`` the results themselves once the detections are
ready; ``GET /v1/frames/{id}`` tells a frame's state (replies.py keeps the results).

An upload is a live input: when the stream already has ``max_in_flight`` frames in the pipeline the request is
answered ``503`` with ``Retry-After`` rather than held open, and the client sends it again. Each image is checked
(header, size, decode) before anything is published, so a request with a bad image publishes nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

import httpx
from pydantic import ByteSize, Field, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive

from ..bus.base import frame_key
from ..config import registry
from ..config.registry import CheckContext
from ..config.schema import InputOptions, TlsOptions
from ..config.types import Duration, Tag
from ..config.urls import redact_url
from ..config.yamlpos import Loc
from ..errors import BadInput, SourceUnavailable
from ..modules.context import ModuleContext
from ..web.server import BodyTooLarge, listen_field, problem, read_body, serve, tls_files, token_refusal
from .base import Input, StoredImage
from .folder import DEFAULT_MAX_PIXELS
from .images import check_image
from .replies import DONE, UNKNOWN, Replies, receiving, reply_queue
from .snapshot import Fetched, checked_image, client, fetch, refuse_private

DEFAULT_LISTEN = "127.0.0.1:8081"
DEFAULT_INTERVAL_S = 1.0
DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_MAX_FILES = 64
DEFAULT_RETRY_AFTER_S = 1
DEFAULT_WAIT_TIMEOUT_S = 30.0
DEFAULT_RESULT_TTL_S = 600.0
DEFAULT_MAX_RESULTS = 10_000
TRUE = ("1", "true", "yes")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")
MULTIPART = "multipart/form-data"
TAGS = TypeAdapter(Tag)


class HttpOptions(InputOptions):
    promised: ClassVar[bool] = True  # a 202 is a promise: the frame must outlive a backlog or a killed detector
    name: Literal["http"] = Field(description="Take images uploaded over HTTP(S): POST /v1/frames.")
    listen: str = listen_field(DEFAULT_LISTEN)
    token: str | None = Field(
        None, description="When set, every request but /healthz needs 'Authorization: Bearer <token>'."
    )
    max_body: ByteSize = Field(DEFAULT_MAX_BODY, ge=1024, description="The largest request body taken (413 above).")
    max_files: int = Field(DEFAULT_MAX_FILES, ge=1, description="The most images in one multipart request.")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, gt=0, description="Images with more pixels are refused (422), judged from the header."
    )
    retry_after: int = Field(
        DEFAULT_RETRY_AFTER_S, ge=1, description="Seconds a client is told to wait (Retry-After) when it gets 503."
    )
    tls: TlsOptions = Field(default_factory=TlsOptions, description="Certificate and key for HTTPS.")
    wait_timeout: Duration = Field(
        DEFAULT_WAIT_TIMEOUT_S, gt=0, description="How long ?wait=true waits for the results before answering 504."
    )
    result_ttl: Duration = Field(
        DEFAULT_RESULT_TTL_S, gt=0, description="How long GET /v1/frames/{id} knows a frame (pending, then done)."
    )
    max_results: int = Field(
        DEFAULT_MAX_RESULTS, ge=1, description="The most frames GET /v1/frames/{id} knows; the oldest go first."
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Poll this snapshot URL (http(s)://[user:password@]host/path) instead of listening.",
    )
    interval: Duration = Field(DEFAULT_INTERVAL_S, gt=0, description="Poll mode: time between two polls.")
    auth: Literal["auto", "basic", "digest"] = Field(
        "auto", description="Poll mode: how the URL's user and password are sent (auto answers the challenge)."
    )
    verify: bool = Field(True, description="Poll mode: check the server's TLS certificate (https).")
    ca_file: Path | None = Field(None, description="Poll mode: a PEM file of the CAs to trust instead of the system's.")
    open_timeout: Duration = Field(DEFAULT_OPEN_TIMEOUT_S, gt=0, description="Poll mode: connect timeout.")
    read_timeout: Duration = Field(DEFAULT_READ_TIMEOUT_S, gt=0, description="Poll mode: read timeout.")
    allow_private: bool = Field(
        False, description="Poll mode: allow a URL whose host is a loopback, link-local or private address."
    )


class Refused(Exception):
    """A request answered with an error: its status, message and headers."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None, **extra: object) -> None:
        super().__init__(error)
        self.status, self.error, self.headers, self.extra = status, error, headers, extra

    def response(self) -> JSONResponse:
        return problem(self.status, self.error, headers=self.headers, **self.extra)


@registry.inputs.register
class Http(Input[HttpOptions]):
    def __init__(self, ctx: ModuleContext[HttpOptions]) -> None:
        super().__init__(ctx)
        self.fetched = Fetched()  # poll mode: validators, last hash and failures, kept across reconnects
        self.publishing = threading.Lock()  # server mode: requests publish from several threads, one at a time
        self.replies = Replies(ttl=self.options.result_ttl, limit=self.options.max_results)
        self.receiving = contextlib.ExitStack()

    @classmethod
    def check(cls, options: HttpOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        yield from options.tls.problems(ctx.resolve)
        if options.max_results < options.max_files:
            yield ("max_results",), f"below max_files ({options.max_files}): one request's frames must all be kept"
        if options.wait_timeout > options.result_ttl:
            yield ("wait_timeout",), f"longer than result_ttl ({options.result_ttl:g}s), which keeps what it waits for"

    def setup(self) -> None:
        if self.options.url is None:
            stop_timeout = self.ctx.service.stop_timeout
            self.receiving.enter_context(
                receiving(self.ctx.bus, self.ctx.alias, self.replies, stop_timeout=stop_timeout)
            )

    def teardown(self) -> None:
        self.receiving.close()

    def read(self, stop: threading.Event) -> None:
        if self.options.url is not None:
            self.poll(self.options.url, stop)
            return
        cert, key = tls_files(self.options.tls, self.ctx.resolve)
        self.ctx.log.info("listening on %s (%s)", self.options.listen, self.options.tls.scheme)
        serve(self.app(stop), self.options.listen, stop, cert=cert, key=key)

    def poll(self, url: str, stop: threading.Event) -> None:
        """Poll ``url`` until ``stop``; a failure is reported (last error, failures in a row) and raised."""
        shown = redact_url(url)
        state = self.fetched
        try:
            if not self.options.allow_private:
                refuse_private(url)
            timeout = httpx.Timeout(self.options.read_timeout, connect=self.options.open_timeout)
            ca_file = self.ctx.resolve(self.options.ca_file) if self.options.ca_file else None
            http, bare = client(url, self.options.auth, self.options.verify, ca_file, timeout)
            with http:
                while not stop.is_set():
                    self.poll_once(http, bare, shown, state, stop)
                    stop.wait(self.options.interval)
        except SourceUnavailable as exc:
            state.failures, state.last_error = state.failures + 1, str(exc)
            self.report_poll(shown, state)
            raise

    def poll_once(self, http: httpx.Client, url: str, shown: str, state: Fetched, stop: threading.Event) -> None:
        data = fetch(http, url, shown, state, int(self.options.max_body))
        if state.failures:
            state.failures = 0
            self.report_poll(shown, state)
        if data is None:
            return
        checked = checked_image(data, self.options.max_pixels)
        if isinstance(checked, str):
            self.ctx.log.warning("%s: not published: %s", shown, checked)
            return
        self.publisher.publish_image(self.publisher.stored_image(checked), source=shown, stop=stop)

    def report_poll(self, shown: str, state: Fetched) -> None:
        error = f"{state.last_error} ({state.failures} failures in a row)" if state.failures else state.last_error
        fields = {"state": "failing" if state.failures else "polling", "since": time.time(), "source": shown}
        fields |= {"failures": state.failures, "last_error": error}
        self.ctx.bus.flow.report(self.ctx.alias, fields)

    def app(self, stop: threading.Event) -> Starlette:
        async def frames(request: Request) -> Response:
            try:
                return await self.upload(request, stop)
            except Refused as refused:
                return refused.response()

        async def healthz(request: Request) -> Response:
            try:
                await run_in_threadpool(self.ctx.bus.ping)
            except Exception as exc:  # any failure of the bus is "not healthy", said in the body
                return problem(503, f"the bus does not answer: {type(exc).__name__}")
            return JSONResponse({"status": "ok"})

        async def frame(request: Request) -> Response:
            if (refusal := token_refusal(request, self.options.token)) is not None:
                return refusal
            frame_id = request.path_params["frame_id"]
            state, result = self.replies.state(frame_id)
            if state == UNKNOWN:
                ttl = self.options.result_ttl
                return problem(404, f"no frame {frame_id} here (never accepted, or older than {ttl:g}s)", state=state)
            answer = {} if result is None else {"result": result} if state == DONE else result
            return JSONResponse({"id": frame_id, "state": state, **answer})

        routes = [
            Route("/v1/frames", frames, methods=["POST"]),
            Route("/v1/frames/{frame_id}", frame, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
        return Starlette(routes=routes)

    async def upload(self, request: Request, stop: threading.Event) -> Response:
        if (refusal := token_refusal(request, self.options.token)) is not None:
            return refusal
        tag = self.tag_of(request)
        body = await self.body(request)
        images = await self.images(request, body)
        checked = await run_in_threadpool(self.inspect, images, tag)
        source = request.query_params.get("source")
        ids: list[str] = []
        for (name, _), image in zip(images, checked, strict=True):
            ids.append(await run_in_threadpool(self.publish, image, name or source, tag, stop, ids))
        if request.query_params.get("wait", "").lower() not in TRUE:
            return JSONResponse({"ids": ids}, status_code=202)
        results = await self.replies.wait(ids, self.options.wait_timeout)
        if any(result is None for result in results):
            pending = [frame_id for frame_id, result in zip(ids, results, strict=True) if result is None]
            error = f"no result within wait_timeout ({self.options.wait_timeout:g}s); ask GET /v1/frames/{{id}} later"
            return problem(504, error, ids=ids, pending=pending, results=results)
        failed = [frame_id for frame_id, result in zip(ids, results, strict=True) if "error" in result]
        return JSONResponse({"ids": ids, "results": results, **({"failed": failed} if failed else {})})

    def tag_of(self, request: Request) -> str:
        tag = request.query_params.get("tag") or self.options.tag
        try:
            TAGS.validate_python(tag)
        except ValidationError:
            raise Refused(422, f"tag {tag!r}: only letters, digits, '_', '.' and '-'") from None
        if self.publisher.route(tag).refs == 0:
            raise Refused(422, f"no output takes frames tagged {tag!r}")
        return tag

    async def body(self, request: Request) -> bytes:
        """The whole body, 413 as soon as it is over ``max_body`` (by its Content-Length or as it arrives)."""
        try:
            return await read_body(request, int(self.options.max_body), "max_body")
        except BodyTooLarge as exc:
            raise Refused(413, str(exc)) from None

    async def images(self, request: Request, body: bytes) -> list[tuple[str | None, bytes]]:
        """(file name or None, bytes) of each image the request carries; 415 for another content type."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in IMAGE_TYPES:
            return [(None, body)]
        if content_type != MULTIPART:
            accepted = ", ".join((*IMAGE_TYPES, MULTIPART))
            raise Refused(415, f"content type {content_type or 'none'!r} is not taken (send one of {accepted})")
        return await self.parts(request, body)

    async def parts(self, request: Request, body: bytes) -> list[tuple[str | None, bytes]]:
        replay = Request(request.scope, receive=_replay(body))
        try:
            form = await replay.form(max_files=self.options.max_files, max_part_size=int(self.options.max_body))
        except Exception as exc:  # Starlette raises its HTTPException, or the parser its own errors
            raise Refused(422, f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise Refused(422, "the multipart body holds no file")
        return [(upload.filename, await upload.read()) for upload in files]

    def inspect(self, images: list[tuple[str | None, bytes]], tag: str) -> list[StoredImage]:
        """Each image checked and made ready to store (one decoded picture in memory at a time); 422 naming the
        first that is not a whole, decodable image."""
        checked = []
        for index, (name, data) in enumerate(images):
            try:
                checked.append(self.publisher.stored_image(check_image(data, self.options.max_pixels), tag))
            except BadInput as exc:
                raise Refused(422, f"{name or f'image {index}'}: {exc}") from None
        return checked

    def publish(
        self,
        image: StoredImage,
        source: str | None,
        tag: str,
        stop: threading.Event,
        accepted: list[str],
    ) -> str:
        """Publish one image and return its frame id; 503 (with the ids already accepted) when the stream is full.

        The frame's source is the file's name, else ``?source=``, else its id: results are named by it.
        """
        key = frame_key(self.ctx.alias)
        frame_id = key.rpartition(":")[2]
        self.replies.expect(frame_id)  # before its result can arrive
        published = False
        try:
            with self.publishing:
                published = self.publisher.publish_image(
                    image,
                    source=source or frame_id,
                    stop=stop,
                    key=key,
                    tag=tag,
                    reply=reply_queue(self.ctx.alias),
                )
        finally:
            if not published:  # dropped (the stream is full), or the bus failed
                self.replies.forget(frame_id)
        if not published:
            limit = self.options.max_in_flight
            raise Refused(
                503,
                f"{limit} frames (max_in_flight) are already in flight; send again later",
                {"Retry-After": str(self.options.retry_after)},
                accepted=list(accepted),
            )
        return frame_id


def _replay(body: bytes) -> Receive:
    """An ASGI ``receive`` that gives ``body`` once, so a body already read (and measured) can be parsed."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
