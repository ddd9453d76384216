"""Pictures of the fused bird's-eye view: Open3D scene building, offscreen rendering, PNG/GIF/MP4.

One `SceneFrame` holds everything a picture of one keyframe shows, in the ego frame at the lidar
timestamp (x forward, y left, z up, metres): the lidar points, ground-truth and predicted boxes,
the drivable-area map and the network's BEV heatmap (or a gated model's gate map) as rasters on
the ground, and the camera images with what is needed to project into them. `scene_geometries`
turns a frame into Open3D geometries (shared by the offscreen renderer here and the interactive
window in `viewer.py`); `OffscreenBevRenderer` draws them top-down with an orthographic camera
whose pixel mapping is `bev_pixel_from_ego`, so a test can check that a box is drawn where it is.

Boxes are drawn as thin prisms rather than Open3D line sets: Filament's line shader does not run on
Mesa's software Vulkan (the only renderer on a machine without a GPU), and its 1-pixel lines would
be invisible in a 2-core CI picture anyway.
"""

from __future__ import annotations

import enum
import io
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3
from avfusion.fileio import write_bytes_atomic
from avfusion.labels import DETECTION_CLASSES

if TYPE_CHECKING:
    import open3d as o3d

    from avfusion.sensors.types import SyncedFrame

# One hue per detection class, indexed like `DETECTION_CLASSES` (RGB, uint8): ground truth in the
# bright colour, predictions in a darker shade of the same hue (`PREDICTION_SHADE` of it), so a
# prediction on its ground truth stays visible and the two never read as another class. Every pair
# of the 20 colours is at least 25 CIELAB units (Delta E 1976) apart, and every colour at least 45
# from the dark background; tests/tools/viz/test_render.py checks both.
CLASS_COLORS_RGB = np.array(
    [
        [255, 150, 30],  # car: orange
        [255, 230, 40],  # truck: yellow
        [240, 40, 40],  # bus: red
        [230, 60, 230],  # trailer: magenta
        [140, 220, 40],  # construction_vehicle: lime
        [60, 170, 255],  # pedestrian: sky blue
        [255, 120, 180],  # motorcycle: pink
        [150, 110, 255],  # bicycle: violet
        [0, 225, 200],  # traffic_cone: turquoise
        [235, 222, 195],  # barrier: light beige (not a neutral grey: anti-aliased white text makes those)
    ],
    dtype=np.uint8,
)
assert CLASS_COLORS_RGB.shape == (len(DETECTION_CLASSES), 3)
PREDICTION_SHADE = 0.6
PREDICTION_COLORS_RGB = np.round(CLASS_COLORS_RGB * PREDICTION_SHADE).astype(np.uint8)
BACKGROUND_RGB = (18, 18, 24)
UNSEEN_POINT_RGB = (110, 110, 110)

CAMERA_PANEL_ORDER: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)


class Layer(enum.Enum):
    """What a picture can show; the viewer toggles them one by one."""

    POINTS = "points"
    GT_BOXES = "gt_boxes"
    PRED_BOXES = "pred_boxes"
    MAP = "map"
    HEATMAP = "heatmap"
    TRACKS = "tracks"
    # A gated model's per-cell branch weights; where a frame has them, drawn instead of the heatmap.
    GATE = "gate"


ALL_LAYERS = frozenset(Layer)


class PointColoring(enum.Enum):
    """How lidar points are coloured: by height above ground, by return intensity, or by the
    colour of the camera pixel they project into (grey where no camera sees them)."""

    HEIGHT = "height"
    INTENSITY = "intensity"
    CAMERA = "camera"


@dataclass(frozen=True, slots=True)
class BevRaster:
    """A raster on an ego-frame BEV grid: `values[i, j]` in [0, 1] covers the cell whose centre is
    at y = y_min + (i + 0.5) * cell_y and x = x_min + (j + 0.5) * cell_x (row index = ego y
    ascending, column = ego x ascending, as the network's BEV tensors and `MapRaster.crop_bev`)."""

    values: np.ndarray  # (H, W) float32 in [0, 1]
    x_range_m: tuple[float, float]
    y_range_m: tuple[float, float]

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[0] < 1 or self.values.shape[1] < 1:
            raise ValueError(f"BevRaster.values must be (H, W), got shape {self.values.shape}")
        if self.values.dtype != np.float32:
            raise ValueError(f"BevRaster.values must be float32, got {self.values.dtype}")
        for name, (low, high) in (("x_range_m", self.x_range_m), ("y_range_m", self.y_range_m)):
            if not high > low:
                raise ValueError(f"BevRaster.{name} must be (low, high) with high > low, got {(low, high)}")


# The gate map's colour composite: the weight of each branch drives one colour channel (RGB order).
GATE_BRANCHES: tuple[str, ...] = ("lidar", "camera", "map")
GATE_CHANNEL_NAMES: tuple[str, ...] = ("red", "green", "blue")
# The composite covers the ground at this opacity: the drivable area stays faintly readable under it.
GATE_OPACITY = 0.8


@dataclass(frozen=True, slots=True)
class BevGate:
    """A gated fuser's weights on an ego-frame BEV grid: `values[k, i, j]` in [0, 1] is how much
    the network lets branch `branch_names[k]` through in the cell whose centre is at
    y = y_min + (i + 0.5) * cell_y, x = x_min + (j + 0.5) * cell_x (the grid of `BevRaster`).
    `branch_names` are the model's branches among `GATE_BRANCHES`, in its channel order."""

    values: np.ndarray  # (K, H, W) float32 in [0, 1]
    branch_names: tuple[str, ...]
    x_range_m: tuple[float, float]
    y_range_m: tuple[float, float]

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or min(self.values.shape) < 1:
            raise ValueError(f"BevGate.values must be (K, H, W), got shape {self.values.shape}")
        if self.values.dtype != np.float32:
            raise ValueError(f"BevGate.values must be float32, got {self.values.dtype}")
        if len(self.branch_names) != self.values.shape[0]:
            raise ValueError(
                f"BevGate: {self.values.shape[0]} gate channels but {len(self.branch_names)} branch names "
                f"{self.branch_names}"
            )
        unknown = [name for name in self.branch_names if name not in GATE_BRANCHES]
        if unknown or len(set(self.branch_names)) != len(self.branch_names):
            raise ValueError(f"BevGate.branch_names must be distinct names of {GATE_BRANCHES}, got {self.branch_names}")
        for name, (low, high) in (("x_range_m", self.x_range_m), ("y_range_m", self.y_range_m)):
            if not high > low:
                raise ValueError(f"BevGate.{name} must be (low, high) with high > low, got {(low, high)}")


