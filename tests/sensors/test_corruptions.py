"""Corruptions on tiny hand-made clouds, images and frames: what each keeps, repeatability, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3
from avfusion.errors import InputError
from avfusion.sensors import corruptions as C
from avfusion.sensors.corruptions import Corruption, corrupt_frame, sensor_rng
from avfusion.sensors.types import (
    CAMERA_NAMES,
    CameraFrame,
    GnssFix,
    LidarSweep,
    SyncedFrame,
)

ALL = [Corruption(t, s) for t in C.CORRUPTION_TYPES for s in C.SEVERITIES]


def cloud(rings: int = 32, per_ring: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A cloud of `rings` x `per_ring` returns at 5-60 m, intensity 1-100, and its ring indices."""
    rng = np.random.default_rng(seed)
    n = rings * per_ring
    ring = np.repeat(np.arange(rings), per_ring).astype(np.int16)
    azimuth = rng.uniform(-np.pi, np.pi, n)
    elevation = np.deg2rad(-30.0 + 40.0 * ring / max(rings - 1, 1))
    distance = rng.uniform(5.0, 60.0, n)
    xyz = np.stack(
        [
            distance * np.cos(elevation) * np.cos(azimuth),
            distance * np.cos(elevation) * np.sin(azimuth),
            distance * np.sin(elevation),
        ],
        axis=1,
    )
    points = np.concatenate([xyz, rng.uniform(1, 100, (n, 1)), np.zeros((n, 1))], axis=1).astype(np.float32)
    return points, ring


def image(seed: int = 0, height: int = 45, width: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def frame(token: str, scene: str = "scene-a", seed: int = 0, timestamp_us: int = 1_000_000) -> SyncedFrame:
    points, ring = cloud(seed=seed)
    lidar = LidarSweep(points, timestamp_us, SE3.identity(), SE3.identity(), token=f"{token}-lidar", ring=ring)
    intrinsics = CameraIntrinsics(np.array([[40.0, 0, 40], [0, 40, 22], [0, 0, 1]]), 80, 45)
    cameras = {
        name: CameraFrame(
            name, image(seed * 10 + k), intrinsics, SE3.identity(), SE3.identity(), timestamp_us, f"{token}-{name}"
        )
        for k, name in enumerate(CAMERA_NAMES)
    }
    gnss = GnssFix(timestamp_us, 42.34, -71.05, 0.0, 90.0, 5.0)
    return SyncedFrame(token, scene, "boston-seaport", timestamp_us, SE3.identity(), lidar, cameras, gnss, {}, {})


# --- parsing ----------------------------------------------------------------------------------


def test_parse_round_trip_and_bad_input() -> None:
    assert Corruption.parse("fog:2") == Corruption("fog", 2)
    assert str(Corruption.parse(" beams_reducing:3 ")) == "beams_reducing:3"
    with pytest.raises(InputError, match=r"unknown corruption type 'rain'.*known: beams_reducing"):
        Corruption.parse("rain:1")
    with pytest.raises(InputError, match=r"severity '4' is not one of \[1, 2, 3\]|severity 4 is not one of"):
        Corruption.parse("fog:4")
    with pytest.raises(InputError, match=r"severity 'x'"):
        Corruption.parse("fog:x")
    with pytest.raises(InputError, match=r"TYPE:SEVERITY"):
        Corruption.parse("fog")
    with pytest.raises(InputError, match="severity 0"):
        Corruption("fog", 0)


# --- clouds -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "kept_rings"), [(1, list(range(0, 32, 2))), (2, [0, 4, 8, 12, 16, 20, 24, 28]), (3, [0, 8, 16, 24])]
)
def test_beam_reduction_keeps_exactly_the_right_rings(severity: int, kept_rings: list[int]) -> None:
    points, ring = cloud()
    out, kept = C.corrupt_cloud(points, ring, Corruption("beams_reducing", severity), sensor_rng(0, "b", "t", "L"))
    assert sorted(np.unique(ring[kept]).tolist()) == kept_rings
    assert len(out) == 50 * len(kept_rings)
    np.testing.assert_array_equal(out, points[kept])


