"""Fixtures: real servers on free loopback ports, one per test unless said otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from framefarm.plugins import load_kinds

from peers import redis_server

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "yolov3-tiny-coco.onnx"
NAMES = REPO / "models" / "coco.names"
MEDIA = REPO / "media"

load_kinds()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path) as url:
        yield url