def gate_composite(gate: BevGate) -> np.ndarray:
    """The gate as a colour picture on its own grid: (H, W, 3) float32 in [0, 1], channel c the
    weight of branch `GATE_BRANCHES[c]` (lidar -> red, camera -> green, map -> blue), 0 for a
    branch the model lacks. White = every branch fully open; red = lidar alone, and so on."""
    _, height, width = gate.values.shape
    rgb = np.zeros((height, width, 3), dtype=np.float32)
    for k, name in enumerate(gate.branch_names):
        rgb[..., GATE_BRANCHES.index(name)] = np.clip(gate.values[k], 0.0, 1.0)
    return rgb


def gate_key_text(branch_names: Sequence[str]) -> str:
    """The gate map's key in words, e.g. "gate: lidar=red camera=green map=blue"."""
    colours = dict(zip(GATE_BRANCHES, GATE_CHANNEL_NAMES, strict=True))
    return "gate: " + " ".join(f"{name}={colours[name]}" for name in GATE_BRANCHES if name in branch_names)


@dataclass(frozen=True, slots=True)
class CameraView:
    """One camera image and how to project ego-frame points (at the lidar timestamp) into it.

    `camera_from_ego` folds in the ego motion between the lidar and the camera timestamps:
    camera_from_ego_at_camera_time @ ego_at_camera_time_from_global @ global_from_ego_at_lidar_time.
    """

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    intrinsics: CameraIntrinsics
    camera_from_ego: SE3

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(
                f"CameraView.image must be (H, W, 3) uint8, got shape {self.image.shape} {self.image.dtype}"
            )


@dataclass(frozen=True, slots=True)
class TrackMarks:
    """The tracks present in a keyframe, in its ego frame (x forward, y left, metres), K tracks.

    track_id: K strings (the submission's `tracking_id`); position_xy: `(K, 2)` box centres;
    velocity_xy: `(K, 2)` m/s; trails: K arrays `(T_k, 2)` of the track's past centres, oldest
    first, ending at the present one.
    """

    track_id: tuple[str, ...]
    position_xy: np.ndarray
    velocity_xy: np.ndarray
    trails: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        k = len(self.track_id)
        if self.position_xy.shape != (k, 2) or self.velocity_xy.shape != (k, 2) or len(self.trails) != k:
            raise ValueError(
                f"TrackMarks: {k} ids need (K, 2) positions and velocities and K trails, got "
                f"{self.position_xy.shape}, {self.velocity_xy.shape}, {len(self.trails)}"
            )


@dataclass(frozen=True, slots=True)
class SceneFrame:
    """Everything one picture of a keyframe shows, in the ego frame at the lidar timestamp."""

    title: str
    points_ego: np.ndarray  # (N, 3) float32
    intensity: np.ndarray  # (N,) float32, nuScenes scale 0..255
    gt_boxes_ego: Boxes3D | None = None
    pred_boxes_ego: Boxes3D | None = None
    map_bev: BevRaster | None = None
    heatmap_bev: BevRaster | None = None
    cameras: tuple[CameraView, ...] = ()
    tracks: TrackMarks | None = None
    gate_bev: BevGate | None = None

    def __post_init__(self) -> None:
        if self.points_ego.ndim != 2 or self.points_ego.shape[1] != 3:
            raise ValueError(f"SceneFrame.points_ego must be (N, 3), got shape {self.points_ego.shape}")
        if self.intensity.shape != (self.points_ego.shape[0],):
            raise ValueError(
                f"SceneFrame.intensity must be ({self.points_ego.shape[0]},), got shape {self.intensity.shape}"
            )


