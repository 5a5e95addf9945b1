#!/usr/bin/env bash
# Creates .venv and installs framefarm into it (editable, with the test extras).
# On a fresh Debian machine, run as root (or with sudo available) so missing system packages get installed.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else echo "please install: $*" >&2; exit 1
  fi
}

command -v python3 >/dev/null || apt_install python3 python3-venv
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The Dramatiq dashboard (/dramatiq on the web face, Redis brokers): 0.4 pins dramatiq<2 in its metadata but works
# with dramatiq 2, so it goes in without its dependencies (jinja2, its one other need, is framefarm's).
.venv/bin/python -m pip install -q --no-deps 'dramatiq-dashboard>=0.4,<0.5'
