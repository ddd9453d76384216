"""Fusion over time: a per-class 3D multi-object tracker over the keyframe detections of one scene.

The tracker takes a scene's detections frame by frame (`FrameDetections`, global frame) and gives
every box a track id, a velocity from the track's motion, a heading whose 180-degree ambiguity the
track settles, and a score that knows the track:

- Association: per class, the BEV (x, y) distance between each track's predicted centre and each
  detection, gated per class, solved optimally with `scipy.optimize.linear_sum_assignment`. A track
  with a single detection has no velocity yet, so its gate grows by the class's top speed times
  the time since that detection.
- Motion: a constant-velocity Kalman filter per track, state `(x, y, vx, vy)` in the global
  frame (m, m/s), measurement `(x, y)`; the process noise is white acceleration with a per-class
  spread. The filter runs batched: all live tracks of a scene are rows of arrays, and one numpy
  expression predicts them all, one updates every track that found a box (`cv_predict`,
  `cv_update`), one smoothing pass runs backwards over all finished tracks (`rts_smooth`). The
  equations are the tiny 4-state ones of `filterpy.kalman.KalmanFilter` (Joseph-form update, its
  RTS smoother), identical for every track; one filterpy object per track cost its Python calls
  per track and frame, several times the whole tracker's budget with a few hundred boxes a frame.
  The tests hold the batched filter to filterpy's, track by track.
- `online` mode (causal, as the car would run it): each box gets its track's filtered velocity at
  that frame; the heading of a moving track is flipped to agree with that velocity; the score is
  the detection's, scored down while its track holds a single detection.
- `offline` mode (the whole scene is known): the forward filter, then Rauch-Tung-Striebel smoothing
  of every whole track, so each velocity uses the future too; a track that never gets
  `min_displacement_m` from where it started stands, and its velocity is 0. The heading of each
  box follows the smoothed motion where the track moves; where it stands, the detected heading is
  turned the way the whole track votes for: each standing detection for the way it points, each
  moving one for the way the track moves, by their scores. So an object that stops keeps the
  heading it arrived with, while a parked object whose track drifts for a few weak detections
  (a neighbour's, or the detector's centre wandering) keeps its own. A parked vehicle, which no
  motion turns, faces the way the traffic in the lane beside it flows, where vehicles pass it
  (`_traffic_flow`): that settles what a detector often cannot read from a vehicle's outline.
  Scores blend the detection's with the track's mean; short tracks are scored down (not where the
  scene had no other keyframe to confirm them, e.g. a one-keyframe log); gaps of at
  most `bridge_max_frames` missed keyframes inside a track are bridged with boxes at the smoothed
  positions.

Keyframes out of order (a timestamp not after the previous one) or further apart than
`max_gap_s` end every track there (a `TrackCut` says where and why), because no motion model
bridges them.

Determinism: detections are put in a fixed order (class, score descending, x, y, then input
order) before association, track ids are handed out in that order, and nothing depends on set or
dict ordering; the same detections give the same tracks and the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from avfusion.labels import CLASS_INDEX, DETECTION_CLASSES

TrackMode = Literal["online", "offline"]
TRACK_MODES: tuple[str, ...] = ("online", "offline")

# A cost no gated pair reaches (metres); pairs beyond their gate carry it and are discarded.
_UNREACHABLE_M = 1e6


# ---------------------------------------------------------------------------------------------
# Values


def _column(name: str, value: object, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    array: np.ndarray = np.array(value, dtype=dtype)
    if array.size == 0 and shape[0] == 0:
        array = array.reshape(shape)
    if array.shape != shape:
        raise ValueError(f"FrameDetections.{name} must have shape {shape}, got {array.shape}")
    array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True, eq=False)
class FrameDetections:
    """One keyframe's boxes in the global frame (struct of arrays, N boxes); arrays are copied and
    made read-only on construction.

    Attributes:
        sample_token: the keyframe's sample token.
        timestamp_us: the keyframe's time (integer microseconds).
        center: `(N, 3)` float64 box centres (m, global frame: x east, y north, z up).
        size_wlh: `(N, 3)` float64 width, length, height (m).
        yaw_rad: `(N,)` float64 heading about +z (0 = along +x).
        velocity_xy: `(N, 2)` float64 m/s in the global frame; NaN = unknown.
        score: `(N,)` float64 confidence.
        label: `(N,)` int64 index into `DETECTION_CLASSES`.
        attribute: `(N,)` int64 index into `labels.ATTRIBUTES`, -1 = none.
        track_id: `(N,)` int64 the box's track (unique within a scene), -1 = not tracked (inputs).
        interpolated: `(N,)` bool, True for a box the tracker added to bridge a missed detection.
    """

    sample_token: str
    timestamp_us: int
    center: np.ndarray
    size_wlh: np.ndarray
    yaw_rad: np.ndarray
    velocity_xy: np.ndarray
    score: np.ndarray
    label: np.ndarray
    attribute: np.ndarray
    track_id: np.ndarray | None = None
    interpolated: np.ndarray | None = None

    def __post_init__(self) -> None:
        center = np.array(self.center, dtype=np.float64)
        n = center.shape[0] if center.ndim == 2 else (0 if center.size == 0 else -1)
        if n < 0:
            raise ValueError(f"FrameDetections.center must have shape (N, 3), got {center.shape}")
        object.__setattr__(self, "timestamp_us", int(self.timestamp_us))
        object.__setattr__(self, "center", _column("center", center, (n, 3), np.float64))
        object.__setattr__(self, "size_wlh", _column("size_wlh", self.size_wlh, (n, 3), np.float64))
        object.__setattr__(self, "yaw_rad", _column("yaw_rad", self.yaw_rad, (n,), np.float64))
        object.__setattr__(self, "velocity_xy", _column("velocity_xy", self.velocity_xy, (n, 2), np.float64))
        object.__setattr__(self, "score", _column("score", self.score, (n,), np.float64))
        object.__setattr__(self, "label", _column("label", self.label, (n,), np.int64))
        object.__setattr__(self, "attribute", _column("attribute", self.attribute, (n,), np.int64))
        track_id = np.full(n, -1, np.int64) if self.track_id is None else self.track_id
        object.__setattr__(self, "track_id", _column("track_id", track_id, (n,), np.int64))
        interpolated = np.zeros(n, bool) if self.interpolated is None else self.interpolated
        object.__setattr__(self, "interpolated", _column("interpolated", interpolated, (n,), bool))
        if n and (self.label.min() < 0 or self.label.max() >= len(DETECTION_CLASSES)):
            raise ValueError(
                f"FrameDetections.label must be in [0, {len(DETECTION_CLASSES)}), got {np.unique(self.label).tolist()}"
            )
        if not (np.isfinite(self.center).all() and np.isfinite(self.yaw_rad).all() and np.isfinite(self.score).all()):
            raise ValueError(f"FrameDetections {self.sample_token}: centre, yaw and score must be finite")

    def __len__(self) -> int:
        return int(self.center.shape[0])


@dataclass(frozen=True, slots=True)
class TrackCut:
    """Where every track was ended because the keyframes cannot be bridged: the first keyframe
    after the break, and why ("out of order: ..." or "gap of ... s")."""

    sample_token: str
    reason: str


@dataclass(frozen=True, slots=True)
class SceneTracks:
    """A tracked scene: the frames in input order (boxes with track ids, velocities, headings,
    scores; offline frames may hold bridging boxes), where tracks were cut, the number of tracks."""

    frames: tuple[FrameDetections, ...]
    cuts: tuple[TrackCut, ...]
    num_tracks: int


# ---------------------------------------------------------------------------------------------
# Configuration


def _per_class(values: Mapping[str, float]) -> tuple[float, ...]:
    missing = [name for name in DETECTION_CLASSES if name not in values]
    if missing:
        raise ValueError(f"tracker parameter lacks classes {missing}")
    return tuple(float(values[name]) for name in DETECTION_CLASSES)


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Tracker parameters. Per-class tuples are in `DETECTION_CLASSES` order.

    Attributes:
        gate_m: association gate of a track with a velocity: BEV distance (m) from its prediction.
        max_speed_mps: top speed of the class (m/s): a single-detection track's gate grows by it
            times the seconds since that detection.
        accel_std_mps2: white-acceleration spread of the motion model (m/s^2).
        position_std_m: spread of a detected centre (m).
        initial_speed_std_mps: spread of the unknown velocity of a new track (m/s).
        min_score: detections below this score never start a track; they only continue a track
            that has a velocity (two or more detections) and found no confident detection, within
            the plain gate. Those left over stay untracked (track id -1, as detected).
        max_gap_s: a track ends after this long without a detection; keyframes further apart end
            every track.
        moving_speed_mps: above this speed a track's heading follows its motion.
        min_displacement_m: offline, a track whose smoothed positions never get this far from
            where it started is standing: it never moves.
        min_hits: tracks with fewer detections are "short" (offline: fewer than this or than the
            keyframes of their stretch of the scene between cuts, whichever is less).
        short_track_factor: offline, score factor of a short track's boxes.
        online_short_track_factor: online, score factor of a box whose track has fewer than
            `min_hits` detections so far.
        track_score_weight: offline, weight of the track's mean detection score in a box's score
            (the rest is the detection's own).
        bridge_max_frames: offline, gaps of at most this many missed keyframes inside a track are
            filled with interpolated boxes.
        bridge_score_factor: score of a bridging box relative to the lower of its neighbours'.
        smooth_centres: move detected centres (x, y) onto the track: the smoothed one offline, the
            filtered one online.
        settle_standing: offline, the standing detections' own headings vote on the way a track's
            standing headings point (else only its motion does, and a track that never moves
            keeps its headings as detected).
        snap_standing: offline, the velocity of a track that never moves is exactly 0 (the
            smoother's would be the detected centres' jitter).
        heading_from_motion: a moving box's heading is its motion's direction (instead of its
            detected heading turned by pi where it disagrees); online, once its track has
            `min_hits` detections.
        follow_traffic: offline, a track of `parked_classes` with `min_hits` detections that never
            moves faces the way the traffic of the lane beside it moves, where there is such
            traffic: parked vehicles face the flow of their side of the road (`_traffic_flow`).
        traffic_classes: the classes that make up traffic.
        parked_classes: the classes whose standing tracks follow the traffic. Buses are not among
            them: they stand in lanes and at stops with traffic close on both sides, and on the
            tuning log (seed 3000) following it turned more of their headings wrong than right.
        traffic_speed_mps: a step of a vehicle moving at least this fast is traffic past a
            standing track where its motion is within `traffic_parallel_deg` of the track's axis
            (either way), and its line of travel passes within `traffic_lateral_m` of the track,
            at most `traffic_reach_m` from it along that line;
        lane_width_m: of those, the ones within this of the nearest line are the lane beside the
            track: their votes (one per passing track) decide. A passing track that comes within
            this of the standing track's centre while it stands is a drifting track, not traffic.
    """

    gate_m: tuple[float, ...] = _per_class(
        {
            "car": 3.0,
            "truck": 4.0,
            "bus": 4.5,
            "trailer": 4.0,
            "construction_vehicle": 3.0,
            "pedestrian": 1.5,
            "motorcycle": 3.0,
            "bicycle": 2.5,
            "traffic_cone": 1.0,
            "barrier": 1.0,
        }
    )
    max_speed_mps: tuple[float, ...] = _per_class(
        {
            "car": 20.0,
            "truck": 18.0,
            "bus": 16.0,
            "trailer": 16.0,
            "construction_vehicle": 8.0,
            "pedestrian": 3.0,
            "motorcycle": 20.0,
            "bicycle": 9.0,
            "traffic_cone": 0.0,
            "barrier": 0.0,
        }
    )
    accel_std_mps2: tuple[float, ...] = _per_class(
        {
            "car": 1.5,
            "truck": 1.2,
            "bus": 1.0,
            "trailer": 1.0,
            "construction_vehicle": 1.0,
            "pedestrian": 0.8,
            "motorcycle": 2.0,
            "bicycle": 1.2,
            "traffic_cone": 0.1,
            "barrier": 0.1,
        }
    )
    position_std_m: tuple[float, ...] = _per_class(
        {
            "car": 0.3,
            "truck": 0.5,
            "bus": 0.6,
            "trailer": 0.6,
            "construction_vehicle": 0.5,
            "pedestrian": 0.2,
            "motorcycle": 0.3,
            "bicycle": 0.3,
            "traffic_cone": 0.15,
            "barrier": 0.3,
        }
    )
    initial_speed_std_mps: tuple[float, ...] = _per_class(
        {
            "car": 10.0,
            "truck": 8.0,
            "bus": 8.0,
            "trailer": 8.0,
            "construction_vehicle": 4.0,
            "pedestrian": 1.5,
            "motorcycle": 10.0,
            "bicycle": 5.0,
            "traffic_cone": 0.1,
            "barrier": 0.1,
        }
    )
    min_score: float = 0.25
    max_gap_s: float = 1.6
    moving_speed_mps: float = 1.0
    min_displacement_m: float = 2.0
    snap_standing: bool = True
    min_hits: int = 2
    short_track_factor: float = 0.6
    online_short_track_factor: float = 1.0
    track_score_weight: float = 0.5
    bridge_max_frames: int = 2
    bridge_score_factor: float = 0.8
    smooth_centres: bool = True
    heading_from_motion: bool = True
    settle_standing: bool = True
    follow_traffic: bool = True
    traffic_classes: tuple[str, ...] = ("car", "truck", "bus", "trailer", "motorcycle")
    parked_classes: tuple[str, ...] = ("car", "truck", "trailer", "motorcycle")
    traffic_speed_mps: float = 3.0
    traffic_parallel_deg: float = 20.0
    traffic_reach_m: float = 20.0
    traffic_lateral_m: float = 8.0
    lane_width_m: float = 1.5

    def __post_init__(self) -> None:
        for name in (
            "gate_m",
            "max_speed_mps",
            "accel_std_mps2",
            "position_std_m",
            "initial_speed_std_mps",
        ):
            values = getattr(self, name)
            if len(values) != len(DETECTION_CLASSES) or not all(math.isfinite(v) and v >= 0 for v in values):
                raise ValueError(
                    f"TrackerConfig.{name} needs {len(DETECTION_CLASSES)} finite values >= 0, got {values}"
                )
        if not self.max_gap_s > 0:
            raise ValueError(f"TrackerConfig.max_gap_s must be > 0, got {self.max_gap_s}")
        unknown = [name for name in (*self.traffic_classes, *self.parked_classes) if name not in DETECTION_CLASSES]
        if unknown:
            raise ValueError(f"TrackerConfig.traffic_classes / parked_classes: unknown classes {unknown}")
        if self.min_hits < 1 or self.bridge_max_frames < 0:
            raise ValueError(
                f"TrackerConfig: min_hits >= 1 and bridge_max_frames >= 0, got {self.min_hits}, {self.bridge_max_frames}"
            )


