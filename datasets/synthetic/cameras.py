"""Camera images and annotation visibility, ray-cast against the same mesh as the lidar.

Rendering: one ray per pixel of a cast image (`render_scale` x the output size) gives the first
triangle and distance (`cast_camera`, Open3D). A compiled kernel then shades a finer image
(`shading_scale(render_scale)` x the output size, `shade_camera` / `shading.shade_image`): each
pixel intersects its own ray with the plane of the triangle its nearest cast ray hit, so textures
(lane paint, windows) are sharp at the shading resolution while silhouettes follow the cast
resolution. Shading: material colour (per-agent paint and clothes, glass, tyres, cones, facades with
windows, asphalt with lane paint, sidewalks), Lambert lighting from the scene's sun, distance haze,
a sky gradient, sensor noise; then a resize to the output size with `cv2.resize` (whose pixel-centre
convention is the one `CameraIntrinsics.resized` assumes). Occlusion is exact at the cast
resolution because the lidar and the cameras see one mesh. `shade_hits` is the NumPy statement of
the shading rule that the kernel is tested against.

Visibility (nuScenes' `visibility` levels): the fraction of an annotation's box, over all six
cameras, that is not hidden behind something nearer, measured on coarse rays: among the rays that
enter the box, a ray counts as visible when it first hits the agent itself and as occluded when it
first hits something else before reaching the box; rays passing through the empty parts of the
box count as neither.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from avfusion.calibration.se3 import SE3
from avfusion.datasets.synthetic.geometry import RayCaster, SceneMesh
from avfusion.datasets.synthetic.layout import LocationLayout, Material
from avfusion.datasets.synthetic.lidar import lane_marking
from avfusion.datasets.synthetic.rig import CameraSpec
from avfusion.datasets.synthetic.roads import ROAD_HALF_WIDTH_M, SIDEWALK_OUTER_M
from avfusion.datasets.synthetic.shading import count_box_rays, loop_table, pinhole_rays, shade_image, triangle_planes

VISIBILITY_SCALE = 0.125  # coarse rays for visibility: 200 x 112 per camera
# Images are shaded at half the output resolution at least, then resized: shading is cheap next
# to ray casting, and the plane reconstruction keeps lane paint and windows sharp.
SHADE_SCALE = 0.5
HAZE_RGB = np.array([200.0, 208.0, 215.0])


@dataclass(frozen=True, slots=True, eq=False)
class RenderedImage:
    """One rendered camera image.

    Attributes:
        image: `(H, W, 3)` uint8 RGB at the output size.
        agent_internal: `(h, w)` int64 agent index seen at each internal pixel (-1: none).
        internal_scale: internal pixels per output pixel.
    """

    image: np.ndarray
    agent_internal: np.ndarray
    internal_scale: float


@functools.lru_cache(maxsize=32)
def _rays_in_camera(camera: CameraSpec, scale: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Unit ray directions `(h*w, 3)` in the camera frame through the pixel centres (read-only)."""
    intrinsics = camera.intrinsics(scale)
    u, v = np.meshgrid(np.arange(intrinsics.width, dtype=np.float64), np.arange(intrinsics.height, dtype=np.float64))
    rays_cam = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones_like(u)], -1)
    rays_cam = rays_cam.reshape(-1, 3)
    rays_cam /= np.linalg.norm(rays_cam, axis=1, keepdims=True)
    rays_cam.flags.writeable = False
    return rays_cam, (intrinsics.height, intrinsics.width)


