"""Training-time augmentation and modality dropout.

`SampleAugmentation` is one sample's draw: a global BEV transform (rotation about z, isotropic scale,
optional y-flip) that `collate` applies alike to the lidar points, the ground-truth boxes, the map
patch and (through `bev_from_ego`, after lifting) the camera frustums; a per-camera image zoom
folded into each camera's `image_aug`; the sensors to drop; and the map's noise (`MapNoise`:
misregistration, holes, a blank or wrong map), so that a model trained with a map does not trust it
blindly. `draw_augmentation` samples one from `AugmentConfig` with a numpy Generator, so a seeded
run is reproducible.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import SE3
from avfusion.fusion.config import CAMERA_NAMES, AugmentConfig
from avfusion.sensors.corruptions import (
    Corruption,
    beams_kept,
    brightness_image,
    corrupt_frame,
    darkness_image,
    stale_camera,
    stale_lidar,
)
from avfusion.sensors.types import SyncedFrame


@dataclass(frozen=True, slots=True)
class MapNoise:
    """What is wrong with one sample's map (the default: nothing).

    Attributes:
        shift_xy_m, rotation_rad: the raster is cropped around the ego pose moved by this offset
            in the ego frame (x forward, y left; rotation about z): a misregistered map, or with
            tens of metres and any heading, the map of another place.
        holes: `(row, column, rows, columns)` rectangles as fractions of the BEV grid's side,
            blanked after the crop (missing patches).
        blank: the whole patch is 0 (a map without a drivable pixel, still flagged present).
    """

    shift_xy_m: tuple[float, float] = (0.0, 0.0)
    rotation_rad: float = 0.0
    holes: tuple[tuple[float, float, float, float], ...] = ()
    blank: bool = False

    @property
    def ego_from_noisy_ego(self) -> SE3:
        """The pose offset the raster is cropped around (identity without misregistration)."""
        return SE3.from_yaw(self.rotation_rad, (self.shift_xy_m[0], self.shift_xy_m[1], 0.0))

    def apply(self, patch: np.ndarray) -> np.ndarray:
        """`patch` `(H, W)` with the holes and blanking applied (a new array; the input is kept)."""
        if self.blank:
            return np.zeros_like(patch)
        if not self.holes:
            return patch
        result = patch.copy()
        height, width = patch.shape
        for row, column, rows, columns in self.holes:
            r0, c0 = int(row * height), int(column * width)
            result[r0 : r0 + max(1, int(rows * height)), c0 : c0 + max(1, int(columns * width))] = 0.0
        return result


def draw_map_noise(rng: np.random.Generator, config: AugmentConfig) -> MapNoise:
    """One sample's map noise (see `AugmentConfig`'s map fields); draws from `rng` only what is enabled."""
    shift, rotation, blank = (0.0, 0.0), 0.0, False
    holes: tuple[tuple[float, float, float, float], ...] = ()
    if rng.random() < config.map_wrong_probability:
        distance = rng.uniform(*config.map_wrong_offset_m)
        angle = rng.uniform(-np.pi, np.pi)
        shift, rotation = (
            (float(distance * np.cos(angle)), float(distance * np.sin(angle))),
            float(rng.uniform(-np.pi, np.pi)),
        )
    elif rng.random() < config.map_shift_probability:
        shift = (float(rng.uniform(-1, 1) * config.map_shift_max_m), float(rng.uniform(-1, 1) * config.map_shift_max_m))
        rotation = float(rng.uniform(-1, 1) * config.map_rotation_max_rad)
    if rng.random() < config.map_holes_probability:
        count = int(rng.integers(1, config.map_holes_max + 1))
        sizes = rng.uniform(0.05, config.map_hole_max_fraction, (count, 2))
        corners = rng.uniform(0.0, 1.0, (count, 2)) * (1.0 - sizes)
        holes = tuple((float(r), float(c), float(h), float(w)) for (r, c), (h, w) in zip(corners, sizes, strict=True))
    blank = bool(rng.random() < config.map_blank_probability)
    return MapNoise(shift, rotation, holes, blank)


@dataclass(frozen=True, slots=True)
class SampleAugmentation:
    """One sample's augmentation: BEV transform parameters and per-camera image scale, plus dropout.

    `bev_from_ego` = flip @ scale @ rotation (rotation `rotation_rad` about z, isotropic `scale`,
    then y -> -y when `flip_y`). `image_scale` resizes each network-input image beyond the fixed
    input size and crops its centre back to it (>= 1 zooms in). `drop` names sensors to remove.
    `map_noise` is what is wrong with the map patch (`MapNoise`, applied by `batch.map_patch`).
    """

    rotation_rad: float = 0.0
    scale: float = 1.0
    flip_y: bool = False
    image_scale: float = 1.0
    drop: frozenset[str] = frozenset()
    map_noise: MapNoise = MapNoise()

    @property
    def bev_from_ego(self) -> np.ndarray:
        """`(4, 4)` float64."""
        c, s = np.cos(self.rotation_rad), np.sin(self.rotation_rad)
        matrix = np.eye(4)
        matrix[:2, :2] = self.scale * np.array([[c, -s], [s, c]])
        matrix[2, 2] = self.scale
        if self.flip_y:
            matrix[1, :] *= -1.0
        return matrix

    def transform_boxes(self, boxes: Boxes3D) -> Boxes3D:
        """Boxes of the ego frame -> the BEV frame: rotate, scale (centre and size), then flip."""
        rotated = boxes.transform(SE3.from_yaw(self.rotation_rad, np.zeros(3)))
        if self.scale == 1.0 and not self.flip_y:
            return rotated
        center = rotated.center * self.scale
        size = rotated.size_wlh * self.scale
        velocity = rotated.velocity_xy * self.scale
        yaw = rotated.yaw_rad
        if self.flip_y:
            center = center * np.array([1.0, -1.0, 1.0])
            velocity = velocity * np.array([1.0, -1.0])
            yaw = -yaw
        return boxes_with_geometry(rotated, center, size, yaw, velocity)


def boxes_with_geometry(
    boxes: Boxes3D, center: np.ndarray, size_wlh: np.ndarray, yaw_rad: np.ndarray, velocity_xy: np.ndarray
) -> Boxes3D:
    """`boxes` with new geometry, everything else (labels, scores, attributes, tokens) kept."""
    return Boxes3D(
        center=center,
        size_wlh=size_wlh,
        yaw_rad=yaw_rad,
        velocity_xy=velocity_xy,
        label=boxes.label,
        score=boxes.score,
        attribute=boxes.attribute,
        num_lidar_pts=boxes.num_lidar_pts,
        instance_token=boxes.instance_token,
        token=boxes.token,
    )


def lidar_free_copy(augmentation: SampleAugmentation) -> SampleAugmentation:
    """The same augmentation with lidar dropped and the cameras kept: the twin a sample gets for the
    lidar-free trunk (`TrainConfig.lidar_free_trunk`); single-camera and map dropout stay as drawn."""
    return dataclasses.replace(augmentation, drop=frozenset((augmentation.drop - {"camera"}) | {"lidar"}))


def camera_free_copy(augmentation: SampleAugmentation) -> SampleAugmentation:
    """The same augmentation with every camera dropped and lidar kept: the twin a sample gets for
    the camera-free trunk (`TrainConfig.camera_free_trunk`); map dropout stays as drawn."""
    kept = augmentation.drop - {"lidar"} - set(CAMERA_NAMES)
    return dataclasses.replace(augmentation, drop=frozenset(kept | {"camera"}))


def draw_augmentation(
    rng: np.random.Generator,
    config: AugmentConfig,
    *,
    has_map: bool = True,
    has_lidar_branch: bool = True,
    has_camera_branch: bool = True,
) -> SampleAugmentation:
    """One random augmentation. At most one of lidar / all cameras is dropped, so a sample always
    keeps a primary sensor; one camera alone may be dropped besides.

    A primary sensor is dropped only from a model that has both primary branches: a lidar-only or
    camera-only model would otherwise train on samples without any primary sensor. The random
    draws are the same either way, so a fused run's augmentations do not depend on this rule.
    """
    drop: set[str] = set()
    roll = rng.random()
    lidar_drawn = roll < config.drop_lidar_probability
    cameras_drawn = not lidar_drawn and roll < config.drop_lidar_probability + config.drop_cameras_probability
    if has_lidar_branch and has_camera_branch:
        if lidar_drawn:
            drop.add("lidar")
        elif cameras_drawn:
            drop.add("camera")
    if not cameras_drawn and rng.random() < config.drop_one_camera_probability:
        drop.add(CAMERA_NAMES[int(rng.integers(len(CAMERA_NAMES)))])
    if has_map and rng.random() < config.drop_map_probability:
        drop.add("map")
    # Drawn in this order: rotation, scale, flip, image scale.
    rotation_rad = float(rng.uniform(-config.rotation_max_rad, config.rotation_max_rad))
    scale = float(rng.uniform(*config.scale_range))
    flip_y = bool(rng.random() < config.flip_probability)
    image_scale = float(1.0 + rng.uniform(0.0, config.image_scale_jitter))
    # Drawn last and only when enabled, so that runs without map noise draw exactly as before.
    map_noise = draw_map_noise(rng, config) if has_map and config.map_noise_enabled else MapNoise()
    return SampleAugmentation(
        rotation_rad=rotation_rad,
        scale=scale,
        flip_y=flip_y,
        image_scale=image_scale,
        drop=frozenset(drop),
        map_noise=map_noise,
    )


def randomize_image_domain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`(H, W, 3)` uint8 RGB -> the same scene as another camera and renderer might show it: a
    random white balance (per-channel gain 0.8-1.2), exposure (gain 0.6-1.5) and gamma (0.7-1.4);
    a multiplicative low-frequency texture (+-15%); Gaussian blur (sigma up to 1.2 px, half the
    time); sensor noise (sigma up to 0.03 of full scale); vignetting (up to 40% darker corners).
    Shape and dtype are kept."""
    height, width = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    x = x * rng.uniform(0.8, 1.2, 3).astype(np.float32) * np.float32(rng.uniform(0.6, 1.5))
    x = np.clip(x, 0.0, 1.0) ** np.float32(rng.uniform(0.7, 1.4))
    texture = cv2.resize(
        rng.uniform(-1.0, 1.0, (8, 8)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    x = x * (1.0 + np.float32(rng.uniform(0.0, 0.15)) * texture)[..., None]
    if rng.random() < 0.5:
        x = np.asarray(cv2.GaussianBlur(x, (0, 0), sigmaX=float(rng.uniform(0.3, 1.2))), dtype=np.float32)
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.03), x.shape).astype(np.float32)
    rows = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / (height / 2)
    cols = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / (width / 2)
    radius2 = (rows[:, None] ** 2 + cols[None, :] ** 2) / 2.0  # 0 at the centre, 1 in the corners
    x = x * (1.0 - np.float32(rng.uniform(0.0, 0.4)) * radius2)[..., None]
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def corrupt_for_training(
    frame: SyncedFrame, previous: SyncedFrame | None, config: AugmentConfig, rng: np.random.Generator
) -> SyncedFrame:
    """One sample's corruption augmentation (see the `AugmentConfig` fields): the frame as a
    degraded sensor set would deliver it. `previous` is the scene's previous keyframe (stale
    data), or None. The input frame is not modified; with every probability 0 it is returned."""
    if not config.corrupts:
        return frame
    if rng.random() < config.weather_probability:
        weather = Corruption(str(rng.choice(("fog", "snow"))), int(rng.integers(1, 4)))
        frame = corrupt_frame(frame, weather, int(rng.integers(2**31)), previous)
    # SyncedFrame field -> its new value (the fields differ in type; dataclasses.replace checks the names).
    changes: dict[str, Any] = {}
    lidar = frame.lidar
    if lidar is not None:
        if previous is not None and previous.lidar is not None and rng.random() < config.stale_lidar_probability:
            lidar = stale_lidar(lidar, previous.lidar)
        keep = np.ones(len(lidar), dtype=bool)
        if lidar.ring is not None and rng.random() < config.beam_drop_probability:
            keep &= beams_kept(lidar.ring, int(rng.choice((1, 2))))  # every 2nd or 4th ring
        if rng.random() < config.point_drop_probability:
            keep &= rng.random(len(lidar)) >= rng.uniform(0.0, config.point_drop_max_fraction)
        points = lidar.points[keep]
        if config.point_jitter_sigma_m > 0:
            points = points.copy()
            points[:, :3] += rng.normal(0.0, config.point_jitter_sigma_m, (len(points), 3)).astype(np.float32)
        if lidar is not frame.lidar or not keep.all() or config.point_jitter_sigma_m > 0:
            ring = lidar.ring[keep] if lidar.ring is not None else None
            changes["lidar"] = dataclasses.replace(lidar, points=np.ascontiguousarray(points), ring=ring)
    cameras = dict(frame.cameras)
    for name, camera in frame.cameras.items():
        old = previous.cameras.get(name) if previous is not None else None
        if old is not None and old.image.shape == camera.image.shape and rng.random() < config.stale_camera_probability:
            camera = stale_camera(camera, old)
        if rng.random() < config.photometric_probability:
            severity = int(rng.integers(1, 4))
            image = (
                brightness_image(camera.image, severity)
                if rng.random() < 0.5
                else darkness_image(camera.image, severity, rng)
            )
            camera = dataclasses.replace(camera, image=image)
        if rng.random() < config.image_domain_probability:
            camera = dataclasses.replace(camera, image=randomize_image_domain(camera.image, rng))
        if config.extrinsic_sigma_deg > 0:
            rotation = Rotation.from_rotvec(np.deg2rad(rng.normal(0.0, config.extrinsic_sigma_deg, 3))).as_matrix()
            camera = dataclasses.replace(camera, ego_from_camera=camera.ego_from_camera @ SE3(rotation, np.zeros(3)))
        cameras[name] = camera
    changes["cameras"] = cameras
    return dataclasses.replace(frame, **changes)
