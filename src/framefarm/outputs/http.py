"""Output ``http``: POST each result (or ``batch`` results as a JSON array) to a webhook, until it takes them.

Connection errors, timeouts, 429 (after its ``Retry-After``) and 5xx are retried with the kind's backoff; another
4xx (or a redirect) is the receiver refusing the result: it is counted as rejected, with the answer logged, and
never sent again. After ``retry.max_retries`` a result goes to the dead letters. With ``secret`` every request
is signed: ``X-Framefarm-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` and the timestamp in
``X-Framefarm-Timestamp`` (unix seconds), so a receiver can check both who sent it and that it is fresh.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field

from ..config import registry
from ..config.registry import CheckContext
from ..config.schema import RetryOptions
from ..config.types import Duration
from ..config.urls import redact_url, split_credentials
from ..config.yamlpos import Loc
from ..errors import SinkRejected, SinkUnavailable
from ..message import FrameMessage
from ..modules.batcher import MicroBatcher
from ..tls import client_context
from .network import NetworkOutput, NetworkOutputOptions

DEFAULT_FLUSH_INTERVAL_S = 1.0
SIGNATURE_HEADER = "X-Framefarm-Signature"
TIMESTAMP_HEADER = "X-Framefarm-Timestamp"
RETRIED_STATUSES = frozenset({408, 425, 429})  # besides every 5xx
MAX_DEFAULT_THREADS = 64
PATIENT_RETRIES = 10  # with the default backoff (0.5 s doubling up to 30 s, with jitter): at least 91 s in all
ANSWER_SHOWN = 300  # characters of a refusing receiver's answer kept in the log and the status


class HttpOutputOptions(NetworkOutputOptions):
    name: Literal["http"] = Field(description="POST results to an HTTP(S) URL (a webhook).")
    url: str = Field(
        pattern=r"^https?://", description="Where to POST; http(s)://[user:password@]host/path (user: basic auth)."
    )
    batch: int = Field(1, ge=1, le=1000, description="Results per request; above 1 the body is a JSON array.")
    flush_interval: Duration = Field(
        DEFAULT_FLUSH_INTERVAL_S, gt=0, description="A batch is sent this long after its first result if not full."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    token: str | None = Field(None, description="Sent as 'Authorization: Bearer <token>'.")
    secret: str | None = Field(None, description="Sign each request (HMAC-SHA256) with this shared secret.")
    verify: bool = Field(True, description="Check the receiver's TLS certificate (https).")
    ca_file: Path | None = Field(None, description="A PEM file of the CAs to trust instead of the system's.")
    client_cert: Path | None = Field(None, description="A PEM client certificate (with its key, or see client_key).")
    client_key: Path | None = Field(None, description="The PEM key of client_cert, when not in the same file.")
    threads: int | None = Field(  # type: ignore[assignment]
        None, ge=1, le=512, description="Worker threads; default 2 x batch (at most 64), to keep batches full."
    )
    retry: RetryOptions = Field(
        default_factory=lambda: RetryOptions(max_retries=PATIENT_RETRIES),
        description="Retries of a result the receiver did not take (10 retries: 1.5 minutes at least).",
    )

    @property
    def worker_threads(self) -> int:
        return self.threads or min(2 * self.batch, MAX_DEFAULT_THREADS)


@registry.outputs.register
class HttpOutput(NetworkOutput[HttpOutputOptions]):
    @classmethod
    def check(cls, options: HttpOutputOptions, ctx: CheckContext) -> Iterator[tuple[Loc, str]]:
        yield from super().check(options, ctx)
        if options.format == "yolo" and options.batch > 1:
            yield ("batch",), "a batch is a JSON array: set format: json, or batch: 1"
        for field in ("ca_file", "client_cert", "client_key"):
            path = getattr(options, field)
            if path is not None and not ctx.resolve(path).is_file():
                yield (field,), f"{ctx.resolve(path)} is not a file"
        if options.client_key is not None and options.client_cert is None:
            yield ("client_key",), "a client_key needs its client_cert"

    def setup(self) -> None:
        options, resolve = self.options, self.ctx.resolve
        context = client_context(
            verify=options.verify,
            ca_file=resolve(options.ca_file) if options.ca_file else None,
            cert=resolve(options.client_cert) if options.client_cert else None,
            key=resolve(options.client_key) if options.client_key else None,
        )
        headers = {"User-Agent": "framefarm", **options.headers}
        if options.token:
            headers["Authorization"] = f"Bearer {options.token}"
        self.shown = redact_url(options.url)
        self.url, login = split_credentials(options.url)  # basic auth as a header: no password in logged URLs
        self.client = httpx.Client(
            timeout=options.timeout, verify=context, headers=headers, auth=login, follow_redirects=False,
            trust_env=False,
        )  # fmt: skip
        self.batcher = MicroBatcher(self.post_batch, size=options.batch, max_wait=options.flush_interval)
        self.ctx.log.info("posting results to %s (batch %d)", self.shown, options.batch)

    def teardown(self) -> None:
        self.batcher.close()
        self.client.close()

    def send(self, message: FrameMessage) -> None:
        if self.options.batch == 1:
            self.post(self.body(message), "application/json" if self.options.format == "json" else "text/plain")
        else:
            self.batcher.submit(self.document(message))

    def post_batch(self, documents: list[dict[str, Any]]) -> list[None]:
        body = json.dumps(documents, ensure_ascii=False, separators=(",", ":")).encode()
        self.post(body, "application/json")
        return [None] * len(documents)

    def post(self, body: bytes, content_type: str) -> None:
        headers = {"Content-Type": content_type, **self.signature(body)}
        try:
            answer = self.client.post(self.url, content=body, headers=headers)
        except httpx.TransportError as exc:  # connect, read, write, timeouts, protocol errors
            raise SinkUnavailable(f"{self.shown}: {type(exc).__name__}: {exc}") from exc
        status = answer.status_code
        if status < 300:
            return
        said = f"{self.shown} answered {status} {answer.reason_phrase}: {answer.text[:ANSWER_SHOWN]!r}"
        if status >= 500 or status in RETRIED_STATUSES:
            raise SinkUnavailable(said, retry_after=retry_after(answer.headers.get("Retry-After")))
        raise SinkRejected(said)

    def signature(self, body: bytes) -> dict[str, str]:
        if not self.options.secret:
            return {}
        timestamp = str(int(time.time()))
        digest = hmac.new(self.options.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: f"sha256={digest.hexdigest()}"}


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds, or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
