"""Where the nsqd daemons are (the broker URL, optionally nsqlookupd) and what their HTTP APIs report."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from dramatiq.errors import ConnectionClosed

from ...errors import BusError

DEFAULT_TCP_PORT = 4150
HTTP_TIMEOUT_S = 5.0
URL_OPTIONS = ("lookupd", "http_port")
# nsqd's HTTP API is internal: never route it through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(base: str, path: str, **params: str) -> Any:
    """GET ``base + path`` and decode its JSON (nsqd <1.0 wrapped it in ``data``); None on 404."""
    url = f"{base}{path}?{urlencode(params)}" if params else f"{base}{path}"
    try:
        with _OPENER.open(url, timeout=HTTP_TIMEOUT_S) as response:
            doc = json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise BusError(f"{url} answered {exc.code}: {exc.read()[:200]!r}") from exc
    except (OSError, ValueError) as exc:
        raise ConnectionClosed(f"cannot read {url}: {exc}") from exc
    return doc.get("data", doc) if isinstance(doc, dict) else doc


def http_post(base: str, path: str, **params: str) -> None:
    """POST to nsqd's HTTP API; a 404 (no such topic or channel) is not an error."""
    request = urllib.request.Request(f"{base}{path}?{urlencode(params)}", data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT_S):
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise BusError(f"{request.full_url} answered {exc.code}: {exc.read()[:200]!r}") from exc
    except OSError as exc:
        raise ConnectionClosed(f"cannot reach {request.full_url}: {exc}") from exc


@dataclass(frozen=True)
class NsqEndpoints:
    """``nsq://host:4150[?http_port=4151][&lookupd=http://host:4161...]``.

    This process publishes to the nsqd of the URL (NSQ's advice: publish to the local nsqd). Consumers read
    from that nsqd and, with nsqlookupd, from every nsqd that carries the topic. nsqd's HTTP port defaults to
    its TCP port + 1 (nsqd's own defaults are 4150 and 4151).
    """

    host: str
    port: int
    http_port: int
    lookupd: tuple[str, ...] = ()
    msg_timeout_ms: int | None = None  # per-connection msg-timeout (IDENTIFY); None = nsqd's --msg-timeout

    @classmethod
    def from_url(cls, url: str) -> NsqEndpoints:
        parts = urlsplit(url)
        if parts.scheme != "nsq" or not parts.hostname:
            raise BusError(f'"{url}" is not an nsq://host:port URL')
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(URL_OPTIONS))
        if unknown:
            raise BusError(f"unknown nsq:// URL option {', '.join(unknown)} (known: {', '.join(URL_OPTIONS)})")
        try:
            port = parts.port or DEFAULT_TCP_PORT
            http_port = int(query.get("http_port", [port + 1])[-1])
        except ValueError as exc:
            raise BusError(f'bad port in "{url}": {exc}') from exc
        lookupd = tuple(address.rstrip("/") for address in query.get("lookupd", []))
        for address in lookupd:
            if urlsplit(address).scheme not in ("http", "https"):
                raise BusError(f'lookupd "{address}" must be an http:// URL of nsqlookupd')
        return cls(parts.hostname, port, http_port, lookupd)

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def producers(self, topic: str) -> list[tuple[str, int]]:
        """TCP addresses of every nsqd that carries ``topic``: our own, plus what nsqlookupd knows."""
        found = [(self.host, self.port)]
        for lookupd in self.lookupd:
            doc = http_get(lookupd, "/lookup", topic=topic) or {}
            for producer in doc.get("producers", []):
                address = (producer["broadcast_address"], int(producer["tcp_port"]))
                if address not in found:
                    found.append(address)
        return found

    def http_addresses(self) -> list[str]:
        """HTTP base URLs of every nsqd: our own, plus every node nsqlookupd knows."""
        found = [self.http]
        for lookupd in self.lookupd:
            for node in (http_get(lookupd, "/nodes") or {}).get("producers", []):
                address = f"http://{node['broadcast_address']}:{node['http_port']}"
                if address not in found:
                    found.append(address)
        return found

    def topics(self, topic: str | None = None) -> Iterator[dict[str, Any]]:
        """Every nsqd's /stats entry for ``topic`` (or for all topics)."""
        params = {"format": "json", "include_clients": "false"}
        if topic:
            params["topic"] = topic
        for base in self.http_addresses():
            stats = http_get(base, "/stats", **params) or {}
            yield from (t for t in stats.get("topics") or [] if topic is None or t["topic_name"] == topic)

    def ping(self) -> None:
        for base in (self.http, *self.lookupd):
            try:
                with _OPENER.open(f"{base}/ping", timeout=HTTP_TIMEOUT_S) as response:
                    response.read()
            except OSError as exc:
                raise BusError(f"{base} does not answer: {exc}") from exc


def backlog(topic: dict[str, Any], channel: str) -> tuple[int, int]:
    """(waiting, in flight or deferred) for ``channel`` of one nsqd's topic; the topic's own depth before the
    channel exists (nsqd keeps a topic's messages until its first channel appears)."""
    for entry in topic.get("channels") or []:
        if entry["channel_name"] == channel:
            return int(entry["depth"]) + int(topic["depth"]), int(entry["in_flight_count"]) + int(
                entry["deferred_count"]
            )
    return int(topic["depth"]), 0
