"""The Dramatiq middleware framefarm's brokers run with."""

from __future__ import annotations

from dramatiq.middleware import Middleware, Retries


def stage_middleware() -> list[Middleware]:
    """Retries with backoff, nothing else.

    Dramatiq's defaults also track age and time limits, callbacks and pipelines; framefarm has its own
    ``max_age`` and uses none of the others, and dropping them saves about a tenth of the CPU per message.
    """
    return [Retries()]
