"""JetStream plumbing for the NATS bus: names, publishing, errors and declaring streams."""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js.api import StreamConfig, StreamInfo
from nats.js.client import JetStreamContext

from ...errors import BusError
from ..base import NAMESPACE

if TYPE_CHECKING:
    from .link import NatsLink
    from .wire import Wire

log = logging.getLogger(__name__)
T = TypeVar("T")

CONSUMER = "workers"  # the one durable pull consumer of every work stream, shared by every worker process
STREAM_NAME_IN_USE = 10058  # JetStream error code: a stream of that name exists with another configuration

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


def publish_from_thread(wire: Wire, subject: str, data: bytes, headers: dict[str, str] | None = None) -> int:
    """A JetStream publish, acknowledged by the server, over the synchronous wire from the calling thread; the
    stream sequence."""
    try:
        reply = wire.request(subject, data, headers)
    except nats.errors.NoRespondersError as exc:
        raise nats.js.errors.NoStreamResponseError from exc
    return _stream_sequence(reply.data)


def _stream_sequence(pub_ack: bytes) -> int:
    """The sequence a JetStream publish acknowledgement gives, or its error raised."""
    ack = json.loads(pub_ack)
    if "error" in ack:
        raise nats.js.errors.APIError.from_error(ack["error"])
    return int(ack["seq"])