@dataclass(frozen=True, slots=True)
class BevView:
    """The top-down picture's extent: ego x points up the image, ego y to the left; the picture is
    `height_px` = x span * pixels_per_m tall and `width_px` = y span * pixels_per_m wide."""

    x_range_m: tuple[float, float] = (-54.0, 54.0)
    y_range_m: tuple[float, float] = (-54.0, 54.0)
    pixels_per_m: float = 7.5

    @property
    def width_px(self) -> int:
        return int(round((self.y_range_m[1] - self.y_range_m[0]) * self.pixels_per_m))

    @property
    def height_px(self) -> int:
        return int(round((self.x_range_m[1] - self.x_range_m[0]) * self.pixels_per_m))


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What to draw and how."""

    layers: frozenset[Layer] = ALL_LAYERS
    point_coloring: PointColoring = PointColoring.HEIGHT
    view: BevView = field(default_factory=BevView)
    point_size_px: float = 2.0
    gt_line_px: float = 3.0
    pred_line_px: float = 2.0
    # Predictions below this score are not drawn (the detector reports down to 0.05 for the metric).
    min_pred_score: float = 0.3
    track_line_px: float = 2.0


def bev_pixel_from_ego(xy_ego: np.ndarray, view: BevView) -> np.ndarray:
    """Pixel (column, row) of ego-frame points in a top-down picture of `view`.

    xy_ego: (N, 2) metres. Returns (N, 2) float64; row 0 is the top (ego x = x_max), column 0 the
    left edge (ego y = y_max), pixel centres at half-integers.
    """
    xy = np.asarray(xy_ego, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy_ego must be (N, 2), got shape {xy.shape}")
    column = (view.y_range_m[1] - xy[:, 1]) * view.pixels_per_m
    row = (view.x_range_m[1] - xy[:, 0]) * view.pixels_per_m
    return np.stack([column, row], axis=1)


# ---------------------------------------------------------------------------------------------
# Colours


def _apply_colormap(values_01: np.ndarray, colormap: int) -> np.ndarray:
    """(N,) values in [0, 1] -> (N, 3) uint8 RGB through an OpenCV colour map."""
    indices = np.clip(np.round(values_01 * 255.0), 0, 255).astype(np.uint8).reshape(-1, 1)
    return cv2.applyColorMap(indices, colormap).reshape(-1, 3)[:, ::-1].copy()


def colors_by_height(points_ego: np.ndarray, z_min_m: float = -0.5, z_max_m: float = 3.5) -> np.ndarray:
    """(N, 3) ego points -> (N, 3) uint8 RGB: blue at the road (ego z ~ 0: nuScenes' ego origin is
    on the ground under the rear axle) to red at z_max_m and above."""
    z = np.asarray(points_ego, dtype=np.float64)[:, 2]
    return _apply_colormap(np.clip((z - z_min_m) / (z_max_m - z_min_m), 0.0, 1.0), cv2.COLORMAP_TURBO)


def colors_by_intensity(intensity: np.ndarray) -> np.ndarray:
    """(N,) nuScenes intensity 0..255 -> (N, 3) uint8 RGB. Most returns are below 30, so the scale
    is a square root to spread the dark end."""
    scaled = np.sqrt(np.clip(np.asarray(intensity, dtype=np.float64), 0.0, 255.0) / 255.0)
    return _apply_colormap(scaled, cv2.COLORMAP_INFERNO)


def colors_from_cameras(points_ego: np.ndarray, cameras: Sequence[CameraView]) -> tuple[np.ndarray, np.ndarray]:
    """Colour each ego-frame point by the pixel it projects into.

    points_ego: (N, 3). Returns (colors (N, 3) uint8 RGB, seen (N,) bool); a point seen by several
    cameras takes the colour of the first in `cameras`; unseen points are `UNSEEN_POINT_RGB`.
    """
    points = np.asarray(points_ego, dtype=np.float64)
    colors = np.tile(np.array(UNSEEN_POINT_RGB, dtype=np.uint8), (len(points), 1))
    seen = np.zeros(len(points), dtype=bool)
    for camera in cameras:
        projection = camera.intrinsics.project(camera.camera_from_ego.apply(points))
        height, width = camera.image.shape[:2]
        target = np.flatnonzero(projection.in_image & ~seen)
        # Pixel centres sit at integer (u, v), so the nearest pixel is the rounded coordinate.
        uv = np.round(projection.uv[target]).astype(np.int64)
        column, row = np.clip(uv[:, 0], 0, width - 1), np.clip(uv[:, 1], 0, height - 1)
        colors[target] = camera.image[row, column]
        seen[target] = True
    return colors, seen


def point_colors(frame: SceneFrame, coloring: PointColoring) -> np.ndarray:
    """(N, 3) uint8 RGB colours of `frame`'s points for one colouring mode."""
    match coloring:
        case PointColoring.HEIGHT:
            return colors_by_height(frame.points_ego)
        case PointColoring.INTENSITY:
            return colors_by_intensity(frame.intensity)
        case PointColoring.CAMERA:
            return colors_from_cameras(frame.points_ego, frame.cameras)[0]
    raise ValueError(f"unknown point colouring {coloring!r}")


def box_colors(boxes: Boxes3D, predicted: bool) -> np.ndarray:
    """(N, 3) uint8 RGB: the class colour, or its darker shade for predictions."""
    return (PREDICTION_COLORS_RGB if predicted else CLASS_COLORS_RGB)[boxes.label]


# ---------------------------------------------------------------------------------------------
# Box wireframes

# Edges over `Boxes3D.corners()`' order (nuscenes-devkit's: corners 0-3 are the front face, 4-7 the
# back face, each going left-top, right-top, right-bottom, left-bottom): both faces, then the four
# edges joining them, then an X across the front face so the heading reads from any side.
_BOX_EDGES = np.array(
    [
        [0, 1],
        [1, 2],
        [2, 3],
        [3, 0],
        [4, 5],
        [5, 6],
        [6, 7],
        [7, 4],
        [0, 4],
        [1, 5],
        [2, 6],
        [3, 7],
        [0, 2],
        [1, 3],
    ]
)


def box_wireframe_segments(boxes: Boxes3D) -> np.ndarray:
    """Line segments outlining each box and its heading.

    Returns (N, 15, 2, 3) float64 segment end points in the boxes' frame: the 12 edges, an X on the
    front (+length) face, and a heading line from the top face's centre to the front top edge's
    midpoint, so the direction of travel is readable from above too.
    """
    corners = boxes.corners()  # (N, 8, 3)
    edges = corners[:, _BOX_EDGES]  # (N, 14, 2, 3)
    top_center = 0.25 * corners[:, [0, 1, 4, 5]].sum(axis=1)  # (N, 3)
    front_top_mid = 0.5 * (corners[:, 0] + corners[:, 1])
    heading = np.stack([top_center, front_top_mid], axis=1)[:, None]  # (N, 1, 2, 3)
    return np.concatenate([edges, heading], axis=1)


