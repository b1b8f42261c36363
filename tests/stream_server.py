"""A live MPEG-TS stream over TCP on 127.0.0.1, for the fault tests: a network camera that a
test can kill (`kill -9`) and start again on the same port.

    python -m tests.stream_server CLIP.ts PORT SECONDS

Each client that connects gets the clip from its start, paced so that it lasts SECONDS (as a
camera would deliver it), and the connection is closed at its end. `make_clip` writes a clip
from a video with PyAV (MPEG-4 part 2 in MPEG-TS: what FFmpeg reads from `tcp://`).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

CHUNK = 188 * 7  # whole TS packets


def make_clip(video: Path, out: Path, frames: int, fps: int = 10, width: int = 384, height: int = 288) -> Path:
    """The first `frames` frames of `video`, scaled, as MPEG-4 in MPEG-TS at `fps`."""
    with av.open(str(video)) as src, av.open(str(out), "w", format="mpegts") as dst:
        stream = dst.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.gop_size = fps  # a key frame every second: a client that joins can start soon
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            small = frame.reformat(width=width, height=height, format="yuv420p")
            small.pts, small.time_base = i, Fraction(1, fps)  # at `fps`, whatever the source's rate
            dst.mux(stream.encode(small))
        dst.mux(stream.encode(None))
    return out


def serve(clip: Path, port: int, seconds: float) -> None:
    data = clip.read_bytes()
    rate = len(data) / seconds  # bytes per second

    def feed(conn: socket.socket) -> None:
        start = time.monotonic()
        try:
            with conn:
                for offset in range(0, len(data), CHUNK):
                    ahead = offset / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                    conn.sendall(data[offset : offset + CHUNK])
        except OSError:
            pass  # the client went away

    with socket.create_server(("127.0.0.1", port)) as server:
        print("listening", flush=True)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=feed, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
