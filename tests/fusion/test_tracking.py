"""The tracker on hand-made scenes whose right answers follow from their motion: crossing objects,
an object that stops, a U-turn, a missed detection in the middle, a one-frame false positive; cuts
at out-of-order and far-apart keyframes; determinism."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from avfusion.fusion.tracking import FrameDetections, TrackerConfig, track_scene
from avfusion.labels import CLASS_INDEX

DT_US = 500_000  # keyframes at 2 Hz


def make_frame(
    index: int, boxes: list[tuple[str, float, float, float, float]], timestamp_us: int | None = None
) -> FrameDetections:
    """A keyframe from (class, x, y, yaw, score) tuples; z = 1 m, a car-sized box, no velocity."""
    n = len(boxes)
    return FrameDetections(
        sample_token=f"s{index}",
        timestamp_us=index * DT_US if timestamp_us is None else timestamp_us,
        center=np.array([[b[1], b[2], 1.0] for b in boxes]).reshape(n, 3),
        size_wlh=np.tile([1.9, 4.5, 1.6], (n, 1)),
        yaw_rad=np.array([b[3] for b in boxes], np.float64),
        velocity_xy=np.full((n, 2), np.nan),
        score=np.array([b[4] for b in boxes], np.float64),
        label=np.array([CLASS_INDEX[b[0]] for b in boxes], np.int64),
        attribute=np.full(n, -1, np.int64),
    )


def ids_of(frames) -> list[list[int]]:
    return [f.track_id.tolist() for f in frames]


def angle_diff(a: np.ndarray, b: float) -> np.ndarray:
    return np.abs(np.arctan2(np.sin(a - b), np.cos(a - b)))


# ---------------------------------------------------------------------------------------------
# Crossing objects


def crossing_scene() -> list[FrameDetections]:
    """Car A drives east along y = +0.5 m, car B west along y = -0.5 m, both at 10 m/s; they pass
    each other at t = 1 s. The detector gets A's heading backwards in frames 1 and 3."""
    frames = []
    for i in range(5):
        t = i * 0.5
        yaw_a = math.pi if i in (1, 3) else 0.0
        frames.append(make_frame(i, [("car", -10 + 10 * t, 0.5, yaw_a, 0.9), ("car", 10 - 10 * t, -0.5, math.pi, 0.8)]))
    return frames


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_crossing_objects_keep_their_ids(mode):
    out = track_scene(crossing_scene(), mode)
    # Box 0 is A in every frame, box 1 is B: each keeps one id, and the two never swap.
    assert ids_of(out.frames) == [[0, 1]] * 5
    assert out.num_tracks == 2


def test_crossing_offline_velocity_and_heading_from_motion():
    out = track_scene(crossing_scene(), "offline")
    velocity = np.array([f.velocity_xy for f in out.frames])  # (5, 2 boxes, 2)
    np.testing.assert_allclose(velocity[:, 0], np.tile([10.0, 0.0], (5, 1)), atol=0.5)
    np.testing.assert_allclose(velocity[:, 1], np.tile([-10.0, 0.0], (5, 1)), atol=0.5)
    # A's backwards headings are turned to its motion (east); B's were right all along.
    yaw = np.array([f.yaw_rad for f in out.frames])
    assert np.all(angle_diff(yaw[:, 0], 0.0) < 1e-12)
    assert np.all(angle_diff(yaw[:, 1], math.pi) < 1e-12)


def test_crossing_online_is_causal():
    frames = crossing_scene()
    out = track_scene(frames, "online")
    # The first frame knows no motion: no velocity, headings as detected.
    np.testing.assert_array_equal(out.frames[0].velocity_xy, np.zeros((2, 2)))
    np.testing.assert_array_equal(out.frames[0].yaw_rad, frames[0].yaw_rad)
    # From the second frame on the filter has seen the motion: A's frame-1 and frame-3 headings flip.
    assert out.frames[1].velocity_xy[0, 0] > 5.0 and out.frames[1].velocity_xy[1, 0] < -5.0
    assert angle_diff(out.frames[1].yaw_rad[0], 0.0) < 1e-12
    assert angle_diff(out.frames[3].yaw_rad[0], 0.0) < 1e-12
    # A frame's output does not depend on later frames.
    prefix = track_scene(frames[:3], "online")
    for a, b in zip(prefix.frames, out.frames[:3], strict=False):
        np.testing.assert_array_equal(a.velocity_xy, b.velocity_xy)
        np.testing.assert_array_equal(a.yaw_rad, b.yaw_rad)
        np.testing.assert_array_equal(a.score, b.score)


