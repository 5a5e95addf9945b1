"""TLS for the clients framefarm opens (snapshot polls, webhooks, TCP results): one way to build the context."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    *, verify: bool = True, ca_file: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context: the system's CAs (or ``ca_file``'s), no checks at all when not ``verify``, and a client
    certificate when ``cert`` is set (``key`` when it is not in the same file). Raises OSError or ssl.SSLError
    for a file that cannot be read or used."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file and verify else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context
