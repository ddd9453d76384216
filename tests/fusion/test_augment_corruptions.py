"""Corruption augmentation for robust training (`fusion.augment.corrupt_for_training`)."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3
from avfusion.fusion.augment import corrupt_for_training
from avfusion.fusion.config import AugmentConfig
from avfusion.sensors.types import CAMERA_NAMES, CameraFrame, LidarSweep, SyncedFrame


def frame(token: str, seed: int = 0, timestamp_us: int = 1_000_000) -> SyncedFrame:
    """32 rings x 40 random points and six random 45 x 80 images."""
    rng = np.random.default_rng(seed)
    points = np.concatenate(
        [rng.uniform(-30, 30, (1280, 3)), rng.uniform(0, 100, (1280, 1)), np.zeros((1280, 1))], axis=1
    )
    ring = np.repeat(np.arange(32), 40).astype(np.int16)
    lidar = LidarSweep(points.astype(np.float32), timestamp_us, SE3.identity(), SE3.identity(), ring=ring)
    intrinsics = CameraIntrinsics(np.array([[40.0, 0, 40], [0, 40, 22], [0, 0, 1]]), 80, 45)
    cameras = {
        n: CameraFrame(
            n,
            rng.integers(0, 256, (45, 80, 3), dtype=np.uint8),
            intrinsics,
            SE3.identity(),
            SE3.identity(),
            timestamp_us,
        )
        for n in CAMERA_NAMES
    }
    return SyncedFrame(token, "s", "boston-seaport", timestamp_us, SE3.identity(), lidar, cameras, None, {}, {})


def test_off_by_default_returns_the_frame() -> None:
    f = frame("a")
    assert not AugmentConfig().corrupts
    assert corrupt_for_training(f, None, AugmentConfig(), np.random.default_rng(0)) is f


def test_beam_and_point_dropping_and_jitter() -> None:
    f = frame("a")
    beams = corrupt_for_training(f, None, AugmentConfig(beam_drop_probability=1.0), np.random.default_rng(0))
    assert set(np.unique(beams.lidar.ring) % 2) == {0} and len(beams.lidar) in (len(f.lidar) // 2, len(f.lidar) // 4)
    dropped = corrupt_for_training(
        f, None, AugmentConfig(point_drop_probability=1.0, point_drop_max_fraction=0.5), np.random.default_rng(1)
    )
    assert len(f.lidar) // 2 - 100 < len(dropped.lidar) <= len(f.lidar)
    assert dropped.lidar.ring.shape == (len(dropped.lidar),)
    jittered = corrupt_for_training(f, None, AugmentConfig(point_jitter_sigma_m=0.05), np.random.default_rng(2))
    delta = jittered.lidar.points[:, :3] - f.lidar.points[:, :3]
    assert delta.std() == pytest.approx(0.05, rel=0.1)
    np.testing.assert_array_equal(jittered.lidar.points[:, 3:], f.lidar.points[:, 3:])


def test_stale_data_photometric_noise_and_extrinsic_perturbation() -> None:
    previous, f = frame("p", seed=1, timestamp_us=500_000), frame("a", seed=2)
    stale = corrupt_for_training(
        f, previous, AugmentConfig(stale_lidar_probability=1.0, stale_camera_probability=1.0), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(stale.lidar.points, previous.lidar.points)
    assert stale.lidar.timestamp_us == f.lidar.timestamp_us
    for name in CAMERA_NAMES:
        np.testing.assert_array_equal(stale.cameras[name].image, previous.cameras[name].image)
    photo = corrupt_for_training(f, None, AugmentConfig(photometric_probability=1.0), np.random.default_rng(0))
    for name in CAMERA_NAMES:
        image = photo.cameras[name].image
        assert image.shape == f.cameras[name].image.shape and image.dtype == np.uint8
        assert not np.array_equal(image, f.cameras[name].image)
    tilted = corrupt_for_training(f, None, AugmentConfig(extrinsic_sigma_deg=0.5), np.random.default_rng(0))
    for name in CAMERA_NAMES:
        relative = f.cameras[name].ego_from_camera.inverse() @ tilted.cameras[name].ego_from_camera
        angle = np.rad2deg(np.arccos(np.clip((np.trace(relative.rotation) - 1) / 2, -1, 1)))
        assert 0 < angle < 3.0 and np.allclose(relative.translation, 0)
    again = corrupt_for_training(f, None, AugmentConfig(extrinsic_sigma_deg=0.5), np.random.default_rng(0))
    assert all(again.cameras[n].ego_from_camera.allclose(tilted.cameras[n].ego_from_camera) for n in CAMERA_NAMES)


def test_bad_probability_is_refused() -> None:
    with pytest.raises(ValueError, match="beam_drop_probability"):
        AugmentConfig(beam_drop_probability=1.5)


def test_weather_is_fog_or_snow_over_the_lidar_and_every_camera() -> None:
    f = frame("a")
    config = AugmentConfig(weather_probability=1.0)
    assert config.corrupts
    for seed in range(8):
        wet = corrupt_for_training(f, None, config, np.random.default_rng(seed))
        # Fog attenuates every intensity and loses or moves returns; snow moves returns onto flakes.
        assert not np.array_equal(wet.lidar.points, f.lidar.points)
        assert wet.lidar.ring.shape == (len(wet.lidar),)
        for name in CAMERA_NAMES:
            image = wet.cameras[name].image
            assert image.shape == f.cameras[name].image.shape and image.dtype == np.uint8
            assert not np.array_equal(image, f.cameras[name].image)
        again = corrupt_for_training(f, None, config, np.random.default_rng(seed))
        np.testing.assert_array_equal(again.lidar.points, wet.lidar.points)
    dry = corrupt_for_training(
        f, None, AugmentConfig(weather_probability=0.0, photometric_probability=1e-9), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(dry.lidar.points, f.lidar.points)
    with pytest.raises(ValueError, match="weather_probability"):
        AugmentConfig(weather_probability=-0.1)
