"""A plain Dramatiq broker: Dramatiq's RedisBroker that takes a new worker id after a lost connection."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from dramatiq.brokers.redis import RedisBroker


class ReclaimingRedisBroker(RedisBroker):
    """Dramatiq's RedisBroker that takes a new worker id after a lost connection.

    A message whose ack failed (the server was restarting) stays in this worker's set of fetched messages;
    with an unchanged id the worker keeps heartbeating and nobody would ever requeue it. Under a new id the
    old one falls silent, and maintenance (in any worker) requeues its messages after heartbeat_timeout:
    at-least-once, with at most a duplicate for a message that was in progress.
    """

    def _dispatch(self, command: str) -> Any:
        dispatch = super()._dispatch(command)

        def dispatch_or_rotate(queue_name: str, *args: Any) -> Any:
            try:
                return dispatch(queue_name, *args)
            except redis.ConnectionError:
                self.broker_id = str(uuid.uuid4())
                raise

        return dispatch_or_rotate
