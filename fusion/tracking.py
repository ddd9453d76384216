"""Fusion over time: a per-class 3D multi-object tracker over the keyframe detections of one scene.

The tracker takes a scene's detections frame by frame (`FrameDetections`, global frame) and gives
every box a track id, a velocity from the track's motion, a heading whose 180-degree ambiguity the
track settles, and a score that knows the track:

- Association: per class, the BEV (x, y) distance between each track's predicted centre and each
  detection, gated per class, solved optimally with `scipy.optimize.linear_sum_assignment`. A track
  with a single detection has no velocity yet, so its gate grows by the class's top speed times
  the time since that detection.
- Motion: a constant-velocity Kalman filter per track (`filterpy.kalman.KalmanFilter`), state
  `(x, y, vx, vy)` in the global frame (m, m/s), measurement `(x, y)`; the process noise is white
  acceleration with a per-class spread.
- `online` mode (causal, as the car would run it): each box gets its track's filtered velocity at
  that frame; the heading of a moving track is flipped to agree with that velocity; the score is
  the detection's, scored down while its track holds a single detection.
- `offline` mode (the whole scene is known): the forward filter, then Rauch-Tung-Striebel smoothing
  of every whole track (`KalmanFilter.rts_smoother`), so each velocity uses the future too. The
  heading of each box agrees with the smoothed motion where the track moves, with the nearest moving
  frame of the track where it stands (an object that stops keeps the heading it arrived with), and
  with the track's score-weighted majority where it never moves. Scores blend the detection's with
  the track's mean; short tracks are scored down; gaps of at most `bridge_max_frames` missed
  keyframes inside a track are bridged with boxes at the smoothed positions.

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
from filterpy.kalman import KalmanFilter
from scipy.optimize import linear_sum_assignment

from avfusion.labels import DETECTION_CLASSES

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
            where it started is standing: its heading is its detections' majority.
        min_hits: tracks with fewer detections are "short".
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
        settle_standing: offline, the headings of a track that never moves are turned to their
            score-weighted majority (else they stay as detected).
        heading_from_motion: a moving box's heading is its motion's direction (instead of its
            detected heading turned by pi where it disagrees); online, once its track has
            `min_hits` detections.
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
    min_hits: int = 2
    short_track_factor: float = 0.6
    online_short_track_factor: float = 1.0
    track_score_weight: float = 0.5
    bridge_max_frames: int = 2
    bridge_score_factor: float = 0.8
    smooth_centres: bool = True
    heading_from_motion: bool = True
    settle_standing: bool = True

    def __post_init__(self) -> None:
        for name in ("gate_m", "max_speed_mps", "accel_std_mps2", "position_std_m", "initial_speed_std_mps"):
            values = getattr(self, name)
            if len(values) != len(DETECTION_CLASSES) or not all(math.isfinite(v) and v >= 0 for v in values):
                raise ValueError(
                    f"TrackerConfig.{name} needs {len(DETECTION_CLASSES)} finite values >= 0, got {values}"
                )
        if not self.max_gap_s > 0:
            raise ValueError(f"TrackerConfig.max_gap_s must be > 0, got {self.max_gap_s}")
        if self.min_hits < 1 or self.bridge_max_frames < 0:
            raise ValueError(
                f"TrackerConfig: min_hits >= 1 and bridge_max_frames >= 0, got {self.min_hits}, {self.bridge_max_frames}"
            )


# ---------------------------------------------------------------------------------------------
# One track


@dataclass(slots=True)
class _Track:
    """A track being built: its filter, and per step since its first detection the filter's
    posterior state (x, P), the transition (F, Q) into that step, the frame index and which box
    (or -1 for a missed frame)."""

    track_id: int
    label: int
    kf: KalmanFilter
    frames: list[int] = field(default_factory=list)
    boxes: list[int] = field(default_factory=list)
    xs: list[np.ndarray] = field(default_factory=list)
    ps: list[np.ndarray] = field(default_factory=list)
    fs: list[np.ndarray] = field(default_factory=list)
    qs: list[np.ndarray] = field(default_factory=list)
    last_hit_us: int = 0
    hits: int = 0
    score_sum: float = 0.0

    def record(self, frame: int, box: int, f: np.ndarray, q: np.ndarray) -> None:
        self.frames.append(frame)
        self.boxes.append(box)
        self.xs.append(self.kf.x[:, 0].copy())
        self.ps.append(self.kf.P.copy())
        self.fs.append(f)
        self.qs.append(q)


def _transition(dt_s: float, accel_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity transition over `dt_s` for state (x, y, vx, vy) and its white-acceleration
    process noise (discrete, per axis [[dt^4/4, dt^3/2], [dt^3/2, dt^2]] * sigma^2)."""
    f = np.eye(4)
    f[0, 2] = f[1, 3] = dt_s
    var = accel_std * accel_std
    q = np.zeros((4, 4))
    q[0, 0] = q[1, 1] = 0.25 * dt_s**4 * var
    q[0, 2] = q[2, 0] = q[1, 3] = q[3, 1] = 0.5 * dt_s**3 * var
    q[2, 2] = q[3, 3] = dt_s**2 * var
    return f, q


