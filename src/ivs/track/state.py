"""A track's state and the snapshot `ByteTracker.tracks` gives out."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ivs.track.appearance import F64


class TrackState(enum.Enum):
    """Where a track is in its life."""

    TENTATIVE = "tentative"
    """Started from a detection but not yet confirmed; has no id and is not reported."""
    TRACKED = "tracked"
    """Confirmed and matched in the latest frame; reported with its id."""
    LOST = "lost"
    """Confirmed but unmatched since; predicted on for `lost_frames` frames to be found again."""


@dataclass(frozen=True)
class Track:
    """A read-only snapshot of one track (see `ByteTracker.tracks`), for debugging and drawing."""

    id: int
    """The tracker id; -1 while the track is tentative."""
    xyxy: tuple[float, float, float, float]
    """The Kalman filter's box: the filtered one if seen this frame, else the prediction."""
    class_id: int
    state: TrackState
    age: int
    """Frames since the track was started, 0 in the frame that started it."""
    hits: int
    """Frames in which a detection was matched to the track."""
    frames_since_seen: int
    """0 if a detection was matched to it in the latest frame."""


@dataclass(eq=False)
class _Track:
    id: int  # -1 until confirmed
    mean: F64  # (8,) Kalman state
    cov: F64  # (8, 8)
    class_id: int
    state: TrackState
    start_frame: int
    last_seen: int
    hits: int = 1
    feature: F64 | None = None  # (D,) unit appearance descriptor, EMA over clean sightings
    feature_area: float = 0.0  # box area at the last sighting that taught `feature`
    # The track whose box this one vanished into (two objects, one box): while that track is
    # followed, this one may be anywhere in its box, whatever its own motion predicts.
    hidden_by: _Track | None = None