# ---------------------------------------------------------------------------------------------
# An object that stops


def test_object_that_stops_keeps_its_heading_and_comes_to_rest():
    """A car drives east at 8 m/s for 2 s (frames 0-4, x = 0..16 m), brakes at 4 m/s^2 to stand at
    x = 24 m from t = 4 s (frame 8) to t = 7 s (frame 14). Standing still, the detector mostly reads
    its heading backwards."""
    frames = []
    for i in range(15):
        t = 0.5 * i
        braking = min(max(t - 2.0, 0.0), 2.0)
        x = 8.0 * min(t, 2.0) + 8.0 * braking - 2.0 * braking**2
        yaw = math.pi if i >= 8 and i % 4 != 0 else 0.0
        frames.append(make_frame(i, [("car", x, 2.0, yaw, 0.9)]))
    out = track_scene(frames, "offline")
    assert ids_of(out.frames) == [[0]] * 15
    velocity = np.array([f.velocity_xy[0] for f in out.frames])
    np.testing.assert_allclose(velocity[1:4], np.tile([8.0, 0.0], (3, 1)), atol=1.0)
    # At rest, the smoothed speed settles to (nearly) zero.
    assert np.all(np.hypot(velocity[10:, 0], velocity[10:, 1]) < 0.5), velocity
    # Every heading is the one the car arrived with (east), the majority of backwards reads overruled.
    yaw = np.array([f.yaw_rad[0] for f in out.frames])
    assert np.all(angle_diff(yaw, 0.0) < 1e-12)


