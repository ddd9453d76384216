"""Typed sensor data: one lidar cloud, one camera image, one GNSS fix, one synchronized frame.

Frames and units follow DESIGN.md section 3: LIDAR_TOP x right / y forward / z up; ego x forward /
y left / z up; camera x right / y down / z forward; global = the location's map frame. Timestamps
are integer microseconds. Arrays are validated, not copied (clouds and images are large); treat
them as read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraIntrinsics, CameraRig
from avfusion.calibration.se3 import SE3
from avfusion.sensors.map_raster import MapRaster

LIDAR_NAME = "LIDAR_TOP"
# The six nuScenes cameras in the order every multi-camera array uses.
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
GNSS_NAME = "GNSS"
MAP_NAME = "MAP"
# Lidar point columns.
LIDAR_COLUMNS: tuple[str, ...] = ("x", "y", "z", "intensity", "time_lag_s")


@dataclass(frozen=True, slots=True, eq=False)
class LidarSweep:
    """A lidar cloud, possibly accumulated over several sweeps.

    Attributes:
        points: `(N, 5)` float32 columns x, y, z (metres, LIDAR_TOP frame of the keyframe),
            intensity, time_lag_s (keyframe time minus the point's sweep time, >= 0; 0 for the keyframe).
        timestamp_us: the keyframe sweep's timestamp.
        ego_from_lidar: LIDAR_TOP -> ego calibration.
        global_from_ego: ego pose at `timestamp_us`.
        token: the keyframe's sample_data token ("" when not from a log).
        num_sweeps: how many sweeps were accumulated (1 = keyframe only).
        ring: `(N,)` int16 laser (ring) index of each point, as column 5 of `.pcd.bin` gives it,
            or None when unknown (beam-level corruptions and the scan-line depth edges of the
            calibration check need it).
    """

    points: np.ndarray
    timestamp_us: int
    ego_from_lidar: SE3
    global_from_ego: SE3
    token: str = ""
    num_sweeps: int = 1
    ring: np.ndarray | None = None

    def __post_init__(self) -> None:
        points = self.points
        if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] != 5:
            raise ValueError(f"LidarSweep.points must have shape (N, 5), got {getattr(points, 'shape', None)}")
        if points.dtype != np.float32:
            raise ValueError(f"LidarSweep.points must be float32, got {points.dtype}")
        if not isinstance(self.ego_from_lidar, SE3) or not isinstance(self.global_from_ego, SE3):
            raise ValueError("LidarSweep.ego_from_lidar and global_from_ego must be SE3")
        if self.ring is not None and (
            not isinstance(self.ring, np.ndarray)
            or self.ring.shape != (points.shape[0],)
            or self.ring.dtype != np.int16
        ):
            raise ValueError(
                f"LidarSweep.ring must be int16 of shape ({points.shape[0]},), got "
                f"{getattr(self.ring, 'dtype', None)} {getattr(self.ring, 'shape', None)}"
            )
        object.__setattr__(self, "timestamp_us", int(self.timestamp_us))

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def points_ego(self) -> np.ndarray:
        """`(N, 3)` float64 point positions in the ego frame at `timestamp_us`."""
        return self.ego_from_lidar.apply(self.points[:, :3])


@dataclass(frozen=True, slots=True, eq=False)
class CameraFrame:
    """One camera image with its calibration.

    Attributes:
        name: channel, e.g. "CAM_FRONT".
        image: `(H, W, 3)` uint8 RGB.
        intrinsics: of this image (after any resize at decode time); size equals the image's.
        ego_from_camera: camera -> ego calibration.
        global_from_ego: ego pose at this camera's own `timestamp_us`.
        timestamp_us: exposure time.
        token: sample_data token ("" when not from a log).
    """

    name: str
    image: np.ndarray
    intrinsics: CameraIntrinsics
    ego_from_camera: SE3
    global_from_ego: SE3
    timestamp_us: int
    token: str = ""

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"CameraFrame.image must have shape (H, W, 3), got {getattr(image, 'shape', None)}")
        if image.dtype != np.uint8:
            raise ValueError(f"CameraFrame.image must be uint8, got {image.dtype}")
        if (self.intrinsics.height, self.intrinsics.width) != image.shape[:2]:
            raise ValueError(
                f"CameraFrame {self.name}: intrinsics are for {self.intrinsics.width}x{self.intrinsics.height}, "
                f"image is {image.shape[1]}x{image.shape[0]}"
            )
        object.__setattr__(self, "timestamp_us", int(self.timestamp_us))

    @property
    def global_from_camera(self) -> SE3:
        return self.global_from_ego @ self.ego_from_camera


@dataclass(frozen=True, slots=True)
class GnssFix:
    """One GNSS fix. Heading: degrees clockwise from north in [0, 360). Speed: m/s over ground."""

    timestamp_us: int
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    heading_deg: float
    speed_m_s: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "timestamp_us", int(self.timestamp_us))
        for name in ("latitude_deg", "longitude_deg", "altitude_m", "heading_deg", "speed_m_s"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise ValueError(f"GnssFix.{name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if not -90.0 <= self.latitude_deg <= 90.0 or not -180.0 <= self.longitude_deg <= 180.0:
            raise ValueError(f"GnssFix latitude/longitude out of range: {self.latitude_deg}, {self.longitude_deg}")


def _frozen_mapping(value: Mapping) -> Mapping:
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True, eq=False)
class SyncedFrame:
    """Every sensor of one keyframe, matched to the lidar timestamp.

    Attributes:
        sample_token, scene_name, location: identify the keyframe and its map.
        timestamp_us: the lidar keyframe's timestamp; the frame's reference time.
        global_from_ego: ego pose at `timestamp_us`; "the ego frame" of this frame means this one.
        lidar: the (accumulated) cloud, or None when missing.
        cameras: the cameras present, by channel name (a missing one is absent here and listed in `missing`).
        gnss: the GNSS fix matched to `timestamp_us`, or None.
        skew_us: sensor name -> (sensor timestamp - lidar timestamp) for every matched sensor.
        missing: sensor name -> why it is absent, its kind before the first colon (file missing /
            unreadable (<what>) / bad ego pose / skew too large / dropout / not in log).
        gt_boxes: ground truth in the ego frame at `timestamp_us`, or None for logs without annotations.
        map: the location's drivable-area raster, shared between frames, or None.
    """

    sample_token: str
    scene_name: str
    location: str
    timestamp_us: int
    global_from_ego: SE3
    lidar: LidarSweep | None
    cameras: Mapping[str, CameraFrame]
    gnss: GnssFix | None
    skew_us: Mapping[str, int]
    missing: Mapping[str, str]
    gt_boxes: Boxes3D | None = None
    map: MapRaster | None = None
    scene_token: str = field(default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "timestamp_us", int(self.timestamp_us))
        for name, value in self.cameras.items():
            if not isinstance(value, CameraFrame) or value.name != name:
                raise ValueError(f"SyncedFrame.cameras[{name!r}] must be a CameraFrame named {name!r}")
        object.__setattr__(self, "cameras", _frozen_mapping(self.cameras))
        object.__setattr__(self, "skew_us", _frozen_mapping({k: int(v) for k, v in self.skew_us.items()}))
        object.__setattr__(self, "missing", _frozen_mapping(self.missing))

    def ego_from_camera_at_lidar_time(self, name: str) -> SE3:
        """Camera `name` -> the ego frame at the lidar time, including the ego motion between the two
        timestamps (`ego_lidar_from_global @ global_from_ego_camera @ ego_from_camera`)."""
        camera = self.cameras[name]
        return self.global_from_ego.inverse() @ camera.global_from_ego @ camera.ego_from_camera

    def camera_rig(self, names: tuple[str, ...] | None = None) -> CameraRig:
        """The present cameras (in `CAMERA_NAMES` order, or `names`) as a `CameraRig` whose ego frame
        is the one at the lidar timestamp (ego motion to each camera's exposure included)."""
        chosen = [n for n in (names if names is not None else CAMERA_NAMES) if n in self.cameras]
        return CameraRig.from_cameras(
            chosen,
            [self.cameras[n].intrinsics for n in chosen],
            [self.ego_from_camera_at_lidar_time(n) for n in chosen],
        )
