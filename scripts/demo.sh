#!/usr/bin/env bash
# The demo: installs framefarm, starts configs/demo.yaml on the embedded broker, drops the sample photos
# into its watched folder, prints the detections and where they are, and stops the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python scripts/demo.py "$@"
