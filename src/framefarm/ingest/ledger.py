"""Which files an input has already published, kept on disk so a restart never publishes one twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class Ledger:
    """A file is known by (path, size, mtime): a new file written under an old name is new."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS published (path TEXT, size INTEGER, mtime_ns INTEGER, "
            "PRIMARY KEY (path, size, mtime_ns))"
        )

    def seen(self, path: Path, size: int, mtime_ns: int) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM published WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path), size, mtime_ns),
        ).fetchone()
        return row is not None

    def add(self, path: Path, size: int, mtime_ns: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO published VALUES (?, ?, ?)", (str(path), size, mtime_ns))

    def forget(self, path: Path, size: int, mtime_ns: int) -> None:
        """The file has been moved or deleted, so it cannot come back under this identity."""
        self.db.execute(
            "DELETE FROM published WHERE path = ? AND size = ? AND mtime_ns = ?", (str(path), size, mtime_ns)
        )

    def close(self) -> None:
        self.db.close()
