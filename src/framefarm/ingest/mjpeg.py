"""Input ``mjpeg``: an HTTP camera that streams JPEGs as ``multipart/x-mixed-replace`` (most cheap IP cameras,
ESP32-CAM, mjpg-streamer, ffmpeg's mpjpeg), read with httpx.

Each JPEG's bytes are the frame: nothing is decoded or encoded again unless its route needs a smaller
frame. User and password may be written in the URL, as for the other kinds; they are taken out of it and given to
httpx as basic or digest authentication, so no URL httpx logs or quotes in an error carries them.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2
import httpx
import numpy as np
from pydantic import ByteSize, Field

from ..config import registry
from ..config.registry import CheckContext
from ..config.urls import redact_text, redact_url
from ..config.yamlpos import Loc
from ..errors import BadInput, IncompleteFile, SourceUnavailable
from ..vision.codec import encode_frame, shrink
from ..vision.imageheader import read_header
from .live import Captured, LiveInput, LiveOptions, Session
from .multipart import MultipartReplace, boundary_of

DEFAULT_MAX_PART = 16 * 1024 * 1024
MULTIPART = "multipart/"
REFUSED = (401, 403)


class MjpegOptions(LiveOptions):
    name: Literal["mjpeg"] = Field(description="Read an MJPEG camera over HTTP (multipart/x-mixed-replace).")
    url: str = Field(
        pattern=r"^https?://",
        description="http(s)://[user:password@]host[:port]/path of the stream; percent-encode @ / : # ? % in the "
        "password.",
    )
    auth: Literal["auto", "basic", "digest"] = Field(
        "auto",
        description="How user and password are sent: auto answers the camera's challenge (basic or digest); basic "
        "sends them with the first request; digest answers a digest challenge only.",
    )
    verify: bool = Field(True, description="Check the server's TLS certificate (https); off only on a trusted network.")
    ca_file: Path | None = Field(None, description="A PEM file of the CAs to trust instead of the system's (https).")
    max_part: ByteSize = Field(
        DEFAULT_MAX_PART, ge=1024, description="The largest JPEG accepted; a larger part is skipped and counted."
    )


class ChallengeAuth(httpx.Auth):
    """Answer the server's 401 challenge with the scheme it asks for: digest, or else basic."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        response = yield request
        if response.status_code != 401:
            return
        if response.headers.get("www-authenticate", "").lower().startswith("digest"):
            yield from httpx.DigestAuth(self.user, self.password).auth_flow(request)
            return
        yield from httpx.BasicAuth(self.user, self.password).auth_flow(request)


@registry.inputs.register
class Mjpeg(LiveInput[MjpegOptions]):
    @classmethod
    def check(cls, options: MjpegOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        if options.ca_file is not None and not ctx.resolve(options.ca_file).is_file():
            yield ("ca_file",), f"{ctx.resolve(options.ca_file)} is not a file"

    @property
    def source(self) -> str:
        return redact_url(self.options.url)

    def _client(self) -> tuple[httpx.Client, str]:
        """An httpx client with this input's timeouts, TLS and authentication, and the URL without credentials."""
        parts = urlsplit(self.options.url)
        bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        auth: httpx.Auth | None = None
        if parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
            schemes = {"auto": ChallengeAuth, "basic": httpx.BasicAuth, "digest": httpx.DigestAuth}
            auth = schemes[self.options.auth](user, password)
        verify: bool | ssl.SSLContext = self.options.verify
        if self.options.ca_file is not None and verify:
            try:
                verify = ssl.create_default_context(cafile=str(self.ctx.resolve(self.options.ca_file)))
            except (OSError, ssl.SSLError) as exc:
                raise SourceUnavailable(f"{self.source}: ca_file: {exc}") from exc
        timeout = httpx.Timeout(self.options.read_timeout, connect=self.options.open_timeout)
        return httpx.Client(timeout=timeout, verify=verify, auth=auth, follow_redirects=True), bare

    def capture(self, session: Session) -> Iterator[Captured]:
        client, url = self._client()
        try:
            with client, client.stream("GET", url) as response:
                boundary = self._check(response)
                session.expect(True)
                yield from self._parts(response, boundary, session)
        except httpx.HTTPError as exc:
            raise SourceUnavailable(redact_text(f"{self.source}: {type(exc).__name__}: {exc}")) from None

    def _check(self, response: httpx.Response) -> bytes:
        """The stream's boundary; SourceUnavailable saying why when the answer is not an MJPEG stream."""
        status = f"{response.status_code} {response.reason_phrase}"
        if response.status_code in REFUSED:
            raise SourceUnavailable(f"{self.source}: refused, {status} (wrong user or password?)")
        if response.status_code >= 300:
            raise SourceUnavailable(f"{self.source}: {status}")
        content_type = response.headers.get("content-type", "")
        boundary = boundary_of(content_type) if content_type.lower().startswith(MULTIPART) else None
        if boundary is None:
            raise SourceUnavailable(f"{self.source}: not an MJPEG stream (Content-Type: {content_type or 'none'})")
        return boundary

    def _parts(self, response: httpx.Response, boundary: bytes, session: Session) -> Iterator[Captured]:
        parser = MultipartReplace(boundary, self.options.max_part)
        oversized = 0
        for chunk in response.iter_bytes():
            for part in parser.feed(chunk):
                yield Captured(part, time.time())
            if parser.oversized > oversized:
                oversized = parser.oversized
                self.ctx.log.warning("%s: a part over max_part (%d bytes) skipped", self.source, self.options.max_part)
            if session.stop.is_set():
                return

    def encode(self, captured: Captured) -> tuple[bytes, dict[str, Any]]:
        data: bytes = captured.item
        try:
            header = read_header(data)
        except IncompleteFile as exc:
            raise BadInput(str(exc)) from exc
        if header.format != "jpeg":
            raise BadInput(f"a part is {header.format}, not a JPEG")
        kwargs = {"fmt": "jpeg", "width": header.width, "height": header.height, "scale": 1.0}
        max_side = self.publisher.max_side
        if max_side is None or max(header.width, header.height) <= max_side:
            return data, kwargs
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise BadInput("a JPEG the decoder rejects")
        height, width = image.shape[:2]  # as displayed: the decoder applies an EXIF orientation, the header does not
        stored, scale = shrink(image, max_side)
        fmt = self.ctx.service.frame_format
        shown = {"fmt": fmt, "width": width, "height": height, "scale": scale}
        return encode_frame(stored, fmt, self.ctx.service.frames.quality), shown
