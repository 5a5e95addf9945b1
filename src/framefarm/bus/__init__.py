"""The bus: a Dramatiq broker for messages and a frame store beside it for the bytes.

Backends register under their URL schemes; importing this package makes the built-in ones available.
"""

from . import nats_bus, nsq_bus, redis_bus  # noqa: F401  (register nats, nsq, redis, rediss and unix schemes)
from .base import Bus, connect

__all__ = ["Bus", "connect"]