def segment_prisms(
    segments: np.ndarray, colors_rgb: np.ndarray, width_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin square prisms along line segments, as a triangle mesh.

    segments: (S, 2, 3); colors_rgb: (S, 3) uint8. Returns (vertices (8S, 3) float64,
    triangles (12S, 3) int32, vertex colours (8S, 3) float64 in [0, 1]).
    """
    start, end = segments[:, 0], segments[:, 1]
    direction = end - start
    length = np.linalg.norm(direction, axis=1, keepdims=True)
    direction = np.where(length > 1e-9, direction / np.maximum(length, 1e-9), [0.0, 0.0, 1.0])
    # Any vector not parallel to the segment gives the cross-section's first axis.
    helper = np.where(np.abs(direction[:, 2:3]) < 0.9, [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    side_u = np.cross(direction, helper)
    side_u /= np.linalg.norm(side_u, axis=1, keepdims=True)
    side_v = np.cross(direction, side_u)
    half = 0.5 * width_m
    offsets = (
        np.stack([(-side_u - side_v), (side_u - side_v), (side_u + side_v), (-side_u + side_v)], axis=1) * half
    )  # (S, 4, 3)
    vertices = np.concatenate([start[:, None] + offsets, end[:, None] + offsets], axis=1)  # (S, 8, 3)
    # Ring 0-3 at the start, 4-7 at the end: two caps and four sides, two triangles each.
    faces = np.array(
        [
            [0, 2, 1],
            [0, 3, 2],
            [4, 5, 6],
            [4, 6, 7],
            [0, 1, 5],
            [0, 5, 4],
            [1, 2, 6],
            [1, 6, 5],
            [2, 3, 7],
            [2, 7, 6],
            [3, 0, 4],
            [3, 4, 7],
        ],
        dtype=np.int32,
    )
    base = (np.arange(len(segments), dtype=np.int32) * 8)[:, None, None]
    triangles = (faces[None] + base).reshape(-1, 3)
    vertex_colors = np.repeat(colors_rgb.astype(np.float64) / 255.0, 8, axis=0)
    return vertices.reshape(-1, 3), triangles, vertex_colors


# ---------------------------------------------------------------------------------------------
# Ground texture (map raster and heatmap)


def ground_texture(
    map_bev: BevRaster | None,
    heatmap_bev: BevRaster | None,
    view: BevView,
    layers: frozenset[Layer],
    gate_bev: BevGate | None = None,
) -> np.ndarray | None:
    """The picture laid on the ground plane under the points, on `view`'s pixel grid.

    Returns (view.height_px, view.width_px, 3) uint8 RGB with row 0 at ego x_max and column 0 at
    ego y_max (as `bev_pixel_from_ego`), or None when no raster is shown. Drivable area is a
    dark slate, the heatmap an additive warm overlay so both stay readable at once. A shown gate
    map (`Layer.GATE` and a gate) replaces the heatmap: its `gate_composite` covers the gate's
    grid at `GATE_OPACITY`.
    """
    shown_map = map_bev if Layer.MAP in layers else None
    shown_gate = gate_bev if Layer.GATE in layers else None
    shown_heatmap = heatmap_bev if Layer.HEATMAP in layers and shown_gate is None else None
    if shown_map is None and shown_heatmap is None and shown_gate is None:
        return None
    picture = np.empty((view.height_px, view.width_px, 3), dtype=np.float64)
    picture[:] = BACKGROUND_RGB
    if shown_map is not None:
        drivable = _resample_to_view(shown_map, view)
        picture += drivable[..., None] * (np.array([62.0, 70.0, 88.0]) - np.array(BACKGROUND_RGB))
    if shown_gate is not None:
        rgb, inside = _resample_values(gate_composite(shown_gate), shown_gate.x_range_m, shown_gate.y_range_m, view)
        blended = (1.0 - GATE_OPACITY) * picture + GATE_OPACITY * 255.0 * rgb
        picture = np.where(inside[..., None], blended, picture)
    if shown_heatmap is not None:
        heat = _resample_to_view(shown_heatmap, view)
        # Shown on a square-root scale: a peak of 0.3 (a fair detection) is drawn at 0.55, a
        # clear orange, while the network's faint background (< 0.02) stays under 0.14.
        level = np.sqrt(np.clip(heat, 0.0, 1.0))
        # 0.85: the top of the scale stays yellow instead of saturating to white.
        overlay = _apply_colormap(0.85 * level.ravel(), cv2.COLORMAP_HOT).reshape(*heat.shape, 3).astype(np.float64)
        picture += level[..., None] * overlay
    return np.clip(np.round(picture), 0, 255).astype(np.uint8)


def _resample_to_view(raster: BevRaster, view: BevView) -> np.ndarray:
    """Nearest-neighbour samples of `raster` at the centres of `view`'s pixels; 0 outside it."""
    return _resample_values(raster.values, raster.x_range_m, raster.y_range_m, view)[0]


def _resample_values(
    values: np.ndarray, x_range_m: tuple[float, float], y_range_m: tuple[float, float], view: BevView
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour samples at the centres of `view`'s pixels of a grid `values` (H, W, *C)
    laid out as `BevRaster`'s over `x_range_m` x `y_range_m`. Returns (samples (H', W', *C) in
    [0, 1], 0 outside the grid; inside (H', W') bool: the pixel centre lies on the grid)."""
    rows = np.arange(view.height_px) + 0.5
    columns = np.arange(view.width_px) + 0.5
    x_ego = view.x_range_m[1] - rows / view.pixels_per_m  # (H',)
    y_ego = view.y_range_m[1] - columns / view.pixels_per_m  # (W',)
    height, width = values.shape[:2]
    cell_x = (x_range_m[1] - x_range_m[0]) / width
    cell_y = (y_range_m[1] - y_range_m[0]) / height
    raster_col = np.floor((x_ego - x_range_m[0]) / cell_x).astype(np.int64)
    raster_row = np.floor((y_ego - y_range_m[0]) / cell_y).astype(np.int64)
    valid = (raster_col >= 0) & (raster_col < width)
    valid_rows = (raster_row >= 0) & (raster_row < height)
    inside = valid[:, None] & valid_rows[None, :]  # (H', W')
    sampled = values[np.clip(raster_row, 0, height - 1)[None, :], np.clip(raster_col, 0, width - 1)[:, None]]
    mask = inside.reshape(inside.shape + (1,) * (values.ndim - 2))
    return np.clip(np.where(mask, sampled, 0.0), 0.0, 1.0), inside


# ---------------------------------------------------------------------------------------------
# Open3D geometry


@dataclass(frozen=True, slots=True)
class NamedGeometry:
    """One Open3D geometry of a scene, the layer it belongs to, and its texture if it has one."""

    name: str
    layer: Layer | None
    geometry: o3d.geometry.PointCloud | o3d.geometry.TriangleMesh
    texture_rgb: np.ndarray | None = None  # (H, W, 3) uint8, image row 0 = the far (+x) edge


# The textured ground sits a little under the road (ego z ~ 0) so that road returns draw over it.
GROUND_Z_M = -0.6
NEAR_PLANE_M = 0.1


def scene_geometries(frame: SceneFrame, options: RenderOptions) -> list[NamedGeometry]:
    """Open3D geometries for `frame`: points, GT and predicted boxes, and the textured ground."""
    import open3d as o3d

    geometries: list[NamedGeometry] = []
    view = options.view
    texture = ground_texture(frame.map_bev, frame.heatmap_bev, view, options.layers, frame.gate_bev)
    if texture is not None:
        geometries.append(NamedGeometry("ground", None, ground_plane(view), texture))
    if Layer.POINTS in options.layers and len(frame.points_ego):
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(frame.points_ego.astype(np.float64)))
        cloud.colors = o3d.utility.Vector3dVector(point_colors(frame, options.point_coloring) / 255.0)
        geometries.append(NamedGeometry("points", Layer.POINTS, cloud))
    for boxes, layer, predicted, line_px in (
        (frame.gt_boxes_ego, Layer.GT_BOXES, False, options.gt_line_px),
        (shown_predictions(frame, options), Layer.PRED_BOXES, True, options.pred_line_px),
    ):
        if boxes is None or len(boxes) == 0 or layer not in options.layers:
            continue
        segments = box_wireframe_segments(boxes)  # (N, 14, 2, 3)
        colors = np.repeat(box_colors(boxes, predicted), segments.shape[1], axis=0)
        vertices, triangles, vertex_colors = segment_prisms(
            segments.reshape(-1, 2, 3), colors, width_m=line_px / view.pixels_per_m
        )
        mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(triangles))
        mesh.vertex_colors = o3d.utility.Vector3dVector(vertex_colors)
        geometries.append(NamedGeometry(layer.value, layer, mesh))
    if frame.tracks is not None and len(frame.tracks.track_id) and Layer.TRACKS in options.layers:
        segments, colors = track_segments(frame.tracks)
        vertices, triangles, vertex_colors = segment_prisms(
            segments, colors, width_m=options.track_line_px / view.pixels_per_m
        )
        mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(triangles))
        mesh.vertex_colors = o3d.utility.Vector3dVector(vertex_colors)
        geometries.append(NamedGeometry(Layer.TRACKS.value, Layer.TRACKS, mesh))
    return geometries


# ---------------------------------------------------------------------------------------------
# Tracks: one colour per track id, a trail of past centres, a velocity arrow, the id as text

# Tracks are drawn above the boxes' tops so that the trails read over everything else.
TRACK_Z_M = 2.5
# The velocity arrow shows where the object will be in this many seconds.
ARROW_HORIZON_S = 1.0


def track_color(track_id: str) -> np.ndarray:
    """A bright colour of its own for a track id, the same in every frame and run: RGB uint8 (3,).

    The hue steps by the golden ratio with the id's number (the part after its last '-', as the
    replay writes "<scene>-<n>"; a stable hash, CRC-32, for other ids), so tracks born close in
    time get well-separated hues."""
    number = track_id.rsplit("-", 1)[-1]
    key = int(number) if number.isdigit() else zlib.crc32(track_id.encode())
    hue = (key * 0.6180339887498949) % 1.0
    hsv = np.array([[[hue * 180.0, 200.0, 255.0]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]


def track_segments(tracks: TrackMarks) -> tuple[np.ndarray, np.ndarray]:
    """Line segments of the tracks (ego frame, at `TRACK_Z_M`): each trail as a polyline, each
    velocity as an arrow (shaft and two barbs) from the present centre. Returns segments
    `(S, 2, 3)` float64 and their colours `(S, 3)` uint8."""
    segments: list[np.ndarray] = []
    colors: list[np.ndarray] = []
    for k, track_id in enumerate(tracks.track_id):
        color = track_color(track_id)
        trail = np.asarray(tracks.trails[k], dtype=np.float64)
        pieces = [np.stack([trail[:-1], trail[1:]], axis=1)] if len(trail) > 1 else []
        start = tracks.position_xy[k]
        tip = start + ARROW_HORIZON_S * tracks.velocity_xy[k]
        shaft = tip - start
        length = float(np.hypot(shaft[0], shaft[1]))
        if length > 0.2:
            back = -shaft / length * min(1.0, 0.35 * length)
            barbs = [tip + _rotate(back, angle) for angle in (0.5, -0.5)]
            pieces.append(np.array([[start, tip], [tip, barbs[0]], [tip, barbs[1]]]))
        for piece in pieces:
            segments.append(np.concatenate([piece, np.full((*piece.shape[:2], 1), TRACK_Z_M)], axis=2))
            colors.append(np.tile(color, (len(piece), 1)))
    if not segments:
        return np.zeros((0, 2, 3)), np.zeros((0, 3), np.uint8)
    return np.concatenate(segments), np.concatenate(colors).astype(np.uint8)


def _rotate(vector: np.ndarray, angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


def draw_track_ids(bev_rgb: np.ndarray, tracks: TrackMarks | None, view: BevView) -> np.ndarray:
    """A copy of a top-down picture with each track's id written beside its centre, in its colour."""
    image = bev_rgb.copy()
    if tracks is None or not len(tracks.track_id):
        return image
    pixels = bev_pixel_from_ego(tracks.position_xy, view)
    for k, track_id in enumerate(tracks.track_id):
        column, row = pixels[k]
        if 0 <= column < image.shape[1] and 0 <= row < image.shape[0]:
            red, green, blue = (int(c) for c in track_color(track_id))
            color = (red, green, blue)
            _put_label(image, track_id.rsplit("-", 1)[-1], (int(column) + 6, int(row) - 6), color, 0.4)
    return image


