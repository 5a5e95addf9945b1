"""The Dramatiq dashboard under ``/dramatiq`` when the broker is Redis (it reads Dramatiq's Redis keys).

dramatiq-dashboard is a WSGI app made for a RedisBroker; it is built at the first request, with its own
connection, and served through a2wsgi. Another broker, or the package missing, gets a page that says why.
"""

from __future__ import annotations

import threading
from typing import Any

from a2wsgi import WSGIMiddleware
from dramatiq.brokers.redis import RedisBroker
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config.urls import redact_text
from ..errors import FramefarmError
from ..supervisord.render import Layout
from ..supervisord.running import Running
from ..supervisord.status import stages

INSTALL_HINT = "pip install --no-deps 'dramatiq-dashboard>=0.4,<0.5'"


class Dashboard:
    PREFIX = "/dramatiq"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._lock = threading.Lock()
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await run_in_threadpool(self._build)  # it reaches supervisord and the broker
        await app(scope, receive, send)

    def _build(self) -> ASGIApp:
        with self._lock:
            if self._app is not None:
                return self._app
            try:
                from dramatiq_dashboard import DashboardApp
            except ImportError:
                return _page(501, f"the Dramatiq dashboard is not installed: {INSTALL_HINT}")
            try:
                running = Running.at(self.layout)
                bus = running.bus()
            except FramefarmError as exc:
                return _page(503, f"the dashboard needs the broker: {redact_text(str(exc))}")
            if not isinstance(bus.broker, RedisBroker):
                bus.close()
                return _page(
                    404,
                    "the Dramatiq dashboard reads Redis brokers only; the status page's queue table shows this one",
                )
            for queue in stages(running):  # the dashboard lists the queues its broker declared
                bus.broker.declare_queue(queue)
            self._app = WSGIMiddleware(DashboardApp(broker=bus.broker, prefix=self.PREFIX))
            return self._app


def _page(status: int, text: str) -> Any:
    return PlainTextResponse(text + "\n", status_code=status)
