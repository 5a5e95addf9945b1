"""Dramatiq messages as bytes, with ``bytes`` values (inline frames) carried raw instead of in base64.

A message without bytes values is Dramatiq's own JSON; one with them is a small JSON header followed by the
raw bytes: base64 would cost more CPU than the whole hop. Every broker whose messages carry frames (NSQ,
NATS) uses this, and decodes plain Dramatiq JSON from any other producer too.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from dramatiq import Message
from dramatiq.errors import DecodeError

BINARY_MAGIC = b"FFB1"  # body = magic, header length, JSON header, then the bytes values in order
_BYTES_KEY = "__nsq_bytes__"  # the name NSQ bodies used first; kept so queued messages decode
_LENGTH = struct.Struct(">l")
_BINARY = frozenset({bytes, bytearray, memoryview})
_NESTED = _BINARY | {dict, list, tuple}  # the types _strip looks into; JSON scalars pass untouched


def encode(message: Message) -> list[bytes]:
    """The body of ``message`` as parts to send (the bytes values are not copied)."""
    blobs: list[bytes] = []
    fields = message.asdict()
    fields["args"] = _strip(fields["args"], blobs)
    fields["kwargs"] = _strip(fields["kwargs"], blobs)
    if not blobs:
        return [message.encode()]
    header = json.dumps({"message": fields, "sizes": [len(b) for b in blobs]}, separators=(",", ":")).encode()
    return [BINARY_MAGIC, _LENGTH.pack(len(header)), header, *blobs]


def decode(body: bytes) -> Message:
    """The message in a body written by ``encode`` (or by any Dramatiq JSON producer)."""
    if not body.startswith(BINARY_MAGIC):
        return Message.decode(body)
    try:
        start = 8 + _LENGTH.unpack_from(body, 4)[0]
        header = json.loads(body[8:start])
        blobs = []
        for size in header["sizes"]:
            blobs.append(body[start : start + size])
            start += size
        fields = header["message"]
        fields["args"] = tuple(_restore(fields["args"], blobs))
        fields["kwargs"] = _restore(fields["kwargs"], blobs)
        return Message(**fields)
    except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        raise DecodeError("Failed to decode message.", body, exc) from exc


def _strip(value: Any, blobs: list[bytes]) -> Any:
    """``value`` with every bytes value replaced by a marker, the bytes appended to ``blobs``."""
    kind = type(value)
    if kind in _BINARY:
        blobs.append(value)
        return {_BYTES_KEY: len(blobs) - 1}
    if kind is dict:
        return {k: _strip(v, blobs) if type(v) in _NESTED else v for k, v in value.items()}
    if kind in (list, tuple):
        return [_strip(v, blobs) if type(v) in _NESTED else v for v in value]
    return value


def _restore(value: Any, blobs: list[bytes]) -> Any:
    """The inverse of ``_strip``."""
    if type(value) is dict:
        if len(value) == 1 and _BYTES_KEY in value:
            return blobs[value[_BYTES_KEY]]
        return {k: _restore(v, blobs) if type(v) in (dict, list) else v for k, v in value.items()}
    if type(value) is list:
        return [_restore(v, blobs) if type(v) in (dict, list) else v for v in value]
    return value