def shown_gate(frame: SceneFrame, options: RenderOptions) -> BevGate | None:
    """The frame's gate map when pictures draw it (`Layer.GATE` on and the frame has one)."""
    return frame.gate_bev if Layer.GATE in options.layers else None


def draw_gate_key(bev_rgb: np.ndarray, branch_names: Sequence[str]) -> np.ndarray:
    """A copy of a top-down picture with the gate map's key on the line under the title: "gate:"
    then each of the model's branches in its composite colour (`gate_key_text` in colour)."""
    image = bev_rgb.copy()
    left, baseline = 8, 46
    _put_label(image, "gate:", (left, baseline), (255, 255, 255))
    left += cv2.getTextSize("gate: ", cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)[0][0]
    for channel, name in enumerate(GATE_BRANCHES):
        if name not in branch_names:
            continue
        # Pure red and blue read poorly on the dark background: the channel's colour, lightened.
        color = [110, 110, 110]
        color[channel] = 255
        _put_label(image, name, (left, baseline), (color[0], color[1], color[2]))
        left += cv2.getTextSize(name + "  ", cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)[0][0]
    return image


def shown_predictions(frame: SceneFrame, options: RenderOptions) -> Boxes3D | None:
    """The frame's predictions that pictures draw: score >= `options.min_pred_score`."""
    boxes = frame.pred_boxes_ego
    return None if boxes is None else boxes[boxes.score >= options.min_pred_score]


