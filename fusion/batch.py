"""`FusionBatch`: what the network consumes, built from `SyncedFrame`s by `collate`.

Frames. Every BEV quantity is in the *BEV frame* of its sample: the ego frame at the lidar timestamp
(x forward, y left, z up, metres) followed by the training augmentation `bev_from_ego` (a global
rotation about z, an isotropic scale and an optional y-flip; the identity at inference). Points,
boxes and the map patch are already in the BEV frame; cameras keep their genuine rig and the model
applies `bev_from_ego` after lifting, so the images never need to be flipped.

Camera slot k of every `(B, K, ...)` tensor is `CAMERA_NAMES[k]`; a camera that is missing (or
dropped) has `modality.camera[b, k] == False`, a zero image and an identity calibration.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraRig
from avfusion.calibration.geodesy import map_from_geodetic, yaw_from_heading_deg
from avfusion.calibration.se3 import SE3
from avfusion.fusion.augment import SampleAugmentation
from avfusion.fusion.config import CAMERA_NAMES, PAINT_CHANNELS, PAINT_LOOKUP_CHANNELS, FusionConfig
from avfusion.fusion.ops.voxelize import Backend, VoxelConfig, voxelize
from avfusion.fusion.paint import paint_points, point_labels
from avfusion.fusion.targets import HeadTargets, build_head_targets
from avfusion.sensors.types import SyncedFrame

# Per-channel RGB normalisation of camera images (ImageNet statistics, values in [0, 1]).
_IMAGE_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGE_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# The sensor names `drop` accepts besides the six camera names.
DROPPABLE = frozenset({"lidar", "camera", "map", "gnss", *CAMERA_NAMES})


@dataclass(frozen=True, slots=True, eq=False)
class ModalityMask:
    """Which inputs each sample has: `lidar` `(B,)`, `camera` `(B, K)`, `map` `(B,)`, all bool."""

    lidar: torch.Tensor
    camera: torch.Tensor
    map: torch.Tensor

    def __post_init__(self) -> None:
        batch = self.lidar.shape[0]
        if self.lidar.shape != (batch,) or self.lidar.dtype != torch.bool:
            raise ValueError(f"ModalityMask.lidar must be (B,) bool, got {self.lidar.dtype} {tuple(self.lidar.shape)}")
        if self.camera.shape != (batch, len(CAMERA_NAMES)) or self.camera.dtype != torch.bool:
            raise ValueError(
                f"ModalityMask.camera must be ({batch}, {len(CAMERA_NAMES)}) bool, "
                f"got {self.camera.dtype} {tuple(self.camera.shape)}"
            )
        if self.map.shape != (batch,) or self.map.dtype != torch.bool:
            raise ValueError(f"ModalityMask.map must be (B,) bool, got {self.map.dtype} {tuple(self.map.shape)}")

    def to(self, device: torch.device | str) -> ModalityMask:
        return ModalityMask(self.lidar.to(device), self.camera.to(device), self.map.to(device))


@dataclass(frozen=True, slots=True, eq=False)
class BatchedRig:
    """The cameras' independent calibration, batched: the tensor twin of `calibration.CameraRig`.

    Attributes:
        intrinsics: `(B, K, 3, 3)` K of the images as read (before `image_aug`).
        ego_from_camera: `(B, K, 4, 4)` camera -> ego at the lidar timestamp.
        image_aug: `(B, K, 3, 3)` read pixels -> network-input pixels (resize / crop).
    """

    intrinsics: torch.Tensor
    ego_from_camera: torch.Tensor
    image_aug: torch.Tensor

    def __post_init__(self) -> None:
        batch, cameras = self.intrinsics.shape[:2]
        for name, tail in (("intrinsics", (3, 3)), ("ego_from_camera", (4, 4)), ("image_aug", (3, 3))):
            value = getattr(self, name)
            if tuple(value.shape) != (batch, cameras, *tail):
                raise ValueError(f"BatchedRig.{name} must be ({batch}, {cameras}, {tail}), got {tuple(value.shape)}")

    @property
    def camera_from_image(self) -> torch.Tensor:
        """`(B, K, 3, 3)` network-input pixel (homogeneous, scaled by depth) -> camera frame point."""
        return torch.linalg.inv(self.image_aug @ self.intrinsics)

    def to(self, device: torch.device | str) -> BatchedRig:
        return BatchedRig(self.intrinsics.to(device), self.ego_from_camera.to(device), self.image_aug.to(device))


@dataclass(frozen=True, slots=True, eq=False)
class FusionBatch:
    """Network input for B samples (see the module docstring for frames).

    Attributes:
        sample_tokens: `(B,)` sample tokens.
        pillar_features: `(V, P, 5)` float32 per pillar up to P points: x, y, z (BEV frame, m),
            intensity, time lag (s); rows past `pillar_num_points` are zero.
        pillar_num_points: `(V,)` int64, 1..P.
        pillar_coords_bij: `(V, 3)` int64 (sample, grid row, grid column) of each pillar.
        images: `(B, K, 3, h, w)` float32 normalised RGB at `config.camera.input_hw`.
        rig: the cameras' calibration (`BatchedRig`).
        bev_from_ego: `(B, 4, 4)` float32 augmentation (identity at inference).
        map_bev: `(B, 1, H, W)` float32 drivable-area probability on the BEV grid.
        modality: which sensors each sample has.
        targets: head targets (training only).
        depth_target_bin: `(B, K, h', w')` int64 depth bin of the nearest lidar return in each camera
            feature pixel, -1 none (training only).
        lidar_depth_bin: `(B, K, h', w')` int64, the same from the keyframe sweep's returns, for the
            lidar-guided lift (`CameraConfig.lift_at_lidar_depth`); all -1 for a sample without
            lidar; None when the model does not lift at lidar depth.
        pillar_point_labels: `(V, P)` int64 training label of each pillar point for the painted
            scores (`fusion.paint.point_labels`; -1: no loss, padding included); None otherwise.
    """

    sample_tokens: tuple[str, ...]
    pillar_features: torch.Tensor
    pillar_num_points: torch.Tensor
    pillar_coords_bij: torch.Tensor
    images: torch.Tensor
    rig: BatchedRig
    bev_from_ego: torch.Tensor
    map_bev: torch.Tensor
    modality: ModalityMask
    targets: HeadTargets | None = None
    depth_target_bin: torch.Tensor | None = None
    lidar_depth_bin: torch.Tensor | None = None
    pillar_point_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        batch = len(self.sample_tokens)
        pillars = self.pillar_features.shape[0]
        painted = 5 + PAINT_CHANNELS
        if self.pillar_features.ndim != 3 or self.pillar_features.shape[2] not in (
            5,
            painted,
            painted + PAINT_LOOKUP_CHANNELS,
        ):
            raise ValueError(
                f"FusionBatch.pillar_features must be (V, P, 5), painted (V, P, {painted}) or painted with "
                f"the score lookup (V, P, {painted + PAINT_LOOKUP_CHANNELS}), got {tuple(self.pillar_features.shape)}"
            )
        if tuple(self.pillar_num_points.shape) != (pillars,):
            raise ValueError(
                f"FusionBatch.pillar_num_points must be ({pillars},), got {tuple(self.pillar_num_points.shape)}"
            )
        if tuple(self.pillar_coords_bij.shape) != (pillars, 3):
            raise ValueError(
                f"FusionBatch.pillar_coords_bij must be ({pillars}, 3), got {tuple(self.pillar_coords_bij.shape)}"
            )
        if self.images.ndim != 5 or self.images.shape[:3] != (batch, len(CAMERA_NAMES), 3):
            raise ValueError(
                f"FusionBatch.images must be ({batch}, {len(CAMERA_NAMES)}, 3, h, w), got {tuple(self.images.shape)}"
            )
        if tuple(self.bev_from_ego.shape) != (batch, 4, 4):
            raise ValueError(f"FusionBatch.bev_from_ego must be ({batch}, 4, 4), got {tuple(self.bev_from_ego.shape)}")
        if self.map_bev.ndim != 4 or self.map_bev.shape[:2] != (batch, 1):
            raise ValueError(f"FusionBatch.map_bev must be ({batch}, 1, H, W), got {tuple(self.map_bev.shape)}")
        if self.modality.lidar.shape[0] != batch or self.rig.intrinsics.shape[0] != batch:
            raise ValueError(f"FusionBatch: modality mask / rig batch size differs from {batch} samples")

    @property
    def batch_size(self) -> int:
        return len(self.sample_tokens)

    def to(self, device: torch.device | str) -> FusionBatch:
        return FusionBatch(
            sample_tokens=self.sample_tokens,
            pillar_features=self.pillar_features.to(device),
            pillar_num_points=self.pillar_num_points.to(device),
            pillar_coords_bij=self.pillar_coords_bij.to(device),
            images=self.images.to(device),
            rig=self.rig.to(device),
            bev_from_ego=self.bev_from_ego.to(device),
            map_bev=self.map_bev.to(device),
            modality=self.modality.to(device),
            targets=None if self.targets is None else self.targets.to(device),
            depth_target_bin=None if self.depth_target_bin is None else self.depth_target_bin.to(device),
            lidar_depth_bin=None if self.lidar_depth_bin is None else self.lidar_depth_bin.to(device),
            pillar_point_labels=None if self.pillar_point_labels is None else self.pillar_point_labels.to(device),
        )


def _pose_for_map(frame: SyncedFrame, config: FusionConfig) -> SE3 | None:
    """The map-frame pose the map patch is cropped around, or None when it cannot be had."""
    if config.map.pose_source == "ego_pose":
        return frame.global_from_ego
    if frame.gnss is None:
        return None

    fix = frame.gnss
    xyz = map_from_geodetic(frame.location, np.array([[fix.latitude_deg, fix.longitude_deg, fix.altitude_m]]))[0]
    return SE3.from_yaw(float(yaw_from_heading_deg(fix.heading_deg)), xyz)


def map_patch(frame: SyncedFrame, config: FusionConfig, aug: SampleAugmentation) -> np.ndarray | None:
    """`(H, W)` float32 drivable area on the BEV grid of the augmented frame, or None (no map/pose).

    The BEV frame is `flip @ scale @ rotation` of the ego frame, so a BEV cell centre p sits at ego
    `R^-1 S^-1 F^-1 p`: crop the raster around the pose turned by -rotation, on a grid scaled by
    1/scale, then mirror the rows for the flip (the y range is symmetric, checked).
    """
    if frame.map is None:
        return None
    pose = _pose_for_map(frame, config)
    if pose is None:
        return None
    grid = config.grid
    if aug.flip_y and abs(grid.y_range_m[0] + grid.y_range_m[1]) > 1e-9:
        raise ValueError(f"flip augmentation needs a symmetric y range, got {grid.y_range_m}")
    pose = pose @ aug.map_noise.ego_from_noisy_ego  # identity without map noise
    crop_pose = pose @ SE3.from_yaw(-aug.rotation_rad, np.zeros(3)) if aug.rotation_rad else pose
    inverse_scale = 1.0 / aug.scale
    patch = frame.map.crop_bev(
        crop_pose,
        (grid.x_range_m[0] * inverse_scale, grid.x_range_m[1] * inverse_scale),
        (grid.y_range_m[0] * inverse_scale, grid.y_range_m[1] * inverse_scale),
        grid.cell_m * inverse_scale,
    )
    if patch.shape != grid.shape_hw:
        raise AssertionError(f"map crop shape {patch.shape} differs from the grid {grid.shape_hw}")
    patch = aug.map_noise.apply(patch)
    return np.ascontiguousarray(patch[::-1]) if aug.flip_y else patch


def lidar_points_bev(frame: SyncedFrame, aug: SampleAugmentation) -> np.ndarray | None:
    """`(N, 5)` float32 x, y, z (BEV frame), intensity, time lag; None when the frame has no lidar."""
    if frame.lidar is None:
        return None
    points = frame.lidar.points
    bev_from_lidar = aug.bev_from_ego @ frame.lidar.ego_from_lidar.matrix
    out = np.empty_like(points)
    out[:, :3] = points[:, :3] @ bev_from_lidar[:3, :3].T.astype(np.float32) + bev_from_lidar[:3, 3].astype(np.float32)
    out[:, 3:] = points[:, 3:5]
    return out


_VOXELIZE_BACKENDS: dict[str, Backend] = {"numba": "numba", "reference": "reference", "cuda": "cuda"}


def pillar_voxel_config(config: FusionConfig) -> VoxelConfig:
    """The voxelization of the lidar branch: one pillar per BEV grid cell, the config's caps."""
    grid = config.grid
    return VoxelConfig.pillars(
        grid.point_range_m, (grid.cell_m, grid.cell_m), config.lidar.max_points_per_pillar, config.lidar.max_pillars
    )


