"""A small RTSP server for tests: serves an H.264 mp4 file on the loopback interface.

Run it with the SYSTEM python, which has GStreamer's introspection bindings (the
project's venv does not)::

    /usr/bin/python3 tests/rtsp_server.py clip.mp4 [--port 0] [--path /test] [--lifetime 120]

Needs the Debian packages python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-base, -good and -bad (qtdemux, h264parse, rtph264pay).
``--port 0`` picks a free port. Once it accepts connections it prints one line,
``URL rtsp://127.0.0.1:PORT/test``, and flushes stdout. Every client gets its own
pipeline that plays the file from the start in real time (then the server sends the end
of the stream). The server stops by itself: when its stdin closes (the test that started
it died), after ``--lifetime`` seconds, or on SIGTERM / SIGINT. If the port cannot be
bound it prints ``ERROR ...`` and exits with status 3.

This file is not part of the package and must not import it.
"""

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve an H.264 mp4 over RTSP on 127.0.0.1.")
    parser.add_argument("file", help="an mp4 with an H.264 video track")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--path", default="/test", help="mount path (default /test)")
    parser.add_argument("--lifetime", type=float, default=120.0,
                        help="exit after this many seconds (default 120)")
    args = parser.parse_args()
    path = os.path.abspath(args.file)
    if not os.path.isfile(path):
        print(f"ERROR {path} does not exist", flush=True)
        return 2
    if not args.path.startswith("/"):
        args.path = "/" + args.path

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse '
                       f'! rtph264pay name=pay0 pt=96 config-interval=1 )')
    server.get_mount_points().add_factory(args.path, factory)
    try:
        attached = server.attach(None)
    except GLib.Error as exc:   # e.g. the port is in use
        print(f"ERROR cannot listen on 127.0.0.1:{args.port}: {exc.message}", flush=True)
        return 3
    if not attached:
        print(f"ERROR cannot listen on 127.0.0.1:{args.port}", flush=True)
        return 3

    loop = GLib.MainLoop()

    def on_stdin(fd, condition):
        try:
            data = os.read(fd, 1024)
        except OSError:
            data = b""
        if not data or condition & (GLib.IO_HUP | GLib.IO_ERR):
            loop.quit()
            return False
        return True

    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR, on_stdin)
    GLib.timeout_add(int(args.lifetime * 1000), loop.quit)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)

    print(f"URL rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
