"""The README's first command runs scripts/demo.py; it must keep working on the embedded defaults."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_demo_detects_every_sample_photo() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 of 4 photos detected" in result.stdout
    assert "dog.jpg" in result.stdout and "bird" in result.stdout
