"""Configuration of the BEV fusion network: one frozen dataclass per component, composed into `FusionConfig`.

Only independent numbers are stored; everything derived from them (grid shapes, depth bin centres,
feature-map sizes) is a property, so a config can never disagree with itself. Presets are plain
functions (`cpu_default`, `gpu_large`). `FusionConfig.to_dict` / `from_dict` round-trip through JSON:
every training run writes its resolved config beside its weights.

Frames: the BEV grid lives in the ego frame (x forward, y left, z up, metres). Grid rows index y,
columns index x: cell (row i, column j) covers x in [x_min + j*cell, x_min + (j+1)*cell) and
y in [y_min + i*cell, y_min + (i+1)*cell).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from avfusion.errors import FileFormatError, InputError
from avfusion.labels import ATTRIBUTES, DETECTION_CLASSES

# The six nuScenes cameras in the order the network sees them (index k of every `(B, K, ...)` tensor).
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)


@dataclass(frozen=True, slots=True)
class GridConfig:
    """The ego-frame BEV grid every branch writes into (metres)."""

    x_range_m: tuple[float, float] = (-51.2, 51.2)
    y_range_m: tuple[float, float] = (-51.2, 51.2)
    z_range_m: tuple[float, float] = (-5.0, 3.0)
    cell_m: float = 0.8

    def __post_init__(self) -> None:
        for name in ("x_range_m", "y_range_m", "z_range_m"):
            low, high = getattr(self, name)
            if not high > low:
                raise ValueError(f"GridConfig.{name} must be (low, high) with high > low, got {(low, high)}")
            object.__setattr__(self, name, (float(low), float(high)))
        for name in ("x_range_m", "y_range_m"):
            low, high = getattr(self, name)
            cells = (high - low) / self.cell_m
            if abs(cells - round(cells)) > 1e-6:
                raise ValueError(f"GridConfig.{name} {(low, high)} is not a whole number of {self.cell_m} m cells")

    @property
    def shape_hw(self) -> tuple[int, int]:
        """(rows along y, columns along x) of the BEV grid."""
        height = round((self.y_range_m[1] - self.y_range_m[0]) / self.cell_m)
        width = round((self.x_range_m[1] - self.x_range_m[0]) / self.cell_m)
        return height, width

    @property
    def point_range_m(self) -> tuple[float, float, float, float, float, float]:
        """(x_min, y_min, z_min, x_max, y_max, z_max), the voxelizer's convention."""
        return (
            self.x_range_m[0],
            self.y_range_m[0],
            self.z_range_m[0],
            self.x_range_m[1],
            self.y_range_m[1],
            self.z_range_m[1],
        )


@dataclass(frozen=True, slots=True)
class LidarConfig:
    """Pillars of one BEV cell each, encoded by a PointNet and scattered to the grid.

    Point features in: x, y, z (ego frame, m), intensity (0-255 as in nuScenes), time lag (s).
    The encoder appends offsets from the pillar's point mean (3) and from the pillar centre (2).
    """

    max_points_per_pillar: int = 16
    max_pillars: int = 16384
    channels: int = 32
    # Sweeps accumulated into the cloud, keyframe included (what the log reader is asked for).
    num_sweeps: int = 5

    @property
    def point_channels(self) -> int:
        return 5

    @property
    def decorated_channels(self) -> int:
        return self.point_channels + 3 + 2


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """Image encoder and lift-splat depth lift.

    Images are resized to `input_hw` (pixels) before the encoder; the encoder downsamples by
    `feature_stride`; each feature pixel predicts a distribution over `num_depth_bins` depth bins of
    width `depth_step_m` starting at `depth_min_m` (bin centres at depth_min + (i + 0.5) * step).
    """

    input_hw: tuple[int, int] = (112, 200)
    # Scale at which the reader decodes the 1600x900 JPEGs (1/8 decodes directly, far faster).
    decode_scale: float = 0.125
    feature_stride: int = 8
    encoder_channels: tuple[int, ...] = (16, 32, 64)
    channels: int = 32
    depth_min_m: float = 1.0
    depth_step_m: float = 2.0
    num_depth_bins: int = 24
    # Lidar-guided lift (a model with both branches, in samples that have lidar): a feature pixel
    # holding a lidar return of the keyframe sweep is lifted at that return's depth bin instead of
    # along its predicted distribution (BEVFusion's depth-aware lift feeds the same projected depth
    # to its depth net). Pixels without a return, and every pixel when lidar is missing, use the
    # prediction, which is trained against lidar depth either way. False in configs written before
    # it existed, so older checkpoints run as they were trained.
    lift_at_lidar_depth: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_hw", tuple(int(v) for v in self.input_hw))
        object.__setattr__(self, "encoder_channels", tuple(int(v) for v in self.encoder_channels))
        if 2 ** len(self.encoder_channels) != self.feature_stride:
            raise ValueError(
                f"CameraConfig: {len(self.encoder_channels)} stride-2 encoder stages give stride "
                f"{2 ** len(self.encoder_channels)}, but feature_stride is {self.feature_stride}"
            )
        for size in self.input_hw:
            if size % self.feature_stride:
                raise ValueError(f"CameraConfig.input_hw {self.input_hw} must be divisible by {self.feature_stride}")

    @property
    def feature_hw(self) -> tuple[int, int]:
        return self.input_hw[0] // self.feature_stride, self.input_hw[1] // self.feature_stride

    @property
    def depth_max_m(self) -> float:
        return self.depth_min_m + self.num_depth_bins * self.depth_step_m

    @property
    def depth_centers_m(self) -> tuple[float, ...]:
        return tuple(self.depth_min_m + (i + 0.5) * self.depth_step_m for i in range(self.num_depth_bins))