# ---------------------------------------------------------------------------------------------
# The constant-velocity model, batched over tracks


def cv_transition(dt_s: np.ndarray | float, accel_var: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity transition for state (x, y, vx, vy) over `dt_s` seconds, and its white
    acceleration process noise (discrete; per axis [[dt^4/4, dt^3/2], [dt^3/2, dt^2]] * var, as
    `filterpy.common.Q_discrete_white_noise`).

    Args:
        dt_s: seconds, and accel_var: acceleration variance (m^2/s^4), broadcast to a shape `(*)`.

    Returns:
        F `(*, 4, 4)` and Q `(*, 4, 4)`.
    """
    dt, var = np.broadcast_arrays(np.asarray(dt_s, np.float64), np.asarray(accel_var, np.float64))
    f = np.broadcast_to(np.eye(4), (*dt.shape, 4, 4)).copy()
    f[..., 0, 2] = dt
    f[..., 1, 3] = dt
    q = np.zeros((*dt.shape, 4, 4))
    q[..., 0, 0] = q[..., 1, 1] = 0.25 * dt**4 * var
    q[..., 0, 2] = q[..., 2, 0] = q[..., 1, 3] = q[..., 3, 1] = 0.5 * dt**3 * var
    q[..., 2, 2] = q[..., 3, 3] = dt**2 * var
    return f, q


def _mat_vec(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """`(*, I, J) @ (*, J)` -> `(*, I)`."""
    return (m @ v[..., None])[..., 0]


def _transpose(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


def _inverse_2x2(m: np.ndarray) -> np.ndarray:
    """`(*, 2, 2)` -> its inverse by the adjugate."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    out = np.empty(m.shape)
    out[..., 0, 0] = d / det
    out[..., 0, 1] = -b / det
    out[..., 1, 0] = -c / det
    out[..., 1, 1] = a / det
    return out


def small_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of `(*, 2, 2)` or `(*, 4, 4)` matrices (the filter's innovation and the smoother's
    predicted covariances, both symmetric positive definite) in closed form: 2x2 by the adjugate,
    4x4 by 2x2 blocks and their Schur complement. Elementwise numpy over the batch: the same bits
    for a matrix whatever the batch it comes in, and no LAPACK call per matrix."""
    if m.shape[-2:] == (2, 2):
        return _inverse_2x2(m)
    if m.shape[-2:] != (4, 4):
        raise ValueError(f"small_inverse takes (*, 2, 2) or (*, 4, 4), got {m.shape}")
    a, b, c, d = m[..., :2, :2], m[..., :2, 2:], m[..., 2:, :2], m[..., 2:, 2:]
    a_inv = _inverse_2x2(a)
    s_inv = _inverse_2x2(d - c @ a_inv @ b)
    out = np.empty(m.shape)
    out[..., :2, 2:] = -a_inv @ b @ s_inv
    out[..., 2:, :2] = -s_inv @ c @ a_inv
    out[..., :2, :2] = a_inv - out[..., :2, 2:] @ c @ a_inv
    out[..., 2:, 2:] = s_inv
    return out


def cv_predict(x: np.ndarray, p: np.ndarray, f: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kalman prediction of T tracks: x `(T, 4)`, P `(T, 4, 4)`, F and Q `(4, 4)` or `(T, 4, 4)`;
    returns the new (x, P): x' = F x, P' = F P F^T + Q."""
    return _mat_vec(f, x), f @ p @ _transpose(f) + q


def cv_update(x: np.ndarray, p: np.ndarray, z: np.ndarray, r_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kalman update of T tracks with a measured centre each: x `(T, 4)`, P `(T, 4, 4)`, z `(T, 2)`
    (m), r_var `(T,)` the variance of each measured coordinate (m^2). The covariance is updated in
    Joseph form, as `filterpy.kalman.KalmanFilter.update` does; returns the new (x, P)."""
    r = r_var[:, None, None] * np.eye(2)  # (T, 2, 2)
    pht = p[:, :, :2]  # P H^T, (T, 4, 2)
    gain = pht @ small_inverse(p[:, :2, :2] + r)  # (T, 4, 2)
    x_new = x + _mat_vec(gain, z - x[:, :2])
    i_kh = np.broadcast_to(np.eye(4), p.shape).copy()
    i_kh[:, :, :2] -= gain
    p_new = i_kh @ p @ _transpose(i_kh) + gain @ r @ _transpose(gain)
    return x_new, p_new


def rts_smooth(
    x: np.ndarray, p: np.ndarray, dt_s: np.ndarray, accel_var: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rauch-Tung-Striebel smoothing of M tracks at once (as `filterpy.kalman.KalmanFilter.rts_smoother`
    does for one).

    Args:
        x: `(M, K, 4)` filtered state of each track at each of its steps (padded after its length).
        p: `(M, K, 4, 4)` filtered covariances.
        dt_s: `(M, K)` seconds of the transition into step k (k >= 1).
        accel_var: `(M,)` each track's acceleration variance.
        length: `(M,)` number of steps of each track (>= 1).

    Returns:
        Smoothed x `(M, K, 4)` and P `(M, K, 4, 4)`; padding steps as given.
    """
    xs, ps = x.copy(), p.copy()
    for k in range(x.shape[1] - 2, -1, -1):
        rows = np.flatnonzero(length > k + 1)
        if not len(rows):
            continue
        f, q = cv_transition(dt_s[rows, k + 1], accel_var[rows])
        p_k = p[rows, k]
        p_pred = f @ p_k @ _transpose(f) + q
        gain = p_k @ _transpose(f) @ small_inverse(p_pred)
        xs[rows, k] = x[rows, k] + _mat_vec(gain, xs[rows, k + 1] - _mat_vec(f, x[rows, k]))
        ps[rows, k] = p_k + gain @ (ps[rows, k + 1] - p_pred) @ _transpose(gain)
    return xs, ps


# ---------------------------------------------------------------------------------------------
# The tracker


_TRACK_COLUMNS = ("track_id", "label", "x", "p", "last_hit_us", "hits", "box")


@dataclass(slots=True)
class _Tracks:
    """The live tracks of a scene (T of them, in track id order), as arrays: id and class `(T,)`,
    state x `(T, 4)` and covariance `(T, 4, 4)` of (x, y, vx, vy), time of the last detection,
    detections so far, and the box each track took in the current frame (-1: none)."""

    track_id: np.ndarray
    label: np.ndarray
    x: np.ndarray
    p: np.ndarray
    last_hit_us: np.ndarray
    hits: np.ndarray
    box: np.ndarray

    @classmethod
    def empty(cls) -> _Tracks:
        i64 = np.zeros(0, np.int64)
        return cls(i64, i64, np.zeros((0, 4)), np.zeros((0, 4, 4)), i64, i64, i64)

    def __len__(self) -> int:
        return int(self.track_id.shape[0])

    def subset(self, keep: np.ndarray) -> _Tracks:
        return _Tracks(*(getattr(self, name)[keep] for name in _TRACK_COLUMNS))

    def extended(self, other: _Tracks) -> _Tracks:
        return _Tracks(*(np.concatenate([getattr(self, name), getattr(other, name)]) for name in _TRACK_COLUMNS))


@dataclass(slots=True)
class _History:
    """Every step of every track of a scene, appended frame by frame: the track, the frame index,
    the box it took (-1: missed), and the filter's posterior x `(4,)` and P `(4, 4)` there."""

    track_id: list[np.ndarray] = field(default_factory=list)
    frame: list[np.ndarray] = field(default_factory=list)
    box: list[np.ndarray] = field(default_factory=list)
    x: list[np.ndarray] = field(default_factory=list)
    p: list[np.ndarray] = field(default_factory=list)

    def record(self, index: int, tracks: _Tracks) -> None:
        self.track_id.append(tracks.track_id)
        self.frame.append(np.full(len(tracks), index, np.int64))
        self.box.append(tracks.box)
        self.x.append(tracks.x)
        self.p.append(tracks.p)


def _box_order(frame: FrameDetections) -> np.ndarray:
    """A fixed order of the frame's boxes: class, score descending, x, y, then input position."""
    n = len(frame)
    return np.lexsort((np.arange(n), frame.center[:, 1], frame.center[:, 0], -frame.score, frame.label))


def _cut_reason(previous_us: int, timestamp_us: int, max_gap_s: float) -> str | None:
    if timestamp_us <= previous_us:
        return f"out of order: {timestamp_us} us is not after the previous keyframe's {previous_us} us"
    gap_s = (timestamp_us - previous_us) * 1e-6
    if gap_s > max_gap_s:
        return f"gap of {gap_s:.3f} s between keyframes exceeds the tracker's {max_gap_s:g} s"
    return None


@dataclass(frozen=True, slots=True)
class _OnlineOutputs:
    """Per frame (input box order): the box's track, filtered position `(N, 2)`, velocity `(N, 2)`,
    whether its track had `min_hits` detections, and its online score."""

    track_id: list[np.ndarray]
    position: list[np.ndarray]
    velocity: list[np.ndarray]
    settled: list[np.ndarray]
    score: list[np.ndarray]


def _by_class(labels: np.ndarray) -> list[np.ndarray]:
    """Positions of each class in `labels` (sorted or not), each in increasing order."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.cumsum(np.bincount(labels, minlength=len(DETECTION_CLASSES)))[:-1])


def track_scene(
    frames: Sequence[FrameDetections], mode: TrackMode = "offline", config: TrackerConfig = TrackerConfig()
) -> SceneTracks:
    """Track one scene's keyframes (in the order given, which should be time order).

    Args:
        frames: every keyframe of the scene, empty ones included (their times place the tracks).
        mode: "online" (causal) or "offline" (smoothed whole tracks); see the module docstring.
        config: tracker parameters.

    Returns:
        `SceneTracks`: one output frame per input frame, in the same order.
    """
    if mode not in TRACK_MODES:
        raise ValueError(f"mode must be one of {TRACK_MODES}, got {mode!r}")
    position_var = np.square(np.array(config.position_std_m))
    accel_var = np.square(np.array(config.accel_std_mps2))
    speed_var = np.square(np.maximum(np.array(config.initial_speed_std_mps), 1e-3))
    gate_m = np.array(config.gate_m)
    max_speed_mps = np.array(config.max_speed_mps)
    live = _Tracks.empty()
    history = _History()
    track_label: list[np.ndarray] = []
    frame_dt_s = np.zeros(len(frames))
    cuts: list[TrackCut] = []
    online = _OnlineOutputs(
        track_id=[np.full(len(f), -1, np.int64) for f in frames],
        position=[f.center[:, :2].copy() for f in frames],
        velocity=[f.velocity_xy.copy() for f in frames],
        settled=[np.zeros(len(f), bool) for f in frames],
        score=[f.score.copy() for f in frames],
    )
    next_id = 0
    for index, frame in enumerate(frames):
        if index:
            reason = _cut_reason(frames[index - 1].timestamp_us, frame.timestamp_us, config.max_gap_s)
            if reason is not None:
                cuts.append(TrackCut(frame.sample_token, reason))
                live = _Tracks.empty()
            else:
                frame_dt_s[index] = (frame.timestamp_us - frames[index - 1].timestamp_us) * 1e-6
                f, q = cv_transition(frame_dt_s[index], accel_var[live.label])
                live.x, live.p = cv_predict(live.x, live.p, f, q)
                live.box = np.full(len(live), -1, np.int64)
        order = _box_order(frame)
        confident = order[frame.score[order] >= config.min_score]
        weak = order[frame.score[order] < config.min_score]
        single = live.hits < 2
        # Gates: a track with a velocity has its class's; one seen once, that grown by the distance
        # its class can travel since.
        gate_plain = gate_m[live.label]
        gate_wide = gate_plain + np.where(
            single, max_speed_mps[live.label] * (frame.timestamp_us - live.last_hit_us) * 1e-6, 0.0
        )
        hit_rows: list[np.ndarray] = []
        hit_boxes: list[np.ndarray] = []
        taken = np.zeros(len(frame), bool)
        track_classes = _by_class(live.label)
        confident_classes = _by_class(frame.label[confident])
        weak_classes = _by_class(frame.label[weak])
        for label in range(len(DETECTION_CLASSES)):
            rows = track_classes[label]
            if not len(rows):
                continue
            boxes = confident[confident_classes[label]]
            matched, cols = _associate(live.x[rows, :2], gate_wide[rows], frame.center[boxes, :2])
            taken[boxes[cols]] = True
            # Weak detections may continue the tracks with a velocity that found no confident one.
            left = np.ones(len(rows), bool)
            left[matched] = False
            left_rows = rows[left & ~single[rows]]
            weak_boxes = weak[weak_classes[label]]
            weak_matched, weak_cols = _associate(
                live.x[left_rows, :2], gate_plain[left_rows], frame.center[weak_boxes, :2]
            )
            hit_rows += [rows[matched], left_rows[weak_matched]]
            hit_boxes += [boxes[cols], weak_boxes[weak_cols]]
        if hit_rows:
            rows, boxes = np.concatenate(hit_rows), np.concatenate(hit_boxes)
            x, p = cv_update(live.x[rows], live.p[rows], frame.center[boxes, :2], position_var[live.label[rows]])
            live.x[rows], live.p[rows] = x, p
            live.hits[rows] += 1
            live.last_hit_us[rows] = frame.timestamp_us
            live.box[rows] = boxes
            settled = live.hits[rows] >= config.min_hits
            online.track_id[index][boxes] = live.track_id[rows]
            online.velocity[index][boxes] = x[:, 2:]
            online.position[index][boxes] = x[:, :2]
            online.settled[index][boxes] = settled
            online.score[index][boxes] = frame.score[boxes] * np.where(settled, 1.0, config.online_short_track_factor)
        new_boxes = confident[~taken[confident]]
        if len(new_boxes):
            born = _new_tracks(frame, new_boxes, next_id, position_var, speed_var)
            next_id += len(born)
            track_label.append(born.label)
            online.track_id[index][new_boxes] = born.track_id
            online.velocity[index][new_boxes] = born.x[:, 2:]
            online.score[index][new_boxes] = frame.score[new_boxes] * (
                1.0 if config.min_hits <= 1 else config.online_short_track_factor
            )
            live = live.extended(born)
        history.record(index, live)
        # A track seen once ends at its first miss: most are false positives, and keeping them
        # would only cost time and steal detections from their neighbours.
        tentative = (live.hits < 2) & (live.last_hit_us != frame.timestamp_us)
        stale = (frame.timestamp_us - live.last_hit_us) * 1e-6 > config.max_gap_s
        live = live.subset(~(tentative | stale))
    if mode == "online":
        out = tuple(_online_frame(frame, online, i, config) for i, frame in enumerate(frames))
    else:
        labels = np.concatenate(track_label) if track_label else np.zeros(0, np.int64)
        out = _offline_frames(frames, history, labels, frame_dt_s, accel_var, online.track_id, config)
    return SceneTracks(frames=out, cuts=tuple(cuts), num_tracks=next_id)


def _new_tracks(
    frame: FrameDetections, boxes: np.ndarray, first_id: int, position_var: np.ndarray, speed_var: np.ndarray
) -> _Tracks:
    """Tracks started at `boxes` (ids from `first_id` in that order): at the detected centre, with
    the detected velocity where it is known (else at rest); `position_var` and `speed_var` are
    per class `(C,)`."""
    n = len(boxes)
    label = frame.label[boxes]
    velocity = frame.velocity_xy[boxes]
    velocity = np.where(np.isfinite(velocity).all(axis=1, keepdims=True), velocity, 0.0)
    x = np.concatenate([frame.center[boxes, :2], velocity], axis=1)
    p = np.zeros((n, 4, 4))
    p[:, 0, 0] = p[:, 1, 1] = position_var[label]
    p[:, 2, 2] = p[:, 3, 3] = speed_var[label]
    return _Tracks(
        track_id=np.arange(first_id, first_id + n, dtype=np.int64),
        label=label,
        x=x,
        p=p,
        last_hit_us=np.full(n, frame.timestamp_us, np.int64),
        hits=np.ones(n, np.int64),
        box=boxes.astype(np.int64),
    )


def _associate(predicted_xy: np.ndarray, gate_m: np.ndarray, detected_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal gated assignment of T predicted centres `(T, 2)` (each with its gate `(T,)`, m) to B
    detected centres `(B, 2)` by BEV distance; returns the matched rows and columns (int64, in row
    order)."""
    if not len(predicted_xy) or not len(detected_xy):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    delta = predicted_xy[:, None, :] - detected_xy[None, :, :]
    dist = np.sqrt(delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1])  # (T, B)
    reach = dist <= gate_m[:, None]
    # Rows and columns without a pair inside the gate cannot be matched: leave them out of the
    # assignment problem (most weak detections are far from every track).
    some_rows, some_cols = np.flatnonzero(reach.any(axis=1)), np.flatnonzero(reach.any(axis=0))
    if not len(some_rows):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cost = np.where(reach[some_rows][:, some_cols], dist[some_rows][:, some_cols], _UNREACHABLE_M)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] < _UNREACHABLE_M
    return some_rows[rows[keep]].astype(np.int64), some_cols[cols[keep]].astype(np.int64)


