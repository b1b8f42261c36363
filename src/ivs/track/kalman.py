"""The constant-velocity Kalman filter ByteTrack predicts boxes with: state (cx, cy, aspect w/h,
h) and their velocities, batched over tracks."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ivs.detections import FloatArray

F64 = npt.NDArray[np.float64]
UInt8Array = npt.NDArray[np.uint8]

# Kalman filter noise, as a fraction of the box height (ByteTrack's and DeepSORT's values):
# position is uncertain by about 1/20 of the height, velocity by 1/160 of it per frame, so the
# filter trusts big (near) boxes' pixels less than small (far) ones' in absolute terms.
_STD_POSITION = 1.0 / 20
_STD_VELOCITY = 1.0 / 160
# The state is (cx, cy, aspect, h) and their velocities; one step is one frame.
_MOTION = np.eye(8)
_MOTION[:4, 4:] = np.eye(4)


def _xyxy_to_xyah(xyxy: FloatArray) -> F64:
    b = np.asarray(xyxy, np.float64)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    return np.stack([b[:, 0] + w / 2, b[:, 1] + h / 2, w / h, h], axis=1)


def _xyah_to_xyxy(xyah: F64) -> F64:
    cx, cy, a, h = xyah.T
    w = a * h
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _diag(std: F64) -> F64:
    """(N, k) standard deviations to (N, k, k) diagonal covariances."""
    k = std.shape[1]
    out: F64 = (std**2)[:, :, None] * np.eye(k)
    return out


def _kf_initiate(z: F64) -> tuple[F64, F64]:
    h = z[:, 3]
    p, v = _STD_POSITION * h, _STD_VELOCITY * h
    # Velocity starts at zero but very uncertain (10x), so the second detection sets it.
    std = np.stack(
        [2 * p, 2 * p, np.full_like(h, 1e-2), 2 * p, 10 * v, 10 * v, np.full_like(h, 1e-5), 10 * v],
        axis=1,
    )
    mean = np.concatenate([z, np.zeros_like(z)], axis=1)
    return mean, _diag(std)


def _kf_predict(mean: F64, cov: F64) -> tuple[F64, F64]:
    h = mean[:, 3]
    p, v = _STD_POSITION * h, _STD_VELOCITY * h
    std = np.stack([p, p, np.full_like(h, 1e-2), p, v, v, np.full_like(h, 1e-5), v], axis=1)
    mean = mean @ _MOTION.T
    cov = _MOTION @ cov @ _MOTION.T + _diag(std)
    return mean, cov


def _kf_update(mean: F64, cov: F64, z: F64) -> tuple[F64, F64]:
    h = mean[:, 3]
    p = _STD_POSITION * h
    # The measurement (the detection) is the first four state entries.
    s = cov[:, :4, :4] + _diag(np.stack([p, p, np.full_like(h, 1e-1), p], axis=1))
    ph = cov[:, :, :4]  # P H^T
    # K = P H^T S^-1; S is symmetric, so K^T = solve(S, H P).
    gain = np.linalg.solve(s, ph.transpose(0, 2, 1)).transpose(0, 2, 1)
    mean = mean + (gain @ (z - mean[:, :4])[:, :, None])[:, :, 0]
    cov = cov - gain @ s @ gain.transpose(0, 2, 1)
    return mean, cov
