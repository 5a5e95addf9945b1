"""The receive buffer of framefarm's own protocol clients (NSQ, NATS): one bytearray read into in place."""

from __future__ import annotations

INITIAL_BUFFER_BYTES = 1 << 20  # grows to the largest message seen


class ReceiveBuffer:
    """``_buf[_start:_end]`` holds what was received and not parsed yet; ``_view`` is a memoryview of ``_buf``
    for ``recv_into`` and slicing without copies."""

    def __init__(self) -> None:
        self._buf = bytearray(INITIAL_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._start = self._end = 0

    def _make_room(self, needed: int) -> None:
        """Make the buffer hold ``needed`` bytes from ``_start``: move what is pending to the front, or grow."""
        if self._start + needed <= len(self._buf):
            return
        pending = self._end - self._start
        if needed > len(self._buf):
            grown = bytearray(max(needed, 2 * len(self._buf)))
            grown[:pending] = self._view[self._start : self._end]
            self._view.release()
            self._buf, self._view = grown, memoryview(grown)
        else:
            self._view[:pending] = self._view[self._start : self._end]
        self._start, self._end = 0, pending