_H = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])


def _inverse_2x2(m: np.ndarray) -> np.ndarray:
    a, b, c, d = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    return np.array([[d, -b], [-c, a]]) / (a * d - b * c)


def small_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x2 or 4x4 matrix (the filter's innovation and the smoother's predicted
    covariances, both symmetric positive definite) in closed form: 2x2 by its adjugate, 4x4 by
    2x2 blocks and their Schur complement.

    `numpy.linalg.inv` goes through LAPACK, whose threaded BLAS made each of these tiny inverses
    cost about a millisecond on a busy 2-core machine, more than the whole tracker should take.
    """
    if m.shape == (2, 2):
        return _inverse_2x2(m)
    if m.shape != (4, 4):
        raise ValueError(f"small_inverse takes (2, 2) or (4, 4), got {m.shape}")
    a, b, c, d = m[:2, :2], m[:2, 2:], m[2:, :2], m[2:, 2:]
    a_inv = _inverse_2x2(a)
    s_inv = _inverse_2x2(d - c @ a_inv @ b)
    out = np.empty((4, 4))
    out[:2, 2:] = -a_inv @ b @ s_inv
    out[2:, :2] = -s_inv @ c @ a_inv
    out[:2, :2] = a_inv - out[:2, 2:] @ c @ a_inv
    out[2:, 2:] = s_inv
    return out


def _new_filter(xy: np.ndarray, velocity_xy: np.ndarray, label: int, config: TrackerConfig) -> KalmanFilter:
    kf = KalmanFilter(dim_x=4, dim_z=2)
    velocity = velocity_xy if np.isfinite(velocity_xy).all() else np.zeros(2)
    kf.x = np.array([[xy[0]], [xy[1]], [velocity[0]], [velocity[1]]], dtype=np.float64)
    pos_var = config.position_std_m[label] ** 2
    vel_var = max(config.initial_speed_std_mps[label], 1e-3) ** 2
    kf.P = np.diag([pos_var, pos_var, vel_var, vel_var])
    kf.H = _H
    kf.R = np.eye(2) * pos_var
    kf.inv = small_inverse
    return kf


# ---------------------------------------------------------------------------------------------
# The tracker


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
    finished: list[_Track] = []
    active: list[_Track] = []
    cuts: list[TrackCut] = []
    # Online outputs per frame, in the frame's input order.
    online_velocity = [f.velocity_xy.copy() for f in frames]
    online_position = [f.center[:, :2].copy() for f in frames]
    online_settled = [np.zeros(len(f), bool) for f in frames]
    online_score = [f.score.copy() for f in frames]
    box_track = [np.full(len(f), -1, np.int64) for f in frames]
    next_id = 0
    for index, frame in enumerate(frames):
        if index:
            reason = _cut_reason(frames[index - 1].timestamp_us, frame.timestamp_us, config.max_gap_s)
            if reason is not None:
                cuts.append(TrackCut(frame.sample_token, reason))
                finished += active
                active = []
            else:
                dt_s = (frame.timestamp_us - frames[index - 1].timestamp_us) * 1e-6
                transitions = {
                    label: _transition(dt_s, config.accel_std_mps2[label])
                    for label in sorted({t.label for t in active})
                }
                for track in active:
                    f, q = transitions[track.label]
                    track.kf.predict(F=f, Q=q)
                    track.record(index, -1, f, q)
        order = _box_order(frame)
        confident = frame.score[order] >= config.min_score
        still_active: list[_Track] = []
        for label in range(len(DETECTION_CLASSES)):
            of_class = frame.label[order] == label
            boxes = order[of_class & confident]
            weak = order[of_class & ~confident]
            tracks = [t for t in active if t.label == label]
            if not len(boxes) and not tracks:
                continue
            matched_tracks, matched_boxes = _associate(tracks, frame, boxes, label, config, widen=True)
            # Weak detections may continue the tracks with a velocity that found no confident one.
            left = [t for i, t in enumerate(tracks) if i not in set(matched_tracks) and t.hits >= 2]
            weak_tracks, weak_boxes = _associate(left, frame, weak, label, config, widen=False)
            pairs = [(tracks[i], b) for i, b in zip(matched_tracks, matched_boxes, strict=False)] + [
                (left[i], b) for i, b in zip(weak_tracks, weak_boxes, strict=False)
            ]
            for track, box in pairs:
                track.kf.update(frame.center[box, :2].reshape(2, 1))
                # The step was recorded as missed by the prediction; it is a hit after all.
                track.xs[-1] = track.kf.x[:, 0].copy()
                track.ps[-1] = track.kf.P.copy()
                track.boxes[-1] = int(box)
                _count_hit(track, frame, int(box))
                box_track[index][box] = track.track_id
                online_velocity[index][box] = track.kf.x[2:, 0]
                online_position[index][box] = track.kf.x[:2, 0]
                online_settled[index][box] = track.hits >= config.min_hits
                online_score[index][box] = frame.score[box] * (
                    1.0 if track.hits >= config.min_hits else config.online_short_track_factor
                )
            taken = {int(b) for b in matched_boxes}
            for box in boxes.tolist():
                if box in taken:
                    continue
                kf = _new_filter(frame.center[box, :2], frame.velocity_xy[box], label, config)
                track = _Track(next_id, label, kf)
                next_id += 1
                track.record(index, box, np.eye(4), np.zeros((4, 4)))
                _count_hit(track, frame, box)
                box_track[index][box] = track.track_id
                online_velocity[index][box] = track.kf.x[2:, 0]
                online_score[index][box] = frame.score[box] * (
                    1.0 if config.min_hits <= 1 else config.online_short_track_factor
                )
                tracks.append(track)
            for track in tracks:
                # A track seen once ends at its first miss: most are false positives, and keeping
                # them would only cost time and steal detections from their neighbours.
                tentative = track.hits < 2 and track.last_hit_us != frame.timestamp_us
                if tentative or (frame.timestamp_us - track.last_hit_us) * 1e-6 > config.max_gap_s:
                    finished.append(track)
                else:
                    still_active.append(track)
        active = sorted(still_active, key=lambda t: t.track_id)
    finished += active
    finished.sort(key=lambda t: t.track_id)
    if mode == "online":
        out = tuple(
            _online_frame(
                frame, box_track[i], online_position[i], online_velocity[i], online_settled[i], online_score[i], config
            )
            for i, frame in enumerate(frames)
        )
    else:
        out = _offline_frames(frames, finished, box_track, config)
    return SceneTracks(frames=out, cuts=tuple(cuts), num_tracks=next_id)


def _count_hit(track: _Track, frame: FrameDetections, box: int) -> None:
    track.hits += 1
    track.score_sum += float(frame.score[box])
    track.last_hit_us = frame.timestamp_us


def _associate(
    tracks: Sequence[_Track], frame: FrameDetections, boxes: np.ndarray, label: int, config: TrackerConfig, widen: bool
) -> tuple[list[int], list[int]]:
    """Optimal gated assignment of `tracks` to the frame's `boxes` (indices) by BEV centre distance;
    returns matched track positions and box indices, pairs in track order. With `widen`, the gate
    of a single-detection track grows by the distance the class can travel since that detection."""
    if not len(tracks) or not len(boxes):
        return [], []
    predicted = np.array([t.kf.x[:2, 0] for t in tracks])  # (T, 2)
    detected = frame.center[boxes, :2]  # (B, 2)
    delta = predicted[:, None, :] - detected[None, :, :]
    dist = np.sqrt(delta[..., 0] * delta[..., 0] + delta[..., 1] * delta[..., 1])  # (T, B)
    gate = np.array(
        [
            config.gate_m[label]
            + (
                config.max_speed_mps[label] * (frame.timestamp_us - t.last_hit_us) * 1e-6
                if widen and t.hits < 2
                else 0.0
            )
            for t in tracks
        ]
    )
    cost = np.where(dist <= gate[:, None], dist, _UNREACHABLE_M)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] < _UNREACHABLE_M
    return rows[keep].tolist(), boxes[cols[keep]].tolist()


def _flip_towards(yaw: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`yaw` turned by pi where it points more than 90 degrees away from `reference` (kept where
    the reference is NaN), in (-pi, pi]."""
    flipped = np.where(np.cos(yaw - reference) < 0.0, yaw + np.pi, yaw)
    return _wrap(flipped)


