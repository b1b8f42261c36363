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
    dtype: Literal["float32", "uint8"] = Field(
        "float32", description="Element type; uint8 inputs skip normalisation."
    )
    mean: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="Subtracted per channel (in `color` order) before `std`."
    )
    std: tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="Divides each channel after `mean`: (x - mean) / std."
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

    >>> spec = InputSpec(name="x", width=4, height=4, layout="NCHW", mean=(0, 0, 0), std=(255, 255, 255))
    >>> out = Isp(spec).process(np.full((8, 16, 3), 255, np.uint8))
    >>> out.tensor.shape, float(out.tensor.max())
    ((1, 3, 4, 4), 1.0)
    """

    def __init__(self, spec: InputSpec, roi: Roi | None = None) -> None:
        self.spec = spec
        self.roi = roi
        self._mean = np.asarray(spec.mean, np.float32)
        self._inv_std = (1.0 / np.asarray(spec.std, np.float32)).astype(np.float32)

    def process(self, pixels: npt.NDArray[np.uint8]) -> IspOutput:
        fh, fw = pixels.shape[:2]
        if self.roi is not None:
            self.roi.check_inside(fw, fh)
            rx, ry, rw, rh = self.roi.x, self.roi.y, self.roi.w, self.roi.h
        else:
            rx, ry, rw, rh = 0, 0, fw, fh
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
            canvas[py : py + nh, px : px + nw] = _resize(region, nw, nh)
            image = canvas
            box_map = BoxMap(nw / rw, nh / rh, px, py, rx, ry, fw, fh)
        else:
            image = _resize(region, iw, ih)
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


def _resize(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    # INTER_AREA averages the source pixels when shrinking (no aliasing on small people far
    # away); it degenerates to a poor filter when enlarging, where INTER_LINEAR is right.
    interp = cv2.INTER_AREA if width < w and height < h else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width, height), interpolation=interp), np.uint8)