def _flip_towards(yaw: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`yaw` turned by pi where it points more than 90 degrees away from `reference` (kept where
    the reference is NaN), in (-pi, pi]."""
    flipped = np.where(np.cos(yaw - reference) < 0.0, yaw + np.pi, yaw)
    return _wrap(flipped)


def _wrap(angle: np.ndarray) -> np.ndarray:
    wrapped = np.mod(angle + np.pi, 2.0 * np.pi) - np.pi
    return np.where(wrapped == -np.pi, np.pi, wrapped)


def _online_frame(frame: FrameDetections, online: _OnlineOutputs, index: int, config: TrackerConfig) -> FrameDetections:
    """A frame's online output from the filter's values at that frame."""
    velocity = online.velocity[index]
    speed = np.hypot(velocity[:, 0], velocity[:, 1])
    moving = speed > config.moving_speed_mps
    motion = np.arctan2(velocity[:, 1], velocity[:, 0])
    yaw = frame.yaw_rad.copy()
    yaw[moving] = _flip_towards(yaw[moving], motion[moving])
    if config.heading_from_motion:
        yaw = np.where(moving & online.settled[index], motion, yaw)
    center = frame.center.copy()
    if config.smooth_centres:
        center[:, :2] = online.position[index]
    return FrameDetections(
        sample_token=frame.sample_token,
        timestamp_us=frame.timestamp_us,
        center=center,
        size_wlh=frame.size_wlh,
        yaw_rad=yaw,
        velocity_xy=velocity,
        score=online.score[index],
        label=frame.label,
        attribute=frame.attribute,
        track_id=online.track_id[index],
    )


@dataclass(frozen=True, slots=True)
class _TrackSteps:
    """Every track of a scene as padded arrays over its steps (M tracks, K = the longest track's
    steps; step k of track m is frame `first[m] + k`; steps at or past `length[m]` are padding).
    A track's steps run from its first detection to its last one.

    first, length, label: `(M,)` int64. box: `(M, K)` the box of the step's frame the track took
    (-1: missed or padding). x: `(M, K, 4)` and p: `(M, K, 4, 4)` the filter's posterior state
    (x, y, vx, vy) and covariance; dt_s: `(M, K)` seconds of the transition into each step."""

    first: np.ndarray
    length: np.ndarray
    label: np.ndarray
    box: np.ndarray
    x: np.ndarray
    p: np.ndarray
    dt_s: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """`(M, K)` bool: the step is part of its track."""
        return np.arange(self.box.shape[1])[None, :] < self.length[:, None]


def _track_steps(history: _History, labels: np.ndarray, frame_dt_s: np.ndarray) -> _TrackSteps:
    """The recorded steps of the scene's tracks (ids 0..M-1, `labels` `(M,)`) as `_TrackSteps`."""
    num = len(labels)
    track_id = np.concatenate(history.track_id)
    frame = np.concatenate(history.frame)
    box = np.concatenate(history.box)
    first = np.full(num, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, track_id, frame)
    step = frame - first[track_id]
    hit = box >= 0
    last_hit = np.zeros(num, np.int64)
    np.maximum.at(last_hit, track_id[hit], step[hit])
    length = last_hit + 1
    keep = step < length[track_id]
    track_id, step = track_id[keep], step[keep]
    steps = int(length.max())
    box_steps = np.full((num, steps), -1, np.int64)
    box_steps[track_id, step] = box[keep]
    x = np.zeros((num, steps, 4))
    x[track_id, step] = np.concatenate(history.x)[keep]
    p = np.broadcast_to(np.eye(4), (num, steps, 4, 4)).copy()
    p[track_id, step] = np.concatenate(history.p)[keep]
    frame_of_step = np.minimum(first[:, None] + np.arange(steps)[None, :], len(frame_dt_s) - 1)
    return _TrackSteps(first, length, labels, box_steps, x, p, frame_dt_s[frame_of_step])


def _offline_frames(
    frames: Sequence[FrameDetections],
    history: _History,
    labels: np.ndarray,
    frame_dt_s: np.ndarray,
    accel_var: np.ndarray,
    box_track: Sequence[np.ndarray],
    config: TrackerConfig,
) -> tuple[FrameDetections, ...]:
    """Smooth each whole track and write every box's velocity, heading and score; add bridging boxes."""
    if not len(labels):
        return tuple(frames)
    tracks = _track_steps(history, labels, frame_dt_s)
    xs, _ = rts_smooth(tracks.x, tracks.p, tracks.dt_s, accel_var[tracks.label], tracks.length)
    if config.snap_standing:
        xs[~_travels(tracks, xs, config), :, 2:] = 0.0
    # The scene's boxes as one array: box b of frame i is row offset[i] + b.
    offset = np.concatenate([[0], np.cumsum([len(f) for f in frames])])
    yaw_in = np.concatenate([f.yaw_rad for f in frames])
    score_in = np.concatenate([f.score for f in frames])
    hit = tracks.box >= 0  # (M, K)
    frame_of_step = tracks.first[:, None] + np.arange(hit.shape[1])[None, :]
    row = np.where(hit, offset[np.minimum(frame_of_step, len(frames) - 1)] + tracks.box, -1)  # (M, K)
    det_yaw = np.where(hit, yaw_in[row], np.nan)
    det_score = np.where(hit, score_in[row], 0.0)
    yaw_out = _offline_headings(tracks, xs, det_yaw, det_score, config)
    hits = hit.sum(axis=1)
    mean_score = det_score.sum(axis=1) / hits
    # A track is short when it has fewer detections than its stretch of the scene (the keyframes
    # between two cuts) could have given it: a keyframe alone has nothing to confirm its boxes.
    stretch = np.cumsum(frame_dt_s == 0) - 1  # the first frame and each cut start a stretch
    stretch_frames = np.bincount(stretch)[stretch]
    needed = np.minimum(config.min_hits, stretch_frames[tracks.first])
    factor = np.where(hits >= needed, 1.0, config.short_track_factor)
    score_out = factor[:, None] * (
        (1.0 - config.track_score_weight) * det_score + config.track_score_weight * mean_score[:, None]
    )

    centre = np.concatenate([f.center for f in frames])
    velocity = np.concatenate([f.velocity_xy for f in frames])
    yaw = yaw_in.copy()
    score = score_in.copy()
    rows = row[hit]
    velocity[rows] = xs[hit][:, 2:]
    yaw[rows] = yaw_out[hit]
    score[rows] = score_out[hit]
    if config.smooth_centres:
        centre[rows, :2] = xs[hit][:, :2]
    added = _bridges(frames, tracks, xs, yaw_out, score_out, row, config)
    out = []
    for i, frame in enumerate(frames):
        extra = sorted(added[i], key=lambda item: item[0])
        span = slice(offset[i], offset[i + 1])
        out.append(
            FrameDetections(
                sample_token=frame.sample_token,
                timestamp_us=frame.timestamp_us,
                center=np.concatenate([centre[span], np.array([e[1] for e in extra]).reshape(-1, 3)]),
                size_wlh=np.concatenate([frame.size_wlh, np.array([e[2] for e in extra]).reshape(-1, 3)]),
                yaw_rad=np.concatenate([yaw[span], np.array([e[3] for e in extra], np.float64)]),
                velocity_xy=np.concatenate([velocity[span], np.array([e[4] for e in extra]).reshape(-1, 2)]),
                score=np.concatenate([score[span], np.array([e[5] for e in extra], np.float64)]),
                label=np.concatenate([frame.label, np.array([e[6] for e in extra], np.int64)]),
                attribute=np.concatenate([frame.attribute, np.array([e[7] for e in extra], np.int64)]),
                track_id=np.concatenate([box_track[i], np.array([e[0] for e in extra], np.int64)]),
                interpolated=np.concatenate([np.zeros(len(frame), bool), np.ones(len(extra), bool)]),
            )
        )
    return tuple(out)


_Bridge = tuple[int, np.ndarray, np.ndarray, float, np.ndarray, float, int, int]


def _bridges(
    frames: Sequence[FrameDetections],
    tracks: _TrackSteps,
    xs: np.ndarray,
    yaw_out: np.ndarray,
    score_out: np.ndarray,
    row: np.ndarray,
    config: TrackerConfig,
) -> list[list[_Bridge]]:
    """Per frame, the boxes that bridge gaps of at most `bridge_max_frames` missed steps between
    two detections of a track: (track id, centre, size, heading, velocity, score, label, attribute)
    at the smoothed position, size and z interpolated between the two detections."""
    added: list[list[_Bridge]] = [[] for _ in frames]
    track, step = np.nonzero(tracks.box >= 0)  # hits in (track, step) order
    same = track[1:] == track[:-1]
    missed = step[1:] - step[:-1] - 1
    for j in np.flatnonzero(same & (missed >= 1) & (missed <= config.bridge_max_frames)).tolist():
        m, k0, k1 = int(track[j]), int(step[j]), int(step[j + 1])
        f0, f1 = int(tracks.first[m]) + k0, int(tracks.first[m]) + k1
        b0, b1 = int(tracks.box[m, k0]), int(tracks.box[m, k1])
        t0, t1 = frames[f0].timestamp_us, frames[f1].timestamp_us
        for k in range(k0 + 1, k1):
            f = int(tracks.first[m]) + k
            alpha = (frames[f].timestamp_us - t0) / (t1 - t0)
            z = (1 - alpha) * frames[f0].center[b0, 2] + alpha * frames[f1].center[b1, 2]
            size = (1 - alpha) * frames[f0].size_wlh[b0] + alpha * frames[f1].size_wlh[b1]
            heading = _interpolate_angle(float(yaw_out[m, k0]), float(yaw_out[m, k1]), alpha)
            bridge_score = config.bridge_score_factor * min(float(score_out[m, k0]), float(score_out[m, k1]))
            added[f].append(
                (
                    m,
                    np.array([xs[m, k, 0], xs[m, k, 1], z]),
                    size,
                    heading,
                    xs[m, k, 2:].copy(),
                    bridge_score,
                    int(tracks.label[m]),
                    int(frames[f0].attribute[b0]),
                )
            )
    return added


def _interpolate_angle(a: float, b: float, alpha: float) -> float:
    delta = math.atan2(math.sin(b - a), math.cos(b - a))
    return float(_wrap(np.array(a + alpha * delta)))


def _travels(tracks: _TrackSteps, xs: np.ndarray, config: TrackerConfig) -> np.ndarray:
    """`(M,)` bool: the track's smoothed positions (`xs` `(M, K, 4)`) get `min_displacement_m`
    from where it started."""
    offset = xs[..., :2] - xs[:, :1, :2]
    travel = np.where(tracks.valid, np.hypot(offset[..., 0], offset[..., 1]), 0.0)
    return travel.max(axis=1) >= config.min_displacement_m


def _offline_headings(
    tracks: _TrackSteps, xs: np.ndarray, det_yaw: np.ndarray, det_score: np.ndarray, config: TrackerConfig
) -> np.ndarray:
    """`(M, K)` heading of every step of every track (rad; meaningful at detected steps).

    A step is moving where its smoothed speed exceeds `moving_speed_mps` in a track whose smoothed
    positions get `min_displacement_m` from its start. Each detected heading is turned by pi where
    it points away from its reference direction: at a moving step the smoothed motion; at a
    standing step one way along the axis of the track's standing headings, the way that the
    track's detections vote for (score-weighted; a standing detection votes for the way it points,
    a moving one for the way its track moves there; a tie keeps the axis as computed). With
    `heading_from_motion`, a moving step's heading is its motion's direction.
    """
    valid = tracks.valid
    hit = tracks.box >= 0
    travels = _travels(tracks, xs, config)
    speed = np.hypot(xs[..., 2], xs[..., 3])
    moving = valid & (speed > config.moving_speed_mps) & travels[:, None]  # (M, K)
    motion = np.arctan2(xs[..., 3], xs[..., 2])
    yaw = np.where(hit, det_yaw, 0.0)
    # The axis of the standing steps' detected headings (score-weighted mean of doubled angles),
    # then the way along it that the track's votes favour: each standing detection votes for the
    # way it points, each moving detection for the way its track moves, all by their scores.
    weight = np.where(hit & ~moving, det_score, 0.0)
    axis = 0.5 * np.arctan2(np.sum(weight * np.sin(2 * yaw), axis=1), np.sum(weight * np.cos(2 * yaw), axis=1))
    read_vote = np.sum(weight * np.sign(np.cos(yaw - axis[:, None])), axis=1)
    motion_weight = np.where(moving & hit, det_score, 0.0)
    motion_vote = np.sum(motion_weight * np.sign(np.cos(motion - axis[:, None])), axis=1)
    if config.settle_standing:
        standing = np.where(motion_vote + read_vote >= 0, axis, axis + np.pi)
    else:
        standing = np.where(motion_vote >= 0, axis, axis + np.pi)
        standing = np.where(moving.any(axis=1), standing, np.nan)
    if config.follow_traffic:
        flow = _traffic_flow(tracks, xs, moving, axis, config)
        standing = np.where(np.isfinite(flow), flow, standing)
    reference = np.where(moving, motion, standing[:, None])
    settled = _flip_towards(yaw, reference)
    if config.heading_from_motion:
        settled = np.where(moving, motion, settled)
    return np.where(hit, settled, np.nan)


def _traffic_flow(
    tracks: _TrackSteps, xs: np.ndarray, moving: np.ndarray, axis: np.ndarray, config: TrackerConfig
) -> np.ndarray:
    """`(M,)` the way (rad) along its `axis` that each standing track of `parked_classes` (with
    `min_hits` detections) faces by the traffic beside it; NaN for other tracks and where no
    traffic passes.

    A vehicle that never moves in the whole log (parked, or waiting) cannot show its front by
    moving, and a detector often cannot tell its front from its back. The vehicles that pass it
    can: on both sides of a road, parked and stopped vehicles face the way the lane next to them
    flows. Traffic past a standing track is every step of a `traffic_classes` track moving at
    `traffic_speed_mps` or more, in a direction within `traffic_parallel_deg` of the track's axis
    (either way), whose line of travel passes within `traffic_lateral_m` of the track's mean
    smoothed position, at most `traffic_reach_m` from it along that line. Distances are measured
    along and across the passing vehicle's own motion, so an error in the standing track's axis
    does not move the lanes. Those within `lane_width_m` of the nearest line are the lane beside
    it, and the way most of their steps move along the axis wins (a tie decides nothing).
    """
    flow = np.full(len(tracks.label), np.nan)
    traffic = np.isin(tracks.label, [CLASS_INDEX[name] for name in config.traffic_classes])
    parked = np.isin(tracks.label, [CLASS_INDEX[name] for name in config.parked_classes])
    hits = (tracks.box >= 0).sum(axis=1)
    standing = np.flatnonzero(parked & ~moving.any(axis=1) & (hits >= config.min_hits))
    speed = np.hypot(xs[..., 2], xs[..., 3])
    passing = moving & traffic[:, None] & (speed >= config.traffic_speed_mps)
    if not len(standing) or not passing.any():
        return flow
    valid = tracks.valid[standing]
    centre = (xs[standing, :, :2] * valid[..., None]).sum(axis=1) / valid.sum(axis=1)[:, None]  # (S, 2)
    point = xs[passing][:, :2]  # (N, 2)
    motion = np.arctan2(xs[passing][:, 3], xs[passing][:, 2])  # (N,)
    offset = centre[:, None, :] - point[None, :, :]  # (S, N, 2): from the passing vehicle
    cos_motion, sin_motion = np.cos(motion)[None, :], np.sin(motion)[None, :]
    along = offset[..., 0] * cos_motion + offset[..., 1] * sin_motion
    across = np.abs(offset[..., 1] * cos_motion - offset[..., 0] * sin_motion)
    way = axis[standing]
    agreement = np.cos(motion[None, :] - way[:, None])
    # A track that drives through a standing vehicle's place while it stands there is not traffic
    # past it: it is a drifting track (one along a row of parked vehicles, say), not a vehicle.
    mover = np.nonzero(passing)[0]  # (N,) the track of each step
    frame = (tracks.first[:, None] + np.arange(xs.shape[1])[None, :])[passing]  # (N,)
    start = tracks.first[standing][:, None]
    during = (frame[None, :] >= start) & (frame[None, :] < start + tracks.length[standing][:, None])
    through = during & (np.hypot(along, across) < config.lane_width_m)
    ghost = np.zeros((len(tracks.label), len(standing)), bool)  # (M, S): passing track m is a ghost of s
    np.logical_or.at(ghost, mover, through.T)
    near = (
        (np.abs(agreement) >= math.cos(math.radians(config.traffic_parallel_deg)))
        & (np.abs(along) <= config.traffic_reach_m)
        & (across <= config.traffic_lateral_m)
        & ~ghost[mover].T
    )
    nearest = np.where(near, across, np.inf).min(axis=1)
    lane = near & (across <= nearest[:, None] + config.lane_width_m)
    # One vote per passing track (the way most of its steps in the lane go), so that one long
    # track counts once.
    per_track = np.zeros((len(tracks.label), len(standing)))
    np.add.at(per_track, mover, np.where(lane, np.sign(agreement), 0.0).T)
    vote = np.sign(per_track).sum(axis=0)
    flow[standing] = np.where(vote > 0, way, np.where(vote < 0, way + np.pi, np.nan))
    return flow