def ground_plane(view: BevView) -> o3d.geometry.TriangleMesh:
    """A rectangle covering `view` at GROUND_Z_M with texture coordinates for `ground_texture`.

    UV convention of Open3D's Filament renderer: u follows image columns, v = 1 - row / H (v = 0 is
    the image's last row); the texture's row 0 is ego x_max, column 0 is ego y_max. (The classic
    OpenGL visualizer reads v the other way: `viewer.py` flips the texture for it.)
    """
    import open3d as o3d

    (x_min, x_max), (y_min, y_max) = view.x_range_m, view.y_range_m
    vertices = np.array(
        [[x_max, y_max, GROUND_Z_M], [x_max, y_min, GROUND_Z_M], [x_min, y_min, GROUND_Z_M], [x_min, y_max, GROUND_Z_M]]
    )
    uv_of_vertex = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    triangles = np.array([[0, 2, 1], [0, 3, 2]], dtype=np.int32)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(triangles))
    mesh.triangle_uvs = o3d.utility.Vector2dVector(uv_of_vertex[triangles.ravel()])
    mesh.triangle_material_ids = o3d.utility.IntVector([0, 0])
    # Filament's unlit shader multiplies the texture by the vertex colour (grey when absent).
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.ones((4, 3)))
    return mesh


# ---------------------------------------------------------------------------------------------
# Offscreen rendering


class OffscreenBevRenderer:
    """Top-down pictures through Open3D's offscreen (Filament) renderer.

    Needs a working Vulkan or EGL driver (Mesa's software Vulkan works without a GPU); where there
    is none, creating the renderer can abort the process, so callers that must survive that render
    in a subprocess. One renderer is reused for every frame: creating one costs about a second.
    """

    def __init__(self, view: BevView) -> None:
        import open3d as o3d

        self._o3d = o3d
        self._view = view
        self._renderer = o3d.visualization.rendering.OffscreenRenderer(view.width_px, view.height_px)
        scene = self._renderer.scene
        scene.set_background([channel / 255.0 for channel in BACKGROUND_RGB] + [1.0])
        scene.view.set_post_processing(False)  # tone mapping would shift the class colours tests look for
        (x_min, x_max), (y_min, y_max) = view.x_range_m, view.y_range_m
        center = [(x_min + x_max) / 2.0, (y_min + y_max) / 2.0, 0.0]
        half_x, half_y = (x_max - x_min) / 2.0, (y_max - y_min) / 2.0
        camera = scene.camera
        # Looking down -z with up = +x ego makes the camera's right = -y ego (left of the image = +y).
        camera.set_projection(
            o3d.visualization.rendering.Camera.Projection.Ortho, -half_y, half_y, -half_x, half_x, 1.0, 400.0
        )
        camera.look_at(center, [center[0], center[1], 200.0], [1.0, 0.0, 0.0])

    @property
    def view(self) -> BevView:
        return self._view

    def render(self, frame: SceneFrame, options: RenderOptions) -> np.ndarray:
        """(view.height_px, view.width_px, 3) uint8 RGB top-down picture of `frame`."""
        if options.view != self._view:
            raise ValueError(f"renderer was made for {self._view}, options ask for {options.view}")
        rendering = self._o3d.visualization.rendering
        scene = self._renderer.scene
        scene.clear_geometry()
        for item in scene_geometries(frame, options):
            material = rendering.MaterialRecord()
            material.shader = "defaultUnlit"
            if item.layer is Layer.POINTS:
                material.point_size = options.point_size_px
            geometry: o3d.geometry.Geometry3D | o3d.t.geometry.Geometry = item.geometry
            if item.texture_rgb is not None:
                # Open3D's stubs list only its Image and buffer types; the runtime takes numpy arrays.
                material.albedo_img = self._o3d.geometry.Image(_srgb_encoded(item.texture_rgb))  # type: ignore[call-overload]
            elif isinstance(geometry, self._o3d.geometry.TriangleMesh):
                # A classic mesh without texture coordinates reaches Filament with an uninitialised
                # UV buffer; on Mesa's llvmpipe that can make one frame take minutes. The tensor
                # mesh uploads only the attributes it has.
                geometry = self._o3d.t.geometry.TriangleMesh.from_legacy(geometry)
            scene.add_geometry(item.name, geometry, material)
        return np.asarray(self._renderer.render_to_image()).copy()