@dataclass(frozen=True, slots=True)
class MapConfig:
    """The drivable-area raster around the vehicle, cropped on the BEV grid.

    `pose_source` "ego_pose" crops around the localisation pose; "gnss" builds the pose from the
    frame's GNSS fix (position and heading), as a vehicle without a prior map localisation would.
    """

    channels: int = 16
    pose_source: str = "ego_pose"

    def __post_init__(self) -> None:
        if self.pose_source not in ("ego_pose", "gnss"):
            raise ValueError(f"MapConfig.pose_source must be 'ego_pose' or 'gnss', got {self.pose_source!r}")


FUSION_STRATEGIES: tuple[str, ...] = ("early", "intermediate", "gated", "late")
# Camera colour (3, normalised as the camera branch's input) and a seen flag per painted point.
PAINT_CHANNELS = 4
# With painted scores, what the batch also carries per point for the model to read them: the
# camera's index in `CAMERA_NAMES` (-1: no camera sees it) and the network-input pixel (u, v).
PAINT_LOOKUP_CHANNELS = 3


@dataclass(frozen=True, slots=True)
class FuserConfig:
    """How and where the modalities meet (`FUSION_STRATEGIES`); `channels` out of the BEV fuser.

    - "early": point painting. Every lidar point carries the colour of the camera pixel it
      projects to, a seen-by-a-camera flag and, with `paint_scores`, the camera network's
      per-class scores there (`fusion.paint.PaintScorer`) into the lidar encoder; there is no
      camera BEV branch.
    - "intermediate": the branch BEV maps and modality indicators concatenated, then a 3x3 conv.
    - "gated": as intermediate, but each branch's map is first weighed per BEV cell by a gate in
      [0, 1] computed from all the maps (`fuser.GatedFuser`), so the network can turn a bad input down.
    - "late": the camera-free and lidar-free trunks' boxes merged per class by a learned score
      model over the pair (`fusion.late`); `late_model` holds its coefficients.
    """

    channels: int = 32
    strategy: str = "intermediate"
    late_model: tuple[float, ...] = ()
    # Early fusion: paint the per-class scores too (False in configs written before they existed).
    paint_scores: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in FUSION_STRATEGIES:
            raise InputError(f"fusion strategy {self.strategy!r} is not one of {', '.join(FUSION_STRATEGIES)}")


@dataclass(frozen=True, slots=True)
class BackboneConfig:
    """Multi-scale BEV conv stages (stride 1, 2, 4, ... of the grid) and an upsampling neck."""

    stage_channels: tuple[int, ...] = (32, 64, 128)
    # Stage 0 runs at the full grid (128 x 128 in the CPU preset) where every conv is costly: it
    # gets its entry conv only; the coarser stages carry the depth.
    stage_blocks: tuple[int, ...] = (0, 2, 2)
    neck_channels: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_channels", tuple(int(v) for v in self.stage_channels))
        object.__setattr__(self, "stage_blocks", tuple(int(v) for v in self.stage_blocks))
        if len(self.stage_channels) != len(self.stage_blocks):
            raise ValueError(
                f"BackboneConfig: {len(self.stage_channels)} stage_channels but {len(self.stage_blocks)} stage_blocks"
            )

    @property
    def out_channels(self) -> int:
        return self.neck_channels * len(self.stage_channels)


