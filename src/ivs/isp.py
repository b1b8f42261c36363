"""The ISP stage: frame -> model input tensor, and model-input boxes -> frame boxes.

Like the IMX500's on-chip ISP, it crops the region of interest, scales it to the model's
input with the package's resize policy, converts colour and normalises. It also returns the
exact affine map back to full-frame pixels, so every box a decoder produces lands on the
frame whatever the ROI and the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ivs.errors import ConfigError


class InputSpec(BaseModel):
    """How a model wants its input; part of a package's intrinsics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Name of the model's input tensor.")
    width: int = Field(gt=0, description="Input width in pixels.")
    height: int = Field(gt=0, description="Input height in pixels.")
    layout: Literal["NHWC", "NCHW"] = Field(description="Tensor layout, with a batch of 1.")
    color: Literal["RGB", "BGR"] = Field("RGB", description="Channel order the model expects.")
    dtype: Literal["float32", "uint8"] = Field("float32", description="Element type; uint8 inputs skip normalisation.")
    mean: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="Subtracted per channel (in `color` order) before `std`."
    )
    std: tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="Divides each channel after `mean`: (x - mean) / std."
    )
    interpolation: Literal["area", "linear"] = Field(
        "area",
        description="area: average the source pixels when shrinking (no aliasing); linear: "
        "bilinear, as many training pipelines resize (use what the model was trained with).",
    )
    resize: Literal["stretch", "letterbox", "crop"] = Field(
        "stretch",
        description="stretch: the whole region to the input size, aspect ignored; "
        "letterbox: fit inside, pad the rest; crop: the largest centred part of the region "
        "with the input's aspect ratio.",
    )


