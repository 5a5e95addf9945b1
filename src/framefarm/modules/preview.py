"""The latest annotated frame of each stream, for the status page: written by the last processor of the stream's
route, at most every PREVIEW_EVERY_S, into ``<runtime_dir>/preview/<input>.jpg`` with its detections beside it
(``<input>.json``). The web face of the same host serves them; a frame is never held back for it."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from ..message import FrameMessage
from ..vision.picture import snapshot_jpeg

PREVIEW_FOLDER = "preview"  # in the runtime dir
PREVIEW_EVERY_S = 0.5
PREVIEW_SIDE = 640
log = logging.getLogger(__name__)


class Previews:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # input -> monotonic time of its last preview

    def offer(self, message: FrameMessage, frame: bytes) -> None:
        """Write ``message``'s frame as its stream's preview if the last one is old enough."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(message.input, -PREVIEW_EVERY_S) < PREVIEW_EVERY_S:
                return
            self._last[message.input] = now
        try:
            jpeg = snapshot_jpeg(frame, message, annotated=True, max_side=PREVIEW_SIDE)
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # camera pictures: the pipeline's user only
            _replace(self.folder / f"{message.input}.jpg", jpeg)
            about = {"stream": message.stream, "seq": message.seq, "captured_at": message.captured_at}
            about |= {"source": message.source, "detections": message.detections or []}
            _replace(self.folder / f"{message.input}.json", json.dumps(about).encode())
        except Exception as exc:  # the page shows an older preview; the frame, forwarded already, is not retried
            log.debug("no preview of %s: %s", message.input, exc)


def _replace(path: Path, data: bytes) -> None:
    """Write aside, then rename: a reader sees the old file or the new one (no fsync: a preview may be lost)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
