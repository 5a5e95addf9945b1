"""The ledger of a folder input: any file name, deaths while reading counted, ledgers of earlier versions kept."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from framefarm.ingest.ledger import FileId, FileState, Ledger


def test_any_name_the_file_system_allows_is_a_key(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    odd = FileId(Path(os.fsdecode(b"/in/caf\xe9 \xff.jpg")), 10, 20)  # not UTF-8: lone surrogates in Python
    plain = FileId(Path("/in/café.jpg"), 10, 20)
    ledger.advance(odd, 3)
    ledger.advance(plain, 5, complete=True)
    assert ledger.state(odd) == FileState(3, False, 0)
    assert ledger.state(plain) == FileState(5, True, 0)
    ledger.forget(odd)
    assert ledger.state(odd) == FileState()


def test_reads_that_never_ended_are_counted_until_progress(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    file = FileId(Path("/in/a.mp4"), 1, 2)
    ledger = Ledger(path)
    ledger.mark(file)
    ledger.unmark(file)  # a read that ended, whatever its outcome
    assert ledger.state(file).died == 0
    ledger.mark(file)  # ... and one during which the process died
    ledger.close()
    ledger = Ledger(path)
    assert ledger.state(file).died == 1
    ledger.mark(file)  # the next process reads it, and dies too
    assert Ledger(path).state(file).died == 2
    ledger.unmark(file)
    ledger.advance(file, 7)  # frames published: the file is no longer stuck on one spot
    assert ledger.state(file) == FileState(7, False, 0)


def test_a_ledger_from_the_previous_version_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE files (path TEXT, size INTEGER, mtime_ns INTEGER, "
        "next_frame INTEGER NOT NULL, complete INTEGER NOT NULL, PRIMARY KEY (path, size, mtime_ns))"
    )
    old.execute("INSERT INTO files VALUES ('/in/café.mp4', 10, 20, 12, 0)")
    old.commit()
    old.close()
    ledger = Ledger(path)
    file = FileId(Path("/in/café.mp4"), 10, 20)
    assert ledger.state(file) == FileState(12, False, 0)  # resumes where the old version stopped
    ledger.advance(file, 13)
    assert ledger.state(file).next_frame == 13
    assert Ledger(path).state(file).next_frame == 13  # opening it again changes nothing
