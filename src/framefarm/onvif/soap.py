"""SOAP 1.2 for an ONVIF device: read a request, write a response or a fault, check a WS-Security login."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tev": "http://www.onvif.org/ver10/events/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "wstop": "http://docs.oasis-open.org/wsn/t-1",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "tns1": "http://www.onvif.org/ver10/topics",
    "ter": "http://www.onvif.org/ver10/error",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
}
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CONTENT_TYPE = "application/soap+xml; charset=utf-8"
FRESH_S = 300.0  # a digest login's Created time may be this far off, and its nonce is remembered this long
MAX_NONCES = 100_000  # nonces remembered at most (more logins within FRESH_S are refused)
MAX_REQUEST = 256 * 1024  # a SOAP request of ONVIF's is a few kB
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def q(name: str) -> str:
    """``"tt:Message"`` -> ``"{http://www.onvif.org/ver10/schema}Message"``."""
    prefix, _, local = name.partition(":")
    return f"{{{NS[prefix]}}}{local}"


def el(name: str, text: object = None, children: list[etree._Element] | None = None, **attrs: str) -> etree._Element:
    """An element ``prefix:Local`` with text, attributes and children."""
    element = etree.Element(q(name), nsmap=None)
    for key, value in attrs.items():
        element.set(key, value)
    if text is not None:
        element.text = str(text)
    for child in children or []:
        element.append(child)
    return element


class SoapFault(Exception):
    """Answered as a SOAP fault: ``code`` s:Sender or s:Receiver, an ONVIF ``subcode`` (ter:...) and a reason."""

    def __init__(self, code: str, subcode: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.subcode, self.reason = code, subcode, reason


@dataclass
class Request:
    operation: str  # the body's first element's local name: GetServices, PullMessages, ...
    body: etree._Element  # that element
    header: etree._Element | None


def parse(data: bytes) -> Request:
    """The request's operation; SoapFault (s:Sender) for what is not a SOAP envelope with a body."""
    if len(data) > MAX_REQUEST:
        raise SoapFault("s:Sender", "ter:InvalidArgVal", f"request over {MAX_REQUEST} bytes")
    try:
        root = etree.fromstring(data, PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("s:Sender", "ter:WellFormed", f"not XML: {exc}") from None
    body = root.find(q("s:Body"))
    if root.tag != q("s:Envelope") or body is None or len(body) == 0:
        raise SoapFault("s:Sender", "ter:InvalidArgVal", "not a SOAP 1.2 envelope with a body")
    operation = body[0]
    return Request(etree.QName(operation).localname, operation, root.find(q("s:Header")))


def envelope(*body: etree._Element, header: list[etree._Element] | None = None) -> bytes:
    nsmap = {prefix: uri for prefix, uri in NS.items() if prefix not in ("wsse", "wsu")}
    root = etree.Element(q("s:Envelope"), nsmap=nsmap)
    if header:
        root.append(el("s:Header", children=header))
    root.append(el("s:Body", children=list(body)))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def fault(error: SoapFault) -> bytes:
    code = el("s:Code", children=[el("s:Value", error.code), el("s:Subcode", children=[el("s:Value", error.subcode)])])
    reason = el(
        "s:Reason", children=[el("s:Text", error.reason, **{"{http://www.w3.org/XML/1998/namespace}lang": "en"})]
    )
    return envelope(el("s:Fault", children=[code, reason]))


class Logins:
    """Checks WS-Security UsernameTokens against one login, and refuses a digest seen before (a replay) or one
    whose Created time is more than ``FRESH_S`` off: a digest captured on the network is good for no more."""

    def __init__(self, username: str | None, password: str | None) -> None:
        self.username, self.password = username, password
        self.nonces: dict[bytes, float] = {}  # nonce -> when it was used, for FRESH_S

    def check(self, request: Request) -> None:
        """SoapFault ter:NotAuthorized unless the request carries the login (digest or text). No username: anyone
        may call."""
        if not self.username:
            return
        token = request.header.find(f".//{q('wsse:UsernameToken')}") if request.header is not None else None
        if token is None:
            raise SoapFault("s:Sender", "ter:NotAuthorized", "sender not authorized: no login")
        given_user = (token.findtext(q("wsse:Username")) or "").encode()
        given = token.find(q("wsse:Password"))
        if given is None or not hmac.compare_digest(given_user, self.username.encode()):
            raise SoapFault("s:Sender", "ter:NotAuthorized", "sender not authorized")
        secret = (self.password or "").encode()
        expected = self.digest(token, secret) if given.get("Type") == DIGEST else secret
        if not hmac.compare_digest((given.text or "").strip().encode(), expected):
            raise SoapFault("s:Sender", "ter:NotAuthorized", "sender not authorized")

    def digest(self, token: etree._Element, secret: bytes) -> bytes:
        """The digest the token must carry, Base64(SHA1(nonce + created + password)), once its nonce and time pass."""
        created = (token.findtext(q("wsu:Created")) or "").strip()
        try:
            nonce = base64.b64decode(token.findtext(q("wsse:Nonce")) or "", validate=True)
            moment = datetime.fromisoformat(created)
        except ValueError:
            raise SoapFault("s:Sender", "ter:NotAuthorized", "sender not authorized: bad nonce or time") from None
        now = time.time()
        skew = abs((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() - now)
        self.nonces = {n: at for n, at in self.nonces.items() if now - at < FRESH_S}
        if skew > FRESH_S or nonce in self.nonces or len(self.nonces) >= MAX_NONCES:
            raise SoapFault("s:Sender", "ter:NotAuthorized", "sender not authorized: stale or repeated login")
        self.nonces[nonce] = now
        return base64.b64encode(hashlib.sha1(nonce + created.encode() + secret).digest())


def xsd_time(moment: datetime | None = None) -> str:
    """An xs:dateTime in UTC, as ONVIF writes it."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
