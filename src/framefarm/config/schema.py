"""The ``service`` section and the option bases every module kind extends."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .types import LISTEN_PATTERN, Alias, Duration, Tag, TagGlob

DEFAULT_FRAME_TTL_S = 30.0
DEFAULT_LOSSLESS_TTL_S = 86400.0
DEFAULT_HEARTBEAT_TIMEOUT_S = 15.0
DEFAULT_DRAIN_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 20.0
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_RECONNECT_INITIAL_S = 0.5
DEFAULT_RECONNECT_MAX_S = 30.0
DEFAULT_MAX_RETRIES = 8
DEFAULT_RETRY_MIN_S = 0.5
DEFAULT_RETRY_MAX_S = 30.0
NSQD_DEFAULT_MAX_MSG_SIZE = 1024 * 1024  # nsqd's --max-msg-size when it is not given
DEFAULT_MAX_INLINE_BYTES = 768 * 1024  # the rest of nsqd's 1 MiB is room for the message's other fields
INLINE_STORES = ("broker", "inline")  # with an nsq:// broker these put frames inside the messages


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FramesOptions(StrictModel):
    store: str = Field(
        "broker",
        pattern=r"^(broker|inline|rediss?://.+|unix://.+)$",
        description="Where frame bytes live: `broker` (the broker's own choice: Redis keys; on NATS inside the "
        "message when it fits, else a JetStream stream; on NSQ inside the message), `inline` (inside the message), "
        "or a redis:// URL.",
    )
    max_inline: int = Field(
        DEFAULT_MAX_INLINE_BYTES,
        ge=1024,
        description="Largest frame sent inline (bytes); keep it under the broker's message size limit.",
    )
    max_message: int = Field(
        NSQD_DEFAULT_MAX_MSG_SIZE,
        ge=1024,
        description="The broker's largest message (bytes): nsqd's --max-msg-size. `pipectl -t` checks that "
        "inline frames fit under it.",
    )
    ttl: Duration = Field(
        DEFAULT_FRAME_TTL_S, description="How long a frame of a live input is kept if nobody releases it."
    )
    lossless_ttl: Duration = Field(
        DEFAULT_LOSSLESS_TTL_S,
        description="How long a frame of a file input is kept if nobody releases it (no loss across restarts).",
    )
    format: Literal["auto", "jpeg", "png", "raw"] = Field(
        "auto",
        description="Encoding of decoded video frames in the store: raw = BGR pixels, no codec work, 3 bytes a "
        "pixel (fastest on one host, see bench/README.md); auto = raw, or jpeg where frames travel inside "
        "messages (NSQ). Image files are stored as they are.",
    )
    quality: int = Field(90, ge=1, le=100, description="JPEG quality for encoded frames.")
    max_side: int | None = Field(
        None,
        ge=32,
        description="Video inputs shrink decoded frames to at most this many pixels a side before storing them "
        "(less bus traffic); results are still reported in the original frame's pixels.",
    )

    @property
    def store_kind(self) -> str:
        """``broker``, ``inline`` or ``redis`` (any redis:// or unix:// URL): what a backend must support."""
        return self.store if self.store in INLINE_STORES else "redis"

    @property
    def inline(self) -> bool:
        """Frames go inside the messages when the broker keeps no payloads (NSQ) rather than in a Redis store."""
        return self.store in INLINE_STORES


LogLevel = Literal["debug", "info", "warning", "error"]


class TlsOptions(StrictModel):
    """HTTPS for a server that carries data (uploads, previews, events, the status page): both files, or neither."""

    cert: Path | None = Field(None, description="PEM certificate chain; with ``key``, the server speaks HTTPS.")
    key: Path | None = Field(None, description="PEM private key of ``cert``.")

    def problems(self, resolve: Callable[[Path], Path]) -> Iterator[tuple[tuple[str, ...], str]]:
        """(location under ``tls``, message) for one file without the other, a file that is not there, or a pair
        that does not load (the server would otherwise fail only when it starts, in its own thread)."""
        missing = (self.cert is None) != (self.key is None)
        if missing:
            yield ("tls",), "set both cert and key for HTTPS, or neither"
        for field, path in (("cert", self.cert), ("key", self.key)):
            if path is not None and not resolve(path).is_file():
                missing = True
                yield ("tls", field), f"{resolve(path)} is not a file"
        cert, key = self.files(resolve)
        if cert is None or key is None or missing:
            return
        try:  # an encrypted key is refused, not prompted for (the password callback gives nothing)
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            yield ("tls",), f"{cert} and {key} are not a PEM certificate chain and its unencrypted key: {exc}"

    def files(self, resolve: Callable[[Path], Path]) -> tuple[Path | None, Path | None]:
        """(cert, key) resolved, or (None, None) for plain HTTP."""
        return (resolve(self.cert), resolve(self.key)) if self.cert and self.key else (None, None)

    @property
    def scheme(self) -> str:
        return "https" if self.cert else "http"


class HttpOptions(StrictModel):
    """The master's web face: status page, /metrics, the Dramatiq dashboard, /healthz and /readyz."""

    enabled: bool = Field(True, description="Serve the web face (a process beside the modules).")
    listen: str = Field(
        "127.0.0.1:8080",
        pattern=LISTEN_PATTERN,
        description="host:port of the web face; 0.0.0.0 opens it to the network (set a token); port 0 takes a free "
        "one, which `pipectl status` shows.",
    )
    token: str | None = Field(
        None,
        min_length=8,
        description="When set, every page and endpoint wants it: an `Authorization: Bearer` header, or `?token=` on "
        "the page's URL once (a browser then keeps it in a cookie). Use ${VAR} to keep it out of the file.",
    )
    tls: TlsOptions = Field(default_factory=TlsOptions, description="Certificate and key for HTTPS.")


class ServiceOptions(StrictModel):
    broker: str | None = Field(
        None,
        description="redis://host:port/db, unix:///path.sock, nats://host:4222 or nsq://host:4150; "
        "left out = embedded Redis started by the master.",
    )
    frames: FramesOptions = Field(default_factory=FramesOptions, description="The frame store.")
    runtime_dir: Path = Field(
        Path("run"),
        description="supervisord.conf, sockets, pid files, logs and state; relative to the config file.",
    )
    persist: bool = Field(
        True,
        description="Embedded broker only: write every change to an append-only file (fsync every second) and "
        "load it at start, so that `-s stop` and a crash or kill of the broker lose nothing. Off: nothing is kept "
        "on disk, and a broker restart loses what was queued. A reload keeps the running broker's setting; it "
        "changes at the next start.",
    )
    heartbeat_timeout: Duration = Field(
        DEFAULT_HEARTBEAT_TIMEOUT_S,
        description="A worker silent this long is dead; its unacknowledged messages are redelivered.",
    )
    drain_timeout: Duration = Field(
        DEFAULT_DRAIN_TIMEOUT_S, description="`-s quit` waits at most this long for queued frames to finish."
    )
    stop_timeout: Duration = Field(
        DEFAULT_STOP_TIMEOUT_S,
        description="A module gets this long to exit after SIGTERM before it is killed.",
    )
    log_level: LogLevel = Field("info", description="Log level of modules (a module's own `log_level` wins).")
    log_format: Literal["text", "json"] = Field(
        "text", description="Module log lines as text, or as one JSON object a line (for log shippers)."
    )
    http: HttpOptions = Field(default_factory=HttpOptions, description="The master's web face.")

    @property
    def inline_frames(self) -> bool:
        """Frames always travel inside the messages: ``frames.store: inline`` on any broker, or the broker's own
        store on NSQ (nsqd keeps no payloads). NATS's own store takes frames inline only when they fit."""
        return self.frames.store == "inline" or ((self.broker or "").startswith("nsq://") and self.frames.inline)

    @property
    def frame_format(self) -> str:
        """``frames.format`` with ``auto`` decided: JPEG where frames travel inline, else raw pixels."""
        if self.frames.format != "auto":
            return self.frames.format
        return "jpeg" if self.inline_frames else "raw"


class ReconnectOptions(StrictModel):
    """How an input retries a source that failed: exponential backoff with jitter, reset by a published frame."""

    initial: Duration = Field(DEFAULT_RECONNECT_INITIAL_S, gt=0, description="First delay after a failure.")
    max: Duration = Field(DEFAULT_RECONNECT_MAX_S, gt=0, description="Longest delay between two attempts.")


class RetryOptions(StrictModel):
    """How a stage retries a frame whose work failed with a retryable error (receiver down, timeout, 5xx)."""

    max_retries: int = Field(
        DEFAULT_MAX_RETRIES,
        ge=0,
        description="Retries before the frame goes to the dead letters (kept 7 days, counted as `dead`).",
    )
    min_backoff: Duration = Field(DEFAULT_RETRY_MIN_S, description="Delay before the first retry.")
    max_backoff: Duration = Field(DEFAULT_RETRY_MAX_S, description="Longest delay between two retries.")


class ModuleOptions(StrictModel):
    """Options every module kind has. A kind subclasses a section base and adds ``name: Literal[...]``."""

    section: ClassVar[str]
    name: str = Field(description="The module kind.")
    alias: Alias | None = Field(None, description="Instance id, names the process; default kind.N.")
    log_level: LogLevel | None = Field(None, description="This module's log level; default: service.log_level.")


class InputOptions(ModuleOptions):
    section: ClassVar[str] = "inputs"
    lossless: ClassVar[bool] = False
    #: Frames it accepted were promised a result (an upload answered 202): kept as long as a lossless input's.
    promised: ClassVar[bool] = False
    tag: Tag = Field(description="Tag of every frame this input produces; processors and outputs match it.")
    max_in_flight: int = Field(
        DEFAULT_MAX_IN_FLIGHT,
        ge=1,
        description="Frames of this input in the pipeline at once; past it live inputs drop, file inputs wait.",
    )
    max_age: Duration | None = Field(
        None, description="Frames older than this are skipped (and counted) instead of processed."
    )
    reconnect: ReconnectOptions = Field(
        default_factory=ReconnectOptions, description="Backoff between attempts when the source fails."
    )


class StageOptions(ModuleOptions):
    """Options of modules fed by a queue: processors and outputs."""

    match: TagGlob = Field("*", description="Glob on tags (fluent-bit Match) of the frames to take.")
    threads: int | None = Field(2, ge=1, le=512, description="Worker threads per process.")
    retry: RetryOptions = Field(
        default_factory=RetryOptions, description="Retries of a frame whose work failed with a retryable error."
    )

    @property
    def worker_threads(self) -> int:
        return self.threads or 1


class ProcessorOptions(StageOptions):
    section: ClassVar[str] = "processors"
    workers: int = Field(1, ge=1, le=64, description="Worker processes.")


class OutputOptions(StageOptions):
    section: ClassVar[str] = "outputs"