def camera_rays(
    camera: CameraSpec, scale: float, global_from_ego: SE3
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Origins `(h*w, 3)`, unit directions `(h*w, 3)` (map frame) through the pixel centres of the
    camera's image resized by `scale`, row-major, and `(h, w)`."""
    rays_cam, shape = _rays_in_camera(camera, float(scale))
    global_from_camera = global_from_ego @ camera.ego_from_camera()
    directions = global_from_camera.apply_vectors(rays_cam)
    origins = np.broadcast_to(global_from_camera.translation, directions.shape)
    return origins, directions, shape


def ground_colors(layout: LocationLayout, xy: np.ndarray) -> np.ndarray:
    offset = layout.road_offset(xy)
    magnitude = np.abs(offset)
    colors = np.empty((len(xy), 3), dtype=np.float32)
    colors[:] = (96, 124, 74)  # planted verges and plazas
    colors[magnitude <= SIDEWALK_OUTER_M] = (168, 164, 156)
    road = magnitude <= ROAD_HALF_WIDTH_M
    colors[road] = (74, 74, 78)
    paint = road & lane_marking(layout, xy, offset)
    colors[paint] = (232, 232, 226)
    colors[paint & (magnitude < 0.3)] = (222, 188, 60)  # the centre line is yellow
    # Kerb stones between road and sidewalk.
    colors[np.abs(magnitude - ROAD_HALF_WIDTH_M) < 0.15] = (200, 200, 196)
    return colors


def shade_hits(
    mesh: SceneMesh,
    layout: LocationLayout,
    origins: np.ndarray,
    directions: np.ndarray,
    distance: np.ndarray,
    triangle: np.ndarray,
    normal: np.ndarray,
    sun_direction: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """RGB float32 colours `(N, 3)` of ray hits (sky where `triangle == -1`), without noise: the
    reference twin of `shading.shade_image` (which the generator uses)."""
    del rng  # shading is deterministic; sensor noise is added by the caller
    hit = triangle >= 0
    safe = np.maximum(triangle, 0)
    base = mesh.color_rgb[safe].astype(np.float32)  # (N, 3)
    material = mesh.material[safe]
    ground = np.flatnonzero(hit & (material == int(Material.GROUND)))
    if ground.size:
        points = origins[ground, :2] + directions[ground, :2] * distance[ground, None]
        base[ground] = ground_colors(layout, points)
    facade = np.flatnonzero(
        hit & (material == int(Material.BUILDING)) & (mesh.agent[safe] < 0) & (np.abs(normal[:, 2]) < 0.5)
    )
    if facade.size:
        points = origins[facade] + directions[facade] * distance[facade, None]
        n_facade = normal[facade]
        along = np.where(np.abs(n_facade[:, 1]) > np.abs(n_facade[:, 0]), points[:, 0], points[:, 1])
        storey = np.mod(points[:, 2], 3.2)
        bay = np.mod(along, 3.0)
        window = (storey > 1.0) & (storey < 2.3) & (bay > 0.7) & (bay < 2.3) & (points[:, 2] > 0.8)
        base[facade[window]] = base[facade[window]] * 0.35 + np.array([40.0, 60.0, 80.0], np.float32)
    lambert = np.clip(normal @ sun_direction.astype(np.float32), 0.0, 1.0)
    light = np.where(material == int(Material.GLASS), 0.8 + 0.3 * lambert, 0.5 + 0.55 * lambert)
    haze = (1.0 - np.exp(-np.where(hit, distance, 0.0) / 350.0)).astype(np.float32)[:, None]
    colors = (1 - haze) * base * light[:, None] + haze * HAZE_RGB.astype(np.float32)
    # Sky: brighter and paler towards the horizon.
    sky = np.flatnonzero(~hit)
    elevation = np.clip(directions[sky, 2], 0.0, 1.0).astype(np.float32)[:, None]
    colors[sky] = (1 - elevation) * np.array([205.0, 218.0, 232.0], np.float32) + elevation * np.array(
        [95.0, 140.0, 205.0], np.float32
    )
    return colors


@dataclass(frozen=True, slots=True, eq=False)
class CameraCast:
    """The ray-cast half of rendering one camera image (see `cast_camera`).

    Attributes:
        triangle: `(h, w)` int32 triangle hit through each cast pixel centre (-1: sky).
        distance_m: `(h, w)` float32 distance along the unit ray (inf: sky).
        agent: `(h, w)` int64 agent index hit (-1: none).
        global_from_camera: the camera pose (map frame).
    """

    triangle: np.ndarray
    distance_m: np.ndarray
    agent: np.ndarray
    global_from_camera: SE3


def camera_ray_bundle(camera: CameraSpec, scale: float, global_from_ego: SE3) -> tuple[np.ndarray, tuple[int, int]]:
    """`(h*w, 6)` float32 rays (origin, unit direction; map frame) through the pixel centres of the
    camera's image resized by `scale`, row-major, and `(h, w)`: `camera_rays`, compiled."""
    intrinsics = camera.intrinsics(scale)
    global_from_camera = global_from_ego @ camera.ego_from_camera()
    rays = pinhole_rays(
        np.linalg.inv(intrinsics.matrix),
        global_from_camera.rotation,
        global_from_camera.translation,
        intrinsics.height,
        intrinsics.width,
    )
    return rays, (intrinsics.height, intrinsics.width)


def cast_camera(caster: RayCaster, camera: CameraSpec, global_from_ego: SE3, cast_scale: float) -> CameraCast:
    """Ray-cast one camera at `cast_scale` x 1600 x 900 (one ray per pixel centre)."""
    rays, (h, w) = camera_ray_bundle(camera, cast_scale, global_from_ego)
    hits = caster.cast_packed(rays)
    agent = np.where(hits.triangle >= 0, caster.mesh.agent[np.maximum(hits.triangle, 0)], -1).reshape(h, w)
    return CameraCast(
        hits.triangle.astype(np.int32).reshape(h, w),
        hits.distance_m.astype(np.float32).reshape(h, w),
        agent,
        global_from_ego @ camera.ego_from_camera(),
    )


def shade_camera(
    cast: CameraCast,
    mesh: SceneMesh,
    loops: np.ndarray,
    camera: CameraSpec,
    output_scale: float,
    shade_scale: float,
    sun_direction: np.ndarray,
    noise_seed: int,
) -> np.ndarray:
    """Shade a cast at `shade_scale` x 1600 x 900 (`shading.shade_image`) and resize it (bilinear,
    `cv2.resize`) to `output_scale` x 1600 x 900; returns `(H, W, 3)` uint8 RGB. Releases the GIL
    while shading and resizing."""
    shade = camera.intrinsics(shade_scale)
    image = shade_image(
        cast.triangle,
        cast.distance_m,
        np.linalg.inv(shade.matrix),
        cast.global_from_camera.rotation,
        cast.global_from_camera.translation,
        triangle_planes(mesh.vertices, mesh.triangles),
        mesh.material,
        mesh.agent,
        mesh.color_rgb,
        loops,
        sun_direction,
        noise_seed,
        shade.height,
        shade.width,
    )
    output = camera.intrinsics(output_scale)
    if (shade.height, shade.width) != (output.height, output.width):
        image = cv2.resize(image, (output.width, output.height), interpolation=cv2.INTER_LINEAR)
    return image


def shading_scale(render_scale: float) -> float:
    """Resolution (fraction of the output's) at which an image ray-cast at `render_scale` is shaded."""
    return max(float(render_scale), SHADE_SCALE)


def render_camera(
    caster: RayCaster,
    layout: LocationLayout,
    camera: CameraSpec,
    global_from_ego: SE3,
    output_scale: float,
    render_scale: float,
    sun_direction: np.ndarray,
    rng: np.random.Generator,
) -> RenderedImage:
    """Render one camera image at `output_scale` x 1600 x 900: ray-cast at `render_scale` of that,
    shaded at `shading_scale(render_scale)` of it (textures sharp, silhouettes at the cast
    resolution), resized to the output. `rng` gives the sensor noise's seed (one draw)."""
    noise_seed = int(rng.integers(0, 2**63))
    cast = cast_camera(caster, camera, global_from_ego, output_scale * render_scale)
    image = shade_camera(
        cast,
        caster.mesh,
        loop_table(layout),
        camera,
        output_scale,
        output_scale * shading_scale(render_scale),
        sun_direction,
        noise_seed,
    )
    return RenderedImage(image, cast.agent, render_scale)


def box_ray_interval(
    origins: np.ndarray, directions: np.ndarray, center: np.ndarray, size_wlh: np.ndarray, yaw: float
) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances `(N,)` of rays through an upright box (slab method); entry > exit
    where a ray misses."""
    c, s = np.cos(yaw), np.sin(yaw)
    rotation_t = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # box_from_map rotation
    o = (origins - center) @ rotation_t.T
    d = directions @ rotation_t.T
    half = np.array([size_wlh[1], size_wlh[0], size_wlh[2]]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    return t_near, t_far


def visible_fractions(
    caster: RayCaster,
    cameras: tuple[CameraSpec, ...],
    global_from_ego: SE3,
    agent_indices: np.ndarray,
    centers: np.ndarray,
    sizes_wlh: np.ndarray,
    yaws: np.ndarray,
) -> np.ndarray:
    """Visible fraction in [0, 1] of each listed agent's box over all cameras (0 if in no image).

    Only the coarse rays inside some box's image rectangle are cast (the others count for nothing).

    Args:
        agent_indices: `(K,)` agent indices (as in `caster.mesh.agent`).
        centers, sizes_wlh, yaws: `(K, 3)`, `(K, 3)`, `(K,)` their boxes (map frame).
    """
    visible = np.zeros(len(agent_indices), np.int64)
    occluded = np.zeros(len(agent_indices), np.int64)
    corners = box_corners(centers, sizes_wlh, yaws)  # (K, 8, 3)
    for camera in cameras:
        intrinsics = camera.intrinsics(VISIBILITY_SCALE)
        h, w = intrinsics.height, intrinsics.width
        camera_from_global = (global_from_ego @ camera.ego_from_camera()).inverse()
        corners_cam = camera_from_global.apply(corners.reshape(-1, 3)).reshape(corners.shape)  # (K, 8, 3)
        depth = corners_cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = corners_cam[..., 0] / depth * intrinsics.fx + intrinsics.cx
            v = corners_cam[..., 1] / depth * intrinsics.fy + intrinsics.cy
        straddles = np.any(depth <= 0.1, axis=1) & np.any(depth > 0.1, axis=1)
        in_front = np.all(depth > 0.1, axis=1)
        u_lo = np.where(straddles, 0, np.floor(np.nan_to_num(u.min(axis=1), nan=0.0).clip(-1, w + 1)).astype(int))
        u_hi = np.where(straddles, w, np.ceil(np.nan_to_num(u.max(axis=1), nan=0.0).clip(-1, w + 1)).astype(int) + 1)
        v_lo = np.where(straddles, 0, np.floor(np.nan_to_num(v.min(axis=1), nan=0.0).clip(-1, h + 1)).astype(int))
        v_hi = np.where(straddles, h, np.ceil(np.nan_to_num(v.max(axis=1), nan=0.0).clip(-1, h + 1)).astype(int) + 1)
        u_lo, v_lo = np.maximum(u_lo, 0), np.maximum(v_lo, 0)
        u_hi, v_hi = np.minimum(u_hi, w), np.minimum(v_hi, h)
        candidates = np.flatnonzero((in_front | straddles) & (u_lo < u_hi) & (v_lo < v_hi))
        if candidates.size == 0:
            continue
        rects = np.stack([u_lo, u_hi, v_lo, v_hi], axis=1)[candidates]
        # Cast only the rays some rectangle covers (row-wise difference array -> coverage mask).
        cover = np.zeros((h + 1, w + 1), np.int32)
        np.add.at(cover, (rects[:, 2], rects[:, 0]), 1)
        np.add.at(cover, (rects[:, 2], rects[:, 1]), -1)
        np.add.at(cover, (rects[:, 3], rects[:, 0]), -1)
        np.add.at(cover, (rects[:, 3], rects[:, 1]), 1)
        needed = np.flatnonzero(np.cumsum(np.cumsum(cover, axis=0), axis=1)[:h, :w].reshape(-1) > 0)
        rays, _ = camera_ray_bundle(camera, VISIBILITY_SCALE, global_from_ego)
        hits = caster.cast_packed(rays[needed])
        owner = np.full(h * w, -1, np.int64)
        distance = np.full(h * w, np.inf)
        owner[needed] = np.where(hits.triangle >= 0, caster.mesh.agent[np.maximum(hits.triangle, 0)], -1)
        distance[needed] = hits.distance_m
        seen, hidden = count_box_rays(
            rays[:, :3],
            rays[:, 3:],
            owner,
            distance,
            w,
            rects,
            agent_indices[candidates],
            centers[candidates],
            sizes_wlh[candidates],
            yaws[candidates],
        )
        visible[candidates] += seen
        occluded[candidates] += hidden
    total = visible + occluded
    return np.where(total > 0, visible / np.maximum(total, 1), 0.0)


def box_corners(centers: np.ndarray, sizes_wlh: np.ndarray, yaws: np.ndarray) -> np.ndarray:
    """`(K, 8, 3)` corners of upright boxes given centres `(K, 3)`, sizes `(K, 3)` (w, l, h), yaws `(K,)`."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    local = signs[None] * (sizes_wlh[:, [1, 0, 2]] / 2)[:, None, :]  # x along l, y along w
    c, s = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return centers[:, None, :] + np.stack([x, y, local[..., 2]], axis=-1)


def visibility_token(fraction: float) -> str:
    """nuScenes visibility token: '1' 0-40 %, '2' 40-60 %, '3' 60-80 %, '4' 80-100 %."""
    if fraction < 0.4:
        return "1"
    if fraction < 0.6:
        return "2"
    if fraction < 0.8:
        return "3"
    return "4"
