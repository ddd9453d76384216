"""Online sensor checks on hand-made frames: frozen sensors, and the calibration check on a scene of
boards in front of a wall, seen by a ray-cast 32-ring lidar and a camera rendered from the same
geometry, with the stored extrinsic off by known rotations."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3
from avfusion.sensors.checks import (
    STATUS_OK,
    STATUS_SUSPECT,
    STATUS_UNDETERMINED,
    FrozenSensorCheck,
    SensorChecks,
    advance_cloud,
    content_digest,
)
from avfusion.sensors.types import LIDAR_NAME, CameraFrame, LidarSweep, SyncedFrame

CAMERA = "CAM_FRONT"
INTRINSICS = CameraIntrinsics(np.array([[160.0, 0.0, 99.5], [0.0, 160.0, 55.5], [0.0, 0.0, 1.0]]), 200, 112)
# Camera looking along ego x: camera x = -ego y, camera y = -ego z, camera z = ego x.
EGO_FROM_CAMERA = SE3(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), np.zeros(3))
WALL_X_M = 40.0
GROUND_Z_M = -1.8


def boards(rng: np.random.Generator) -> np.ndarray:
    """`(B, 5)` boards facing the camera: x (distance), y_min, y_max, z_min, z_max (ego, metres)."""
    out = []
    for _ in range(7):
        x = rng.uniform(7.0, 25.0)
        y = rng.uniform(-0.6, 0.6) * x
        half = rng.uniform(0.6, 1.8)
        top = rng.uniform(0.0, 2.5)
        out.append((x, y - half, y + half, GROUND_Z_M, top))
    return np.array(sorted(out, key=lambda b: -b[0]))


def cast(boards_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """32 rings (-15..+10 degrees) x azimuth -70..70 degrees in 0.3-degree steps, in firing order
    (azimuth outer, ring inner), against the boards and the wall: points (N, 5) and rings."""
    elevations = np.deg2rad(np.linspace(-15.0, 10.0, 32))
    azimuths = np.deg2rad(np.arange(-70.0, 70.0, 0.3))
    az, el = np.meshgrid(azimuths, elevations, indexing="ij")
    ring = np.broadcast_to(np.arange(32), az.shape).ravel()
    direction = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    distance = np.full(direction.shape[0], np.inf)
    for x, y0, y1, z0, z1 in [*boards_, (WALL_X_M, -1e3, 1e3, GROUND_Z_M, 20.0)]:
        t = x / direction[:, 0]
        y, z = t * direction[:, 1], t * direction[:, 2]
        hit = (t > 0) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)
        distance = np.where(hit & (t < distance), t, distance)
    keep = np.isfinite(distance)
    xyz = direction[keep] * distance[keep, None]
    points = np.concatenate([xyz, np.full((xyz.shape[0], 1), 50.0), np.zeros((xyz.shape[0], 1))], axis=1)
    return points.astype(np.float32), ring[keep].astype(np.int16)


def render(boards_: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The camera's view: a textured wall, the ground, the boards painted far to near."""
    image = np.empty((112, 200, 3), np.uint8)
    image[:] = 70
    image[56:] = 40  # below the horizon: ground (darker)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    camera_from_ego = EGO_FROM_CAMERA.inverse()
    for x, y0, y1, z0, z1 in boards_:
        corners = np.array([[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]])
        uv = INTRINSICS.project(camera_from_ego.apply(corners)).uv
        grey = int(rng.integers(110, 240))
        cv2.fillConvexPoly(image, np.rint(uv * 16).astype(np.int32), (grey, grey, grey), lineType=cv2.LINE_AA, shift=4)
    return image


def scene_frame(index: int, error_deg: tuple[float, float, float] = (0.0, 0.0, 0.0), scene: str = "s") -> SyncedFrame:
    """Keyframe `index` of a scene (boards drawn anew each keyframe); the stored camera extrinsic is
    the true one rotated by `error_deg` (rotation vector, camera frame)."""
    rng = np.random.default_rng(100 + index)
    layout = boards(rng)
    points, ring = cast(layout)
    timestamp = 1_000_000 + 500_000 * index
    lidar = LidarSweep(points, timestamp, SE3.identity(), SE3.identity(), token=f"l{index}", ring=ring)
    stored = EGO_FROM_CAMERA @ SE3(Rotation.from_rotvec(np.deg2rad(error_deg)).as_matrix(), np.zeros(3))
    # The cast cloud spans 140 of 360 degrees from its seam: 50 to 31 ms before the lidar time.
    camera = CameraFrame(
        CAMERA, render(layout, rng), INTRINSICS, stored, SE3.identity(), timestamp - 40_000, f"c{index}"
    )
    return SyncedFrame(
        f"t{index}", scene, "boston-seaport", timestamp, SE3.identity(), lidar, {CAMERA: camera}, None, {}, {}
    )


# --- calibration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error_deg", [(0.0, 2.0, 0.0), (2.0, 0.0, 0.0), (0.0, -1.5, 1.0)], ids=["yaw", "pitch", "mixed"]
)
def test_a_rotated_extrinsic_is_suspect_with_its_offset(error_deg: tuple[float, float, float]) -> None:
    checks = SensorChecks()
    for index in range(6):
        result = checks.check(scene_frame(index, error_deg))
    verdict = result.calibration[CAMERA]
    assert verdict.status == STATUS_SUSPECT and result.calibration_suspect == [CAMERA]
    assert np.linalg.norm(np.array(verdict.offset_deg) - error_deg) < 0.5
    assert CAMERA not in result.frame.cameras and "calibration suspect" in result.frame.missing[CAMERA]


def test_the_stored_extrinsic_is_not_suspect() -> None:
    checks = SensorChecks()
    for index in range(6):
        result = checks.check(scene_frame(index))
        assert result.calibration[CAMERA].status == STATUS_OK
        assert result.calibration_suspect == [] and CAMERA in result.frame.cameras
    assert np.linalg.norm(result.calibration[CAMERA].offset_deg) < 0.5


def test_black_image_or_too_few_points_is_undetermined_never_suspect() -> None:
    checks = SensorChecks()
    for index in range(5):
        checks.check(scene_frame(index, (0.0, 2.0, 0.0)))
    frame = scene_frame(5, (0.0, 2.0, 0.0))
    black = dataclasses.replace(frame.cameras[CAMERA], image=np.zeros((112, 200, 3), np.uint8))
    result = checks.check(dataclasses.replace(frame, cameras={CAMERA: black}))
    assert result.calibration[CAMERA].status == STATUS_UNDETERMINED and result.calibration_suspect == []
    frame = scene_frame(6, (0.0, 2.0, 0.0))
    sparse = dataclasses.replace(frame.lidar, points=frame.lidar.points[:10], ring=frame.lidar.ring[:10])
    result = checks.check(dataclasses.replace(frame, lidar=sparse))
    assert result.calibration[CAMERA].status == STATUS_UNDETERMINED and result.calibration_suspect == []
    frame = scene_frame(7, (0.0, 2.0, 0.0))
    no_rings = dataclasses.replace(frame.lidar, ring=None)
    assert checks.check(dataclasses.replace(frame, lidar=no_rings)).calibration[CAMERA].status == STATUS_UNDETERMINED
    # Edges the lidar fired long before the exposure (a moving object was elsewhere) do not count.
    frame = scene_frame(8, (0.0, 2.0, 0.0))
    late = dataclasses.replace(frame.cameras[CAMERA], timestamp_us=frame.timestamp_us + 60_000)
    result = checks.check(dataclasses.replace(frame, cameras={CAMERA: late}))
    assert result.calibration[CAMERA].status == STATUS_UNDETERMINED
    # With enough evidence again, the same camera is suspect again.
    assert checks.check(scene_frame(9, (0.0, 2.0, 0.0))).calibration[CAMERA].status == STATUS_SUSPECT


def test_a_new_scene_starts_its_estimate_afresh() -> None:
    checks = SensorChecks()
    for index in range(5):
        checks.check(scene_frame(index, (0.0, 2.0, 0.0), scene="a"))
    result = checks.check(scene_frame(5, scene="b"))
    assert result.calibration[CAMERA].frames == 1 and result.calibration[CAMERA].status == STATUS_OK


# --- frozen sensors ------------------------------------------------------------------------------


def test_frozen_check_names_repeats_and_stalled_timestamps() -> None:
    check = FrozenSensorCheck(history=3)
    a, b, c = (content_digest(np.array([k])) for k in range(3))
    assert check.observe("X", a, 1) is None and check.observe("X", b, 2) is None
    assert "identical to its keyframe 2 before" in check.observe("X", a, 3)
    assert "did not advance" in check.observe("X", c, 3)
    assert check.observe("Y", a, 1) is None  # each sensor has its own history


def test_repeated_camera_is_dropped_and_repeated_lidar_gives_way_to_the_fresh_cloud() -> None:
    first, second, third = scene_frame(0), scene_frame(1), scene_frame(2)
    moved_pose = SE3.from_yaw(0.1, (5.0, 1.0, 0.0))
    first = dataclasses.replace(first, lidar=dataclasses.replace(first.lidar, global_from_ego=SE3.identity()))
    # Keyframe 1 repeats keyframe 0's image and cloud under its own time and a new pose.
    stale_camera = dataclasses.replace(second.cameras[CAMERA], image=first.cameras[CAMERA].image)
    stale_lidar = dataclasses.replace(
        second.lidar, points=first.lidar.points, ring=first.lidar.ring, global_from_ego=moved_pose
    )
    stale = dataclasses.replace(second, lidar=stale_lidar, cameras={CAMERA: stale_camera})
    checks = SensorChecks(calibration=None)
    assert checks.check(first).frozen == {}
    result = checks.check(stale)
    assert set(result.frozen) == {LIDAR_NAME, CAMERA}
    assert CAMERA not in result.frame.cameras and result.frame.missing[CAMERA].startswith("frozen")
    lidar = result.frame.lidar
    expected = (moved_pose.inverse()).apply(first.lidar.points[:, :3])
    np.testing.assert_allclose(lidar.points[:, :3], expected, atol=1e-4)
    np.testing.assert_allclose(lidar.points[:, 4], 0.5, atol=1e-6)  # half a second old now
    assert lidar.timestamp_us == second.timestamp_us
    assert checks.check(third).frozen == {}  # fresh data again


def test_clean_frames_are_never_frozen() -> None:
    checks = SensorChecks(calibration=None)
    for index in range(6):
        assert checks.check(scene_frame(index)).frozen == {}


def test_advance_cloud_moves_through_both_poses() -> None:
    points = np.array([[1.0, 2.0, 3.0, 9.0, 0.1]], np.float32)
    fresh = LidarSweep(points, 0, SE3.identity(), SE3.from_yaw(0.0, (1.0, 0.0, 0.0)))
    now = LidarSweep(np.zeros((0, 5), np.float32), 250_000, SE3.identity(), SE3.from_yaw(0.0, (3.0, 0.0, 0.0)))
    moved = advance_cloud(fresh, now)
    np.testing.assert_allclose(moved.points[0], [-1.0, 2.0, 3.0, 9.0, 0.35], atol=1e-6)