def test_beam_reduction_without_rings_is_bad_input() -> None:
    points, _ = cloud()
    with pytest.raises(InputError, match="ring index"):
        C.corrupt_cloud(points, None, Corruption("beams_reducing", 1), sensor_rng(0, "b", "t", "L"))


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_point_reduction_drops_the_right_fraction(severity: int) -> None:
    points, _ = cloud()  # 1600 points
    out, kept = C.reduce_points(points, severity, sensor_rng(1, "p", "t", "L"))
    assert len(out) == 1600 - round(C.POINT_DROP_FRACTION[severity - 1] * 1600)
    assert np.all(np.diff(kept) > 0)
    np.testing.assert_array_equal(out, points[kept])


def test_spatial_misalignment_rotates_by_the_severity_angle_and_shifts_2m() -> None:
    rotation, shift = C.misalignment_transform(2, sensor_rng(0, "s", "t", "L"))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(shift, [2.0, 0.0, 0.0])
    # About each axis by +-2 degrees: the total angle is that of the three composed.
    angle = np.rad2deg(np.arccos((np.trace(rotation) - 1) / 2))
    assert 2.0 < angle < 2.0 * np.sqrt(3) + 1e-9
    points, _ = cloud()
    moved = C.transform_points(points, rotation, shift)
    np.testing.assert_allclose(moved[:, :3], points[:, :3] @ rotation.T + shift, atol=1e-4)
    np.testing.assert_array_equal(moved[:, 3:], points[:, 3:])


def test_motion_blur_moves_the_cloud_by_a_common_shift_plus_small_jitter() -> None:
    points, _ = cloud()
    out = C.motion_blur_points(points, 3, sensor_rng(0, "m", "t", "L"))
    delta = (out[:, :3] - points[:, :3]).astype(np.float64)
    jitter = delta - delta.mean(axis=0)
    limit = 3 * C.MOTION_JITTER_FRACTION * C.MOTION_SIGMA[2]
    assert np.abs(jitter).max() <= limit + 1e-3
    assert jitter.std() == pytest.approx(C.MOTION_JITTER_FRACTION * C.MOTION_SIGMA[2], rel=0.15)


def test_fog_attenuates_intensity_and_loses_far_weak_returns() -> None:
    points, _ = cloud()
    out, kept = C.fog_points(points, 3, sensor_rng(0, "f", "t", "L"))
    ranges = np.linalg.norm(points[:, :3], axis=1)
    attenuated = points[:, 3] * np.exp(-2 * C.FOG_ALPHA_PER_M[2] * ranges)
    strong = np.flatnonzero(attenuated >= C.FOG_NOISE_FLOOR)
    # Every return above the floor is kept where it was, with the attenuated intensity.
    assert set(strong) <= set(kept)
    rows = np.searchsorted(kept, strong)
    np.testing.assert_allclose(out[rows, 3], attenuated[strong], rtol=1e-5)
    np.testing.assert_array_equal(out[rows, :3], points[strong, :3])
    # Lost returns are gone or moved closer along their own ray (backscatter).
    weak_kept = np.setdiff1d(kept, strong)
    assert 0 < weak_kept.size < len(points) - strong.size
    moved = out[np.searchsorted(kept, weak_kept), :3]
    assert np.all(np.linalg.norm(moved, axis=1) < ranges[weak_kept])
    cosine = np.sum(moved * points[weak_kept, :3], axis=1) / np.linalg.norm(moved, axis=1) / ranges[weak_kept]
    np.testing.assert_allclose(cosine, 1.0, atol=1e-5)


def test_snow_adds_near_returns_and_loses_far_ones() -> None:
    points, _ = cloud()
    out, kept = C.snow_points(points, 3, sensor_rng(0, "s", "t", "L"))
    ranges = np.linalg.norm(points[kept, :3], axis=1)
    new_ranges = np.linalg.norm(out[:, :3], axis=1)
    moved = new_ranges < ranges - 1e-3
    assert moved.any() and len(out) < len(points)
    assert np.all(new_ranges[moved] <= C.SNOW_VISIBLE_RANGE_M + 1e-3)


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "corruption", [c for c in ALL if c.touches_cameras and c.type != "temporal_misalignment"], ids=str
)
def test_image_corruptions_keep_shape_dtype_and_repeat_by_seed(corruption: Corruption) -> None:
    picture = image()
    before = picture.copy()
    first = C.corrupt_image(picture, corruption, sensor_rng(3, corruption.type, "t", "CAM_FRONT"))
    again = C.corrupt_image(picture, corruption, sensor_rng(3, corruption.type, "t", "CAM_FRONT"))
    assert first.shape == picture.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(picture, before)  # input untouched
    assert not np.array_equal(first, picture)


