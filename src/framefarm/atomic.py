"""Atomic file writes: a reader never sees half a file (results, failure reasons), nor half a line."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
FILE_MODE = 0o666  # less the umask, as open() creates files
TEMP_NAME_TRIES = 100


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    The file gets the mode any new file gets (0666 less the umask), so results can be read by whom the umask
    allows; tempfile.mkstemp would make every one 0600, readable by the pipeline's user alone.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_line(path: Path, line: bytes) -> None:
    """Append ``line`` and a newline to ``path`` in one write, then fdatasync: with O_APPEND, writers of one
    file (threads, processes of one host; not hosts sharing a network file system) never interleave within a
    line. Opened per line, so a file moved away (rotation) is followed by a new one. A write cut short (a full
    disk) is ended with a newline where it can be, so that the next line is not glued to the partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, APPEND_FLAGS, FILE_MODE)
    try:
        data = line + b"\n"
        if (written := os.write(fd, data)) != len(data):
            if written:
                os.write(fd, b"\n")
            raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written", str(path))
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file next to ``path``, created exclusively (O_EXCL) so no other writer shares it."""
    for _ in range(TEMP_NAME_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, TEMP_FLAGS, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path} after {TEMP_NAME_TRIES} tries")
