"""JetStream plumbing for the NATS bus: names, publishing, errors, and streams used as maps.

The frame store (frames.py) and the flow state (flow.py) live on plain streams used as maps from subject to
latest message (``max_msgs_per_subject=1``, what the KV API is built on), read with direct gets and written
with compare-and-set: a write carries ``Nats-Expected-Last-Subject-Sequence`` and the server refuses it if
another process wrote in between, so read-modify-write loops (refs, in-flight sets, seqs, counters) are atomic
across processes. Not the KV API: its keys may not hold ``:`` (frame keys do) and a KV delete leaves a marker
for the bucket's whole TTL (a day for file inputs); a subject purge leaves nothing. Not the object store:
metadata, chunks and a digest per object cost several round trips per frame. A frame up to the max payload (1
MiB) is one message; a larger one is split into chunks on sibling subjects. Expiry: the stream's ``max_age``
is the larger of ``frames.ttl`` and ``frames.lossless_ttl``; each frame also carries its own deadline, checked
by ``get``, and on servers 2.11+ a ``Nats-TTL`` header so its storage is reclaimed at that deadline too.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig, StreamInfo
from nats.js.client import JetStreamContext

from ...errors import BusError
from ..base import NAMESPACE

if TYPE_CHECKING:
    from .link import NatsLink

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071  # JetStream error code: the expected sequence did not match (another writer won)
STREAM_NAME_IN_USE = 10058  # JetStream error code: a stream of that name exists with another configuration
MAX_CAS_ATTEMPTS = 100
MSG_TTL_SINCE = (2, 11)  # first nats-server with per-message TTL

#: nats-py errors that mean "the server is not reachable now, try again".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    ConnectionError,
    TimeoutError,
)

_SAFE = frozenset(string.ascii_letters + string.digits + "-")


def token(name: str) -> str:
    """``name`` as one subject token that is also valid in a stream name: other characters become ``_xx``."""
    return "".join(c if c in _SAFE else "".join(f"_{b:02x}" for b in c.encode()) for c in name)


def untoken(tok: str) -> str:
    return re.sub(rb"_([0-9a-f]{2})", lambda m: bytes.fromhex(m[1].decode()), tok.encode()).decode()


def stream_name(queue_name: str, kind: str = "q") -> str:
    """The stream of a Dramatiq queue (``kind`` q) or of its dead letters (``kind`` xq)."""
    return f"{NAMESPACE}-{kind}-{token(queue_name)}"


def subject_name(queue_name: str, kind: str = "q") -> str:
    return f"{NAMESPACE}.{kind}.{token(queue_name)}"


def run_for_store(link: NatsLink, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the link's loop; NATS failures become BusError (the runner retries those)."""
    try:
        return link.call(coro)
    except TRANSIENT_ERRORS as exc:
        raise BusError(f"NATS is unavailable: {exc!r}") from exc
    except nats.errors.Error as exc:
        raise BusError(f"NATS refused the request: {exc!r}") from exc


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    """Create the stream, or bring an existing one to ``config``; keep it as it is when that is not allowed."""
    try:
        return await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != STREAM_NAME_IN_USE:
            raise
    try:
        return await js.update_stream(config)
    except nats.js.errors.BadRequestError as exc:
        log.warning("stream %s keeps its existing configuration: %s", config.name, exc)
        return await js.stream_info(config.name)


async def publish(link: NatsLink, subject: str, data: bytes, headers: dict[str, str] | None = None) -> int:
    """A JetStream publish, acknowledged by the server; the stream sequence. Lighter than nats-py's."""
    nc = await link.client()
    try:
        reply = await nc.request(subject, data, timeout=link.timeout, headers=headers)
    except nats.errors.NoRespondersError as exc:  # no stream takes the subject
        raise nats.js.errors.NoStreamResponseError from exc
    ack = json.loads(reply.data)
    if "error" in ack:
        raise nats.js.errors.APIError.from_error(ack["error"])
    return int(ack["seq"])