def test_brightness_and_darkness_move_the_mean_the_right_way() -> None:
    picture = np.full((20, 30, 3), 100, np.uint8)
    assert C.brightness_image(picture, 1).mean() == pytest.approx(100 + 25.5, abs=1.0)
    dark = C.darkness_image(picture, 3, sensor_rng(0, "d", "t", "c"))
    assert dark.mean() == pytest.approx(255 * 0.3 * (100 / 255) ** 2, abs=3.0)


def test_motion_blur_kernel_is_a_normalized_line_at_its_angle() -> None:
    kernel = C.motion_blur_kernel(7, 0.0, 100.0)
    assert kernel.sum() == pytest.approx(1.0)
    assert np.count_nonzero(kernel[3]) == 7 and np.count_nonzero(kernel) == 7
    vertical = C.motion_blur_kernel(7, 90.0, 100.0)
    assert np.count_nonzero(vertical[:, 3]) == 7


# --- frames ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("corruption", ALL, ids=str)
def test_frame_corruption_is_repeatable_and_leaves_the_input_alone(corruption: Corruption) -> None:
    previous, current = frame("s0", seed=1, timestamp_us=500_000), frame("s1", seed=2)
    points_before = current.lidar.points.copy()
    first = corrupt_frame(current, corruption, seed=5, previous=previous)
    again = corrupt_frame(current, corruption, seed=5, previous=previous)
    np.testing.assert_array_equal(first.lidar.points, again.lidar.points)
    for name in CAMERA_NAMES:
        np.testing.assert_array_equal(first.cameras[name].image, again.cameras[name].image)
    assert first.gnss == again.gnss and (first.map is None) == (again.map is None)
    np.testing.assert_array_equal(current.lidar.points, points_before)
    assert first.timestamp_us == current.timestamp_us
    assert first.lidar.ring is not None and first.lidar.ring.shape == (len(first.lidar),)


def test_a_stale_frame_is_the_previous_keyframes_data_under_the_current_time() -> None:
    previous, current = frame("s0", seed=1, timestamp_us=500_000), frame("s1", seed=2)
    stale = corrupt_frame(current, Corruption("temporal_misalignment", 3), seed=0, previous=previous)
    hits = 0
    for name in CAMERA_NAMES:
        camera = stale.cameras[name]
        assert camera.timestamp_us == 1_000_000 and camera.token == current.cameras[name].token
        if np.array_equal(camera.image, previous.cameras[name].image):
            hits += 1
        else:
            np.testing.assert_array_equal(camera.image, current.cameras[name].image)
    # Severity 3 hits each sensor with probability 0.6: over many tokens, about that share.
    draws = [
        corrupt_frame(frame(f"t{k}", seed=2), Corruption("temporal_misalignment", 3), 0, previous) for k in range(40)
    ]
    share = np.mean([np.array_equal(d.lidar.points, previous.lidar.points) for d in draws])
    assert 0.4 < share < 0.8
    assert any(
        np.array_equal(d.lidar.points, previous.lidar.points) and d.lidar.timestamp_us == 1_000_000 for d in draws
    )
    # The first keyframe of a scene has no previous one: unchanged.
    assert corrupt_frame(current, Corruption("temporal_misalignment", 3), 0, None) is current
    assert hits <= len(CAMERA_NAMES)


def test_probabilistic_draws_depend_on_the_seed_and_nest_across_severities() -> None:
    frames = [frame(f"t{k}") for k in range(30)]

    def black(severity: int, seed: int) -> set[tuple[str, str]]:
        out = set()
        for f in frames:
            corrupted = corrupt_frame(f, Corruption("missing_camera", severity), seed)
            out |= {(f.sample_token, n) for n, c in corrupted.cameras.items() if not c.image.any()}
        return out

    low, high = black(1, 0), black(3, 0)
    assert low < high  # a camera black at severity 1 is black at 3 too
    assert 0.1 < len(low) / 180 < 0.3 and 0.5 < len(high) / 180 < 0.7
    assert black(1, 1) != low


def test_gnss_noise_and_map_removal() -> None:
    f = frame("g")
    noisy = corrupt_frame(f, Corruption("gnss_noise", 3), 0)
    assert noisy.gnss != f.gnss and noisy.gnss.timestamp_us == f.gnss.timestamp_us
    assert noisy.lidar is f.lidar
    removed = corrupt_frame(f, Corruption("map_removal", 3), 0)
    assert removed is f  # this frame has no map to remove
