"""A GStreamer RTSP server for tests and benchmarks: a live test pattern on 127.0.0.1.

Run with Debian's /usr/bin/python3 (it has ``gi``; a venv's python does not):

    /usr/bin/python3 tests/rtsp_server.py --port P [--path /cam] [--codec h264|h265] [--fps 25]
        [--size 640x360] [--user U --password W] [--record]

It serves PLAY on ``rtsp://127.0.0.1:P/cam`` over TCP and UDP (the client picks), with a keyframe every
second; with ``--user`` it asks for basic authentication and refuses anyone else. With ``--record`` the mount
takes a pushed H.264 stream instead (ANNOUNCE/RECORD, over TCP), decodes it and prints ``frame WxH`` for each
frame. It prints ``ready`` once it listens and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODERS = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96 "
    "config-interval=1",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph265pay name=pay0 pt=96 "
    "config-interval=1",
}


def launch_line(codec: str, fps: int, width: int, height: int) -> str:
    source = f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1"
    return f"( {source} ! {ENCODERS[codec].format(fps=fps)} )"


RECORD_LAUNCH = (
    "( rtph264depay name=depay0 ! h264parse ! avdec_h264 ! fakesink name=sink signal-handoffs=true sync=false )"
)


def print_frames(factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
    """Each pushed frame that decodes, as a line: what a test counts."""

    def handoff(_sink: Gst.Element, buffer: Gst.Buffer, pad: Gst.Pad) -> None:
        structure = pad.get_current_caps().get_structure(0)
        print(f"frame {structure.get_value('width')}x{structure.get_value('height')}", flush=True)

    media.get_element().get_by_name("sink").connect("handoff", handoff)


def protect(server: GstRtspServer.RTSPServer, factory: GstRtspServer.RTSPMediaFactory, user: str, pw: str) -> None:
    """Basic authentication: only ``user`` with ``pw`` may see or play the mount."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", user)
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, pw), token)
    server.set_auth(auth)
    rights = "media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
    role = Gst.Structure.new_from_string(f"{user}, {rights}")
    factory.add_role_from_structure(role)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="h264")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    Gst.init(None)
    width, height = (int(v) for v in args.size.split("x"))
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    if args.record:
        factory.set_launch(RECORD_LAUNCH)
        factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        factory.connect("media-configure", print_frames)
    else:
        factory.set_launch(launch_line(args.codec, args.fps, width, height))
        factory.set_shared(True)  # one encoder for every client, as a camera has
    if args.user:
        protect(server, factory, args.user, args.password or "")
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