def _wrap(angle: np.ndarray) -> np.ndarray:
    wrapped = np.mod(angle + np.pi, 2.0 * np.pi) - np.pi
    return np.where(wrapped == -np.pi, np.pi, wrapped)


def _online_frame(
    frame: FrameDetections,
    track_id: np.ndarray,
    position: np.ndarray,
    velocity: np.ndarray,
    settled: np.ndarray,
    score: np.ndarray,
    config: TrackerConfig,
) -> FrameDetections:
    """A frame's online output: per box its track, filtered position (`(N, 2)`) and velocity, and
    whether its track had `min_hits` detections (`settled`)."""
    speed = np.hypot(velocity[:, 0], velocity[:, 1])
    moving = speed > config.moving_speed_mps
    motion = np.arctan2(velocity[:, 1], velocity[:, 0])
    yaw = frame.yaw_rad.copy()
    yaw[moving] = _flip_towards(yaw[moving], motion[moving])
    if config.heading_from_motion:
        yaw = np.where(moving & settled, motion, yaw)
    center = frame.center.copy()
    if config.smooth_centres:
        center[:, :2] = position
    return FrameDetections(
        sample_token=frame.sample_token,
        timestamp_us=frame.timestamp_us,
        center=center,
        size_wlh=frame.size_wlh,
        yaw_rad=yaw,
        velocity_xy=velocity,
        score=score,
        label=frame.label,
        attribute=frame.attribute,
        track_id=track_id,
    )


