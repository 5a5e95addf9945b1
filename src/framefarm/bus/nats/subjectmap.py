"""A JetStream stream used as a map from subject to its latest message, with compare-and-set updates.

The frame store (chunks.py) and the flow state (flow.py) live on plain streams used this way
(``max_msgs_per_subject=1``, what the KV API is built on), read with direct gets and written with
compare-and-set: a write carries ``Nats-Expected-Last-Subject-Sequence`` and the server refuses it if another
process wrote in between, so read-modify-write loops (refs, in-flight sets, seqs, counters) are atomic across
processes. Not the KV API: its keys may not hold ``:`` (frame keys do) and a KV delete leaves a marker for the
bucket's whole TTL (a day for file inputs); a subject purge leaves nothing. Not the object store: metadata,
chunks and a digest per object cost several round trips per frame.

Every request goes over the link's wire from the calling thread (an input's, a worker's): these are the
requests made for each frame, and through the loop each would cost two thread switches. Only declaring the
stream and listing its subjects (JetStream's management API, rare) go through the loop.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js.api import StorageType, StreamConfig

from ...errors import BusError
from .jetstream import TRANSIENT_ERRORS, ensure_stream, publish_from_thread, run_for_store
from .link import NatsLink
from .wire import Received

T = TypeVar("T")

EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071  # JetStream error code: the expected sequence did not match (another writer won)
MAX_CAS_ATTEMPTS = 100
MSG_TTL_SINCE = (2, 11)  # first nats-server with per-message TTL
NOT_FOUND = "404"


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """NATS failures as BusError (the runner retries those), for the frame store and the flow."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise BusError(f"NATS is unavailable: {exc!r}") from exc
    except nats.errors.Error as exc:
        raise BusError(f"NATS refused the request: {exc!r}") from exc


def sequence(msg: Received) -> int:
    """The stream sequence of a message read with a direct get."""
    return int(msg.headers.get("Nats-Sequence", 0))


class SubjectMap:
    """One JetStream stream used as a map from subject to its latest message, with compare-and-set updates.

    Raises nats-py's errors; callers translate them (``store_errors``)."""

    def __init__(self, link: NatsLink, name: str, prefix: str, *, max_age: float | None = None) -> None:
        self.link = link
        self.name = name
        self.prefix = prefix
        self.max_age = max_age
        self.msg_ttl = False  # the stream honours Nats-TTL headers
        self._ready = False
        self._cache: dict[str, tuple[bytes | None, int]] = {}  # subject -> (data, seq) this process last wrote

    def ensure(self) -> None:
        """Declare the stream once per process (on the loop: JetStream's management API)."""
        if not self._ready:
            self.msg_ttl = run_for_store(self.link, self._declare())
            self._ready = True

    async def _declare(self) -> bool:
        version = (await self.link.client()).connected_server_version
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
        return bool(info.config.allow_msg_ttl)

    @contextlib.contextmanager
    def _declared(self) -> Iterator[None]:
        """Declare the stream first; if the server says it is gone (a fresh store), declare it again next time."""
        self.ensure()
        try:
            yield
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            self._ready = False
            raise

    def get(self, subject: str) -> Received | None:
        """The latest message on ``subject``, None when there is none."""
        with self._declared():
            msg = self.link.wire.request(f"$JS.API.DIRECT.GET.{self.name}.{subject}", b"")
        if msg.status == NOT_FOUND:
            return None
        if msg.status:
            raise nats.js.errors.APIError(code=int(msg.status), description=msg.headers.get("Description"))
        return msg

    def put(self, subject: str, data: bytes, headers: dict[str, str] | None = None, expect: int | None = None) -> int:
        """Write ``data``; with ``expect``, only if the subject's latest sequence is still ``expect`` (0: none)."""
        if expect is not None:
            headers = {**(headers or {}), EXPECTED_SEQ: str(expect)}
        with self._declared():
            return publish_from_thread(self.link.wire, subject, data, headers)

    def update(
        self, subject: str, change: Callable[[bytes | None], tuple[bytes | None, T]], *, cached: bool = False
    ) -> T:
        """Apply ``change`` (old value -> new value or None for no write, result) atomically; retry on conflict.

        ``cached`` first tries the value this process wrote last, saving a read where it is the only writer.
        """
        known = self._cache.get(subject) if cached else None
        for _ in range(MAX_CAS_ATTEMPTS):
            fresh = known is None
            if known is None:
                msg = self.get(subject)
                known = (msg.data, sequence(msg)) if msg else (None, 0)
            new, result = change(known[0])
            if new is None and fresh:
                return result
            if new is None:  # decided on a cached value: only a write would have checked it, so look again
                known = None
                continue
            try:
                seq = self.put(subject, new, expect=known[1])
            except nats.js.errors.APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                known = None
                continue
            self._cache[subject] = (new, seq)
            return result
        raise BusError(f"{subject}: gave up after {MAX_CAS_ATTEMPTS} conflicting concurrent updates")

    def purge(self, subject_filter: str) -> None:
        request = json.dumps({"filter": subject_filter}).encode()
        with self._declared():
            reply = self.link.wire.request(f"$JS.API.STREAM.PURGE.{self.name}", request)
        error = json.loads(reply.data).get("error")
        if error:
            raise nats.js.errors.APIError.from_error(error)

    def subjects(self, subject_filter: str) -> list[str]:
        """The subjects that hold a message (JetStream's stream info: on the loop)."""
        self.ensure()
        return run_for_store(self.link, self._subjects(subject_filter))

    async def _subjects(self, subject_filter: str) -> list[str]:
        info = await (await self.link.jetstream()).stream_info(self.name, subjects_filter=subject_filter)
        return sorted(info.state.subjects or ())
