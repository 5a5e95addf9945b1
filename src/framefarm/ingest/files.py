"""One entry of a watched folder, handled so that whatever the folder holds, the input goes on.

A folder holds whatever its file system allows: a FIFO (opening it for reading blocks until a writer comes), a
socket, a device (opening some has side effects; reading /dev/zero never ends), a symbolic link to any of these or
to nothing, a directory named like an image, a name that is not UTF-8, a file another process takes away at any
moment. Only regular files are opened, never blocking, and read up to a limit; every name that leaves the input
(logs, reasons, messages) is valid text.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import BinaryIO

from ..errors import BadInput, SourceUnavailable

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
FILE_TYPES = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}
# Errors that are about the file itself; any other (out of file descriptors, of memory) is the process's.
FILE_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENXIO, errno.ENODEV, errno.EISDIR, errno.ENAMETOOLONG,
    errno.EIO, errno.EOVERFLOW, errno.EFBIG, errno.ESTALE, errno.ENOTDIR,
}  # fmt: skip


@dataclass(frozen=True)
class OpenedFile:
    """A regular file of the watched folder, open for reading: what a folder kind's ``publish_file`` gets."""

    path: Path
    source: str  # the name relative to the folder, as valid text: the frames' ``source``
    handle: BinaryIO
    status: os.stat_result  # of the open file, so it is the one being read
    # Wrap reading and decoding (not publishing) in ``with file.reading():`` so that a process that dies in
    # there counts against the file: after max_crashes such deaths in a row it goes aside.
    reading: Callable[[], AbstractContextManager[object]] = field(default=nullcontext)


class Vanished(BadInput):
    """The file went away while it was being handled (another process took it): skipped, nothing to set aside."""


class NotRegular(BadInput):
    """Not a regular file: never opened for reading. ``directory`` tells a folder (skipped) from the rest."""

    def __init__(self, what: str, *, directory: bool = False) -> None:
        super().__init__(f"{what}, not a regular file")
        self.directory = directory


def shown(path: PurePath | str) -> str:
    """``path`` as valid text, with bytes that are not UTF-8 as ``\\xNN`` escapes.

    Such names are legal on Linux; Python keeps their bytes as lone surrogates, which nothing can encode (sqlite,
    a log file, JSON on a broker), so every name that leaves the input goes through here.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def translate(exc: OSError, doing: str) -> BadInput | SourceUnavailable:
    """The error to raise for ``exc``: Vanished, BadInput (the file's fault), else SourceUnavailable (retry later)."""
    reason = f"cannot {doing}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):
        return Vanished(reason)
    if exc.errno in FILE_ERRNOS:
        return BadInput(reason)
    return SourceUnavailable(reason)


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = stat.S_IFMT(mode)
        raise NotRegular(FILE_TYPES.get(kind, f"a special file (mode {kind:o})"), directory=kind == stat.S_IFDIR)


def open_regular(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """``path`` opened for reading, and its status, if it is a regular file (symbolic links followed).

    It is checked before it is opened, so a FIFO or a device is never opened at all, and opened with O_NONBLOCK
    and checked again, as the name may have been swapped for something else in between.
    """
    try:
        _check_regular(os.stat(path).st_mode)
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise NotRegular("a symbolic link to nothing") from exc
        raise translate(exc, "open it") from exc
    except OSError as exc:
        raise translate(exc, "open it") from exc
    try:
        status = os.fstat(fd)
        _check_regular(status.st_mode)
        return os.fdopen(fd, "rb"), status
    except BaseException:
        os.close(fd)
        raise


def read_bounded(handle: BinaryIO, limit: int | None) -> bytes:
    """The whole file, or BadInput once it proves longer than ``limit`` (it may have grown since it was opened)."""
    try:
        data = handle.read() if limit is None else handle.read(limit + 1)
    except OSError as exc:
        raise translate(exc, "read it") from exc
    if limit is not None and len(data) > limit:
        raise BadInput(f"over max_file_size ({limit} bytes)")
    return data


def move_aside(path: Path, target: Path) -> Path:
    """Move the entry ``path`` to ``target`` (a link stays a link), adding a numeric suffix rather than replacing
    an earlier entry there.

    Across file systems only regular files and links are copied: copying a FIFO blocks, and copying a device
    may never end, so those can only be renamed (an OSError otherwise).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = target, 1
    while os.path.lexists(candidate):
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
        n += 1
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        shutil.move(path, candidate)
    else:
        os.rename(path, candidate)
    return candidate