def _srgb_encoded(image_rgb: np.ndarray) -> np.ndarray:
    """Filament decodes albedo textures from sRGB and, with post-processing off, writes linear
    values out; sending the sRGB encoding of the wanted output makes the picture show the texture's
    intended colours (vertex colours are not decoded and need no such step)."""
    linear = image_rgb.astype(np.float64) / 255.0
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1.0 / 2.4) - 0.055)
    return np.ascontiguousarray(np.clip(np.round(encoded * 255.0), 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Camera panel and composed frame


def draw_boxes_on_camera(camera: CameraView, boxes: Boxes3D, predicted: bool, thickness_px: int = 2) -> np.ndarray:
    """A copy of `camera.image` with `boxes` (ego frame at the lidar time) drawn where they project.

    As nuscenes-devkit's renderer, a box is drawn only when all its corners are in front of the
    camera (depth > 0.1 m) and at least one lies in the image: a box reaching behind the camera
    would project to lines across the whole picture. Returns (H, W, 3) uint8 RGB.
    """
    image = camera.image.copy()
    if len(boxes) == 0:
        return image
    n_boxes = len(boxes)
    corners_cam = camera.camera_from_ego.apply(boxes.corners().reshape(-1, 3))  # (8N, 3)
    corners_seen = camera.intrinsics.project(corners_cam)
    drawable = (corners_cam[:, 2] > NEAR_PLANE_M).reshape(n_boxes, 8).all(axis=1)
    drawable &= corners_seen.in_image.reshape(n_boxes, 8).any(axis=1)
    if not drawable.any():
        return image
    chosen = boxes[drawable]
    segments_ego = box_wireframe_segments(chosen)  # (M, 15, 2, 3)
    uv = camera.intrinsics.project(camera.camera_from_ego.apply(segments_ego.reshape(-1, 3))).uv
    uv = uv.reshape(*segments_ego.shape[:3], 2)  # (M, 15, 2, 2)
    colors = box_colors(chosen, predicted)
    height, width = image.shape[:2]
    for box_uv, color in zip(uv, colors, strict=False):
        color = tuple(int(c) for c in color)
        for start, end in box_uv:
            ok, p0, p1 = cv2.clipLine((0, 0, width, height), _int_point(start), _int_point(end))
            if ok:
                cv2.line(image, p0, p1, color, thickness_px, cv2.LINE_AA)
    return image


def _int_point(uv: np.ndarray) -> tuple[int, int]:
    return int(round(float(uv[0]))), int(round(float(uv[1])))


def camera_panel(frame: SceneFrame, options: RenderOptions, tile_width_px: int = 400) -> np.ndarray | None:
    """The six camera images (nuScenes layout: front row, back row) with the shown boxes drawn.

    Returns (2 * tile_h, 3 * tile_width_px, 3) uint8 RGB, black tiles for missing cameras, or None
    when the frame has no camera at all. Boxes are drawn on the images at their own resolution,
    then the tiles are resized.
    """
    if not frame.cameras:
        return None
    layer_boxes = []
    if Layer.GT_BOXES in options.layers and frame.gt_boxes_ego is not None:
        layer_boxes.append((frame.gt_boxes_ego, False, 2))
    predictions = shown_predictions(frame, options)
    if Layer.PRED_BOXES in options.layers and predictions is not None:
        layer_boxes.append((predictions, True, 1))
    by_name = {camera.name: camera for camera in frame.cameras}
    first = frame.cameras[0].image
    tile_height_px = int(round(tile_width_px * first.shape[0] / first.shape[1]))
    panel = np.zeros((2 * tile_height_px, 3 * tile_width_px, 3), dtype=np.uint8)
    for slot, name in enumerate(CAMERA_PANEL_ORDER):
        row, column = divmod(slot, 3)
        top, left = row * tile_height_px, column * tile_width_px
        camera = by_name.get(name)
        tile: np.ndarray
        if camera is None:
            tile = np.zeros((tile_height_px, tile_width_px, 3), dtype=np.uint8)
            _put_label(tile, f"{name}: missing", (8, 22), (200, 80, 80))
        else:
            drawn = camera
            # Line widths are for the tile; the image is drawn on before it is resized to it.
            pixels_per_tile_pixel = max(1.0, camera.image.shape[1] / tile_width_px)
            for boxes, predicted, thickness_px in layer_boxes:
                thickness = int(round(thickness_px * pixels_per_tile_pixel))
                image = draw_boxes_on_camera(drawn, boxes, predicted, thickness)
                drawn = CameraView(name, image, camera.intrinsics, camera.camera_from_ego)
            tile = cv2.resize(drawn.image, (tile_width_px, tile_height_px), interpolation=cv2.INTER_AREA)
            _put_label(tile, name, (8, 22), (255, 255, 255))
        panel[top : top + tile_height_px, left : left + tile_width_px] = tile
    return panel


def _put_label(
    image: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int], scale: float = 0.55
) -> None:
    """Draw `text` in place on a picture being composed (outlined, so it reads on any background)."""
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def legend(height_px: int, width_px: int) -> np.ndarray:
    """A key of the class colours (bright = ground truth, dark = prediction): (H, W, 3) uint8 RGB."""
    image = np.zeros((height_px, width_px, 3), dtype=np.uint8)
    image[:] = BACKGROUND_RGB
    columns = 5
    cell_width = width_px // columns
    for index, name in enumerate(DETECTION_CLASSES):
        row, column = divmod(index, columns)
        left, top = column * cell_width + 8, 10 + row * 26
        gt = tuple(int(c) for c in CLASS_COLORS_RGB[index])
        shade = tuple(int(c) for c in PREDICTION_COLORS_RGB[index])
        cv2.rectangle(image, (left, top), (left + 14, top + 14), gt, -1)
        cv2.rectangle(image, (left + 18, top), (left + 32, top + 14), shade, -1)
        _put_label(image, name, (left + 38, top + 12), (230, 230, 230), 0.45)
    _put_label(image, "left square: ground truth, right square: prediction", (8, height_px - 10), (180, 180, 180), 0.45)
    return image


def compose_picture(bev_rgb: np.ndarray, view: BevView, panel_rgb: np.ndarray | None, title: str) -> np.ndarray:
    """The full picture: the top-down BEV (with the ego vehicle marked) on the left; the camera
    panel and the colour key on the right.

    bev_rgb: (view.height_px, view.width_px, 3) uint8. Returns (H', W', 3) uint8 RGB with the BEV at
    offset (0, 0), so `bev_pixel_from_ego` holds in the composed picture too.
    """
    bev = bev_rgb.copy()
    # The ego vehicle: a white arrowhead at the origin pointing forward (+x, up the picture).
    outline_ego = np.array([[2.5, 0.0], [-1.5, 1.0], [-1.5, -1.0]])
    outline_px = np.round(bev_pixel_from_ego(outline_ego, view)).astype(np.int32)
    cv2.fillPoly(bev, [outline_px], (255, 255, 255), cv2.LINE_AA)
    _put_label(bev, title, (8, 22), (255, 255, 255))
    if panel_rgb is None:
        return bev
    key = legend(80, panel_rgb.shape[1])
    right = np.concatenate([panel_rgb, key], axis=0)
    height, width = bev.shape[:2]
    picture = np.zeros((max(height, right.shape[0]), width + right.shape[1], 3), dtype=np.uint8)
    picture[:] = BACKGROUND_RGB
    picture[:height, :width] = bev
    picture[: right.shape[0], width:] = right
    return picture


# ---------------------------------------------------------------------------------------------
# Files


def write_png(path: str | Path, image_rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB picture as PNG, atomically."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image_rgb[..., ::-1]))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a PNG of shape {image_rgb.shape}")
    write_bytes_atomic(path, encoded.tobytes())


def write_gif(path: str | Path, images_rgb: Sequence[np.ndarray], fps: float, max_width_px: int = 960) -> None:
    """Write pictures as a looping GIF (Pillow), scaled down to at most `max_width_px`, atomically."""
    from PIL import Image

    if not images_rgb:
        raise ValueError("write_gif needs at least one picture")
    frames = [Image.fromarray(_fit_width(image, max_width_px)) for image in images_rgb]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)), loop=0
    )
    write_bytes_atomic(path, buffer.getvalue())