def test_parked_object_takes_the_majority_heading():
    """A parked car never moves; its heading is read north 5 times and south twice (lower scores)."""
    reads = [math.pi / 2] * 3 + [-math.pi / 2] * 2 + [math.pi / 2] * 2
    frames = [make_frame(i, [("car", 5.0, 5.0, yaw, 0.8 if yaw > 0 else 0.5)]) for i, yaw in enumerate(reads)]
    out = track_scene(frames, "offline")
    yaw = np.array([f.yaw_rad[0] for f in out.frames])
    assert np.all(angle_diff(yaw, math.pi / 2) < 1e-12)
    np.testing.assert_allclose(np.array([f.velocity_xy[0] for f in out.frames]), 0.0, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# A U-turn


def u_turn_path(s: np.ndarray, radius: float = 3.0, leg: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arc length s -> (x, y, heading) along: east on y = 0 for `leg` m, a half circle of `radius`
    turning left, then west on y = 2 * radius."""
    arc = math.pi * radius
    x = np.where(s < leg, s, np.where(s < leg + arc, leg + radius * np.sin((s - leg) / radius), leg - (s - leg - arc)))
    y = np.where(s < leg, 0.0, np.where(s < leg + arc, radius - radius * np.cos((s - leg) / radius), 2 * radius))
    heading = np.where(s < leg, 0.0, np.where(s < leg + arc, (s - leg) / radius, math.pi))
    return x, y, heading


def test_u_turn_headings_follow_the_motion():
    """A car drives the U-turn at 2.5 m/s; the detector knows only the axis of its heading
    (every read is in [-pi/2, pi/2)), so half the turn and all of the way back read backwards."""
    speed = 2.5
    s = speed * 0.5 * np.arange(27)  # 0 .. 32.5 m: the whole path (10 + 9.42 + 10 m) and a bit
    x, y, heading = u_turn_path(s)
    axis_reads = np.mod(heading + math.pi / 2, math.pi) - math.pi / 2
    frames = [make_frame(i, [("car", x[i], y[i], axis_reads[i], 0.9)]) for i in range(len(s))]
    out = track_scene(frames, "offline")
    assert ids_of(out.frames) == [[0]] * len(s)
    yaw = np.array([f.yaw_rad[0] for f in out.frames])
    # Every heading points the right way round (the true heading within a few tens of degrees:
    # the smoothed motion lags a little in the turn), never backwards.
    assert np.all(angle_diff(yaw, heading) < 0.5), np.degrees(angle_diff(yaw, heading))
    # Before the turn east and after it west, at close to 2.5 m/s.
    velocity = np.array([f.velocity_xy[0] for f in out.frames])
    assert np.all(np.abs(velocity[1:6, 0] - speed) < 0.5) and np.all(np.abs(velocity[-4:, 0] + speed) < 0.5)
    # With headings from motion off, the detected axis is kept, only turned the right way round.
    exact = track_scene(frames, "offline", replace(TrackerConfig(), heading_from_motion=False))
    yaw = np.array([f.yaw_rad[0] for f in exact.frames])
    assert np.all(angle_diff(yaw, heading) < 1e-9), np.degrees(angle_diff(yaw, heading))


# ---------------------------------------------------------------------------------------------
# A missed detection in the middle


def missed_detection_scene() -> list[FrameDetections]:
    """A car drives north at 6 m/s from y = 0 (7 frames); the detector misses it in frame 3."""
    return [make_frame(i, [] if i == 3 else [("car", 4.0, 3.0 * i, math.pi / 2, 0.9)]) for i in range(7)]


def test_missed_detection_offline_is_bridged():
    out = track_scene(missed_detection_scene(), "offline")
    assert ids_of(out.frames) == [[0], [0], [0], [0], [0], [0], [0]]
    bridge = out.frames[3]
    assert bridge.interpolated.tolist() == [True]
    # Where the car was at t = 1.5 s, heading and speed as its neighbours.
    np.testing.assert_allclose(bridge.center[0], [4.0, 9.0, 1.0], atol=0.05)
    np.testing.assert_allclose(bridge.velocity_xy[0], [0.0, 6.0], atol=0.3)
    assert angle_diff(bridge.yaw_rad[0], math.pi / 2) < 1e-9
    # Its score: the bridge factor times the lower neighbour's (0.9 each: a full-length track keeps them).
    assert bridge.score[0] == pytest.approx(TrackerConfig().bridge_score_factor * 0.9, abs=1e-12)
    assert not any(f.interpolated.any() for i, f in enumerate(out.frames) if i != 3)


def test_missed_detection_online_keeps_the_id_and_adds_nothing():
    out = track_scene(missed_detection_scene(), "online")
    assert ids_of(out.frames) == [[0], [0], [0], [], [0], [0], [0]]


def test_longer_gap_is_not_bridged():
    config = replace(TrackerConfig(), bridge_max_frames=1)
    frames = [make_frame(i, [] if i in (3, 4) else [("car", 4.0, 3.0 * i, math.pi / 2, 0.9)]) for i in range(8)]
    out = track_scene(frames, "offline", config)
    assert [len(f) for f in out.frames] == [1, 1, 1, 0, 0, 1, 1, 1]
    assert ids_of(out.frames) == [[0], [0], [0], [], [], [0], [0], [0]]


# ---------------------------------------------------------------------------------------------
# A false positive for one frame


def test_one_frame_false_positive_is_scored_down():
    """A parked car in every frame (score 0.9), and in frame 2 a car 30 m away that is seen once
    (score 0.5)."""
    frames = []
    for i in range(5):
        boxes = [("car", 0.0, 0.0, 0.0, 0.9)] + ([("car", 30.0, 0.0, 0.0, 0.5)] if i == 2 else [])
        frames.append(make_frame(i, boxes))
    config = TrackerConfig()
    offline = track_scene(frames, "offline", config)
    assert ids_of(offline.frames) == [[0], [0], [0, 1], [0], [0]]
    # A full-length track of equal scores keeps them; the one-frame track is scored down.
    assert [f.score[0] for f in offline.frames] == pytest.approx([0.9] * 5, abs=1e-12)
    assert offline.frames[2].score[1] == pytest.approx(config.short_track_factor * 0.5, abs=1e-12)
    online = track_scene(frames, "online", replace(config, online_short_track_factor=0.5))
    # Online, a track is "short" until its second detection.
    assert [f.score[0] for f in online.frames] == pytest.approx([0.5 * 0.9] + [0.9] * 4, abs=1e-12)
    assert online.frames[2].score[1] == pytest.approx(0.5 * 0.5, abs=1e-12)


def test_a_keyframe_alone_is_not_scored_down():
    """Offline, a track is short only against the keyframes its stretch of the scene had: a
    one-keyframe scene, or a keyframe cut off from its neighbours by long gaps, keeps its scores;
    a box seen once in a two-keyframe stretch is still scored down."""
    config = TrackerConfig()
    alone = track_scene([make_frame(0, [("car", 0.0, 0.0, 0.0, 0.6), ("pedestrian", 5.0, 0.0, 0.0, 0.4)])], "offline")
    assert alone.frames[0].score.tolist() == pytest.approx([0.6, 0.4], abs=1e-12)
    gap_us = int(10 * config.max_gap_s * 1e6)
    frames = [
        make_frame(0, [("car", 0.0, 0.0, 0.0, 0.8)]),
        make_frame(1, [("car", 0.0, 0.0, 0.0, 0.8), ("car", 30.0, 0.0, 0.0, 0.5)]),
        make_frame(2, [("car", 60.0, 0.0, 0.0, 0.7)], timestamp_us=DT_US + gap_us),
    ]
    out = track_scene(frames, "offline", config)
    assert len(out.cuts) == 1
    assert out.frames[1].score[1] == pytest.approx(config.short_track_factor * 0.5, abs=1e-12)
    assert out.frames[2].score.tolist() == pytest.approx([0.7], abs=1e-12)


def test_weak_detections_continue_tracks_but_start_none():
    """A car drives east at 10 m/s; in frames 2 and 3 the detector is unsure of it (0.1, below
    `min_score`), and in frame 1 a weak car stands 20 m away: the track goes on through the weak
    detections, the lone weak one stays untracked and keeps its (unknown) velocity."""
    frames = []
    for i in range(5):
        boxes = [("car", 5.0 * i, 0.0, 0.0, 0.1 if i in (2, 3) else 0.9)]
        if i == 1:
            boxes.append(("car", 20.0, 20.0, 0.0, 0.1))
        frames.append(make_frame(i, boxes))
    for mode in ("online", "offline"):
        out = track_scene(frames, mode)
        assert ids_of(out.frames) == [[0], [0, -1], [0], [0], [0]]
        assert np.isnan(out.frames[1].velocity_xy[1]).all()
        assert out.frames[3].velocity_xy[0, 0] == pytest.approx(10.0, abs=1.0)


def test_classes_never_share_a_track():
    frames = [make_frame(i, [("car", 0.0, 0.0, 0.0, 0.9), ("pedestrian", 0.2, 0.0, 0.0, 0.9)]) for i in range(3)]
    out = track_scene(frames, "offline")
    assert ids_of(out.frames) == [[0, 1]] * 3


# ---------------------------------------------------------------------------------------------
# Cuts


@pytest.mark.parametrize(
    "timestamps_us, reason_start",
    [
        ([0, 500_000, 1_000_000, 900_000, 1_400_000], "out of order"),
        ([0, 500_000, 1_000_000, 4_000_000, 4_500_000], "gap of 3.000 s"),
    ],
)
def test_keyframes_out_of_order_or_far_apart_cut_the_tracks(timestamps_us, reason_start):
    frames = [make_frame(i, [("car", 0.0, 0.0, 0.0, 0.9)], timestamp_us=t) for i, t in enumerate(timestamps_us)]
    for mode in ("online", "offline"):
        out = track_scene(frames, mode)
        assert [cut.sample_token for cut in out.cuts] == ["s3"]
        assert out.cuts[0].reason.startswith(reason_start)
        assert ids_of(out.frames) == [[0], [0], [0], [1], [1]]


# ---------------------------------------------------------------------------------------------
# Determinism


def random_scene(seed: int, num_frames: int = 12) -> list[FrameDetections]:
    """Objects of several classes moving at random constant velocities, detected with noise,
    misses and false positives."""
    rng = np.random.default_rng(seed)
    classes = ["car", "pedestrian", "truck", "bicycle", "barrier"]
    start = rng.uniform(-40, 40, (25, 2))
    velocity = rng.uniform(-8, 8, (25, 2)) * np.array([[1.0]] * 25)
    label = rng.integers(0, len(classes), 25)
    frames = []
    for i in range(num_frames):
        boxes = []
        for k in range(25):
            if rng.random() < 0.15:
                continue
            xy = start[k] + velocity[k] * 0.5 * i + rng.normal(0, 0.2, 2)
            boxes.append((classes[label[k]], xy[0], xy[1], rng.uniform(-math.pi, math.pi), rng.uniform(0.1, 1.0)))
        for _ in range(rng.integers(0, 4)):
            xy = rng.uniform(-50, 50, 2)
            boxes.append((classes[rng.integers(0, len(classes))], xy[0], xy[1], 0.0, rng.uniform(0.05, 0.4)))
        frames.append(make_frame(i, boxes))
    return frames


def frame_bytes(frames) -> bytes:
    return b"".join(
        f.sample_token.encode()
        + b"".join(
            np.ascontiguousarray(getattr(f, name)).tobytes()
            for name in (
                "center",
                "size_wlh",
                "yaw_rad",
                "velocity_xy",
                "score",
                "label",
                "attribute",
                "track_id",
                "interpolated",
            )
        )
        for f in frames
    )


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_same_detections_same_bits(mode):
    a = track_scene(random_scene(7), mode)
    b = track_scene(random_scene(7), mode)
    assert frame_bytes(a.frames) == frame_bytes(b.frames)
    assert a.num_tracks == b.num_tracks > 0


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_box_order_within_a_frame_does_not_matter(mode):
    frames = random_scene(11)
    rng = np.random.default_rng(0)
    shuffled = []
    for f in frames:
        p = rng.permutation(len(f))
        shuffled.append(
            FrameDetections(
                f.sample_token,
                f.timestamp_us,
                f.center[p],
                f.size_wlh[p],
                f.yaw_rad[p],
                f.velocity_xy[p],
                f.score[p],
                f.label[p],
                f.attribute[p],
            )
        )
    a = track_scene(frames, mode)
    b = track_scene(shuffled, mode)
    for fa, fb in zip(a.frames, b.frames, strict=False):
        key_a = np.lexsort((fa.center[:, 1], fa.center[:, 0]))
        key_b = np.lexsort((fb.center[:, 1], fb.center[:, 0]))
        for name in ("center", "velocity_xy", "yaw_rad", "score", "track_id"):
            np.testing.assert_array_equal(getattr(fa, name)[key_a], getattr(fb, name)[key_b])


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="center must have shape"):
        FrameDetections(
            "s",
            0,
            np.zeros((2, 2)),
            np.zeros((2, 3)),
            np.zeros(2),
            np.zeros((2, 2)),
            np.zeros(2),
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
        )
    with pytest.raises(ValueError, match="mode"):
        track_scene([], "smoothed")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Standing objects: a drifting track end, jitter


def test_parked_object_keeps_its_heading_when_its_track_drifts_at_the_end():
    """A parked bus faces north (detected at pi/2, score 0.5, frames 0-9); from frame 10 on its
    track takes four weaker boxes (0.3) that move south at 4 m/s (a neighbour's, or the detector's
    centre wandering off). Ten standing reads outvote four moving ones: the parked frames keep
    north, only the moving frames follow their motion."""
    frames = [make_frame(i, [("bus", 0.0, 0.0, math.pi / 2, 0.5)]) for i in range(10)]
    frames += [make_frame(10 + i, [("bus", 0.0, -2.0 * (i + 1), math.pi / 2, 0.3)]) for i in range(4)]
    out = track_scene(frames, "offline")
    assert ids_of(out.frames) == [[0]] * 14
    yaw = np.array([f.yaw_rad[0] for f in out.frames])
    speed = np.array([np.hypot(*f.velocity_xy[0]) for f in out.frames])
    standing = speed <= TrackerConfig().moving_speed_mps
    assert standing[:8].all() and not standing[-3:].any(), speed
    assert np.all(angle_diff(yaw[standing], math.pi / 2) < 1e-12), np.degrees(yaw)
    assert np.all(angle_diff(yaw[~standing], -math.pi / 2) < 0.1), np.degrees(yaw)


def test_standing_track_has_zero_velocity():
    """A parked car detected with its centre jittering by up to 0.4 m: the smoother alone leaves a
    speed of the jitter's size; a track that never gets `min_displacement_m` from its start stands,
    and its velocity is exactly 0."""
    jitter = [(0.0, 0.0), (0.4, -0.2), (-0.3, 0.3), (0.2, 0.4), (-0.4, -0.1), (0.3, -0.4), (0.0, 0.2)]
    frames = [make_frame(i, [("car", 10.0 + dx, 5.0 + dy, 0.0, 0.8)]) for i, (dx, dy) in enumerate(jitter)]
    snapped = track_scene(frames, "offline")
    assert all(np.array_equal(f.velocity_xy, np.zeros((1, 2))) for f in snapped.frames)
    loose = track_scene(frames, "offline", replace(TrackerConfig(), snap_standing=False))
    assert max(np.hypot(*f.velocity_xy[0]) for f in loose.frames) > 0.05


# ---------------------------------------------------------------------------------------------
# Parked vehicles face the traffic beside them


def parked_street(
    parked: list[tuple[str, float, float, float]], extra_moving=(), parked_frames=range(12)
) -> list[FrameDetections]:
    """A street along x with right-hand traffic: a car eastbound at y = -1.75 m and one westbound at
    y = +1.75 m, both at 10 m/s, passing x = 5 m around t = 2.5 s; `parked` (class, x, y, detected
    yaw) stand there in `parked_frames` (score 0.8); `extra_moving` (class, x0, y, vx) move too.
    Boxes 0 and 1 are the moving cars, then the parked ones, then the extra ones."""
    frames = []
    for i in range(12):
        t = 0.5 * i
        boxes = [("car", -20.0 + 10.0 * t, -1.75, 0.0, 0.9), ("car", 30.0 - 10.0 * t, 1.75, math.pi, 0.9)]
        boxes += [(name, x, y, yaw, 0.8) for name, x, y, yaw in parked if i in parked_frames]
        boxes += [(name, x0 + vx * t, y, 0.0 if vx > 0 else math.pi, 0.7) for name, x0, y, vx in extra_moving]
        frames.append(make_frame(i, boxes))
    return frames


def offline_yaws(frames, config: TrackerConfig | None = None) -> np.ndarray:
    """(frames, boxes) offline headings in the input's box order (no box is bridged or dropped)."""
    out = track_scene(frames, "offline", TrackerConfig() if config is None else config)
    assert [len(f.score) for f in out.frames] == [len(f.score) for f in frames]
    return np.array([f.yaw_rad for f in out.frames])


def test_parked_vehicles_face_the_flow_of_the_lane_beside_them():
    """Two parked cars read backwards in every frame: the one right of the eastbound lane faces
    east, the one left of the westbound lane west; a parked truck likewise. The moving cars keep
    their motion's heading."""
    parked = [("car", 5.0, -4.5, math.pi), ("car", 8.0, 4.5, 0.0), ("truck", 20.0, -4.8, math.pi)]
    yaw = offline_yaws(parked_street(parked))
    assert np.all(angle_diff(yaw[:, 0], 0.0) < 1e-9) and np.all(angle_diff(yaw[:, 1], math.pi) < 1e-9)
    assert np.all(angle_diff(yaw[:, 2], 0.0) < 1e-9)
    assert np.all(angle_diff(yaw[:, 3], math.pi) < 1e-9)
    assert np.all(angle_diff(yaw[:, 4], 0.0) < 1e-9)
    # Without the rule, and for a class not in `parked_classes` (a bus), the track's own reads stand.
    off = offline_yaws(parked_street(parked), replace(TrackerConfig(), follow_traffic=False))
    assert np.all(angle_diff(off[:, 2], math.pi) < 1e-9) and np.all(angle_diff(off[:, 3], 0.0) < 1e-9)
    bus = offline_yaws(parked_street([("bus", 5.0, -5.0, math.pi)]))
    assert np.all(angle_diff(bus[:, 2], math.pi) < 1e-9)


def test_parked_vehicles_ignore_traffic_they_cannot_tell_their_side_by():
    """No rule where the only traffic is too far to the side, where it runs across the parked car's
    axis, or where the parked car is seen only once; and a track that drives through the parked
    car's place while it stands there (a drifting track, here a truck's) is not its lane's traffic."""
    far = offline_yaws(parked_street([("car", 5.0, -12.0, math.pi)]))  # 10 m from the nearest lane
    assert np.all(angle_diff(far[:, 2], math.pi) < 1e-9)
    across = offline_yaws(parked_street([("car", 5.0, -4.5, -math.pi / 2)]))  # parked across the street
    assert np.all(angle_diff(across[:, 2], -math.pi / 2) < 1e-9)
    once = offline_yaws(parked_street([("car", 5.0, -4.5, math.pi)], parked_frames=range(12)))
    assert np.all(angle_diff(once[:, 2], 0.0) < 1e-9)  # seen in every frame it follows the lane ...
    frames = parked_street([("car", 5.0, -4.5, math.pi)], parked_frames={3})
    assert angle_diff(track_scene(frames, "offline").frames[3].yaw_rad[2], math.pi) < 1e-9  # ... seen once, not
    ghost = offline_yaws(parked_street([("car", 5.0, -4.5, math.pi)], extra_moving=[("truck", 25.0, -4.5, -8.0)]))
    assert np.all(angle_diff(ghost[:, 2], 0.0) < 1e-9)
