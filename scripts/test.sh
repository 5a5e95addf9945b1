#!/usr/bin/env bash
# The test suite: installs framefarm and the test peers if needed, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-peers.sh
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pytest -q "$@"
