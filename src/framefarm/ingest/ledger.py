"""How far an input got with each file, kept on disk so a restart never publishes a frame twice."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileId:
    """A file is known by (path, size, mtime): a new file written under an old name is new."""

    path: Path
    size: int
    mtime_ns: int

    def key(self) -> tuple[str, int, int]:
        return str(self.path), self.size, self.mtime_ns


class Ledger:
    """Per file: the index of the next frame to publish, and whether all of its frames are published."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT, size INTEGER, mtime_ns INTEGER, "
            "next_frame INTEGER NOT NULL, complete INTEGER NOT NULL, PRIMARY KEY (path, size, mtime_ns))"
        )

    def state(self, file: FileId) -> tuple[int, bool]:
        """(next frame to publish, all published?) — (0, False) for a file never seen."""
        row = self.db.execute(
            "SELECT next_frame, complete FROM files WHERE path = ? AND size = ? AND mtime_ns = ?", file.key()
        ).fetchone()
        return (row[0], bool(row[1])) if row else (0, False)

    def advance(self, file: FileId, next_frame: int, *, complete: bool = False) -> None:
        self.db.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "next_frame = excluded.next_frame, complete = excluded.complete",
            (*file.key(), next_frame, int(complete)),
        )

    def forget(self, file: FileId) -> None:
        """The file has been moved or deleted, so it cannot come back under this identity."""
        self.db.execute("DELETE FROM files WHERE path = ? AND size = ? AND mtime_ns = ?", file.key())

    def close(self) -> None:
        self.db.close()
