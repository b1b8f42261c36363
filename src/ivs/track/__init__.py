"""ByteTrack: multi-object tracking that gives each detected object an id that lasts.

`ByteTracker.update()` takes one frame's `Detections` and returns every one of them, in order,
with `tracker_id` set: the id of its confirmed track, or -1 (`Detections.tracked()` keeps the
ones with an id). It follows ByteTrack (Zhang et al., "ByteTrack:
Multi-Object Tracking by Associating Every Detection Box", ECCV 2022): a constant-velocity
Kalman filter predicts every track's box, confident detections are matched to the predictions
by IoU first, and the tracks left over then get a second chance with the low-confidence
detections, which are often the same objects half occluded. When the frame's pixels are given
too, a cheap colour descriptor of each box (no learned model) joins the matching cost, as in
DeepSORT and BoT-SORT, and lets a lost track be found again by its looks; without them the
tracker uses box motion and overlap alone.

>>> import numpy as np
>>> from ivs.detections import Detections
>>> tracker = ByteTracker()
>>> for x in (10.0, 14.0, 18.0):  # one person walking right, 4 px a frame
...     det = Detections(xyxy=np.array([[x, 20, x + 40, 120]], np.float32),
...                      confidence=np.array([0.9], np.float32), class_id=np.array([0]))
...     out = tracker.update(det).tracked()
>>> out.tracker_id.tolist(), out.xyxy.tolist()
([1], [[18.0, 20.0, 58.0, 120.0]])
>>> [(t.id, t.state.value, t.hits) for t in tracker.tracks]
[(1, 'tracked', 3)]
"""

from __future__ import annotations

from ivs.track.appearance import appearance_features
from ivs.track.assign import _assign
from ivs.track.bytetrack import ByteTracker
from ivs.track.state import Track, TrackState

__all__ = ["ByteTracker", "Track", "TrackState", "_assign", "appearance_features"]
