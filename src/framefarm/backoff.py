"""One backoff policy for every reconnect and retry loop."""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_INITIAL_S = 0.5
DEFAULT_MAXIMUM_S = 30.0


@dataclass
class Backoff:
    """Exponential backoff with full jitter; ``reset`` after a success."""

    initial: float = DEFAULT_INITIAL_S
    maximum: float = DEFAULT_MAXIMUM_S
    attempts: int = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * 2**self.attempts)
        self.attempts += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempts = 0
