"""URLs in option values: passwords that would break parsing, and the secrets to keep out of every message.

A password with ``@``, ``/``, ``?`` or ``#`` that is not percent-encoded makes a URL parser cut the authority
at the wrong place: a piece of the password becomes the host or the port, and the parser's error prints it.
So such a URL is refused by ``pipectl -t`` without showing any of it, with how to escape it, and the
password of every good URL is masked in whatever message might quote it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .envexpand import VARIABLE, variable_value
from .yamlpos import Loc

SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]*")
AUTHORITY_END = re.compile(r"[/?#]")
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
USERINFO_CHARS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:%")  # RFC 3986 3.2.1
ESCAPES = "@ as %40, / as %2F, ? as %3F, # as %23, : as %3A, % as %25, a space as %20"
PLACEHOLDER = "\ue000{}\ue001"  # private-use characters: stand-ins for ${VAR}s that no URL contains
PLACEHOLDER_RE = re.compile("\ue000(\\d+)\ue001")
MASK = "***"
PATH_AT_SCHEMES = frozenset({"http", "https", "ws", "wss"})  # web URLs may hold @ in a path (/@user) or query
VARIABLE_PROBLEM = (
    "holds characters that cannot stand in a URL's user:password part as they are; percent-encode them in "
    f"the variable ({ESCAPES}). The value is not shown."
)
MALFORMED_PROBLEM = (
    "this URL's user:password@host:port part cannot be parsed: percent-encode any of @ / ? # % : or a space in "
    f"the user name or password ({ESCAPES}). The URL is not shown, as it may hold a password."
)


def is_url(text: str) -> bool:
    return SCHEME.match(text) is not None


def _split(url: str) -> tuple[str, str, str]:
    """(``scheme://``, authority, the rest) of a URL."""
    match = SCHEME.match(url)
    head = match.group(0) if match else ""
    authority = AUTHORITY_END.split(url[len(head) :], maxsplit=1)[0]
    return head, authority, url[len(head) + len(authority) :]


def _authority(url: str) -> str:
    return _split(url)[1]


def _userinfo_ok(userinfo: str) -> bool:
    return all(c in USERINFO_CHARS or ord(c) > 127 for c in userinfo) and not BAD_PERCENT.search(userinfo)


def _hostport_ok(hostport: str) -> bool:
    if hostport.startswith("["):  # an IPv6 literal
        end = hostport.find("]")
        host, port = hostport[: end + 1], hostport[end + 1 :]
        if end < 0 or (port and not port.startswith(":")):
            return False
        port = port[1:]
    else:
        host, _, port = hostport.partition(":")
    return (not port or (port.isascii() and port.isdigit())) and (bool(host) or not port)


def malformed(url: str) -> bool:
    """Whether ``url``'s ``user:password@host:port`` cannot be split as its writer meant (see the module doc).

    An ``@`` after the authority means a password with ``/``, ``?`` or ``#`` cut it short, except in web URLs,
    whose paths and queries may hold ``@``: there only a ``${VAR}`` password can be told apart (see
    ``bad_userinfo_variables``).
    """
    if not is_url(url):
        return False
    head, authority, rest = _split(url)
    if authority.count("@") > 1 or ("@" in rest and head[:-3].lower() not in PATH_AT_SCHEMES):
        return True
    userinfo, at, hostport = authority.rpartition("@")
    return (bool(at) and not _userinfo_ok(userinfo)) or not _hostport_ok(hostport)


def bad_userinfo_variables(template: str, env: Mapping[str, str]) -> list[str]:
    """The ``${VAR}``s of a URL template that sit in its user:password part with a value that cannot."""
    matches = list(VARIABLE.finditer(template))
    masked = template
    for index, match in reversed(list(enumerate(matches))):
        masked = masked[: match.start()] + PLACEHOLDER.format(index) + masked[match.end() :]
    if not is_url(masked) or "@" not in _authority(masked):
        return []
    userinfo = _authority(masked).rpartition("@")[0]
    inside = [matches[int(i)] for i in PLACEHOLDER_RE.findall(userinfo)]
    return [m.group(1) for m in inside if not _userinfo_ok(variable_value(m, env))]


def url_secrets(url: str) -> Iterator[str]:
    """The password of a well-formed URL, as written and percent-decoded: what messages must not show."""
    if not is_url(url) or malformed(url):
        return
    password = urlsplit(url).password
    if password:
        yield password
        yield unquote(password)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs and messages; one that cannot be parsed shows
    only its scheme, since any other piece of it may be a piece of the password."""
    if not is_url(url):
        return url
    head, authority, rest = _split(url)
    if malformed(url):
        return f"{head}{MASK}"
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{head}{userinfo.partition(':')[0]}:{MASK}@{hostport}{rest}"


def redact_text(text: str) -> str:
    """``text`` (an error message, perhaps a library's) with every URL in it redacted as by ``redact_url``."""
    return URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


@dataclass(frozen=True)
class UrlFinding:
    """A URL option: either ``problem`` (it cannot be parsed; nothing else may quote it) or its ``secrets``."""

    loc: Loc
    problem: str | None = None
    secrets: tuple[str, ...] = ()


def check_urls(raw: Any, data: Any, env: Mapping[str, str]) -> Iterator[UrlFinding]:
    """Every URL in ``data`` (expanded from ``raw`` with ``env``) that holds a password or cannot be parsed."""
    for loc, value in _strings(data, ()):
        if not is_url(value):
            continue
        template = _at(raw, loc)
        variables = bad_userinfo_variables(template, env) if isinstance(template, str) else []
        if variables:
            names = ", ".join(f"${{{name}}}" for name in variables)
            yield UrlFinding(loc, f"{names} {VARIABLE_PROBLEM}")
        elif malformed(value):
            yield UrlFinding(loc, MALFORMED_PROBLEM)
        elif secrets := tuple(url_secrets(value)):
            yield UrlFinding(loc, secrets=secrets)


def _strings(data: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _strings(value, (*loc, index))
    elif isinstance(data, str):
        yield loc, data


def _at(data: Any, loc: Loc) -> Any:
    """The value at ``loc`` in nested dicts and lists, or None."""
    for part in loc:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(``url`` without its ``user:password@``, the decoded (user, password) or None): a client sends them as an
    Authorization header, so that the URL it logs or shows in an error holds no password."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, (unquote(parts.username), unquote(parts.password or ""))
