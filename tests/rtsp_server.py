"""A real RTSP server on 127.0.0.1 for the RTSP tests: GStreamer's gst-rtsp-server (Debian's
gir1.2-gst-rtsp-server-1.0), driven through python3-gi, so it runs under Debian's own Python
(/usr/bin/python3), never the project's venv, and imports nothing of ivs.

    /usr/bin/python3 tests/rtsp_server.py CLIP PORT [--stall-after N]

Serves CLIP (MPEG-4 part 2 in MPEG-TS, as `tests.stream_server.make_clip` writes it) at
rtsp://127.0.0.1:PORT/clip, paced by its timestamps as a camera delivers frames, without
re-encoding it. Every client gets the clip from its first frame. At the clip's end the server
ends the stream (RTSP's end of stream). `--stall-after N`: after N frames nothing more is sent,
but the session stays open (a camera that hangs with its connection up). Prints "listening"
once clients can connect.
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 - after require_version, as gi asks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip")
    parser.add_argument("port", type=int)
    parser.add_argument("--stall-after", type=int, default=None)
    args = parser.parse_args()
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    # tsdemux -> mpeg4videoparse (key-frame config on every I frame) -> RTP (RFC 3016), as is:
    # the frames the client decodes are the clip's own.
    factory.set_launch(
        f'( filesrc location="{args.clip}" ! tsdemux ! mpeg4videoparse config-interval=-1 '
        "! identity name=gate ! rtpmp4vpay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(False)  # each client its own pipeline, from the clip's start
    factory.set_eos_shutdown(False)
    if args.stall_after is not None:
        factory.connect("media-configure", lambda _f, media: gate(media, args.stall_after))
    mounts = server.get_mount_points()
    mounts.add_factory("/clip", factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}")
    print("listening", flush=True)
    GLib.MainLoop().run()


def gate(media: GstRtspServer.RTSPMedia, frames: int) -> None:
    """Let `frames` frames through, then hold the next one for ever: the pipeline stalls with
    the session up (dropping frames instead would let the file run to its end at once)."""
    passed = [0]

    def probe(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        passed[0] += 1
        # PASS: through, and the probe blocks on the next buffer; OK: blocked here until torn down.
        return Gst.PadProbeReturn.PASS if passed[0] <= frames else Gst.PadProbeReturn.OK

    element = media.get_element().get_by_name("gate")
    element.get_static_pad("src").add_probe(Gst.PadProbeType.BLOCK | Gst.PadProbeType.BUFFER, probe)


if __name__ == "__main__":
    main()
