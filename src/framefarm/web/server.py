"""Serve a Starlette app with uvicorn until a stop event, on a socket bound here, with or without TLS.

The socket is bound before uvicorn starts so that an address in use is a SourceUnavailable saying which (uvicorn
itself would log it and exit the process). uvicorn installs no signal handlers outside the main thread, so a kind's
server runs in its own thread and stops when ``stop`` is set.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from ..config.schema import TlsOptions
from ..config.types import LISTEN_PATTERN
from ..errors import FramefarmError, SourceUnavailable

STOP_POLL_S = 0.1  # how often the watcher looks at the stop event
GRACEFUL_S = 2  # requests in progress get this long when the server stops
BACKLOG = 512


def listen_field(default: str) -> Any:
    """The ``listen`` option of a kind that serves HTTP: ``host:port`` (``[v6]:port``), on loopback by default."""
    description = "host:port to listen on; 0.0.0.0 opens it to the network."
    return Field(default, pattern=LISTEN_PATTERN, description=description)


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on ``listen``; SourceUnavailable when the address cannot be taken."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise SourceUnavailable(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
    return sock


def tls_files(tls: TlsOptions, resolve: Callable[[Path], Path]) -> tuple[Path | None, Path | None]:
    """(cert, key) for ``serve_socket``, checked now: uvicorn loads them in the server's thread, where a bad file
    would stop the server and not the module. FramefarmError names what is wrong."""
    if problem := next(tls.problems(resolve), None):
        raise FramefarmError(f"tls: {problem[1]}")
    return tls.files(resolve)


def serve(
    app: ASGIApp, listen: str, stop: threading.Event, *, cert: Path | None = None, key: Path | None = None
) -> None:
    """Serve ``app`` on ``listen`` (HTTPS when ``cert`` and ``key`` are given) until ``stop`` is set."""
    serve_socket(app, bind(listen), stop, cert=cert, key=key)


def serve_socket(
    app: ASGIApp,
    sock: socket.socket,
    stop: threading.Event,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    lifespan: bool = False,
) -> None:
    """``serve`` on a socket bound already (by ``bind``: a kind that must know at setup that it can listen);
    ``lifespan`` runs the app's startup and shutdown (an app that must know its loop before the first request)."""
    tls: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)} if cert and key else {}
    config = uvicorn.Config(
        app,
        lifespan="on" if lifespan else "off",
        access_log=False,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the process's own handlers (text or JSON, health)
        timeout_graceful_shutdown=GRACEFUL_S,
        **tls,
    )
    server = uvicorn.Server(config)
    watcher = threading.Thread(target=_stop_when, args=(stop, server), name="web-stop", daemon=True)
    watcher.start()
    try:
        server.run(sockets=[sock])
    finally:
        server.should_exit = True
        sock.close()


def _stop_when(stop: threading.Event, server: uvicorn.Server) -> None:
    while not stop.wait(STOP_POLL_S):
        if server.should_exit:
            return
    server.should_exit = True


def problem(status: int, error: str, **extra: Any) -> JSONResponse:
    """A JSON error answer: ``{"error": ...}`` and any ``extra`` fields; ``headers`` is passed as headers."""
    headers = extra.pop("headers", None)
    return JSONResponse({"error": error, **extra}, status_code=status, headers=headers)


def token_refusal(request: Request, token: str | None, *, in_query: bool = False) -> JSONResponse | None:
    """When ``token`` is set: 401 for a request without it (``Authorization: Bearer``, or ``?token=`` when
    ``in_query``: a browser's ``<img>`` cannot send headers), 403 for a wrong one; else None (let it in)."""
    if token is None:
        return None
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    if not given and in_query:
        given = request.query_params.get("token", "")
    if not given:
        return problem(401, "a bearer token is needed", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), token.encode()):
        return problem(403, "wrong token")
    return None


class BodyTooLarge(Exception):
    """A request body over its limit; the message says by how much it was known."""


async def read_body(request: Request, limit: int, what: str = "the limit") -> bytes:
    """The whole body; BodyTooLarge as soon as it is over ``limit`` bytes (by its Content-Length, or as it
    arrives: a chunked body has none), so a client cannot make the server hold more."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes, over {what} ({limit})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over {what} ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)