def write_mp4(path: str | Path, images_rgb: Sequence[np.ndarray], fps: float) -> None:
    """Write equally sized pictures as an MP4 (MPEG-4 Part 2 through OpenCV), atomically."""
    if not images_rgb:
        raise ValueError("write_mp4 needs at least one picture")
    height, width = images_rgb[0].shape[:2]
    for image in images_rgb:
        if image.shape != (height, width, 3):
            raise ValueError(f"all pictures must be ({height}, {width}, 3), got {image.shape}")
    # VideoWriter needs a file name: encode into a temporary file, then copy it in atomically.
    with tempfile.TemporaryDirectory(prefix="avfusion-mp4-") as tmp_dir:
        tmp_video = Path(tmp_dir) / "video.mp4"
        writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError("OpenCV's VideoWriter could not open an mp4v stream")
        try:
            for image in images_rgb:
                writer.write(np.ascontiguousarray(image[..., ::-1]))
        finally:
            writer.release()
        write_bytes_atomic(path, tmp_video.read_bytes())


def _fit_width(image: np.ndarray, max_width_px: int) -> np.ndarray:
    if image.shape[1] <= max_width_px:
        return image
    scale = max_width_px / image.shape[1]
    size = (max_width_px, int(round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True, slots=True)
class RenderedScene:
    """The files `render_scene` wrote."""

    pictures: tuple[Path, ...]
    gif: Path | None
    mp4: Path | None


def render_scene(
    frames: Iterable[SceneFrame],
    out_dir: str | Path,
    options: RenderOptions | None = None,
    fps: float = 2.0,
    stem: str = "frame",
    video: bool = True,
    progress: Callable[[int], None] | None = None,
) -> RenderedScene:
    """Render every frame headless to `<out_dir>/<stem>_<i:04d>.png` (BEV + camera panel + key), and
    with `video` the sequence as `<stem>s.gif` and `<stem>s.mp4` at `fps` (nuScenes keyframes: 2 Hz).
    `progress(i)` is called after each frame."""
    options = options if options is not None else RenderOptions()
    out = Path(out_dir)
    renderer = OffscreenBevRenderer(options.view)
    pictures: list[Path] = []
    composed: list[np.ndarray] = []
    for index, frame in enumerate(frames):
        bev = renderer.render(frame, options)
        if Layer.TRACKS in options.layers:
            bev = draw_track_ids(bev, frame.tracks, options.view)
        gate = shown_gate(frame, options)
        if gate is not None:
            bev = draw_gate_key(bev, gate.branch_names)
        picture = compose_picture(bev, options.view, camera_panel(frame, options), frame.title)
        path = out / f"{stem}_{index:04d}.png"
        write_png(path, picture)
        pictures.append(path)
        if video:
            composed.append(picture)
        if progress is not None:
            progress(index)
    gif = mp4 = None
    if video and composed:
        # A picture with a camera panel and one without differ in size; a video needs one size.
        height = max(p.shape[0] for p in composed)
        width = max(p.shape[1] for p in composed)
        padded = [_pad_to(p, height, width) for p in composed]
        gif, mp4 = out / f"{stem}s.gif", out / f"{stem}s.mp4"
        write_gif(gif, padded, fps)
        write_mp4(mp4, padded, fps)
    return RenderedScene(tuple(pictures), gif, mp4)


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    padded = np.empty((height, width, 3), dtype=np.uint8)
    padded[:] = BACKGROUND_RGB
    padded[: image.shape[0], : image.shape[1]] = image
    return padded


def scene_frame_from_synced(
    frame: SyncedFrame,
    pred_boxes_ego: Boxes3D | None = None,
    heatmap_bev: BevRaster | None = None,
    view: BevView | None = None,
    map_resolution_m: float = 0.2,
    tracks: TrackMarks | None = None,
    gate_bev: BevGate | None = None,
) -> SceneFrame:
    """A `SceneFrame` of a synchronized keyframe: its lidar points and intensity, its ground truth,
    the drivable area cropped around its pose on `view`'s extent, and its cameras (each folding in
    the ego motion between the lidar and the camera timestamps). Predictions, the heatmap and the
    gate map come from the caller (fusion output), already in this frame's ego frame, and so do
    the tracks."""
    view = view if view is not None else BevView()
    if frame.lidar is not None:
        points_ego = frame.lidar.points_ego.astype(np.float32)
        intensity = np.ascontiguousarray(frame.lidar.points[:, 3], dtype=np.float32)
    else:
        points_ego, intensity = np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
    map_bev = None
    if frame.map is not None:
        drivable = frame.map.crop_bev(frame.global_from_ego, view.x_range_m, view.y_range_m, map_resolution_m)
        map_bev = BevRaster(drivable.astype(np.float32), view.x_range_m, view.y_range_m)
    cameras = tuple(
        CameraView(
            name,
            frame.cameras[name].image,
            frame.cameras[name].intrinsics,
            frame.ego_from_camera_at_lidar_time(name).inverse(),
        )
        for name in CAMERA_PANEL_ORDER
        if name in frame.cameras
    )
    missing = f"  missing: {', '.join(sorted(frame.missing))}" if frame.missing else ""
    return SceneFrame(
        title=f"{frame.scene_name}  {frame.sample_token[:8]}  t={frame.timestamp_us} us{missing}",
        points_ego=points_ego,
        intensity=intensity,
        gt_boxes_ego=frame.gt_boxes,
        pred_boxes_ego=pred_boxes_ego,
        map_bev=map_bev,
        heatmap_bev=heatmap_bev,
        cameras=cameras,
        tracks=tracks,
        gate_bev=gate_bev,
    )