def pillarize(
    points_bev: np.ndarray, config: FusionConfig, backend: str = "numba"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group points into one-cell pillars.

    `backend` is a `fusion.ops.voxelize` backend ("numba", "reference", "cuda"), or "spconv" /
    "spconv_cuda" for spconv's `PointToVoxel` on the CPU / the GPU (the peer the benchmarks compare
    against; the same hard-voxelization contract, and the GPU one needs spconv's CUDA build). Returns `features (V, P, 5)` float32, `num_points (V,)` int64, `coords_ij (V, 2)`
    int64 (grid row along y, column along x).
    """
    voxel_config = pillar_voxel_config(config)
    if backend in ("spconv", "spconv_cuda"):
        device = torch.device("cuda" if backend == "spconv_cuda" else "cpu")
        generator = _spconv_generator(voxel_config, device)
        features, coords_zyx, num_points = generator(torch.from_numpy(points_bev).to(device))
    elif backend in _VOXELIZE_BACKENDS:
        voxels = voxelize(points_bev, voxel_config, backend=_VOXELIZE_BACKENDS[backend])
        features, num_points, coords_zyx = voxels.features, voxels.num_points, voxels.coords_zyx
    else:
        raise ValueError(f"pillarize: unknown backend {backend!r}")
    if isinstance(features, torch.Tensor):  # the CUDA and spconv paths answer with tensors
        features, num_points, coords_zyx = (t.cpu().numpy() for t in (features, num_points, coords_zyx))
    return (
        np.asarray(features, dtype=np.float32),
        np.asarray(num_points, dtype=np.int64),
        np.asarray(coords_zyx)[:, 1:3].astype(np.int64),
    )


_SPCONV_GENERATORS: dict[tuple[VoxelConfig, torch.device], Any] = {}


def _spconv_generator(voxel_config: VoxelConfig, device: torch.device):
    """spconv's `PointToVoxel` for a voxel config and device, built once (it allocates its tables
    up front). spconv is an optional peer: imported here, on first use."""
    key = (voxel_config, device)
    if key not in _SPCONV_GENERATORS:
        from spconv.pytorch.utils import PointToVoxel

        _SPCONV_GENERATORS[key] = PointToVoxel(
            vsize_xyz=list(voxel_config.voxel_size),
            coors_range_xyz=list(voxel_config.point_cloud_range),
            num_point_features=5,
            max_num_voxels=voxel_config.max_voxels,
            max_num_points_per_voxel=voxel_config.max_points_per_voxel,
            device=device,
        )
    return _SPCONV_GENERATORS[key]


def camera_input(
    frame: SyncedFrame, name: str, config: FusionConfig, image_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One camera's network input: `(3, h, w)` float32 image, K `(3, 3)`, ego_from_camera `(4, 4)`, image_aug `(3, 3)`.

    The image is resized by `w / W * image_scale` (and likewise in y) and centre-cropped to
    `config.camera.input_hw`; `image_aug` maps read pixels to those network-input pixels (pixel
    centres at integer coordinates, so a pure resize is `u' = s (u + 0.5) - 0.5`).
    """
    camera = frame.cameras[name]
    height_in, width_in = camera.image.shape[:2]
    height, width = config.camera.input_hw
    scale_x = width / width_in * image_scale
    scale_y = height / height_in * image_scale
    resized_w, resized_h = max(width, round(width_in * scale_x)), max(height, round(height_in * scale_y))
    image = cv2.resize(camera.image, (resized_w, resized_h), interpolation=cv2.INTER_AREA)
    top, left = (resized_h - height) // 2, (resized_w - width) // 2
    image = image[top : top + height, left : left + width]
    actual_sx, actual_sy = resized_w / width_in, resized_h / height_in
    image_aug = np.array(
        [
            [actual_sx, 0.0, 0.5 * actual_sx - 0.5 - left],
            [0.0, actual_sy, 0.5 * actual_sy - 0.5 - top],
            [0.0, 0.0, 1.0],
        ]
    )
    normalised = (image.astype(np.float32) * (1.0 / 255.0) - _IMAGE_MEAN) / _IMAGE_STD
    return (
        np.ascontiguousarray(normalised.transpose(2, 0, 1)),
        camera.intrinsics.matrix,
        frame.ego_from_camera_at_lidar_time(name).matrix,
        image_aug,
    )


