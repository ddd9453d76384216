"""The synthetic vehicle's sensors: a 32-beam spinning lidar and six cameras, mounted as on nuScenes' cars.

Values are nuScenes-like (rounded, our own), not copied calibration: LIDAR_TOP on the roof rack at
(0.94, 0, 1.84) m in the ego frame, rotated -90 deg about z (its x points right, y forward); cameras
level, looking out at yaws 0, +-55, +-110 and 180 deg, at 1600 x 900 px with f ~ 1260 px (CAM_BACK,
wider, f ~ 810 px).

Timing (as measured on nuScenes logs): a sweep is one clockwise revolution (seen from above) of
`SWEEP_DURATION_US` ending at the lidar timestamp, starting and ending with the beam pointing
`SWEEP_START_YAW_DEG` (back-left); a camera fires when the beam crosses the middle of its field of
view, so CAM_FRONT fires about 35 ms before the lidar timestamp and CAM_BACK_LEFT just before it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3

LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_BEAMS = 32
LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, LIDAR_BEAMS)  # ring 0 points lowest
LIDAR_FIRINGS_PER_SWEEP = 1084  # azimuth steps of one revolution: 32 x 1084 = 34,688 returns a sweep
SWEEP_DURATION_US = 50_000  # 20 Hz
SWEEP_START_YAW_DEG = 108.0  # ego-frame yaw of the beam at the start (and end) of a sweep
LIDAR_MAX_RANGE_M = 100.0
LIDAR_RANGE_NOISE_M = 0.02

IMAGE_WIDTH = 1600
IMAGE_HEIGHT = 900

EGO_FROM_LIDAR = SE3.from_yaw(-0.5 * np.pi, (0.94, 0.0, 1.84))


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One camera: channel name, yaw of its optical axis in the ego frame, mounting and intrinsics."""

    channel: str
    yaw_deg: float
    translation_ego: tuple[float, float, float]
    focal_px: float
    principal_px: tuple[float, float]

    def ego_from_camera(self) -> SE3:
        """Camera frame (x right, y down, z forward) -> ego frame (x forward, y left, z up)."""
        yaw = np.radians(self.yaw_deg)
        forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        return SE3(np.stack([right, down, forward], axis=1), np.asarray(self.translation_ego, dtype=np.float64))

    def intrinsics(self, scale: float = 1.0) -> CameraIntrinsics:
        """Intrinsics of the 1600 x 900 image resized by `scale` (`CameraIntrinsics.resized`: the
        image's outer edges stay fixed, as with `cv2.resize`)."""
        matrix = np.array(
            [[self.focal_px, 0.0, self.principal_px[0]], [0.0, self.focal_px, self.principal_px[1]], [0.0, 0.0, 1.0]]
        )
        full = CameraIntrinsics(matrix, IMAGE_WIDTH, IMAGE_HEIGHT)
        if scale == 1.0:
            return full
        return full.resized(max(1, round(IMAGE_WIDTH * scale)), max(1, round(IMAGE_HEIGHT * scale)))


CAMERAS: tuple[CameraSpec, ...] = (
    CameraSpec("CAM_FRONT", 0.0, (1.70, 0.02, 1.51), 1266.0, (816.0, 491.0)),
    CameraSpec("CAM_FRONT_RIGHT", -55.0, (1.55, -0.49, 1.50), 1261.0, (808.0, 495.0)),
    CameraSpec("CAM_FRONT_LEFT", 55.0, (1.52, 0.49, 1.51), 1272.0, (826.0, 480.0)),
    CameraSpec("CAM_BACK", 180.0, (0.03, 0.00, 1.58), 809.0, (829.0, 482.0)),
    CameraSpec("CAM_BACK_LEFT", 110.0, (1.04, 0.48, 1.59), 1257.0, (792.0, 493.0)),
    CameraSpec("CAM_BACK_RIGHT", -110.0, (1.02, -0.48, 1.56), 1260.0, (807.0, 501.0)),
)
CAMERA_CHANNELS: tuple[str, ...] = tuple(camera.channel for camera in CAMERAS)


def camera_offset_us(camera: CameraSpec) -> int:
    """When the camera fires relative to the lidar timestamp (us, <= 0): when the clockwise beam
    reaches the camera's yaw during the sweep that ends at the lidar timestamp."""
    swept_deg = np.mod(SWEEP_START_YAW_DEG - camera.yaw_deg, 360.0)
    return round(-SWEEP_DURATION_US + swept_deg / 360.0 * SWEEP_DURATION_US)


def firing_offsets_us() -> np.ndarray:
    """`(F,)` float64 firing times of one sweep relative to its timestamp (us, in (-50000, 0])."""
    step = SWEEP_DURATION_US / LIDAR_FIRINGS_PER_SWEEP
    return -SWEEP_DURATION_US + step * (np.arange(LIDAR_FIRINGS_PER_SWEEP) + 1.0)


@functools.lru_cache(maxsize=1)
def firing_directions_ego() -> np.ndarray:
    """`(F, B, 3)` unit beam directions in the ego frame (x forward, y left, z up), firing-major
    (read-only: computed once)."""
    step = 360.0 / LIDAR_FIRINGS_PER_SWEEP
    yaw = np.radians(SWEEP_START_YAW_DEG - step * (np.arange(LIDAR_FIRINGS_PER_SWEEP) + 1.0))  # clockwise
    elevation = np.radians(LIDAR_ELEVATIONS_DEG)
    cos_e = np.cos(elevation)[None, :]
    directions = np.stack(
        [
            np.cos(yaw)[:, None] * cos_e,
            np.sin(yaw)[:, None] * cos_e,
            np.broadcast_to(np.sin(elevation), (yaw.size, elevation.size)),
        ],
        axis=-1,
    )
    directions.flags.writeable = False
    return directions
