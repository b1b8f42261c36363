"""The ISP maps every box back to full-frame pixels, whatever the ROI and resize policy."""

import cv2
import numpy as np
import pytest

from ivs.errors import ConfigError
from ivs.isp import InputSpec, Isp, Roi
from tests.conftest import read_frames


def spec(policy: str, w: int = 100, h: int = 100, layout: str = "NHWC") -> InputSpec:
    return InputSpec(name="x", width=w, height=h, layout=layout, resize=policy, std=(255.0, 255.0, 255.0))


def frame_with_square(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    f = np.zeros((480, 640, 3), np.uint8)
    f[y1:y2, x1:x2] = 255
    return f


def bright_box(tensor: np.ndarray) -> np.ndarray:
    """xyxy of the bright pixels in an NHWC batch-1 tensor, in tensor pixels."""
    mask = tensor[0, ..., 0] > 0.5
    ys, xs = np.nonzero(mask)
    return np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)


@pytest.mark.parametrize("policy", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("roi", [None, Roi(100, 40, 400, 400), Roi(200, 100, 320, 240)])
def test_box_found_in_tensor_maps_back_to_the_frame(policy, roi):
    truth = np.array([[260, 180, 340, 260]], np.float32)  # inside every ROI and crop above
    isp = Isp(spec(policy), roi)
    out = isp.process(frame_with_square(*truth[0].astype(int)))
    back = out.box_map.to_frame(bright_box(out.tensor))
    # Resampling blurs the edges by up to one input pixel, i.e. one pixel / scale in the frame.
    tol = 1.5 / min(out.box_map.scale_x, out.box_map.scale_y)
    assert np.abs(back - truth).max() <= tol


def test_letterbox_pads_and_keeps_aspect():
    out = Isp(spec("letterbox")).process(np.full((480, 640, 3), 255, np.uint8))
    img = out.tensor[0, ..., 0]
    # 640x480 into 100x100: 100x75 image, 12 rows of padding above and 13 below.
    assert img[:12].max() == 0 and img[12:87].min() == 1.0 and img[87:].max() == 0
    assert out.box_map.scale_x == pytest.approx(out.box_map.scale_y)


def test_normalisation_layout_and_colour():
    s = InputSpec(name="x", width=2, height=2, layout="NCHW", color="BGR", mean=(10, 20, 30), std=(2, 4, 5))
    f = np.zeros((2, 2, 3), np.uint8)
    f[..., 0], f[..., 1], f[..., 2] = 100, 120, 130  # R, G, B
    t = Isp(s).process(f).tensor
    assert t.shape == (1, 3, 2, 2) and t.dtype == np.float32
    # BGR order: channel 0 is blue: (130 - 10) / 2
    assert t[0, :, 0, 0].tolist() == [60.0, 25.0, 14.0]  # (B-10)/2, (G-20)/4, (R-30)/5


def test_uint8_input_is_not_normalised():
    s = InputSpec(name="x", width=4, height=4, layout="NHWC", dtype="uint8")
    t = Isp(s).process(np.full((8, 8, 3), 7, np.uint8)).tensor
    assert t.dtype == np.uint8 and t.shape == (1, 4, 4, 3) and int(t.max()) == 7


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,-3,4", "0,0,0,10", "1;2;3;4"])
def test_malformed_roi_says_what_is_expected(text):
    with pytest.raises(ConfigError, match="expected X,Y"):
        Roi.parse(text)


def test_roi_outside_frame_is_refused():
    with pytest.raises(ConfigError, match=r"reaches beyond the 640x480 frame"):
        Isp(spec("stretch"), Roi(600, 0, 100, 100)).process(np.zeros((480, 640, 3), np.uint8))


def test_tiles_cover_the_region_with_the_requested_overlap():
    isp = Isp(spec("stretch"), Roi(100, 40, 400, 300), tiles=(2, 2), overlap=0.25)
    rects = isp.tile_rects(640, 480)
    assert len(rects) == 4
    xs = sorted({r[0] for r in rects})
    ys = sorted({r[1] for r in rects})
    w, h = rects[0][2], rects[0][3]
    assert xs[0] == 100 and xs[1] + w == 500 and ys[0] == 40 and ys[1] + h == 340
    assert (xs[0] + w - xs[1]) / w == pytest.approx(0.25, abs=0.01)


def test_tile_boxes_map_back_to_the_frame():
    truth = np.array([[290, 200, 340, 300]], np.float32)  # tiles: x 0-366 and 274-640
    isp = Isp(spec("stretch"), tiles=(2, 1))
    outs = isp.process_tiles(frame_with_square(*truth[0].astype(int)))
    assert len(outs) == 2
    for out in outs:  # the square lies in the overlap: both tiles see it whole
        back = out.box_map.to_frame(bright_box(out.tensor))
        assert np.abs(back - truth).max() <= 1.5 / min(out.box_map.scale_x, out.box_map.scale_y)


def test_area_shrink_of_a_4k_crop_stays_close_to_a_single_inter_area(vtest):
    """The fast anti-aliased shrink (2x box steps, then one area step) against one cv2 INTER_AREA,
    on a 4K mosaic of real frames at their own scale (real edges and detail, not an upscale)."""
    frame = read_frames(vtest, {100})[100]
    mosaic = np.ascontiguousarray(np.tile(frame, (4, 5, 1))[:2160, :3840])
    out = Isp(InputSpec(name="x", width=224, height=224, layout="NHWC", resize="crop", dtype="uint8"))
    fast = out.process(mosaic).tensor[0].astype(np.int16)
    exact = cv2.resize(mosaic[:, 840:3000], (224, 224), interpolation=cv2.INTER_AREA).astype(np.int16)
    diff = np.abs(fast - exact)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 12, (diff.mean(), np.percentile(diff, 99))
    # and it is not the identity of the single step: the fast path did run (the crop is 9.64x)
    assert diff.max() > 0


def test_area_shrink_is_anti_aliased():
    """A one-pixel checkerboard has no detail a 224x224 input can hold: an area shrink gives flat
    grey, where bilinear sampling of a 4K crop would alias it into a pattern."""
    board = ((np.indices((2160, 3840)).sum(0) % 2) * 255).astype(np.uint8)
    pixels = np.ascontiguousarray(np.dstack([board] * 3))
    for interpolation, flat in (("area", True), ("linear", False)):
        spec = InputSpec(
            name="x", width=224, height=224, layout="NHWC", resize="crop", dtype="uint8", interpolation=interpolation
        )
        t = Isp(spec).process(pixels).tensor
        assert (int(t.max()) - int(t.min()) <= 2) is flat


def test_power_of_two_area_shrink_is_the_box_average():
    """896 -> 224 is 4x: two exact 2x2 averages then a 2x area step, i.e. the 4x4 box mean."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (896, 896, 3), dtype=np.uint8)
    spec = InputSpec(name="x", width=224, height=224, layout="NHWC", dtype="uint8")
    got = Isp(spec).process(pixels).tensor[0].astype(np.float64)
    box = pixels.reshape(224, 4, 224, 4, 3).mean(axis=(1, 3))
    assert np.abs(got - box).max() <= 1.0  # rounding to uint8 at each step