def _offline_frames(
    frames: Sequence[FrameDetections], tracks: Sequence[_Track], box_track: Sequence[np.ndarray], config: TrackerConfig
) -> tuple[FrameDetections, ...]:
    """Smooth each whole track and write every box's velocity, heading and score; add bridging boxes."""
    velocity = [f.velocity_xy.copy() for f in frames]
    centre = [f.center.copy() for f in frames]
    yaw = [f.yaw_rad.copy() for f in frames]
    score = [f.score.copy() for f in frames]
    added: list[list[tuple[int, np.ndarray, np.ndarray, float, np.ndarray, float, int, int]]] = [[] for _ in frames]
    for track in tracks:
        hit_steps = [k for k, box in enumerate(track.boxes) if box >= 0]
        last = hit_steps[-1] + 1  # frames predicted after the last detection are not part of the track
        xs = np.array(track.xs[:last])  # (K, 4)
        if last > 1:
            kf = track.kf
            xs, _, _, _ = kf.rts_smoother(
                xs[:, :, None],
                np.array(track.ps[:last]),
                np.array(track.fs[:last]),
                np.array(track.qs[:last]),
                inv=small_inverse,
            )
            xs = xs[:, :, 0]
        steps_frames = track.frames[:last]
        steps_boxes = track.boxes[:last]
        step_velocity = xs[:, 2:]
        hit_frames = [steps_frames[k] for k in hit_steps]
        hit_boxes = [steps_boxes[k] for k in hit_steps]
        det_yaw = np.array([frames[f].yaw_rad[b] for f, b in zip(hit_frames, hit_boxes, strict=False)])
        det_score = np.array([frames[f].score[b] for f, b in zip(hit_frames, hit_boxes, strict=False)])
        reference = _heading_reference(xs[:, :2], step_velocity, det_yaw, det_score, np.array(hit_steps), config)
        settled_yaw = _flip_towards(det_yaw, reference[hit_steps])
        if config.heading_from_motion:
            speed = np.hypot(step_velocity[hit_steps, 0], step_velocity[hit_steps, 1])
            moving = (speed > config.moving_speed_mps) & _travels(xs[:, :2], config)
            settled_yaw = np.where(
                moving, np.arctan2(step_velocity[hit_steps, 1], step_velocity[hit_steps, 0]), settled_yaw
            )
        mean_score = float(det_score.mean())
        factor = 1.0 if len(hit_steps) >= config.min_hits else config.short_track_factor
        track_score = factor * ((1.0 - config.track_score_weight) * det_score + config.track_score_weight * mean_score)
        for j, (f, b) in enumerate(zip(hit_frames, hit_boxes, strict=False)):
            k = hit_steps[j]
            velocity[f][b] = step_velocity[k]
            yaw[f][b] = settled_yaw[j]
            score[f][b] = track_score[j]
            if config.smooth_centres:
                centre[f][b, :2] = xs[k, :2]
        # Bridge short gaps between consecutive detections.
        for j in range(len(hit_steps) - 1):
            k0, k1 = hit_steps[j], hit_steps[j + 1]
            if not 1 <= k1 - k0 - 1 <= config.bridge_max_frames:
                continue
            f0, b0, f1, b1 = hit_frames[j], hit_boxes[j], hit_frames[j + 1], hit_boxes[j + 1]
            t0, t1 = frames[f0].timestamp_us, frames[f1].timestamp_us
            for k in range(k0 + 1, k1):
                f = steps_frames[k]
                alpha = (frames[f].timestamp_us - t0) / (t1 - t0)
                z = (1 - alpha) * frames[f0].center[b0, 2] + alpha * frames[f1].center[b1, 2]
                size = (1 - alpha) * frames[f0].size_wlh[b0] + alpha * frames[f1].size_wlh[b1]
                heading = _interpolate_angle(settled_yaw[j], settled_yaw[j + 1], alpha)
                bridge_score = config.bridge_score_factor * min(track_score[j], track_score[j + 1])
                added[f].append(
                    (
                        track.track_id,
                        np.array([xs[k, 0], xs[k, 1], z]),
                        size,
                        heading,
                        xs[k, 2:].copy(),
                        bridge_score,
                        track.label,
                        int(frames[f0].attribute[b0]),
                    )
                )
    out = []
    for i, frame in enumerate(frames):
        extra = sorted(added[i], key=lambda item: item[0])
        out.append(
            FrameDetections(
                sample_token=frame.sample_token,
                timestamp_us=frame.timestamp_us,
                center=np.concatenate([centre[i], np.array([e[1] for e in extra]).reshape(-1, 3)]),
                size_wlh=np.concatenate([frame.size_wlh, np.array([e[2] for e in extra]).reshape(-1, 3)]),
                yaw_rad=np.concatenate([yaw[i], np.array([e[3] for e in extra], np.float64)]),
                velocity_xy=np.concatenate([velocity[i], np.array([e[4] for e in extra]).reshape(-1, 2)]),
                score=np.concatenate([score[i], np.array([e[5] for e in extra], np.float64)]),
                label=np.concatenate([frame.label, np.array([e[6] for e in extra], np.int64)]),
                attribute=np.concatenate([frame.attribute, np.array([e[7] for e in extra], np.int64)]),
                track_id=np.concatenate([box_track[i], np.array([e[0] for e in extra], np.int64)]),
                interpolated=np.concatenate([np.zeros(len(frame), bool), np.ones(len(extra), bool)]),
            )
        )
    return tuple(out)


