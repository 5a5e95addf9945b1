"""Poll mode of the ``http`` input: fetch a camera's snapshot URL every ``interval`` and publish each new image.

Conditional requests (ETag, Last-Modified) and a hash of the last image published keep an unchanged image from
being sent again. User and password written in the URL are taken out of it and given to httpx (basic or digest),
so no URL that is logged, reported or put in a result carries them. A URL whose host resolves to a loopback,
link-local or private address is refused unless ``allow_private`` is set (a poller must not become a way into the
local network).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ..config.urls import redact_text, redact_url, split_credentials
from ..errors import BadInput, SourceUnavailable
from ..tls import client_context
from .images import CheckedImage, check_image
from .mjpeg import ChallengeAuth

NOT_MODIFIED = 304
SCHEMES = {"auto": ChallengeAuth, "basic": httpx.BasicAuth, "digest": httpx.DigestAuth}


@dataclass
class Fetched:
    """What the last successful poll learnt: validators for the next request and the last image's hash."""

    etag: str | None = None
    modified: str | None = None
    digest: str | None = None
    failures: int = 0  # polls in a row that failed
    last_error: str | None = None

    def conditions(self) -> dict[str, str]:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        return headers | ({"If-Modified-Since": self.modified} if self.modified else {})


def refuse_private(url: str) -> None:
    """SourceUnavailable when ``url``'s host resolves to a loopback, link-local or private address."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except OSError as exc:
        raise SourceUnavailable(f"{redact_url(url)}: cannot resolve {host}: {exc.strerror or exc}") from exc
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_loopback or ip.is_link_local or ip.is_private:
            raise SourceUnavailable(
                f"{redact_url(url)}: {host} is {ip}, a private address; set allow_private: true to poll it"
            )


def client(url: str, auth: str, verify: bool, ca_file: Path | None, timeout: httpx.Timeout) -> tuple[httpx.Client, str]:
    """An httpx client with the URL's credentials as ``auth`` (auto, basic, digest) and TLS, and the bare URL."""
    bare, login = split_credentials(url)
    credentials = SCHEMES[auth](*login) if login else None
    try:
        context = client_context(verify=verify, ca_file=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SourceUnavailable(f"{redact_url(url)}: ca_file: {exc}") from exc
    return httpx.Client(timeout=timeout, verify=context, auth=credentials, follow_redirects=False), bare


def fetch(http: httpx.Client, url: str, shown: str, state: Fetched, max_body: int) -> bytes | None:
    """The snapshot's bytes when they changed since the last poll, else None; SourceUnavailable on failure."""
    try:
        with http.stream("GET", url, headers=state.conditions()) as response:
            if response.status_code == NOT_MODIFIED:
                return None
            if response.status_code != 200:
                raise SourceUnavailable(f"{shown}: {response.status_code} {response.reason_phrase}")
            data = _read(response, shown, max_body)
    except httpx.HTTPError as exc:
        raise SourceUnavailable(redact_text(f"{shown}: {type(exc).__name__}: {exc}")) from None
    state.etag, state.modified = response.headers.get("etag"), response.headers.get("last-modified")
    digest = hashlib.sha256(data).hexdigest()
    if digest == state.digest:
        return None
    state.digest = digest
    return data


def _read(response: httpx.Response, shown: str, max_body: int) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_body:
            raise SourceUnavailable(f"{shown}: the snapshot is over max_body ({max_body} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def checked_image(data: bytes, max_pixels: int) -> CheckedImage | str:
    """The checked image, or why the bytes are not an image (a bad snapshot is skipped, not fatal)."""
    try:
        return check_image(data, max_pixels)
    except BadInput as exc:
        return str(exc)
