"""Sensor value types validate their shapes, and a frame's camera rig includes ego motion."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3
from avfusion.sensors.types import CameraFrame, GnssFix, LidarSweep, SyncedFrame

K = np.array([[500.0, 0.0, 99.5], [0.0, 500.0, 49.5], [0.0, 0.0, 1.0]])
EGO_FROM_CAMERA = SE3.from_matrix(np.array([[0, 0, 1, 1.5], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1.0]]))


def camera(name: str, global_from_ego: SE3, timestamp_us: int) -> CameraFrame:
    return CameraFrame(
        name,
        np.zeros((100, 200, 3), np.uint8),
        CameraIntrinsics(K, 200, 100),
        EGO_FROM_CAMERA,
        global_from_ego,
        timestamp_us,
    )


def test_lidar_sweep_validation() -> None:
    sweep = LidarSweep(np.zeros((4, 5), np.float32), 10, SE3.identity(), SE3.identity())
    assert len(sweep) == 4 and sweep.points_ego.shape == (4, 3)
    with pytest.raises(ValueError, match=r"\(N, 5\), got \(4, 4\)"):
        LidarSweep(np.zeros((4, 4), np.float32), 10, SE3.identity(), SE3.identity())
    with pytest.raises(ValueError, match="float32, got float64"):
        LidarSweep(np.zeros((4, 5)), 10, SE3.identity(), SE3.identity())


def test_camera_frame_validation() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\), got \(100, 200\)"):
        CameraFrame(
            "CAM_FRONT",
            np.zeros((100, 200), np.uint8),
            CameraIntrinsics(K, 200, 100),
            SE3.identity(),
            SE3.identity(),
            0,
        )
    with pytest.raises(ValueError, match="intrinsics are for 200x100, image is 100x100"):
        CameraFrame(
            "CAM_FRONT",
            np.zeros((100, 100, 3), np.uint8),
            CameraIntrinsics(K, 200, 100),
            SE3.identity(),
            SE3.identity(),
            0,
        )


def test_gnss_fix_validation() -> None:
    fix = GnssFix(5, 42.3, -71.0, 1.0, 90.0, 3.0)
    assert fix.timestamp_us == 5 and isinstance(fix.latitude_deg, float)
    with pytest.raises(ValueError, match="latitude_deg must be finite"):
        GnssFix(5, float("nan"), -71.0, 1.0, 90.0, 3.0)
    with pytest.raises(ValueError, match="out of range"):
        GnssFix(5, 95.0, -71.0, 1.0, 90.0, 3.0)


def test_camera_rig_includes_ego_motion_between_lidar_and_camera_time() -> None:
    # The ego moves 1 m forward (+x global, yaw 0) between the lidar and the camera exposure.
    pose_lidar = SE3.from_yaw(0.0, [100.0, 200.0, 0.0])
    pose_camera = SE3.from_yaw(0.0, [101.0, 200.0, 0.0])
    frame = SyncedFrame(
        "s",
        "scene-1",
        "boston-seaport",
        1_000_000,
        pose_lidar,
        None,
        {"CAM_FRONT": camera("CAM_FRONT", pose_camera, 1_020_000)},
        None,
        {"CAM_FRONT": 20_000},
        {"LIDAR_TOP": "file missing"},
    )
    rig = frame.camera_rig()
    assert rig.names == ("CAM_FRONT",)
    # the camera sits 1.5 m ahead of the ego origin at its own time, so 2.5 m ahead of the lidar-time ego
    np.testing.assert_allclose(rig.ego_from_camera[0, :3, 3], [2.5, 0.0, 1.5], atol=1e-12)
    # a point 12.5 m ahead of the lidar-time ego is 10 m in front of the camera: the image centre
    projection = rig.project_ego(np.array([[12.5, 0.0, 1.5]]))
    np.testing.assert_allclose(projection.uv[0, 0], [99.5, 49.5], atol=1e-9)
    assert projection.depth[0, 0] == pytest.approx(10.0)
    with pytest.raises(TypeError):
        frame.missing["x"] = "y"  # type: ignore[index]


def test_synced_frame_rejects_misnamed_camera() -> None:
    with pytest.raises(ValueError, match="CAM_BACK"):
        SyncedFrame(
            "s",
            "scene-1",
            "boston-seaport",
            0,
            SE3.identity(),
            None,
            {"CAM_BACK": camera("CAM_FRONT", SE3.identity(), 0)},
            None,
            {},
            {},
        )