@dataclass(frozen=True)
class Roi:
    """A region of the frame in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def parse(cls, text: str) -> Roi:
        """Parse "X,Y,W,H" (non-negative integers, W and H > 0)."""
        parts = [p.strip() for p in text.split(",")]
        try:
            x, y, w, h = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(
                f"malformed ROI {text!r}: expected X,Y,W,H as four integers in pixels, e.g. 100,50,640,480"
            ) from None
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise ConfigError(f"malformed ROI {text!r}: expected X,Y >= 0 and W,H > 0 (pixels)")
        return cls(x, y, w, h)

    def check_inside(self, width: int, height: int) -> None:
        if self.x + self.w > width or self.y + self.h > height:
            raise ConfigError(
                f"ROI {self.x},{self.y},{self.w},{self.h} reaches beyond the "
                f"{width}x{height} frame: expected X+W <= {width} and Y+H <= {height}"
            )


@dataclass(frozen=True)
class BoxMap:
    """Affine map from model-input pixels to full-frame pixels: frame = (p - pad) / scale + origin."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    origin_x: float
    origin_y: float
    frame_width: int
    frame_height: int

    def to_frame(self, xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = (xyxy[:, 0::2] - self.pad_x) / self.scale_x + self.origin_x
        out[:, 1::2] = (xyxy[:, 1::2] - self.pad_y) / self.scale_y + self.origin_y
        np.clip(out[:, 0::2], 0, self.frame_width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_height, out=out[:, 1::2])
        return out

    def points_to_frame(self, pts: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map (..., >=2) arrays whose first two columns are x, y (e.g. keypoints)."""
        out = pts.astype(np.float32, copy=True)
        out[..., 0] = (pts[..., 0] - self.pad_x) / self.scale_x + self.origin_x
        out[..., 1] = (pts[..., 1] - self.pad_y) / self.scale_y + self.origin_y
        return out


@dataclass(frozen=True)
class IspOutput:
    tensor: npt.NDArray[np.float32] | npt.NDArray[np.uint8]
    box_map: BoxMap
    region: npt.NDArray[np.uint8]
    """The pixels the model looked at (a view of the frame), for `--mode roi` only."""


class Isp:
    """Prepares frames for one model input.

    roi: only this part of the frame is seen by the model (default: the whole frame).
    tiles: (columns, rows): the region is cut into this grid of overlapping tiles, each scaled
        to the model input on its own, so that small objects keep more pixels (at the cost of
        one inference per tile). `overlap` is the fraction of a tile shared with its neighbour.
    full_frame: with tiles, also one pass over the whole region, first: an object larger than
        a tile's overlap is seen whole there, and its pieces cut by the tiles' inner edges are
        dropped when merging (`ivs.model.merge_tiles`).

    >>> spec = InputSpec(name="x", width=4, height=4, layout="NCHW", mean=(0, 0, 0), std=(255, 255, 255))
    >>> out = Isp(spec).process(np.full((8, 16, 3), 255, np.uint8))
    >>> out.tensor.shape, float(out.tensor.max())
    ((1, 3, 4, 4), 1.0)
    """

    def __init__(
        self,
        spec: InputSpec,
        roi: Roi | None = None,
        tiles: tuple[int, int] = (1, 1),
        overlap: float = 0.25,
        full_frame: bool = False,
    ) -> None:
        if tiles[0] < 1 or tiles[1] < 1:
            raise ConfigError(f"tiles {tiles[0]}x{tiles[1]}: expected at least 1x1")
        if not 0 <= overlap < 1:
            raise ConfigError(f"tile overlap {overlap}: expected 0 <= overlap < 1")
        self.spec = spec
        self.roi = roi
        self.tiles = tiles
        self.overlap = overlap
        self.full_frame = full_frame and tiles != (1, 1)
        self._mean = np.asarray(spec.mean, np.float32)
        self._inv_std = (1.0 / np.asarray(spec.std, np.float32)).astype(np.float32)

    def region(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The part of a width x height frame the model looks at: x, y, w, h."""
        if self.roi is None:
            return 0, 0, width, height
        self.roi.check_inside(width, height)
        return self.roi.x, self.roi.y, self.roi.w, self.roi.h

    def tile_rects(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """x, y, w, h of each tile, row by row; one rect (the region) without tiling."""
        rx, ry, rw, rh = self.region(width, height)
        cols, rows = self.tiles
        # n tiles of size t with overlap o*t cover L: t * (n - (n - 1) * o) = L.
        tw = round(rw / (cols - (cols - 1) * self.overlap))
        th = round(rh / (rows - (rows - 1) * self.overlap))
        xs = [rx + round(i * (rw - tw) / (cols - 1)) if cols > 1 else rx for i in range(cols)]
        ys = [ry + round(j * (rh - th) / (rows - 1)) if rows > 1 else ry for j in range(rows)]
        return [(x, y, tw, th) for y in ys for x in xs]

    def process(self, pixels: npt.NDArray[np.uint8]) -> IspOutput:
        """The model input for the whole region (no tiling)."""
        fh, fw = pixels.shape[:2]
        return self._prepare(pixels, *self.region(fw, fh))

    def process_tiles(self, pixels: npt.NDArray[np.uint8]) -> list[IspOutput]:
        """One model input per tile (a single one without tiling)."""
        if self.tiles == (1, 1):
            return [self.process(pixels)]
        fh, fw = pixels.shape[:2]
        tiles = [self._prepare(pixels, *rect) for rect in self.tile_rects(fw, fh)]
        return [self.process(pixels), *tiles] if self.full_frame else tiles

    def _prepare(self, pixels: npt.NDArray[np.uint8], rx: int, ry: int, rw: int, rh: int) -> IspOutput:
        fh, fw = pixels.shape[:2]
        iw, ih = self.spec.width, self.spec.height
        if self.spec.resize == "crop":
            # Largest centred sub-rectangle of the region with the input's aspect ratio.
            cw = min(rw, round(rh * iw / ih))
            ch = min(rh, round(rw * ih / iw))
            rx, ry = rx + (rw - cw) // 2, ry + (rh - ch) // 2
            rw, rh = cw, ch
        region = pixels[ry : ry + rh, rx : rx + rw]

        if self.spec.resize == "letterbox":
            s = min(iw / rw, ih / rh)
            nw, nh = max(1, round(rw * s)), max(1, round(rh * s))
            px, py = (iw - nw) // 2, (ih - nh) // 2
            canvas = np.zeros((ih, iw, 3), np.uint8)
            canvas[py : py + nh, px : px + nw] = _resize(region, nw, nh, self.spec.interpolation)
            image = canvas
            box_map = BoxMap(nw / rw, nh / rh, px, py, rx, ry, fw, fh)
        else:
            image = _resize(region, iw, ih, self.spec.interpolation)
            box_map = BoxMap(iw / rw, ih / rh, 0.0, 0.0, rx, ry, fw, fh)

        if self.spec.color == "BGR":
            image = image[..., ::-1]
        tensor: npt.NDArray[np.float32] | npt.NDArray[np.uint8]
        if self.spec.dtype == "uint8":
            tensor = np.ascontiguousarray(image)
        else:
            tensor = (image.astype(np.float32) - self._mean) * self._inv_std
        if self.spec.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        batch = np.ascontiguousarray(tensor[None])
        return IspOutput(batch, box_map, region)  # type: ignore[arg-type]


AREA_STEP_RATIO = 2.0
"""`_resize` halves an image by exact 2x2 averaging while the rest of the shrink stays at least
this factor on both axes; the last, fractional step is a single INTER_AREA."""


def _resize(
    image: npt.NDArray[np.uint8], width: int, height: int, interpolation: str = "area"
) -> npt.NDArray[np.uint8]:
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    # INTER_AREA averages the source pixels when shrinking (no aliasing on small people far
    # away); it degenerates to a poor filter when enlarging, where INTER_LINEAR is right.
    shrinking = width < w and height < h
    if interpolation == "area" and shrinking:
        return _area_shrink(image, width, height)
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR), np.uint8)


def _area_shrink(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """An anti-aliased shrink, fast on big frames: exact 2x2 box averages first, then one area step.

    OpenCV's INTER_AREA at a fractional factor (a 2160x2160 crop to 224x224 is 9.64x) walks a
    slow generic path, about 15 ms on a 4K crop here; at exactly 2x it takes a vectorised path
    that reads the frame once (about 2-3 ms). Averaging 2x2 blocks is what the single area
    resize does over those pixels, so each halving keeps the anti-aliasing; only the last step's
    fractional pixel edges fall on the halved grid instead of the source one. Halving stops
    while the last step still shrinks by `AREA_STEP_RATIO` or more, which keeps the output
    within about half a grey level of a single INTER_AREA on camera frames (tests/test_isp.py),
    and stops at an odd side, where a 2x step would not be exact (then it is one INTER_AREA).
    """
    h, w = image.shape[:2]
    while w % 2 == 0 and h % 2 == 0 and w // 2 >= AREA_STEP_RATIO * width and h // 2 >= AREA_STEP_RATIO * height:
        w, h = w // 2, h // 2
        image = np.asarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), np.uint8)
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
