"""The master's web face: ``python -m framefarm.web.face SNAPSHOT`` (a supervisord program beside the modules).

One sampler thread reads the status (supervisord/status.py) every SAMPLE_EVERY_S, whoever asks; the page, its
JSON, ``/metrics`` and ``/readyz`` answer from the latest sample, so a dozen open browsers cost the broker nothing
more. Served with the project's one HTTP stack (web/server.py); no asset comes from the internet.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..atomic import write_atomic
from ..config.envexpand import expand
from ..config.pipeline import WEB_PROGRAM
from ..config.schema import HttpOptions, ServiceOptions
from ..config.types import ALIAS_PATTERN
from ..config.urls import redact_text
from ..errors import FramefarmError
from ..lifeline import die_with_parent
from ..logs import configure as configure_logs
from ..modules.health import Health
from ..runner import EXIT_CONFIG
from ..supervisord.render import Layout
from ..supervisord.sampler import STALE_AFTER_S, Sampler
from ..supervisord.status import Status, Trend
from .dashboard import Dashboard
from .metrics import exposition
from .server import bind, problem, serve_socket, split_listen, tls_files

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "framefarm_token"
COOKIE_PURPOSE = b"framefarm web face cookie"
PREVIEW_TYPES = {"jpg": "image/jpeg", "json": "application/json"}
NO_CACHE = {"Cache-Control": "no-store"}
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROBES = frozenset({"/healthz", "/readyz"})  # answer without the token: an orchestrator's probe cannot keep one
log = logging.getLogger("framefarm.web")


class TokenGate:
    """Every request needs the token when one is set: a Bearer header, the cookie, or ``?token=`` (answered with
    the cookie and a redirect to the same URL without it, so the token leaves the address bar). The cookie holds
    a digest of the token, not the token: cookies are shared by every port of a host name."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token
        self.cookie = hmac.new(token.encode(), COOKIE_PURPOSE, "sha256").hexdigest() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (self.token is None and scope["type"] == "http"):
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # nothing here speaks websocket
            return await PlainTextResponse("not found\n", 404)(scope, receive, send)
        request = Request(scope)
        if scope["path"] in PROBES and not _same(_bearer(request), self.token):
            scope.setdefault("state", {})["anonymous"] = True  # the answer, not the reasons (see readyz)
            return await self.app(scope, receive, send)
        in_query = request.query_params.get("token")
        if in_query is not None and _same(in_query, self.token):
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response: Response = RedirectResponse(request.url.replace(query=query or None), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.cookie or "", httponly=True, samesite="lax")
            return await response(scope, receive, send)
        bearer, cookie = _bearer(request), request.cookies.get(TOKEN_COOKIE)
        if bearer or cookie or in_query:
            allowed = _same(bearer, self.token) or _same(cookie, self.cookie)
            response = problem(403, "wrong token")
        else:
            allowed, response = False, problem(401, "a token is needed", headers={"WWW-Authenticate": "Bearer"})
        if allowed:
            return await self.app(scope, receive, send)
        await response(scope, receive, send)


def _bearer(request: Request) -> str:
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    return bearer.strip() if scheme.lower() == "bearer" else ""


def _same(given: str | None, expected: str | None) -> bool:
    return bool(given) and expected is not None and hmac.compare_digest(str(given).encode(), expected.encode())


def app(layout: Layout, sampler: Sampler, dashboard: Dashboard, options: HttpOptions) -> ASGIApp:
    async def status(_request: Request) -> Response:
        return JSONResponse(sampler.latest(), headers=NO_CACHE)

    async def preview(request: Request) -> Response:
        name, kind = request.path_params["name"], request.path_params["kind"]
        if kind not in PREVIEW_TYPES or not re.fullmatch(ALIAS_PATTERN, name):
            return problem(404, "no such preview")
        try:  # read whole (they are small): the detector replaces the file twice a second
            data = (layout.previews / f"{name}.{kind}").read_bytes()
        except OSError:
            return problem(404, f"no preview of {name} on this host")
        return Response(data, media_type=PREVIEW_TYPES[kind], headers=NO_CACHE)

    async def metrics(_request: Request) -> Response:
        return Response(exposition(sampler.latest), media_type=METRICS_TYPE)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        problems = not_ready(sampler.latest())
        body = {"ready": not problems} | ({} if getattr(request.state, "anonymous", False) else {"problems": problems})
        return JSONResponse(body, status_code=503 if problems else 200)

    routes = [
        Route("/", lambda _request: FileResponse(STATIC / "index.html", headers=NO_CACHE)),
        Route("/api/status", status),
        Route("/preview/{name}.{kind:str}", preview),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static", StaticFiles(directory=STATIC)),
        Mount(Dashboard.PREFIX, dashboard),
    ]
    return TokenGate(Starlette(routes=routes), options.token)


def not_ready(status: Status) -> list[str]:
    """Why the pipeline is not ready to take frames: the broker away, a process not running, or the status too
    old to tell (the sampler waits on a broker that does not answer)."""
    age = time.time() - status["at"]
    if age > STALE_AFTER_S:
        return [f"the status is {age:.0f}s old: the broker or supervisord does not answer"]
    problems = [] if status["broker"]["ok"] else [f"broker: {status['broker']['error']}"]
    problems += [f"{p['name']} is {p['state']}" for p in status["processes"] if p["state"] != "RUNNING"]
    return problems


def load(snapshot_path: Path) -> tuple[Layout, ServiceOptions, Path]:
    """The runtime dir, the service section (``${VAR}``s from this process's environment: the master's) and the
    pipeline file's folder, which relative paths are relative to."""
    snapshot = json.loads(snapshot_path.read_text(encoding="utf-8"))
    missing: list[str] = []
    raw = expand(snapshot["service"], os.environ, lambda _loc, name: missing.append(name))
    if missing:
        raise FramefarmError(f"environment variables not set: {', '.join(sorted(set(missing)))}")
    try:
        service = ServiceOptions.model_validate(raw)
    except ValidationError as exc:  # keys and messages only: the values may hold the token
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        raise FramefarmError(f"invalid service section: {problems}") from exc
    base = Path(snapshot["config"]).parent
    return Layout((base / service.runtime_dir).resolve()), service, base


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    configure_logs(WEB_PROGRAM, "text", "info")
    try:
        layout, service, base = load(Path(args[0]))
        cert, key = tls_files(service.http.tls, lambda path: (base / path.expanduser()).resolve())
    except FramefarmError as exc:
        log.error("cannot start the web face: %s", redact_text(str(exc)))
        return EXIT_CONFIG
    health = Health.of_this_process(layout.root, WEB_PROGRAM)
    configure_logs(WEB_PROGRAM, service.log_format, service.log_level, [health])
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    die_with_parent(signal.SIGTERM)
    options = service.http
    try:
        sock = bind(options.listen)
    except FramefarmError as exc:  # an address in use: said, and supervisord retries a few times
        log.error("%s", exc)
        return 1
    host, _ = split_listen(options.listen)
    port = sock.getsockname()[1]
    url = f"{options.tls.scheme}://{f'[{host}]' if ':' in host else host}:{port}/"
    write_atomic(layout.web_file, json.dumps({"url": url}).encode())
    sampler = Sampler(layout, Trend())
    sampler.start(stop)
    log.info("status page on %s%s", url, " (token required)" if options.token else "")
    try:
        serve_socket(app(layout, sampler, Dashboard(layout), options), sock, stop, cert=cert, key=key)
    finally:
        stop.set()
        layout.web_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
