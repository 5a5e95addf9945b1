"""How far an input got with each file, kept on disk so a restart never publishes a frame twice.

It also remembers reads that never ended: a file whose decoding kills the process (a decoder's segfault, the OOM
killer, a kill -9 after a hang) would otherwise be taken again at every restart, for ever. Only reading and
decoding count, not waiting for the bus: a process killed while a full pipeline holds it back is no file's fault.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

COLUMNS = {"tries": "INTEGER NOT NULL DEFAULT 0", "reading": "INTEGER NOT NULL DEFAULT 0"}  # added after v1


@dataclass(frozen=True)
class FileId:
    """A file is known by (path, size, mtime): a new file written under an old name is new.

    The path is kept as the file system's bytes: a name need not be UTF-8 (Python holds such bytes as lone
    surrogates, which sqlite cannot encode as text).
    """

    path: Path
    size: int
    mtime_ns: int

    def key(self) -> tuple[bytes, int, int]:
        return os.fsencode(self.path), self.size, self.mtime_ns


@dataclass(frozen=True)
class FileState:
    next_frame: int = 0  # the index of the next frame to publish
    complete: bool = False  # every frame is published
    died: int = 0  # reads of it in a row, without progress between, during which the process died


class Ledger:
    """Per file: the index of the next frame to publish, whether all are published, and unfinished attempts."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT, size INTEGER, mtime_ns INTEGER, "
            "next_frame INTEGER NOT NULL, complete INTEGER NOT NULL, PRIMARY KEY (path, size, mtime_ns))"
        )
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring a ledger written by an earlier version up to date; a no-op on a current one.

        Paths were text: as bytes they compare equal to what ``FileId.key`` gives now (UTF-8 is what sqlite
        stored). The attempt columns are new.
        """
        self.db.execute("UPDATE files SET path = CAST(path AS BLOB) WHERE typeof(path) = 'text'")
        have = {row[1] for row in self.db.execute("PRAGMA table_info(files)")}
        for name, declaration in COLUMNS.items():
            if name not in have:
                self.db.execute(f"ALTER TABLE files ADD COLUMN {name} {declaration}")

    def state(self, file: FileId) -> FileState:
        """Where ``file`` stands; FileState() for a file never seen."""
        row = self.db.execute(
            "SELECT next_frame, complete, tries + reading FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
            file.key(),
        ).fetchone()
        return FileState(row[0], bool(row[1]), row[2]) if row else FileState()

    def mark(self, file: FileId) -> None:
        """``file`` is being read now. A mark still there from before means the process died while reading it."""
        self.db.execute(
            "INSERT INTO files (path, size, mtime_ns, next_frame, complete, tries, reading) "
            "VALUES (?, ?, ?, 0, 0, 0, 1) ON CONFLICT DO UPDATE SET tries = tries + reading, reading = 1",
            file.key(),
        )

    def unmark(self, file: FileId) -> None:
        """The read ended in this process, whatever its outcome: it did not kill it."""
        self.db.execute("UPDATE files SET reading = 0 WHERE path = ? AND size = ? AND mtime_ns = ?", file.key())

    def advance(self, file: FileId, next_frame: int, *, complete: bool = False) -> None:
        """Frames before ``next_frame`` are published: progress, so earlier deaths no longer count against it."""
        self.db.execute(
            "INSERT INTO files (path, size, mtime_ns, next_frame, complete) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET next_frame = excluded.next_frame, complete = excluded.complete, tries = 0",
            (*file.key(), next_frame, int(complete)),
        )

    def forget(self, file: FileId) -> None:
        """The file has been moved or deleted, so it cannot come back under this identity."""
        self.db.execute("DELETE FROM files WHERE path = ? AND size = ? AND mtime_ns = ?", file.key())

    def close(self) -> None:
        self.db.close()


def open_ledger(path: Path, log: logging.Logger) -> Ledger:
    """The ledger at ``path``; one that is not a database any more (a disk fault, a stray write) is moved aside
    and a new one started, rather than the input failing at every start. Files that were in progress may then
    be published again from their first frame: at least once, never lost.
    """
    try:
        return Ledger(path)
    except sqlite3.OperationalError:
        raise  # cannot open or write the file: moving it aside would not help
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            if os.path.lexists(f"{path}{suffix}"):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        log.error("ledger %s is unreadable (%s): moved to %s, starting a new one", path, exc, aside.name)
        return Ledger(path)
