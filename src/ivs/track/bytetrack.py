"""ByteTracker: detections in, the same detections out with the id of their track (see the
package's docstring)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ivs.detections import Detections, IntArray, box_iou
from ivs.track.appearance import _FEATURE_SIZE, F64, UInt8Array, _cover, _max_cover, appearance_features
from ivs.track.assign import _assign
from ivs.track.kalman import _kf_initiate, _kf_predict, _kf_update, _xyah_to_xyxy, _xyxy_to_xyah
from ivs.track.state import Track, TrackState, _Track

# ByteTrack matches a tentative (one-frame) track to a leftover confident detection when the
# cost 1 - IoU is at most 0.7. Not a parameter: it only decides how easily a new track is
# confirmed, and `min_hits` is the knob for that.
_CONFIRM_IOU = 0.3

# A box whose area changed more than this factor since its track last learnt its appearance
# likely holds two objects merged, or part of one: it teaches the track nothing.
_AREA_JUMP = 1.5
# How far, in box heights per frame hidden, a lost object may be re-identified from where
# its track is predicted (walkers move about 0.1 height a frame at 10 fps), up to reid_radius.
_REID_SPEED = 0.15
# A track lost while this much of its predicted box lies inside another track's detection is
# taken to be hidden in that box (see `_Track.hidden_by`).
_HIDDEN_COVER = 0.5
# Appearance distance past which a track never takes a box, however well they overlap (the
# same person seen on grass and on a road is about 0.2 apart, a red and a blue coat 0.4-0.5).
_MAX_APPEARANCE_DISTANCE = 0.5


class ByteTracker:
    """ByteTrack multi-object tracker; see the module docstring for an example.

    Confidence splits each frame's detections in three: *high* (>= `high_threshold`) ones are
    matched first against all confirmed tracks, including lost ones; *low* ones (between
    `low_threshold` and `high_threshold`) only continue tracks that were tracked in the previous
    frame and are still unmatched, since a weak box next to a track is most likely that object
    partly hidden, while a weak box on its own is most likely a false positive; the rest are
    ignored. Boxes that are not finite or have no width or height are ignored too.

    A new track starts from a high detection with confidence >= `new_track_threshold` that
    matched nothing. It stays tentative (no id, not reported) until it has been matched in
    `min_hits` consecutive frames, and is dropped at its first miss: a one-frame false positive
    never gets an id. As in ByteTrack, tracks started in the very first frame after construction
    or `reset()` are confirmed at once, so objects already in view get ids immediately. Ids are
    given when a track is confirmed, so the reported ids are 1, 2, 3, ... without the gaps
    ByteTrack leaves for tentative tracks that die.

    A confirmed track that is matched by nothing becomes lost: it is not reported, its Kalman
    filter keeps predicting it (with its height held fixed), and a high detection near the
    prediction takes it back with its old id. After `lost_frames` frames without a match it is
    removed for good.

    With pixels, two more ways back. A track lost while most of it lies inside a box that
    another track took (two people walking together, one box for both) is remembered as hidden
    in that track: while that track is followed, a detection near it that looks more like the
    hidden track than like it may go to the hidden one, however far the hidden one's own motion
    would have taken it (a person who stops behind someone comes out where they stopped). And
    a lost track is re-identified (`reid_distance`, `reid_radius`) from weak detections as well
    as confident ones: someone stepping out from behind another person is often detected
    weakly at first, and a weak box next to where a lost track is predicted that looks just
    like it is that object, not a stray.

    Args:
        high_threshold: confidence at which a detection takes part in the first association
            (and may start a track).
        low_threshold: detections below this confidence are ignored.
        new_track_threshold: confidence a high detection needs to start a track; at least
            `high_threshold`. Higher than it (ByteTrack adds 0.1) so that borderline boxes can
            continue tracks but not create them.
        match_iou: least IoU between a track's predicted box and a high detection for them to
            match (ByteTrack's cost 1 - IoU <= 0.8). Lower follows faster or jerkier motion but
            mixes up neighbours more.
        second_match_iou: least IoU for a low detection to continue a track; stricter than
            `match_iou` because low detections are less trustworthy.
        lost_frames: frames a lost track is kept to be re-identified by motion; scale it with
            the frame rate (ByteTrack uses 30 at 30 fps). 0 removes a track at its first miss.
        min_hits: consecutive matched frames before a new track is confirmed and reported;
            ByteTrack's behaviour is 2. 1 confirms every new track at once.
        class_aware: when true, a track only matches detections of its own class_id, so a
            person track never takes a car box. When false, the class is ignored and a track
            takes the class of the detection it last matched.
        appearance_weight: weight of the appearance distance (0 same, 1 nothing alike; see
            `appearance_features`) added to the cost 1 - IoU of each pair that passes the IoU
            gate, when `update` is given pixels. 0 turns appearance off altogether.
        appearance_momentum: a track's appearance is an exponential moving average over its
            clean sightings; this is the weight kept by the old one each time (BoT-SORT: 0.9).
        appearance_max_overlap: a detection more covered than this fraction of its area by
            another detection, or by where a lost track is predicted, shows more than one
            object: it neither teaches its track's appearance nor re-identifies a lost track.
        reid_distance: largest appearance distance at which a detection (confident or weak)
            that matched no track by IoU takes back a lost track's id.
        reid_radius: ... and largest distance between their centres, in box heights, from
            where the lost track is predicted; a track hidden for k frames reaches only
            0.15 k heights, so one lost briefly is not taken by a look-alike far off.

    Raises:
        ValueError: if a parameter is out of its range; the message says which and why.
    """

    def __init__(
        self,
        *,
        high_threshold: float = 0.5,
        low_threshold: float = 0.1,
        new_track_threshold: float = 0.6,
        match_iou: float = 0.2,
        second_match_iou: float = 0.5,
        lost_frames: int = 30,
        min_hits: int = 2,
        class_aware: bool = True,
        appearance_weight: float = 1.0,
        appearance_momentum: float = 0.9,
        appearance_max_overlap: float = 0.3,
        reid_distance: float = 0.15,
        reid_radius: float = 1.0,
    ) -> None:
        if not 0.0 <= low_threshold <= high_threshold <= 1.0:
            raise ValueError(
                "ByteTracker: expected 0 <= low_threshold <= high_threshold <= 1, "
                f"got low_threshold={low_threshold}, high_threshold={high_threshold}"
            )
        if not high_threshold <= new_track_threshold <= 1.0:
            raise ValueError(
                "ByteTracker: expected high_threshold <= new_track_threshold <= 1 (new tracks "
                f"start only from high detections), got new_track_threshold={new_track_threshold}, "
                f"high_threshold={high_threshold}"
            )
        for name, iou in (("match_iou", match_iou), ("second_match_iou", second_match_iou)):
            if not 0.0 < iou <= 1.0:
                raise ValueError(f"ByteTracker: expected 0 < {name} <= 1, got {iou}")
        if isinstance(lost_frames, bool) or not isinstance(lost_frames, int) or lost_frames < 0:
            raise ValueError(f"ByteTracker: expected lost_frames an int >= 0, got {lost_frames!r}")
        if isinstance(min_hits, bool) or not isinstance(min_hits, int) or min_hits < 1:
            raise ValueError(f"ByteTracker: expected min_hits an int >= 1, got {min_hits!r}")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.new_track_threshold = float(new_track_threshold)
        for name, v in (
            ("appearance_momentum", appearance_momentum),
            ("appearance_max_overlap", appearance_max_overlap),
            ("reid_distance", reid_distance),
        ):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"ByteTracker: expected 0 <= {name} <= 1, got {v}")
        for name, v in (("appearance_weight", appearance_weight), ("reid_radius", reid_radius)):
            if not v >= 0.0:
                raise ValueError(f"ByteTracker: expected {name} >= 0, got {v}")
        self.match_iou = float(match_iou)
        self.second_match_iou = float(second_match_iou)
        self.lost_frames = lost_frames
        self.min_hits = min_hits
        self.class_aware = bool(class_aware)
        self.appearance_weight = float(appearance_weight)
        self.appearance_momentum = float(appearance_momentum)
        self.appearance_max_overlap = float(appearance_max_overlap)
        self.reid_distance = float(reid_distance)
        self.reid_radius = float(reid_radius)
        self._tracks: list[_Track] = []
        self._frame = 0
        # Kept across reset(): an id is never handed out twice by one tracker, so whatever
        # downstream keys on ids (events, counts) cannot confuse an old object with a new one.
        self._next_id = 1

    def reset(self) -> None:
        """Forget all tracks (e.g. when the scene cuts). Ids keep counting up, never reused."""
        self._tracks = []
        self._frame = 0

    @property
    def tracks(self) -> tuple[Track, ...]:
        """Snapshots of all live tracks (tentative, tracked and lost), oldest first."""
        out = []
        for t in self._tracks:
            box = _xyah_to_xyxy(t.mean[None, :4])[0]
            out.append(
                Track(
                    id=t.id,
                    xyxy=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                    class_id=t.class_id,
                    state=t.state,
                    age=self._frame - t.start_frame,
                    hits=t.hits,
                    frames_since_seen=self._frame - t.last_seen,
                )
            )
        return tuple(out)

    def hidden(self) -> dict[int, int]:
        """Lost tracks taken to be hidden in a tracked one's box (two people walking together,
        one box for both): their id -> the id of the track whose box holds them. Apps count
        them where that box goes (a line crossed, a zone entered)."""
        return {
            t.id: t.hidden_by.id
            for t in self._tracks
            if t.state is TrackState.LOST and t.hidden_by is not None and t.hidden_by.state is TrackState.TRACKED
        }

    def update(self, det: Detections, pixels: UInt8Array | None = None) -> Detections:
        """Advance one frame: every detection, with `tracker_id` its confirmed track's id or -1.

        `pixels` is the frame the detections came from (HxWx3 uint8 RGB, boxes in its pixel
        coordinates); given, what each object looks like helps to match it (see the class
        docstring), and without it tracking is by motion and overlap alone.

        The returned rows are the input rows (boxes as detected, not as filtered, and every
        other field and per-detection `data` array carried over), all of them, in input order.
        """
        if not isinstance(det, Detections):
            raise TypeError(f"ByteTracker.update: expected Detections, got {type(det).__name__}")
        if pixels is not None and (pixels.ndim != 3 or pixels.shape[2] != 3):
            raise ValueError(f"ByteTracker.update: expected pixels HxWx3, got shape {pixels.shape}")
        self._frame += 1
        self._predict()

        xyxy = det.xyxy
        wh = xyxy[:, 2:] - xyxy[:, :2]
        usable = np.isfinite(xyxy).all(axis=1) & (wh > 0).all(axis=1)
        usable &= det.confidence >= self.low_threshold
        high = usable & (det.confidence >= self.high_threshold)
        high_idx = np.flatnonzero(high)
        low_idx = np.flatnonzero(usable & ~high)

        feats, clean = self._appearance(det, pixels, usable)
        confirmed = [t for t in self._tracks if t.state is not TrackState.TENTATIVE]
        tentative = [t for t in self._tracks if t.state is TrackState.TENTATIVE]
        matches: list[tuple[_Track, int]] = []

        # 1. Confident detections against every confirmed track, lost ones included, so an
        # object that reappears near where its track was predicted gets its old id back.
        pairs, free_tracks, free_high = self._associate(confirmed, det, high_idx, self.match_iou, feats)
        matches += [(confirmed[i], int(high_idx[j])) for i, j in pairs]

        # 2. Weak detections only continue tracks that were tracked until now: a lost track's
        # prediction has drifted, and a weak box near it is more likely something else.
        still = [confirmed[i] for i in free_tracks if confirmed[i].state is TrackState.TRACKED]
        pairs, free_still, free_low = self._associate(still, det, low_idx, self.second_match_iou, feats)
        matches += [(still[i], int(low_idx[j])) for i, j in pairs]
        for i in free_still:
            still[i].state = TrackState.LOST
        self._note_hiding([still[i] for i in free_still], matches, det)

        # 2b. Lost tracks that overlap no confident detection, re-identified by appearance
        # near where they were predicted. Weak boxes count here too: someone coming out from
        # behind another person is often detected weakly at first, and a weak box that looks
        # just like a lost track next to where it is predicted is that object, not a stray.
        rest = high_idx[free_high]
        if feats is not None:
            lost = [confirmed[i] for i in free_tracks if confirmed[i].state is TrackState.LOST]
            cand = np.concatenate([rest, low_idx[free_low]])
            pairs, free_cand = self._reidentify(lost, det, cand, feats, clean)
            matches += [(lost[i], int(cand[j])) for i, j in pairs]
            rest = cand[free_cand[free_cand < len(rest)]]

        # 3. Tentative tracks against the confident detections nobody took; a miss kills them.
        pairs, free_tentative, free_rest = self._associate(tentative, det, rest, _CONFIRM_IOU, feats)
        matches += [(tentative[i], int(rest[j])) for i, j in pairs]
        dead = {tentative[i] for i in free_tentative}

        # Boxes that cover where an unmatched lost object is predicted may show it too.
        if feats is not None:
            hidden = [t for t in self._tracks if t.state is TrackState.LOST and t not in {m for m, _ in matches}]
            if hidden:
                boxes = _xyah_to_xyxy(np.stack([t.mean[:4] for t in hidden]))
                clean &= _cover(xyxy, boxes).max(axis=1) <= self.appearance_max_overlap
        self._correct(matches, det)
        if feats is not None:
            self._learn(matches, det, feats, clean)

        # 4. New tracks from confident detections that matched nothing.
        new_idx = rest[free_rest]
        new_idx = new_idx[det.confidence[new_idx] >= self.new_track_threshold]
        born = self._start(new_idx, det)
        if feats is not None:
            self._learn(list(zip(born, new_idx.tolist(), strict=True)), det, feats, clean)

        # 5. Drop dead tentative tracks and lost tracks past their time.
        self._tracks = [
            t
            for t in self._tracks
            if t not in dead and not (t.state is TrackState.LOST and self._frame - t.last_seen > self.lost_frames)
        ]
        return _with_ids(det, [*matches, *zip(born, new_idx.tolist(), strict=True)])

    def _appearance(
        self, det: Detections, pixels: UInt8Array | None, usable: npt.NDArray[np.bool_]
    ) -> tuple[F64 | None, npt.NDArray[np.bool_]]:
        """Appearance of every usable box (None without pixels), and whether each is clean: a box
        much covered by another one shows two objects, and must neither teach a track nor
        re-identify one."""
        clean = np.zeros(len(det), bool)
        if pixels is None or self.appearance_weight <= 0 or not len(det):
            return None, clean
        feats = np.zeros((len(det), _FEATURE_SIZE))
        idx = np.flatnonzero(usable)
        feats[idx] = appearance_features(pixels, det.xyxy[idx])
        clean[idx] = _max_cover(det.xyxy[idx]) <= self.appearance_max_overlap
        clean &= np.abs(feats).sum(axis=1) > 0
        return feats, clean

    # -- steps -------------------------------------------------------------------------------

    def _predict(self) -> None:
        if not self._tracks:
            return
        mean = np.stack([t.mean for t in self._tracks])
        cov = np.stack([t.cov for t in self._tracks])
        # ByteTrack holds a lost track's height still: without measurements a growing or
        # shrinking box would keep doing so and soon match nothing (or everything).
        lost = np.array([t.state is TrackState.LOST for t in self._tracks])
        mean[lost, 7] = 0.0
        mean, cov = _kf_predict(mean, cov)
        for t, m, c in zip(self._tracks, mean, cov, strict=True):
            t.mean, t.cov = m, c

    def _associate(
        self, tracks: list[_Track], det: Detections, idx: IntArray, min_iou: float, feats: F64 | None
    ) -> tuple[list[tuple[int, int]], list[int], IntArray]:
        """Optimal one-to-one matching of tracks to det rows `idx` with IoU >= min_iou.

        The cost of a pair is 1 - IoU plus `appearance_weight` times their appearance
        distance, where both have an appearance.
        Returns (track, position in idx) pairs, unmatched track positions, unmatched positions
        in idx.
        """
        if not tracks or len(idx) == 0:
            return [], list(range(len(tracks))), np.arange(len(idx))
        boxes = _xyah_to_xyxy(np.stack([t.mean[:4] for t in tracks])).astype(np.float32)
        iou = box_iou(boxes, det.xyxy[idx]).astype(np.float64)
        if feats is not None:
            self._emerging(tracks, det, idx, feats, iou)
        if self.class_aware:
            classes = np.array([t.class_id for t in tracks])
            iou[classes[:, None] != det.class_id[idx][None, :]] = 0.0
        cost = 1.0 - iou
        limit = 1.0 - min_iou
        if feats is not None:
            dist = self._distance(tracks, feats[idx])
            # Boxes that overlap but look nothing alike are different objects.
            ok = (iou >= min_iou) & (dist <= _MAX_APPEARANCE_DISTANCE)
            cost = np.where(ok, cost + self.appearance_weight * dist, np.inf)
            limit += self.appearance_weight * _MAX_APPEARANCE_DISTANCE
        pairs = _assign(cost, limit)
        tracked = {i for i, _ in pairs}
        taken = {j for _, j in pairs}
        free_tracks = [i for i in range(len(tracks)) if i not in tracked]
        free_det = np.array([j for j in range(len(idx)) if j not in taken], np.int64)
        return pairs, free_tracks, free_det

    def _emerging(self, tracks: list[_Track], det: Detections, idx: IntArray, feats: F64, iou: F64) -> None:
        """Let hidden tracks match boxes coming out of the box they vanished into (in place).

        An object hidden in another track's box (two people walking together, one box for
        both) comes out of that box wherever its own motion had it going: it may match a box
        as well as that box's track could, but only one that looks more like it than like
        that track, so that a part of the other object's box is not taken for it.
        """
        for k, t in enumerate(tracks):
            h = t.hidden_by
            if t.state is not TrackState.LOST or h is None or h.state is not TrackState.TRACKED:
                continue
            if t.feature is None or h.feature is None:
                continue
            alt = box_iou(_xyah_to_xyxy(h.mean[None, :4]).astype(np.float32), det.xyxy[idx])[0]
            dist = self._distance([t, h], feats[idx])
            iou[k] = np.where(dist[0] < dist[1], np.maximum(iou[k], alt), iou[k])

    @staticmethod
    def _distance(tracks: list[_Track], feats: F64) -> F64:
        """(tracks, dets) appearance distances in [0, 1]; 0 where either has no appearance."""
        known = [t.feature if t.feature is not None else np.zeros(feats.shape[1]) for t in tracks]
        sim = np.stack(known) @ feats.T
        has = (np.abs(np.stack(known)).sum(axis=1) > 0)[:, None] & (np.abs(feats).sum(axis=1) > 0)[None, :]
        out: F64 = np.where(has, np.clip(1.0 - sim, 0.0, 1.0), 0.0)
        return out

    def _reidentify(
        self, tracks: list[_Track], det: Detections, idx: IntArray, feats: F64, clean: npt.NDArray[np.bool_]
    ) -> tuple[list[tuple[int, int]], IntArray]:
        """Lost tracks matched to clean det rows `idx` that look alike and are near enough."""
        if not tracks or len(idx) == 0:
            return [], np.arange(len(idx))
        dist = self._distance(tracks, feats[idx])
        known = np.array([t.feature is not None for t in tracks])
        pred = np.stack([t.mean[:4] for t in tracks])
        z = _xyxy_to_xyah(det.xyxy[idx])
        h = np.maximum(pred[:, 3:4], z[None, :, 3])
        gap = np.hypot(pred[:, 0:1] - z[None, :, 0], pred[:, 1:2] - z[None, :, 1]) / h
        # Where the object may be now grows with the time it was hidden, up to reid_radius.
        lost_for = np.array([self._frame - t.last_seen for t in tracks], np.float64)[:, None]
        reach = np.minimum(self.reid_radius, _REID_SPEED * lost_for)
        ok = known[:, None] & clean[idx][None, :] & (gap <= reach) & (dist <= self.reid_distance)
        if self.class_aware:
            classes = np.array([t.class_id for t in tracks])
            ok &= classes[:, None] == det.class_id[idx][None, :]
        pairs = _assign(np.where(ok, dist, np.inf), self.reid_distance)
        taken = {j for _, j in pairs}
        return pairs, np.array([j for j in range(len(idx)) if j not in taken], np.int64)

    def _learn(
        self, matches: list[tuple[_Track, int]], det: Detections, feats: F64, clean: npt.NDArray[np.bool_]
    ) -> None:
        """Blend the clean matched detections' appearance into their tracks'.

        A box much bigger or smaller than the last one learnt from is left out too: it most
        likely holds two objects merged into one box, or only part of one.
        """
        m = self.appearance_momentum
        wh = det.xyxy[:, 2:] - det.xyxy[:, :2]
        area = (wh[:, 0] * wh[:, 1]).astype(np.float64)
        for t, j in matches:
            if not clean[j]:
                continue
            if t.feature is not None and not 1 / _AREA_JUMP <= area[j] / t.feature_area <= _AREA_JUMP:
                continue
            t.feature_area = float(area[j])
            f = feats[j] if t.feature is None else m * t.feature + (1 - m) * feats[j]
            t.feature = f / max(float(np.linalg.norm(f)), 1e-12)

    def _note_hiding(self, lost: list[_Track], matches: list[tuple[_Track, int]], det: Detections) -> None:
        """Remember, for tracks lost this frame, the matched track whose box covers most of them."""
        if not lost or not matches:
            return
        pred = _xyah_to_xyxy(np.stack([t.mean[:4] for t in lost]))
        cover = _cover(pred, det.xyxy[[j for _, j in matches]])
        for t, row in zip(lost, cover, strict=True):
            k = int(row.argmax())
            t.hidden_by = matches[k][0] if row[k] >= _HIDDEN_COVER else None

    def _correct(self, matches: list[tuple[_Track, int]], det: Detections) -> None:
        """Kalman-update matched tracks with their detections and advance their state."""
        if not matches:
            return
        mean = np.stack([t.mean for t, _ in matches])
        cov = np.stack([t.cov for t, _ in matches])
        z = _xyxy_to_xyah(det.xyxy[[j for _, j in matches]])
        mean, cov = _kf_update(mean, cov, z)
        # Ids go out in input order, so that the same input always yields the same ids.
        for (t, j), m, c in sorted(zip(matches, mean, cov, strict=True), key=lambda r: r[0][1]):
            t.mean, t.cov = m, c
            t.hits += 1
            t.last_seen = self._frame
            if not self.class_aware:
                t.class_id = int(det.class_id[j])
            if t.state is TrackState.LOST:
                t.state = TrackState.TRACKED
                t.hidden_by = None
            elif t.state is TrackState.TENTATIVE and t.hits >= self.min_hits:
                self._confirm(t)

    def _start(self, idx: IntArray, det: Detections) -> list[_Track]:
        """New tracks from det rows `idx`, appended to the track list and returned."""
        if len(idx) == 0:
            return []
        mean, cov = _kf_initiate(_xyxy_to_xyah(det.xyxy[idx]))
        confirm_now = self._frame == 1 or self.min_hits <= 1
        born: list[_Track] = []
        for j, m, c in zip(idx, mean, cov, strict=True):
            t = _Track(
                id=-1,
                mean=m,
                cov=c,
                class_id=int(det.class_id[j]),
                state=TrackState.TENTATIVE,
                start_frame=self._frame,
                last_seen=self._frame,
            )
            if confirm_now:
                self._confirm(t)
            born.append(t)
        self._tracks += born
        return born

    def _confirm(self, t: _Track) -> None:
        t.state = TrackState.TRACKED
        t.id = self._next_id
        self._next_id += 1


def _with_ids(det: Detections, matches: list[tuple[_Track, int]]) -> Detections:
    """Every detection, with the id of the confirmed track it matched, or -1."""
    ids = np.full(len(det), -1, np.int64)
    for t, j in matches:
        if t.state is TrackState.TRACKED:
            ids[j] = t.id
    out = det[np.arange(len(det))]
    out.tracker_id = ids
    return out
