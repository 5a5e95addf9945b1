"""One NATS connection per process, driven by an asyncio loop in a daemon thread, for JetStream's management API.

Beside it, ``wire``: plain-socket connections for everything done per message (publishing, consuming and
acking, reading and writing frames and flow state), which through the loop would cost two thread switches
each (wire.py). The loop keeps the rare calls nats-py's JetStream API serves well: declaring streams and
consumers, their counts and subjects, purges of whole streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats.errors
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from .wire import Wire

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_REQUEST_TIMEOUT_S = 5.0  # one request to the server
DEFAULT_CALL_TIMEOUT_S = 30.0  # one call from a thread: several requests, or a connect
DEFAULT_RECONNECT_WAIT_S = 0.5
CONNECT_TIMEOUT_S = 2.0  # one attempt; a first connect tries until the call timeout
PING_INTERVAL_S = 5.0  # with MAX_OUTSTANDING_PINGS, a dead connection is noticed within about 15 s
MAX_OUTSTANDING_PINGS = 3
CLOSE_TIMEOUT_S = 5.0


class NatsLink:
    """One NATS connection, driven by an asyncio loop in a daemon thread; other threads submit coroutines."""

    def __init__(
        self,
        servers: list[str],
        *,
        name: str = "framefarm",
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
        reconnect_wait: float = DEFAULT_RECONNECT_WAIT_S,
    ) -> None:
        self.servers = servers
        self.name = name
        self.timeout = timeout
        self.call_timeout = call_timeout
        self.reconnect_wait = reconnect_wait
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nats-link", daemon=True)
        self._thread.start()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting = asyncio.Lock()
        self._closed = False
        self.wire = Wire(servers, name=name, timeout=timeout, reconnect_wait=reconnect_wait)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result; raises what it raises (TimeoutError past the timeout)."""
        if self._closed:
            coro.close()
            raise nats.errors.ConnectionClosedError
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("NatsLink.call from the link's own loop would wait for itself forever")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout or self.call_timeout)
        except TimeoutError:
            if not future.cancel():  # it finished: the timeout is its own
                raise
            raise nats.errors.TimeoutError from None

    async def client(self) -> Client:
        """The connection, made on first use: building a bus never fails because the server is down."""
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                self._nc = await self._connect()
                self._js = self._nc.jetstream(timeout=self.timeout)
        return self._nc

    async def jetstream(self) -> JetStreamContext:
        await self.client()
        assert self._js is not None
        return self._js

    async def _connect(self) -> Client:
        nc = Client()
        try:
            await nc.connect(
                servers=self.servers,
                name=self.name,
                connect_timeout=CONNECT_TIMEOUT_S,
                reconnect_time_wait=self.reconnect_wait,
                max_reconnect_attempts=-1,
                ping_interval=PING_INTERVAL_S,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except BaseException:  # cancelled by the call timeout, or refused
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        return nc

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._closed:
            return
        log.warning("NATS connection lost; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("NATS connection re-established")

    def close(self) -> None:
        """Flush and close the connection, then stop the loop thread."""
        if self._closed:
            return
        self.wire.close()
        try:
            self.call(self._shutdown(), timeout=CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.debug("NATS connection closed uncleanly: %r", exc)
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()

    async def _shutdown(self) -> None:
        self._closed = True  # from here on, call() refuses new work and a disconnect is no news
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def servers_of(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` (or ``nats://a:4222,b:4222``) -> the server list nats-py takes."""
    servers = []
    for part in url.split(","):
        part = part.strip()
        servers.append(part if "://" in part else f"{urlsplit(url).scheme}://{part}")
    return servers