@dataclass(frozen=True, slots=True)
class HeadConfig:
    """Center-based head at the BEV grid resolution, one heatmap per detection class."""

    channels: int = 32
    num_classes: int = len(DETECTION_CLASSES)
    num_attributes: int = len(ATTRIBUTES)
    min_radius_cells: int = 1
    gaussian_overlap: float = 0.1
    max_objects: int = 512
    # A ground-truth box becomes a training target only with at least this many lidar points
    # (`num_lidar_pts`; -1 = unknown is kept). The nuScenes evaluation drops boxes without points,
    # so teaching the net to fire on them (36% of the synthetic train log's boxes, half its
    # pedestrians) only trains false positives; CenterPoint's "valid flag" does the same.
    min_target_lidar_points: int = 1


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    """Peaks -> boxes: top-k candidates, score threshold, circle NMS per class, at most `max_boxes`.

    `nms_radius_m` is per class in `DETECTION_CLASSES` order (0 = no NMS for that class): peaks of
    the same class closer than this are duplicates.
    """

    top_k: int = 1000
    score_threshold: float = 0.05
    max_boxes: int = 500
    nms_radius_m: tuple[float, ...] = (2.0, 3.0, 4.0, 4.0, 3.0, 0.4, 0.8, 0.8, 0.3, 0.5)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nms_radius_m", tuple(float(v) for v in self.nms_radius_m))
        if len(self.nms_radius_m) != len(DETECTION_CLASSES):
            raise ValueError(
                f"DecodeConfig.nms_radius_m needs {len(DETECTION_CLASSES)} values, got {self.nms_radius_m}"
            )
        if not 0 < self.max_boxes <= 500:
            raise ValueError(f"DecodeConfig.max_boxes must be in 1..500 (nuScenes' limit), got {self.max_boxes}")


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Training-time augmentation; a global BEV transform applied alike to points, boxes, rig and map."""

    rotation_max_rad: float = 0.3925
    scale_range: tuple[float, float] = (0.95, 1.05)
    flip_probability: float = 0.5
    image_scale_jitter: float = 0.06
    # Modality dropout: the probability that a training sample loses the whole sensor (lidar and
    # all cameras only in a model with both). A model with a lidar-free trunk
    # (`TrainConfig.lidar_free_trunk`, the presets) trains that mode on every sample's twin without
    # lidar instead, so it needs no lidar dropout (0 in the presets); a camera-free trunk
    # (`TrainConfig.camera_free_trunk`) likewise makes camera dropout pointless. 0.3 and 0.15 are
    # for one shared trunk.
    drop_lidar_probability: float = 0.3
    drop_cameras_probability: float = 0.15
    drop_one_camera_probability: float = 0.1
    drop_map_probability: float = 0.2
    # Map noise (`augment.MapNoise`), off by default: a sample's map is misregistered (shifted
    # up to `map_shift_max_m` and turned up to `map_rotation_max_rad`), has up to
    # `map_holes_max` rectangles of up to `map_hole_max_fraction` of the grid side blanked, is
    # blank, or is wrong (cropped `map_wrong_offset_m` away at any heading: another street, or
    # off the raster). Each with its own probability; a real map can be all of these.
    map_shift_probability: float = 0.0
    map_shift_max_m: float = 1.5
    map_rotation_max_rad: float = 0.05
    map_holes_probability: float = 0.0
    map_holes_max: int = 4
    map_hole_max_fraction: float = 0.3
    map_blank_probability: float = 0.0
    map_wrong_probability: float = 0.0
    map_wrong_offset_m: tuple[float, float] = (30.0, 150.0)

    # Corruption augmentation (robust training; `fusion.augment.corrupt_for_training`), all off by
    # default: per sample, with each probability, the lidar keeps every 2nd or 4th ring only, or
    # loses a uniform fraction of up to `point_drop_max_fraction` of its points; every point is
    # jittered by `point_jitter_sigma_m`; the lidar, or each camera, delivers the previous
    # keyframe's data; each image gets a random brightness / low-light change; each camera's stored
    # extrinsic is rotated by a random rotation of `extrinsic_sigma_deg` per axis.
    beam_drop_probability: float = 0.0
    point_drop_probability: float = 0.0
    point_drop_max_fraction: float = 0.6
    point_jitter_sigma_m: float = 0.0
    stale_lidar_probability: float = 0.0
    stale_camera_probability: float = 0.0
    photometric_probability: float = 0.0
    extrinsic_sigma_deg: float = 0.0
    # Image-domain randomisation (`fusion.augment.randomize_image_domain`): with this probability
    # per image, random colour balance, exposure and gamma, a low-frequency texture, blur, sensor
    # noise and lens vignetting, so that the camera branch does not learn the synthetic renderer's
    # exact look and carries over to real photographs.
    image_domain_probability: float = 0.0
    # Weather: with this probability per sample, fog or snow (`sensors.corruptions`, either one,
    # severity 1-3 drawn) over the lidar and every camera, drawn anew each time.
    weather_probability: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "weather_probability",
            "beam_drop_probability",
            "point_drop_probability",
            "point_drop_max_fraction",
            "stale_lidar_probability",
            "stale_camera_probability",
            "photometric_probability",
            "image_domain_probability",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.point_jitter_sigma_m < 0 or self.extrinsic_sigma_deg < 0:
            raise ValueError("AugmentConfig.point_jitter_sigma_m and extrinsic_sigma_deg must be >= 0")

    @property
    def corrupts(self) -> bool:
        """Whether any corruption augmentation is on."""
        return any(
            (
                self.beam_drop_probability,
                self.point_drop_probability,
                self.point_jitter_sigma_m,
                self.stale_lidar_probability,
                self.stale_camera_probability,
                self.photometric_probability,
                self.extrinsic_sigma_deg,
                self.image_domain_probability,
                self.weather_probability,
            )
        )

    @property
    def needs_previous_frame(self) -> bool:
        return self.stale_lidar_probability > 0 or self.stale_camera_probability > 0

    @property
    def map_noise_enabled(self) -> bool:
        return (
            self.map_shift_probability
            + self.map_holes_probability
            + self.map_blank_probability
            + self.map_wrong_probability
        ) > 0.0


# The regression channels of the yaw's sin and cos (see `LossConfig.regression_channel_weights`).
YAW_CHANNELS = slice(6, 8)


@dataclass(frozen=True, slots=True)
class LossConfig:
    heatmap_weight: float = 1.0
    regression_weight: float = 0.25
    # Per regression channel: offset x, y; z; log w, l, h; sin, cos; vx, vy. Velocity weighs as
    # much as the rest: CenterPoint's 0.2 is meant for 20-epoch schedules, far longer than ours
    # (docs/results.md: the velocity regression stays near 0 m/s with either weight).
    regression_channel_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    attribute_weight: float = 0.2
    depth_weight: float = 0.5
    # Early fusion with painted scores: cross-entropy of the scores at the lidar points against
    # the class of the box each point lies in (`fusion.losses.paint_loss`).
    paint_weight: float = 0.5
    # Loss weight of a training sample whose lidar was dropped (modality dropout) in a model with a
    # lidar branch. Such a sample's gradient is several times a full sample's at the start of the
    # fused stage, so with one shared trunk it steers that trunk (docs/results.md).
    lidar_dropped_weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "regression_channel_weights", tuple(float(v) for v in self.regression_channel_weights))
        if len(self.regression_channel_weights) != 10:
            raise ValueError(
                f"LossConfig.regression_channel_weights needs 10 values, got {self.regression_channel_weights}"
            )


@dataclass(frozen=True, slots=True)
class TrainConfig:
    batch_size: int = 4
    epochs: int = 10
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    grad_clip_norm: float = 10.0
    seed: int = 0
    # Which modalities the model is built with: a lidar-only or camera-only ablation drops branches.
    use_lidar: bool = True
    use_camera: bool = True
    use_map: bool = True
    # A model with lidar and cameras can carry a second fuser + backbone + head for samples without
    # lidar (`fusion.model.ModeTrunk`). Training then also runs every sample with its lidar
    # removed through that trunk (the camera and map branches are shared), so each trunk trains on
    # every sample in the one mode it serves; at inference a sample goes to the trunk of its mode.
    # With it, lidar dropout is pointless (`AugmentConfig.drop_lidar_probability` 0 in the presets):
    # one shared trunk for both modes lost accuracy in both (docs/results.md, "What the extra
    # trunks bought").
    lidar_free_trunk: bool = False
    # Likewise a third trunk for samples with lidar and no camera (`BEVFusion.camera_free`): every
    # sample also runs with its cameras removed through it, so the main trunk trains on samples with
    # cameras only and camera dropout is pointless too (`AugmentConfig.drop_cameras_probability`).
    camera_free_trunk: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "epochs", "learning_rate", "weight_decay", "grad_clip_norm", "seed"):
            problem = train_value_problem(name, getattr(self, name))
            if problem is not None:
                raise InputError(f"train.{name} {problem}")

    @property
    def builds_lidar_free_trunk(self) -> bool:
        """Whether the model has the lidar-free trunk (only a model with both primary sensors does)."""
        return self.lidar_free_trunk and self.use_lidar and self.use_camera

    @property
    def builds_camera_free_trunk(self) -> bool:
        """Whether the model has the camera-free trunk (only a model with both primary sensors does)."""
        return self.camera_free_trunk and self.use_lidar and self.use_camera


def train_value_problem(name: str, value: object) -> str | None:
    """What is wrong with a `TrainConfig` value (None when it is fine): counts are positive
    integers, rates finite (the learning rate and clip norm > 0, the weight decay >= 0)."""
    if name in ("batch_size", "epochs"):
        return None if type(value) is int and value >= 1 else f"must be a positive integer, got {value!r}"
    if name == "seed":
        return None if type(value) is int and value >= 0 else f"must be a non-negative integer, got {value!r}"
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        return f"must be a finite number, got {value!r}"
    if name == "weight_decay":
        return None if value >= 0 else f"must be >= 0, got {value!r}"  # type: ignore[operator]
    return None if value > 0 else f"must be > 0, got {value!r}"  # type: ignore[operator]


# The command-line flag of each `TrainConfig` field `configure` overrides.
TRAIN_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--lr", "seed": "--seed"}


@dataclass(frozen=True, slots=True)
class FusionConfig:
    grid: GridConfig = field(default_factory=GridConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    map: MapConfig = field(default_factory=MapConfig)
    fuser: FuserConfig = field(default_factory=FuserConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def replace(self, **components: Any) -> FusionConfig:
        return dataclasses.replace(self, **components)

    @property
    def strategy(self) -> str:
        return self.fuser.strategy

    @property
    def paints_points(self) -> bool:
        """Whether lidar points carry camera paint (early fusion with cameras in the model)."""
        return self.fuser.strategy == "early" and self.train.use_camera and self.train.use_lidar

    @property
    def paints_scores(self) -> bool:
        """Whether painted points also carry the camera network's per-class scores."""
        return self.paints_points and self.fuser.paint_scores

    @property
    def paint_channels(self) -> int:
        """Paint features per point the lidar encoder reads (0 without painting)."""
        if not self.paints_points:
            return 0
        return PAINT_CHANNELS + (self.head.num_classes if self.paints_scores else 0)

    @property
    def point_columns(self) -> int:
        """Columns per point of a batch's pillars: the 5 of the cloud, the paint, and where to read
        the scores (`PAINT_LOOKUP_CHANNELS`) when the model paints them."""
        if not self.paints_points:
            return 5
        return 5 + PAINT_CHANNELS + (PAINT_LOOKUP_CHANNELS if self.paints_scores else 0)

    @property
    def builds_lidar_free_trunk(self) -> bool:
        return self.train.builds_lidar_free_trunk and self.builds_camera_branch

    @property
    def builds_camera_free_trunk(self) -> bool:
        return self.train.builds_camera_free_trunk and self.builds_camera_branch

    @property
    def builds_camera_branch(self) -> bool:
        """Whether the model has a camera BEV branch (early fusion uses the images for paint only)."""
        return self.train.use_camera and self.fuser.strategy != "early"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(payload: dict[str, Any], source: object = "<config>") -> FusionConfig:
        """Build from `to_dict` output; unknown keys or components raise `FileFormatError` naming `source`."""
        components = {}
        for f in dataclasses.fields(FusionConfig):
            values = payload.get(f.name, {})
            component_type = _COMPONENT_TYPES[f.name]
            known = {g.name for g in dataclasses.fields(component_type)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise FileFormatError(source, f"unknown keys {unknown} in config section {f.name!r}")
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            try:
                components[f.name] = component_type(**kwargs)
            except (TypeError, ValueError) as error:
                raise FileFormatError(source, f"config section {f.name!r}: {error}") from error
        unknown = sorted(set(payload) - set(components))
        if unknown:
            raise FileFormatError(source, f"unknown config sections {unknown}")
        return FusionConfig(**components)

    @staticmethod
    def load_json(path: str | os.PathLike[str]) -> FusionConfig:
        try:
            with open(path) as handle:
                payload = json.load(handle)
        except json.JSONDecodeError as error:
            raise FileFormatError(path, f"not valid JSON: {error}") from error
        if not isinstance(payload, dict):
            raise FileFormatError(path, f"expected a JSON object, found {type(payload).__name__}")
        return FusionConfig.from_dict(payload, source=path)


_COMPONENT_TYPES: dict[str, type] = {
    "grid": GridConfig,
    "lidar": LidarConfig,
    "camera": CameraConfig,
    "map": MapConfig,
    "fuser": FuserConfig,
    "backbone": BackboneConfig,
    "head": HeadConfig,
    "decode": DecodeConfig,
    "augment": AugmentConfig,
    "loss": LossConfig,
    "train": TrainConfig,
}


# The training recipe's robustness augmentation (issue: noisy, misaligned and frozen sensors; a map
# that is wrong): a noisy map, degraded lidar, stale sensors, photometric noise and image-domain
# randomisation, small camera extrinsic errors. Modality dropout is the mode trunks' job.
ROBUST_AUGMENT = AugmentConfig(
    drop_lidar_probability=0.0,
    drop_cameras_probability=0.0,
    map_shift_probability=0.2,
    map_holes_probability=0.2,
    map_blank_probability=0.05,
    map_wrong_probability=0.05,
    beam_drop_probability=0.1,
    point_drop_probability=0.1,
    stale_lidar_probability=0.05,
    stale_camera_probability=0.05,
    photometric_probability=0.1,
    image_domain_probability=0.5,
    extrinsic_sigma_deg=0.2,
)


def cpu_default() -> FusionConfig:
    """Sized for >= 5 frames/s end to end on a 2-core CPU: 128x128 grid at 0.8 m, 1/8-scale images."""
    return FusionConfig(
        camera=CameraConfig(lift_at_lidar_depth=True),
        augment=ROBUST_AUGMENT,
        train=TrainConfig(lidar_free_trunk=True, camera_free_trunk=True),
    )


def gpu_large() -> FusionConfig:
    """A larger model for a GPU: 256x256 grid at 0.4 m, 1/4-scale images, more depth bins and channels."""
    return FusionConfig(
        grid=GridConfig(cell_m=0.4),
        lidar=LidarConfig(max_points_per_pillar=20, max_pillars=40000, channels=64, num_sweeps=10),
        camera=CameraConfig(
            input_hw=(224, 400),
            decode_scale=0.25,
            feature_stride=16,
            encoder_channels=(32, 64, 128, 160),
            channels=64,
            depth_min_m=1.0,
            depth_step_m=0.75,
            num_depth_bins=64,
            lift_at_lidar_depth=True,
        ),
        map=MapConfig(channels=32),
        fuser=FuserConfig(channels=128),
        backbone=BackboneConfig(stage_channels=(128, 192, 256), stage_blocks=(2, 3, 3), neck_channels=96),
        head=HeadConfig(channels=96),
        augment=AugmentConfig(drop_lidar_probability=0.0, drop_cameras_probability=0.0),
        train=TrainConfig(batch_size=8, epochs=20, learning_rate=2e-3, lidar_free_trunk=True, camera_free_trunk=True),
    )


def tiny_for_tests() -> FusionConfig:
    """A very small network on a coarse grid, for unit tests and the DDP smoke test."""
    return FusionConfig(
        grid=GridConfig(x_range_m=(-25.6, 25.6), y_range_m=(-25.6, 25.6), cell_m=1.6),
        lidar=LidarConfig(max_points_per_pillar=8, max_pillars=2048, channels=8),
        camera=CameraConfig(
            input_hw=(32, 64), encoder_channels=(8, 8, 16), channels=8, num_depth_bins=8, depth_step_m=3.0
        ),
        map=MapConfig(channels=4),
        fuser=FuserConfig(channels=16),
        backbone=BackboneConfig(stage_channels=(16, 16, 16), stage_blocks=(1, 1, 1), neck_channels=8),
        head=HeadConfig(channels=16),
        train=TrainConfig(batch_size=2, epochs=1),
    )


PRESETS = {"cpu": cpu_default, "gpu": gpu_large, "tiny": tiny_for_tests}
MODALITIES = ("lidar", "camera", "map")


def with_strategy(config: FusionConfig, strategy: str) -> FusionConfig:
    """`config` with the fusion strategy `strategy` (see `FuserConfig`). Early fusion has no camera
    branch, so no mode trunks either; it learns to do without paint from camera dropout instead."""
    if strategy not in FUSION_STRATEGIES:
        raise InputError(f"--fusion {strategy!r} is not one of {', '.join(FUSION_STRATEGIES)}")
    config = config.replace(fuser=dataclasses.replace(config.fuser, strategy=strategy))
    if strategy == "early":
        config = config.replace(
            fuser=dataclasses.replace(config.fuser, paint_scores=True),
            train=dataclasses.replace(config.train, lidar_free_trunk=False, camera_free_trunk=False),
            augment=dataclasses.replace(config.augment, drop_cameras_probability=0.15),
        )
    return config


def configure(
    preset: str = "cpu",
    config_path: str | None = None,
    modalities: str | None = None,
    fusion: str | None = None,
    heading_weight: float | None = None,
    weather: float | None = None,
    **train_overrides: object,
) -> FusionConfig:
    """A preset (or a saved config JSON) with `TrainConfig` fields replaced where a value is given.

    `modalities`: comma-separated branches to build, e.g. "lidar,map"; at least one of lidar and
    camera. `fusion`: a strategy of `FUSION_STRATEGIES` (None: the config's). `heading_weight`: the
    loss weight of the sin and cos regression channels (None: the config's). `weather`: the share of
    training samples under fog or snow (`AugmentConfig.weather_probability`). `train_overrides`
    with the value None are left as the config has them.
    """
    config = FusionConfig.load_json(config_path) if config_path else PRESETS[preset]()
    # Values are checked by `train_value_problem` below, and again by `TrainConfig` itself.
    changes: dict[str, Any] = {name: value for name, value in train_overrides.items() if value is not None}
    for name, value in changes.items():
        problem = train_value_problem(name, value)
        if problem is not None:
            raise InputError(f"{TRAIN_FLAGS.get(name, name)} {problem}")
    if modalities:
        chosen = set(modalities.split(","))
        unknown = chosen - set(MODALITIES)
        if unknown or not chosen & {"lidar", "camera"}:
            raise InputError(f"--modalities must list lidar and/or camera (and map), got {modalities!r}")
        changes.update(use_lidar="lidar" in chosen, use_camera="camera" in chosen, use_map="map" in chosen)
    if changes:
        config = config.replace(train=dataclasses.replace(config.train, **changes))
    if fusion is not None:
        config = with_strategy(config, fusion)
    if heading_weight is not None:
        config = with_heading_weight(config, heading_weight)
    if weather is not None:
        if not (math.isfinite(weather) and 0.0 <= weather <= 1.0):
            raise InputError(f"--weather must be a probability in [0, 1], got {weather}")
        config = config.replace(augment=dataclasses.replace(config.augment, weather_probability=float(weather)))
    return config


def with_heading_weight(config: FusionConfig, weight: float) -> FusionConfig:
    """`config` with the loss weight of the yaw's sin and cos channels set to `weight` (> 0)."""
    if not (math.isfinite(weight) and weight > 0):
        raise InputError(f"--heading-weight must be a number > 0, got {weight}")
    channels = list(config.loss.regression_channel_weights)
    channels[YAW_CHANNELS] = [float(weight)] * 2
    return config.replace(loss=dataclasses.replace(config.loss, regression_channel_weights=tuple(channels)))