def _interpolate_angle(a: float, b: float, alpha: float) -> float:
    delta = math.atan2(math.sin(b - a), math.cos(b - a))
    return float(_wrap(np.array(a + alpha * delta)))


def _travels(step_position: np.ndarray, config: TrackerConfig) -> bool:
    """Whether a track's smoothed positions `(K, 2)` get `min_displacement_m` from its start."""
    offset = step_position - step_position[0]
    return bool(np.max(np.hypot(offset[:, 0], offset[:, 1])) >= config.min_displacement_m)


def _heading_reference(
    step_position: np.ndarray,
    step_velocity: np.ndarray,
    det_yaw: np.ndarray,
    det_score: np.ndarray,
    hit_steps: np.ndarray,
    config: TrackerConfig,
) -> np.ndarray:
    """Per step of a track, the direction (rad) its heading should agree with (within 90 degrees).

    Moving steps (faster than `moving_speed_mps`, in a track that travels at least
    `min_displacement_m`): the direction of the smoothed velocity. Other steps: that of the nearest moving
    step (ties: the earlier one). A track that never moves: the score-weighted majority of its
    detected headings, taken about their common axis.
    """
    speed = np.hypot(step_velocity[:, 0], step_velocity[:, 1])
    moving = (
        np.flatnonzero(speed > config.moving_speed_mps) if _travels(step_position, config) else np.zeros(0, np.int64)
    )
    if len(moving):
        motion = np.arctan2(step_velocity[:, 1], step_velocity[:, 0])
        steps = np.arange(len(step_velocity))
        nearest = moving[np.argmin(np.abs(steps[:, None] - moving[None, :]), axis=1)]
        return motion[nearest]
    if not config.settle_standing:
        return np.full(len(step_velocity), np.nan)
    # The axis of the headings (mean of doubled angles), then the direction along it that most of
    # the score-weighted headings point to.
    axis = 0.5 * math.atan2(
        float(np.sum(det_score * np.sin(2 * det_yaw))), float(np.sum(det_score * np.cos(2 * det_yaw)))
    )
    vote = float(np.sum(det_score * np.sign(np.cos(det_yaw - axis))))
    direction = axis if vote >= 0 else axis + math.pi
    return np.full(len(step_velocity), direction)
