"""Sources deliver frames in order, and say clearly when they cannot."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ivs.errors import SourceError
from ivs.sources import open_source
from ivs.sources.synthetic import Figure, SyntheticSource
from tests.stream_server import make_clip


def test_video_reads_every_frame_with_rate_and_size(vtest: Path):
    src = open_source(str(vtest))
    assert src.fps == pytest.approx(10.0)
    indices = [f.index for f in src.frames()]
    assert indices == list(range(795))
    src.close()


def test_a_video_without_a_frame_count_ends_with_its_last_frame(vtest: Path, tmp_path: Path):
    """MPEG-TS declares no frame count to check against: the decoder's held-back frames (frame
    threading keeps a few) must be flushed at the end, or the last ones vanish unnoticed."""
    import av

    clip = make_clip(vtest, tmp_path / "clip.ts", frames=30)
    with av.open(str(clip)) as c:
        last = list(c.decode(video=0))[-1].to_ndarray(format="rgb24")
    src = open_source(str(clip))
    frames = list(src.frames())
    src.close()
    assert [f.index for f in frames] == list(range(30)) and src.frames_skipped == 0
    assert np.array_equal(frames[-1].pixels, last)


def test_video_frames_are_rgb(vtest: Path):
    import av

    src = open_source(str(vtest))
    first = next(iter(src.frames()))
    src.close()
    with av.open(str(vtest)) as c:
        bgr = next(iter(c.decode(video=0))).to_ndarray(format="bgr24")
    assert first.pixels.shape == (576, 768, 3) and first.pixels.dtype == np.uint8
    assert np.array_equal(first.pixels, bgr[..., ::-1])


def test_truncated_video_raises_after_the_frames_it_has(vtest: Path, tmp_path: Path):
    cut = tmp_path / "cut.avi"
    cut.write_bytes(vtest.read_bytes()[:3_000_000])
    src = open_source(str(cut))
    got = []
    with pytest.raises(SourceError, match=r"declares 795 frames, only \d+ could be decoded"):
        for f in src.frames():
            got.append(f.index)
    assert 100 < len(got) < 795 and got == list(range(len(got)))


def test_corrupt_and_missing_files(tmp_path: Path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="not a readable video .* expected a video file"):
        open_source(str(junk))
    with pytest.raises(SourceError, match="not found: expected a video file, an RTSP URL, a camera index"):
        open_source(str(tmp_path / "nope.mp4"))


def test_unreadable_camera_says_which_and_what_was_expected():
    with pytest.raises(SourceError, match=r"camera 63 cannot be opened: expected a connected camera at /dev/video63"):
        open_source("63")


def test_image_folder_in_name_order(tmp_path: Path):
    for i, name in enumerate(["b.png", "a.jpg", "c.png"]):
        cv2.imwrite(str(tmp_path / name), np.full((10, 12, 3), i * 50, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    frames = list(open_source(str(tmp_path)).frames())
    assert [int(f.pixels[0, 0, 0]) for f in frames] == [50, 0, 100]
    (tmp_path / "d.png").write_bytes(b"not an image")
    with pytest.raises(SourceError, match="d.png: cannot be decoded"):
        list(open_source(str(tmp_path)).frames())


def test_empty_image_folder(tmp_path: Path):
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path))


def test_synthetic_is_deterministic_and_knows_where_figures_are():
    a = SyntheticSource.from_spec("synthetic:320x240@15:5")
    b = SyntheticSource.from_spec("synthetic:320x240@15:5")
    fa, fb = list(a.frames()), list(b.frames())
    assert len(fa) == 5 and a.fps == 15.0 and fa[0].pixels.shape == (240, 320, 3)
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(fa, fb, strict=True))
    assert not np.array_equal(fa[0].pixels, fa[4].pixels)  # the figures move

    fig = Figure(x=10, y=20, vx=5, vy=0, w=30, h=60, color=(255, 0, 0), first_frame=3)
    s = SyntheticSource(width=200, height=100, figures=[fig])
    assert s.boxes_at(2).shape == (0, 4)
    assert s.boxes_at(5).tolist() == [[20.0, 20.0, 50.0, 80.0]]
    img = s.render(5)
    assert tuple(img[50, 35]) == (255, 0, 0)  # inside the figure's body


@pytest.mark.parametrize("spec", ["synthetic:", "synthetic:10x10", "synthetic:abc"])
def test_malformed_synthetic_spec(spec: str):
    with pytest.raises(SourceError, match="synthetic"):
        open_source(spec)


def test_network_stream_over_http(vtest: Path):
    """A URL source goes through FFmpeg's network stack (here HTTP on loopback) and is live:
    the sensor does not pace it, the stream does."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(vtest.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        src = open_source(f"http://127.0.0.1:{server.server_address[1]}/vtest.avi")
        assert src.live
        frames = []
        for f in src.frames():
            frames.append(f)
            if len(frames) == 25:
                break
        src.close()
        assert [f.index for f in frames] == list(range(25))
        assert frames[0].pixels.shape == (576, 768, 3)
        assert frames[10].pts == pytest.approx(1.0)
    finally:
        server.shutdown()
        server.server_close()