def depth_target(
    points_ego: np.ndarray,
    intrinsics: np.ndarray,
    ego_from_camera: np.ndarray,
    image_aug: np.ndarray,
    config: FusionConfig,
) -> np.ndarray:
    """`(h', w')` int64 depth bin of the nearest lidar return per camera feature pixel; -1 none.

    Args:
        points_ego: `(N, 3)` lidar points in the ego frame (not augmented: the rig is genuine).
    """
    cam = config.camera
    feature_h, feature_w = cam.feature_hw
    camera_from_ego = np.linalg.inv(ego_from_camera)
    projection = image_aug @ intrinsics @ camera_from_ego[:3]  # (3, 4): ego -> (u d, v d, d)
    pixels = points_ego @ projection[:, :3].T + projection[:, 3]
    depth = points_ego @ camera_from_ego[2, :3] + camera_from_ego[2, 3]
    in_front = depth > 1e-3
    pixels, depth = pixels[in_front], depth[in_front]
    column = np.floor((pixels[:, 0] / depth + 0.5) / cam.feature_stride).astype(np.int64)
    row = np.floor((pixels[:, 1] / depth + 0.5) / cam.feature_stride).astype(np.int64)
    depth_bin = np.floor((depth - cam.depth_min_m) / cam.depth_step_m).astype(np.int64)
    keep = (column >= 0) & (column < feature_w) & (row >= 0) & (row < feature_h)
    keep &= (depth_bin >= 0) & (depth_bin < cam.num_depth_bins)
    # The nearest return wins: the smallest bin of every pixel (num_depth_bins = none yet).
    target = np.full(feature_h * feature_w, cam.num_depth_bins, dtype=np.int64)
    np.minimum.at(target, row[keep] * feature_w + column[keep], depth_bin[keep])
    target[target == cam.num_depth_bins] = -1
    return target.reshape(feature_h, feature_w)


