"""write_atomic: whole files only, with the mode the umask gives any new file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from framefarm.atomic import write_atomic


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "out" / "result.json", b"{}")
        write_atomic(tmp_path / "out" / "result.json", b"{}\n")  # replacing keeps to the rule
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out" / "result.json").stat().st_mode) == mode
    assert (tmp_path / "out" / "result.json").read_bytes() == b"{}\n"
    assert os.listdir(tmp_path / "out") == ["result.json"]  # no temporary file left


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "x.txt", "not bytes")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []
