"""A hand-built `SyncedFrame` for the fusion tests: no log on disk, every sensor present, seeded.

The scene: a ground plane of lidar returns, a few boxes whose surfaces return points, six cameras
with nuScenes-like geometry (looking at 0, -55, -110, 180, 110, 55 degrees of ego yaw), small
random images, a drivable-area raster (a 20 m wide road along the ego x axis) and a GNSS fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraIntrinsics, CameraRig
from avfusion.calibration.geodesy import geodetic_from_map, heading_deg_from_yaw
from avfusion.calibration.se3 import SE3
from avfusion.fusion.batch import camera_input
from avfusion.fusion.config import CAMERA_NAMES, FusionConfig, configure
from avfusion.sensors.map_raster import MapRaster
from avfusion.sensors.types import CameraFrame, GnssFix, LidarSweep, SyncedFrame
from avfusion.tools.bench.realdata import real_keyframe

LOCATION = "singapore-onenorth"
CAMERA_YAW_DEG = {
    "CAM_FRONT": 0,
    "CAM_FRONT_RIGHT": -55,
    "CAM_BACK_RIGHT": -110,
    "CAM_BACK": 180,
    "CAM_BACK_LEFT": 110,
    "CAM_FRONT_LEFT": 55,
}
# LIDAR_TOP: x right, y forward, z up, 1.8 m above the ego origin.
EGO_FROM_LIDAR = SE3.from_yaw(np.pi / 2, np.array([0.9, 0.0, 1.8]))


def ego_from_camera(yaw_deg: float) -> SE3:
    """A camera 1.5 m up looking along ego yaw `yaw_deg` (camera x right, y down, z forward)."""
    yaw = np.deg2rad(yaw_deg)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = np.stack([right, down, forward], axis=1)
    matrix[:3, 3] = [1.0, 0.0, 1.5]
    return SE3.from_matrix(matrix)


def make_frame(seed: int = 0, *, num_boxes: int = 6, image_hw: tuple[int, int] = (90, 160)) -> SyncedFrame:
    rng = np.random.default_rng(seed)
    timestamp_us = 1_600_000_000_000_000 + seed * 500_000
    global_from_ego = SE3.from_yaw(0.3, np.array([100.0, 100.0, 0.0]))
    labels = np.arange(num_boxes) % 10
    center = np.column_stack(
        [rng.uniform(-20, 20, num_boxes), rng.uniform(-20, 20, num_boxes), np.full(num_boxes, 0.8)]
    )
    size = np.column_stack(
        [rng.uniform(0.6, 2.5, num_boxes), rng.uniform(0.6, 5.0, num_boxes), np.full(num_boxes, 1.6)]
    )
    attribute = np.where(labels < 5, 5, np.where(labels == 5, 2, np.where(labels < 8, 0, -1)))
    boxes = Boxes3D(
        center=center,
        size_wlh=size,
        yaw_rad=rng.uniform(-np.pi, np.pi, num_boxes),
        velocity_xy=rng.normal(0, 2, (num_boxes, 2)),
        label=labels,
        attribute=attribute,
        num_lidar_pts=np.full(num_boxes, 50),
    )
    ground = np.column_stack([rng.uniform(-50, 50, 4000), rng.uniform(-50, 50, 4000), np.zeros(4000)])
    on_boxes = []
    for corners in boxes.corners():
        weights = rng.dirichlet(np.ones(8), 60)
        on_boxes.append(weights @ corners)
    points_ego = np.concatenate([ground, *on_boxes])
    lidar_points = EGO_FROM_LIDAR.inverse().apply(points_ego)
    intensity = rng.uniform(0, 255, len(points_ego))
    time_lag = rng.choice([0.0, 0.05, 0.1], len(points_ego))
    lidar = LidarSweep(
        points=np.column_stack([lidar_points, intensity, time_lag]).astype(np.float32),
        timestamp_us=timestamp_us,
        ego_from_lidar=EGO_FROM_LIDAR,
        global_from_ego=global_from_ego,
    )
    height, width = image_hw
    focal = 1260.0 * width / 1600.0
    cameras = {}
    for name in CAMERA_NAMES:
        intrinsics = CameraIntrinsics(
            np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]]), width, height
        )
        cameras[name] = CameraFrame(
            name=name,
            image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            intrinsics=intrinsics,
            ego_from_camera=ego_from_camera(CAMERA_YAW_DEG[name]),
            global_from_ego=global_from_ego,
            timestamp_us=timestamp_us,
        )
    drivable = np.zeros((400, 400), dtype=np.uint8)  # 0.5 m pixels: 200 m x 200 m
    drivable[180:220, :] = 255  # rows 180..220 from the north edge: map y in [90, 110) m
    lla = geodetic_from_map(LOCATION, global_from_ego.translation[None, :])[0]
    gnss = GnssFix(timestamp_us, lla[0], lla[1], lla[2], float(heading_deg_from_yaw(global_from_ego.yaw_rad)), 5.0)
    return SyncedFrame(
        sample_token=f"sample-{seed}",
        scene_name="scene-test",
        location=LOCATION,
        timestamp_us=timestamp_us,
        global_from_ego=global_from_ego,
        lidar=lidar,
        cameras=cameras,
        gnss=gnss,
        skew_us=dict.fromkeys(CAMERA_NAMES, 0),
        missing={},
        gt_boxes=boxes,
        map=MapRaster(LOCATION, drivable, resolution_m=0.5),
    )


@pytest.fixture
def frame_factory() -> Callable[..., SyncedFrame]:
    return make_frame


class PaintedKeyframe(NamedTuple):
    """The real keyframe as painting sees it (tiny early-fusion config): the present cameras'
    names, `camera_input` results and network-input images, their rig, and the lidar points
    (ego frame)."""

    config: FusionConfig
    names: list[str]
    inputs: list[tuple]
    images: np.ndarray
    rig: CameraRig
    points_ego: np.ndarray

    def front_camera_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Worked independently of the rig: (u, v, inside) of every point in CAM_FRONT's network
        input, `pixel = image_aug @ K @ camera_from_ego @ point`, inside the image and in front."""
        k = self.names.index("CAM_FRONT")
        camera_from_ego = np.linalg.inv(self.inputs[k][2])
        points = np.c_[self.points_ego, np.ones(len(self.points_ego))].T
        homogeneous = (self.inputs[k][3] @ self.inputs[k][1] @ camera_from_ego[:3]) @ points
        depth = homogeneous[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = homogeneous[0] / depth, homogeneous[1] / depth
        height, width = self.config.camera.input_hw
        inside = (depth > 0.1) & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
        return u, v, inside


@pytest.fixture
def painted_keyframe(realdata_root) -> PaintedKeyframe:
    frame = real_keyframe(realdata_root.parents[1])
    config = configure("tiny", fusion="early")
    names = [name for name in CAMERA_NAMES if name in frame.cameras]
    inputs = [camera_input(frame, name, config, 1.0) for name in names]
    rig = frame.camera_rig(tuple(names))
    rig = dataclasses.replace(rig, image_aug=np.stack([i[3] for i in inputs]), image_size_hw=config.camera.input_hw)
    images = np.stack([i[0] for i in inputs])
    return PaintedKeyframe(config, names, inputs, images, rig, frame.lidar.points_ego[:, :3].astype(np.float64))
