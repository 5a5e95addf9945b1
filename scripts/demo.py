"""Run the demo pipeline end to end through pipectl and print what it found, and its status.

``--keep`` leaves it running, to look at its status page (http://127.0.0.1:8080/) or ``pipectl top``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"
DEMO = REPO / "run" / "demo"
PHOTOS = sorted((REPO / "media").glob("*.jpg"))
TIMEOUT_S = 120


def pipectl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "framefarm.cli", *args, "-c", str(CONFIG)], check=True)


def main() -> int:
    keep = "--keep" in sys.argv[1:]
    inbox, results = DEMO / "inbox", DEMO / "results" / "photos"
    shutil.rmtree(DEMO / "results", ignore_errors=True)
    inbox.mkdir(parents=True, exist_ok=True)
    pipectl("-t")
    pipectl("start")
    try:
        for photo in PHOTOS:
            shutil.copy(photo, inbox / photo.name)
        deadline = time.monotonic() + TIMEOUT_S
        while len(list(results.glob("*.json"))) < len(PHOTOS) and time.monotonic() < deadline:
            time.sleep(0.2)
        for path in sorted(results.glob("*.json")):
            found = json.loads(path.read_text())["detections"]
            names = ", ".join(f"{d['class_name']} {d['confidence']:.2f}" for d in found) or "nothing"
            print(f"{path.stem + '.jpg':12} {names}")
        time.sleep(1)  # the counters are written every half second
        print()
        pipectl("status")
    finally:
        if not keep:
            pipectl("-s", "quit")
    done = len(list(results.glob("*.json")))
    print(f"\n{done} of {len(PHOTOS)} photos detected. Results (JSON, YOLO txt, annotated JPEG): {results}")
    if keep:
        print(f"Still running: `pipectl top -c {CONFIG}`, or the status page; `pipectl -s quit -c {CONFIG}` stops it.")
    return 0 if done == len(PHOTOS) else 1


if __name__ == "__main__":
    sys.exit(main())
