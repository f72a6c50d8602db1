"""A real RTSP server for the camera tests and the benchmark: GStreamer's RTSP server (Debian's
gir1.2-gst-rtsp-server-1.0) serving JPEG frames from a folder, looped, re-encoded as H.264 as an IP camera
sends it.

Run by the system Python, which has python3-gi (the project's virtualenv has no gi); the tests start it
through ``tests.rtsp_support.RtspServer``:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --frames DIR [--fps 10] [--user U --password P
        [--digest]] [--silent]

It prints ``ready`` once it listens. ``--silent``: the server answers DESCRIBE, SETUP and PLAY as usual but
never sends a frame (a camera whose encoder hung).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PATH = "/stream"


def pipeline(frames: Path, fps: int, silent: bool) -> str:
    source = (
        f'multifilesrc location="{frames}/frame%04d.jpg" index=0 loop=true '
        f'caps="image/jpeg,framerate={fps}/1" ! jpegdec ! videoconvert ! video/x-raw,format=I420'
    )
    # One key frame a second, no B-frames: what IP cameras send, and a new client starts within a second.
    # threads=1: one slice per frame (zerolatency's sliced threads gave frames FFmpeg decoded smeared).
    encode = f"x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max={fps} bitrate=1500"
    # Silent: the SDP is complete (caps pass), but every buffer becomes a gap, so no packet is ever sent.
    gate = " ! valve drop=true drop-mode=transform-to-gap" if silent else ""
    return f"( {source} ! {encode}{gate} ! rtph264pay name=pay0 pt=96 config-interval=-1 )"


def secure(
    server: GstRtspServer.RTSPServer,
    factory: GstRtspServer.RTSPMediaFactory,
    user: str,
    password: str,
    digest: bool,
) -> None:
    """Basic (or Digest) authentication: only ``user`` may see the stream; anyone else gets 401."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", user)
    if digest:
        auth.add_digest(user, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    else:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role(user, "media.factory.access", True)
    permissions.add_permission_for_role(user, "media.factory.construct", True)
    factory.set_permissions(permissions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--frames", type=Path, required=True, help="folder of frame0000.jpg, frame0001.jpg")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--digest", action="store_true", help="Digest authentication instead of Basic")
    parser.add_argument("--silent", action="store_true")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args.frames.resolve(), args.fps, args.silent))
    if args.user:
        secure(server, factory, args.user, args.password, args.digest)
    server.get_mount_points().add_factory(PATH, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {args.port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
