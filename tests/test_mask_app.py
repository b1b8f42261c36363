"""Mask check end to end: two real faces (one masked) move through 20 frames; the face
detector, the mask classifier and the mask app send one ping per person, not one per frame."""

from __future__ import annotations

import cv2
import numpy as np

from ivs.apps.mask import MaskCheck
from ivs.events import MaskPing
from ivs.model import load_model
from ivs.sensor import Sensor
from ivs.sources.synthetic import Figure, SyntheticSource
from tests.conftest import DATA


def face(name: str) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(DATA / name))[..., ::-1])


def test_one_ping_per_person(tmp_path):
    plain, masked = face("astronaut_face.png"), face("astronaut_face_masked.png")
    figures = [
        Figure(x=40, y=120, vx=4, vy=0, w=194, h=250, color=(0, 0, 0), sprite=plain),
        Figure(x=400, y=140, vx=-4, vy=1, w=194, h=250, color=(0, 0, 0), sprite=masked),
    ]
    src = SyntheticSource(640, 480, fps=10, frames=20, figures=figures)
    # The short-range face model sees a 640x480 frame at 128x128: 2x2 tiles give each face
    # enough pixels (a masked face is harder to find: half of it is covered).
    face_model = load_model("face", runtime="onnxruntime", tiles=(2, 2))
    mask_model = load_model("mask", runtime="onnxruntime")
    app = MaskCheck("door", "mask", mask_model.labels.index("mask"), min_frames=3, min_share=0.7)
    pings: list[MaskPing] = []

    class Sink:
        def write(self, m) -> None:
            if isinstance(m, MaskPing):
                pings.append(m)

        def close(self) -> None:
            pass

    Sensor(src, face_model, [Sink()], fps=0, second_stage=[mask_model], apps=[app], emit_frames=False).run()
    face_model.close()
    mask_model.close()
    assert sorted(p.mask for p in pings) == [False, True]
    assert len({p.track_id for p in pings}) == 2
    assert app.totals == {"mask": 1, "no_mask": 1}