def sequence(msg: Msg) -> int:
    return int(msg.headers["Nats-Sequence"]) if msg.headers else 0


class SubjectMap:
    """One JetStream stream used as a map from subject to its latest message, with compare-and-set updates."""

    def __init__(self, link: NatsLink, name: str, prefix: str, *, max_age: float | None = None) -> None:
        self.link = link
        self.name = name
        self.prefix = prefix
        self.max_age = max_age
        self.msg_ttl = False  # the stream honours Nats-TTL headers
        self._ready = False
        self._cache: dict[str, tuple[bytes | None, int]] = {}  # subject -> (data, seq) this process last saw

    async def ensure(self) -> None:
        if self._ready:
            return
        nc = await self.link.client()
        version = nc.connected_server_version
        config = StreamConfig(
            name=self.name,
            subjects=[self.prefix + ".>"],
            max_msgs_per_subject=1,
            max_age=self.max_age,
            storage=StorageType.FILE,
            allow_direct=True,
            allow_msg_ttl=True if (version.major, version.minor) >= MSG_TTL_SINCE else None,
        )
        info = await ensure_stream(await self.link.jetstream(), config)
        self.msg_ttl = bool(info.config.allow_msg_ttl)
        self._ready = True

    async def get(self, subject: str) -> Msg | None:
        """The latest message on ``subject``, None when there is none."""
        await self.ensure()
        nc = await self.link.client()
        try:
            msg = await nc.request(f"$JS.API.DIRECT.GET.{self.name}.{subject}", b"", timeout=self.link.timeout)
        except nats.errors.NoRespondersError:
            self._ready = False  # the stream is gone (a server with a fresh store): declare it again next time
            raise
        status = msg.headers.get("Status") if msg.headers else None
        if status == "404":
            return None
        if status:
            raise nats.js.errors.APIError.from_msg(msg)
        return msg

    async def put(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None, expect: int | None = None
    ) -> int:
        """Write ``data``; with ``expect``, only if the subject's latest sequence is still ``expect`` (0: none)."""
        await self.ensure()
        if expect is not None:
            headers = {**(headers or {}), EXPECTED_SEQ: str(expect)}
        try:
            return await publish(self.link, subject, data, headers)
        except nats.js.errors.NoStreamResponseError:
            self._ready = False
            raise

    async def update(
        self, subject: str, change: Callable[[bytes | None], tuple[bytes | None, T]], *, cached: bool = False
    ) -> T:
        """Apply ``change`` (old value -> new value or None for no write, result) atomically; retry on conflict.

        ``cached`` first tries the value this process wrote last, saving a read where it is the only writer.
        """
        known = self._cache.get(subject) if cached else None
        for _ in range(MAX_CAS_ATTEMPTS):
            fresh = known is None
            if fresh:
                msg = await self.get(subject)
                known = (msg.data, sequence(msg)) if msg else (None, 0)
            new, result = change(known[0])
            if new is None and fresh:
                return result
            if new is None:  # decided on a cached value: only a write would have checked it, so look again
                known = None
                continue
            try:
                seq = await self.put(subject, new, expect=known[1])
            except nats.js.errors.APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                known = None
                continue
            self._cache[subject] = (new, seq)
            return result
        raise BusError(f"{subject}: gave up after {MAX_CAS_ATTEMPTS} conflicting concurrent updates")

    async def purge(self, subject_filter: str) -> None:
        await self.ensure()
        nc = await self.link.client()
        request = json.dumps({"filter": subject_filter}).encode()
        reply = await nc.request(f"$JS.API.STREAM.PURGE.{self.name}", request, timeout=self.link.timeout)
        error = json.loads(reply.data).get("error")
        if error:
            raise nats.js.errors.APIError.from_error(error)

    async def subjects(self, subject_filter: str) -> list[str]:
        await self.ensure()
        info = await (await self.link.jetstream()).stream_info(self.name, subjects_filter=subject_filter)
        return sorted(info.state.subjects or ())