def collate(
    frames: Sequence[SyncedFrame],
    config: FusionConfig,
    *,
    drop: Collection[str] = frozenset(),
    augmentations: Sequence[SampleAugmentation] | None = None,
    with_targets: bool = False,
    timings_ms: dict[str, float] | None = None,
    voxel_backend: str = "numba",
) -> FusionBatch:
    """Turn synchronized frames into one `FusionBatch`.

    Args:
        frames: B frames.
        drop: sensors to treat as missing in every sample (see `DROPPABLE`): "lidar", "camera" (all
            six), a camera name, "map", "gnss" (the GNSS-based map pose then has no fix).
        augmentations: one per frame (training), or None for none.
        with_targets: build head targets from `frame.gt_boxes` and lidar depth targets.
        timings_ms: when given, the milliseconds spent voxelizing are added under "voxelize" (an
            output argument so the inference loop can report its stages without a second pass).
        voxel_backend: the pillarization backend (see `pillarize`): "numba" on the CPU, "cuda" on a GPU.
    """
    unknown = sorted(set(drop) - DROPPABLE)
    if unknown:
        raise ValueError(f"collate: unknown sensors to drop {unknown}; known: {sorted(DROPPABLE)}")
    if augmentations is None:
        augmentations = [SampleAugmentation()] * len(frames)
    if len(augmentations) != len(frames):
        raise ValueError(f"collate: {len(frames)} frames but {len(augmentations)} augmentations")
    grid_h, grid_w = config.grid.shape_hw
    cam_h, cam_w = config.camera.input_hw
    feature_h, feature_w = config.camera.feature_hw
    batch, cameras = len(frames), len(CAMERA_NAMES)

    pillar_features, pillar_counts, pillar_coords = [], [], []
    images = np.zeros((batch, cameras, 3, cam_h, cam_w), dtype=np.float32)
    intrinsics = np.broadcast_to(np.eye(3), (batch, cameras, 3, 3)).copy()
    ego_from_camera = np.broadcast_to(np.eye(4), (batch, cameras, 4, 4)).copy()
    image_aug = np.broadcast_to(np.eye(3), (batch, cameras, 3, 3)).copy()
    bev_from_ego = np.zeros((batch, 4, 4))
    map_bev = np.zeros((batch, 1, grid_h, grid_w), dtype=np.float32)
    has_lidar = np.zeros(batch, dtype=bool)
    has_camera = np.zeros((batch, cameras), dtype=bool)
    has_map = np.zeros(batch, dtype=bool)
    depth_targets = with_targets and config.builds_camera_branch
    depth_bins = np.full((batch, cameras, feature_h, feature_w), -1, dtype=np.int64) if depth_targets else None
    use = config.train
    guided_lift = config.camera.lift_at_lidar_depth and use.use_lidar and config.builds_camera_branch
    lidar_depth_bins = np.full((batch, cameras, feature_h, feature_w), -1, dtype=np.int64) if guided_lift else None
    boxes_bev: list[Boxes3D] = []
    # Painted scores are trained on labels carried through pillarization as a last point column.
    score_labels = with_targets and config.paints_scores

    def add_pillars(b: int, points: np.ndarray) -> None:
        start = time.perf_counter()
        features, counts, coords_ij = pillarize(points, config, voxel_backend)
        if timings_ms is not None:
            timings_ms["voxelize"] = timings_ms.get("voxelize", 0.0) + (time.perf_counter() - start) * 1e3
        if len(counts):
            has_lidar[b] = True
            pillar_features.append(features)
            pillar_counts.append(counts)
            pillar_coords.append(np.concatenate([np.full((len(counts), 1), b), coords_ij], axis=1))

    for b, (frame, aug) in enumerate(zip(frames, augmentations, strict=True)):
        dropped = set(drop) | set(aug.drop)
        bev_from_ego[b] = aug.bev_from_ego
        points = None if "lidar" in dropped else lidar_points_bev(frame, aug)
        # A painted cloud is pillarized after the cameras are read (below).
        if points is not None and len(points) and not config.paints_points:
            add_pillars(b, points)
        points_ego_for_depth = frame.lidar.points_ego[:, :3] if (with_targets and frame.lidar is not None) else None
        keyframe_points_ego = None
        if guided_lift and has_lidar[b] and frame.lidar is not None:
            keyframe_points_ego = frame.lidar.ego_from_lidar.apply(
                frame.lidar.points[frame.lidar.points[:, 4] == 0, :3]
            )
        for k, name in enumerate(CAMERA_NAMES):
            if name not in frame.cameras or "camera" in dropped or name in dropped:
                continue
            images[b, k], intrinsics[b, k], ego_from_camera[b, k], image_aug[b, k] = camera_input(
                frame, name, config, aug.image_scale
            )
            has_camera[b, k] = True
            if depth_bins is not None and points_ego_for_depth is not None:
                depth_bins[b, k] = depth_target(
                    points_ego_for_depth, intrinsics[b, k], ego_from_camera[b, k], image_aug[b, k], config
                )
            if lidar_depth_bins is not None and keyframe_points_ego is not None:
                lidar_depth_bins[b, k] = depth_target(
                    keyframe_points_ego, intrinsics[b, k], ego_from_camera[b, k], image_aug[b, k], config
                )
        if config.paints_points and points is not None and len(points) and frame.lidar is not None:
            present = np.flatnonzero(has_camera[b])
            rig = CameraRig(
                tuple(CAMERA_NAMES[k] for k in present),
                intrinsics[b, present],
                ego_from_camera[b, present],
                image_aug[b, present],
                (cam_h, cam_w),
            )
            points_ego = frame.lidar.ego_from_lidar.apply(frame.lidar.points[:, :3])
            slots = present if config.paints_scores else None
            columns = [points, paint_points(points_ego, rig, images[b, present], slots)]
            if score_labels:
                gt = frame.gt_boxes if frame.gt_boxes is not None else Boxes3D.empty()
                seen = columns[1][:, 3] > 0
                labels = point_labels(points_ego, gt, seen, config.head.num_classes)
                columns.append(labels[:, None].astype(np.float32))
            add_pillars(b, np.concatenate(columns, axis=1))
        if "map" not in dropped and not ("gnss" in dropped and config.map.pose_source == "gnss"):
            patch = map_patch(frame, config, aug)
            if patch is not None:
                map_bev[b, 0] = patch
                has_map[b] = True
        if with_targets:
            gt = frame.gt_boxes if frame.gt_boxes is not None else Boxes3D.empty()
            boxes_bev.append(aug.transform_boxes(gt))

    points_per_pillar = config.lidar.max_points_per_pillar
    if pillar_features:
        features_t = torch.from_numpy(np.concatenate(pillar_features))
        counts_t = torch.from_numpy(np.concatenate(pillar_counts))
        coords_t = torch.from_numpy(np.concatenate(pillar_coords).astype(np.int64))
    else:
        features_t = torch.zeros((0, points_per_pillar, config.point_columns + (1 if score_labels else 0)))
        counts_t = torch.zeros(0, dtype=torch.int64)
        coords_t = torch.zeros((0, 3), dtype=torch.int64)
    labels_t = None
    if score_labels:
        labels_t = features_t[..., -1].round().long()
        features_t = features_t[..., :-1].contiguous()
        padding = torch.arange(points_per_pillar)[None, :] >= counts_t[:, None]
        labels_t[padding] = -1
    return FusionBatch(
        sample_tokens=tuple(frame.sample_token for frame in frames),
        pillar_features=features_t,
        pillar_num_points=counts_t,
        pillar_coords_bij=coords_t,
        images=torch.from_numpy(images),
        rig=BatchedRig(
            torch.from_numpy(intrinsics).float(),
            torch.from_numpy(ego_from_camera).float(),
            torch.from_numpy(image_aug).float(),
        ),
        bev_from_ego=torch.from_numpy(bev_from_ego).float(),
        map_bev=torch.from_numpy(map_bev),
        modality=ModalityMask(torch.from_numpy(has_lidar), torch.from_numpy(has_camera), torch.from_numpy(has_map)),
        targets=build_head_targets(boxes_bev, config) if with_targets else None,
        depth_target_bin=None if depth_bins is None else torch.from_numpy(depth_bins),
        lidar_depth_bin=None if lidar_depth_bins is None else torch.from_numpy(lidar_depth_bins),
        pillar_point_labels=labels_t,
    )
