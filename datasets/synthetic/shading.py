"""Compiled (Numba) kernels of the synthetic sensors: ground classes, camera shading, visibility counts.

Each kernel has a NumPy twin that states the rule plainly and that the tests compare it with:
`ground_classes` vs `lidar.ground_reflectivity` / `cameras.ground_colors`, `shade_image` vs
`cameras.shade_hits`, `count_box_rays` vs the slab test of `cameras.box_ray_interval`.
The kernels never allocate inside their loops and release the GIL (`nogil=True`), so the generator
can shade one image while the main thread ray-casts the next.

Frames: map frame (x east, y north, z up, metres); camera frame x right, y down, z forward.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from avfusion.datasets.synthetic.layout import LocationLayout, Material
from avfusion.datasets.synthetic.roads import LANE_WIDTH_M, ROAD_HALF_WIDTH_M, SIDEWALK_OUTER_M

# Ground classes (`ground_classes`): the surface at a map point, refined from `Material.GROUND`.
GROUND_VERGE = 0  # planted verges and plazas beyond the sidewalk
GROUND_SIDEWALK = 1
GROUND_ROAD = 2
GROUND_PAINT = 3  # white lane paint: edge lines and dashed dividers
GROUND_CENTRE_LINE = 4  # the yellow double centre line
GROUND_KERB_FLAG = 8  # added to the class where kerb stones lie (the band around the road edge)

GROUND_RGB = np.array([[96, 124, 74], [168, 164, 156], [74, 74, 78], [232, 232, 226], [222, 188, 60]], np.float64)
KERB_RGB = np.array([200.0, 200.0, 196.0])
HAZE_RGB = np.array([200.0, 208.0, 215.0])
SKY_HORIZON_RGB = np.array([205.0, 218.0, 232.0])
SKY_ZENITH_RGB = np.array([95.0, 140.0, 205.0])
WINDOW_RGB = np.array([40.0, 60.0, 80.0])
HAZE_DISTANCE_M = 350.0
NOISE_STD = 2.5  # camera sensor noise (8-bit levels)

_KERB_HALF_WIDTH_M = 0.15
_CENTRE_LINE_M, _CENTRE_HALF_WIDTH_M = 0.15, 0.06
_EDGE_LINE_M, _EDGE_HALF_WIDTH_M = 2 * LANE_WIDTH_M, 0.08
_DIVIDER_HALF_WIDTH_M = 0.07
_DASH_PERIOD_M, _DASH_LENGTH_M = 9.0, 3.0
_YELLOW_BELOW_M = 0.3
_GROUND, _BUILDING, _GLASS = int(Material.GROUND), int(Material.BUILDING), int(Material.GLASS)


def loop_table(layout: LocationLayout) -> np.ndarray:
    """`(L, 5)` float64 rows `(centre x, centre y, half x, half y, corner radius)` of the layout's loops."""
    return np.array(
        [
            (loop.center_xy[0], loop.center_xy[1], loop.half_x_m, loop.half_y_m, loop.corner_radius_m)
            for loop in layout.loops
        ],
        dtype=np.float64,
    ).reshape(-1, 5)


@numba.njit(cache=True, nogil=True)
def _signed_offset(x: float, y: float, a: float, b: float, r: float) -> float:
    qx = abs(x) - (a - r)
    qy = abs(y) - (b - r)
    ox, oy = max(qx, 0.0), max(qy, 0.0)
    outside = math.sqrt(ox * ox + oy * oy)
    inside = min(max(qx, qy), 0.0)
    return outside + inside - r


@numba.njit(cache=True, nogil=True)
def _arc_position(x: float, y: float, a: float, b: float, r: float) -> float:
    """Scalar `roads.arc_position` (same branch order and tie rules)."""
    ax, by = a - r, b - r
    cx = min(max(x, -ax), ax)
    cy = min(max(y, -by), by)
    dx, dy = x - cx, y - cy
    arc = 0.5 * math.pi * r
    sx, sy = 2.0 * ax, 2.0 * by
    if dx != 0.0 and dy != 0.0:
        phi = math.atan2(dy, dx)
        if dx > 0.0 and dy < 0.0:
            start, phi0 = sx, -0.5 * math.pi
        elif dx > 0.0 and dy > 0.0:
            start, phi0 = sx + arc + sy, 0.0
        elif dx < 0.0 and dy > 0.0:
            start, phi0 = 2.0 * sx + 2.0 * arc + sy, 0.5 * math.pi
        else:
            start, phi0 = 2.0 * sx + 3.0 * arc + 2.0 * sy, math.pi
        s = start + r * ((phi - phi0) % (2.0 * math.pi))
    else:
        side = 0
        best = y + b
        if a - x < best:
            side, best = 1, a - x
        if b - y < best:
            side, best = 2, b - y
        if x + a < best:
            side = 3
        if side == 0:
            s = cx + ax
        elif side == 1:
            s = sx + arc + (cy + by)
        elif side == 2:
            s = sx + 2.0 * arc + sy + (ax - cx)
        else:
            s = 2.0 * sx + 3.0 * arc + sy + (by - cy)
    return s % (4.0 * ax + 4.0 * by + 2.0 * math.pi * r)


@numba.njit(cache=True, nogil=True)
def ground_class(x: float, y: float, loops: np.ndarray) -> int:
    """Ground class (plus `GROUND_KERB_FLAG`) at map point (x, y); the nearest loop decides (first on ties)."""
    nearest = 0
    offset = np.inf
    for i in range(loops.shape[0]):
        o = _signed_offset(x - loops[i, 0], y - loops[i, 1], loops[i, 2], loops[i, 3], loops[i, 4])
        if abs(o) < abs(offset):
            offset, nearest = o, i
    magnitude = abs(offset)
    kind = GROUND_VERGE
    if magnitude <= SIDEWALK_OUTER_M:
        kind = GROUND_SIDEWALK
    if magnitude <= ROAD_HALF_WIDTH_M:
        kind = GROUND_ROAD
        if abs(magnitude - _CENTRE_LINE_M) < _CENTRE_HALF_WIDTH_M:
            kind = GROUND_CENTRE_LINE if magnitude < _YELLOW_BELOW_M else GROUND_PAINT
        elif abs(magnitude - _EDGE_LINE_M) < _EDGE_HALF_WIDTH_M:
            kind = GROUND_PAINT
        elif abs(magnitude - LANE_WIDTH_M) < _DIVIDER_HALF_WIDTH_M:
            arc = _arc_position(
                x - loops[nearest, 0], y - loops[nearest, 1], loops[nearest, 2], loops[nearest, 3], loops[nearest, 4]
            )
            if arc % _DASH_PERIOD_M < _DASH_LENGTH_M:
                kind = GROUND_PAINT
    if abs(magnitude - ROAD_HALF_WIDTH_M) < _KERB_HALF_WIDTH_M:
        kind += GROUND_KERB_FLAG
    return kind


@numba.njit(cache=True, nogil=True)
def _ground_classes_kernel(xy: np.ndarray, loops: np.ndarray, out: np.ndarray) -> None:
    for i in range(xy.shape[0]):
        out[i] = ground_class(xy[i, 0], xy[i, 1], loops)


def ground_classes(layout: LocationLayout, xy_map: np.ndarray) -> np.ndarray:
    """Ground class `(N,)` uint8 (`GROUND_*`, plus `GROUND_KERB_FLAG` on kerb stones) of map points `(N, 2)`."""
    xy = np.ascontiguousarray(xy_map, dtype=np.float64).reshape(-1, 2)
    out = np.empty(len(xy), np.uint8)
    _ground_classes_kernel(xy, loop_table(layout), out)
    return out


def triangle_planes(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """`(T, 4)` float64 planes `(n_x, n_y, n_z, d)` of triangles (`n . p = d` on the plane), with the
    unit normal `n = (v1 - v0) x (v2 - v0) / |.|`, the orientation Open3D reports for a hit."""
    v = vertices.astype(np.float64)[triangles]  # (T, 3, 3)
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    planes = np.empty((len(v), 4))
    planes[:, 0] = e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1]
    planes[:, 1] = e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2]
    planes[:, 2] = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    planes[:, :3] /= np.maximum(np.sqrt(np.sum(planes[:, :3] ** 2, axis=1, keepdims=True)), 1e-300)
    planes[:, 3] = np.sum(planes[:, :3] * v[:, 0], axis=1)
    return planes


@numba.njit(cache=True, nogil=True)
def _pinhole_rays_kernel(inv_k: np.ndarray, rotation: np.ndarray, origin: np.ndarray, out: np.ndarray) -> None:
    height, width = out.shape[0], out.shape[1]
    for row in range(height):
        for col in range(width):
            cx = inv_k[0, 0] * col + inv_k[0, 1] * row + inv_k[0, 2]
            cy = inv_k[1, 0] * col + inv_k[1, 1] * row + inv_k[1, 2]
            norm = math.sqrt(cx * cx + cy * cy + 1.0)
            cx, cy, cz = cx / norm, cy / norm, 1.0 / norm
            for axis in range(3):
                out[row, col, axis] = origin[axis]
                out[row, col, 3 + axis] = rotation[axis, 0] * cx + rotation[axis, 1] * cy + rotation[axis, 2] * cz


def pinhole_rays(
    inv_intrinsics: np.ndarray,
    global_from_camera_rotation: np.ndarray,
    camera_origin: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """`(height * width, 6)` float32 rays `(origin, unit direction)` (map frame) through the pixel
    centres of an image, row-major; the layout Open3D's `cast_rays` takes. Pixel `(row, col)`'s
    camera-frame direction is `inv_intrinsics @ (col, row, 1)`, normalized (as in `shade_image`)."""
    out = np.empty((height, width, 6), np.float32)
    _pinhole_rays_kernel(
        np.ascontiguousarray(inv_intrinsics, np.float64),
        np.ascontiguousarray(global_from_camera_rotation, np.float64),
        np.ascontiguousarray(camera_origin, np.float64),
        out,
    )
    return out.reshape(-1, 6)


@numba.njit(cache=True, nogil=True)
def _mix64(z: np.uint64) -> np.uint64:
    """splitmix64's finalizer: a well-mixed 64-bit hash of `z`."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def hash_bits(seed: np.uint64, index: np.uint64) -> np.uint64:
    """64 well-mixed bits that depend only on (seed, index): per-element randomness that is the
    same whatever order (or thread) elements are processed in."""
    return _mix64(seed + index * np.uint64(0x9E3779B97F4A7C15))


@numba.njit(cache=True, nogil=True)
def irwin_hall_normal(bits: np.uint64) -> float:
    """A near-normal draw (mean 0, std 1, |z| <= 3) from the low 21 of `bits`: the sum of three
    7-bit uniforms (Irwin-Hall, bell-shaped), several times cheaper than Box-Muller."""
    mask = np.uint64(127)
    total = (bits & mask) + ((bits >> np.uint64(7)) & mask) + ((bits >> np.uint64(14)) & mask)
    return (float(total) - 190.5) / 64.0  # the sum's mean 3 * 63.5 and std sqrt(3 * (128**2 - 1) / 12)


@numba.njit(cache=True, nogil=True)
def _shade_kernel(
    cast_triangle: np.ndarray,
    cast_distance: np.ndarray,
    inv_k: np.ndarray,
    rotation: np.ndarray,
    origin: np.ndarray,
    planes: np.ndarray,
    material: np.ndarray,
    agent: np.ndarray,
    color: np.ndarray,
    loops: np.ndarray,
    sun: np.ndarray,
    noise_seed: np.uint64,
    noise_std: float,
    out: np.ndarray,
) -> None:
    height, width = out.shape[0], out.shape[1]
    cast_h, cast_w = cast_triangle.shape
    sy, sx = cast_h / height, cast_w / width
    rgb = np.empty(3)
    for row in range(height):
        nearest_row = min(max(math.floor((row + 0.5) * sy), 0), cast_h - 1)
        for col in range(width):
            nearest_col = min(max(math.floor((col + 0.5) * sx), 0), cast_w - 1)
            # Unit ray through the pixel centre, camera -> map frame.
            cx = inv_k[0, 0] * col + inv_k[0, 1] * row + inv_k[0, 2]
            cy = inv_k[1, 0] * col + inv_k[1, 1] * row + inv_k[1, 2]
            norm = math.sqrt(cx * cx + cy * cy + 1.0)
            cx, cy, cz = cx / norm, cy / norm, 1.0 / norm
            dx = rotation[0, 0] * cx + rotation[0, 1] * cy + rotation[0, 2] * cz
            dy = rotation[1, 0] * cx + rotation[1, 1] * cy + rotation[1, 2] * cz
            dz = rotation[2, 0] * cx + rotation[2, 1] * cy + rotation[2, 2] * cz
            tri = cast_triangle[nearest_row, nearest_col]
            if tri < 0:
                elevation = min(max(dz, 0.0), 1.0)
                for c in range(3):
                    rgb[c] = (1.0 - elevation) * SKY_HORIZON_RGB[c] + elevation * SKY_ZENITH_RGB[c]
            else:
                nx, ny, nz, d = planes[tri, 0], planes[tri, 1], planes[tri, 2], planes[tri, 3]
                # The surface the nearest cast ray hit, intersected with this pixel's own ray:
                # exact inside a face, clamped where the face's plane runs off at a grazing angle.
                cast_t = cast_distance[nearest_row, nearest_col]
                denominator = nx * dx + ny * dy + nz * dz
                t = cast_t
                if abs(denominator) > 1e-9:
                    t = (d - (nx * origin[0] + ny * origin[1] + nz * origin[2])) / denominator
                    t = min(max(t, 0.5 * cast_t), 2.0 * cast_t)
                px, py, pz = origin[0] + t * dx, origin[1] + t * dy, origin[2] + t * dz
                m = material[tri]
                for c in range(3):
                    rgb[c] = color[tri, c]
                if m == _GROUND:
                    kind = ground_class(px, py, loops)
                    if kind >= GROUND_KERB_FLAG:
                        for c in range(3):
                            rgb[c] = KERB_RGB[c]
                    else:
                        for c in range(3):
                            rgb[c] = GROUND_RGB[kind, c]
                elif m == _BUILDING and agent[tri] < 0 and abs(nz) < 0.5:
                    along = px if abs(ny) > abs(nx) else py
                    storey = pz % 3.2
                    bay = along % 3.0
                    if 1.0 < storey < 2.3 and 0.7 < bay < 2.3 and pz > 0.8:
                        for c in range(3):
                            rgb[c] = rgb[c] * 0.35 + WINDOW_RGB[c]
                lambert = min(max(nx * sun[0] + ny * sun[1] + nz * sun[2], 0.0), 1.0)
                light = 0.8 + 0.3 * lambert if m == _GLASS else 0.5 + 0.55 * lambert
                haze = 1.0 - math.exp(-t / HAZE_DISTANCE_M)
                for c in range(3):
                    rgb[c] = (1.0 - haze) * rgb[c] * light + haze * HAZE_RGB[c]
            bits = hash_bits(noise_seed, np.uint64(row * width + col))  # 21 bits a channel
            for c in range(3):
                value = rgb[c] + noise_std * irwin_hall_normal(bits >> np.uint64(21 * c))
                out[row, col, c] = np.uint8(min(max(math.floor(value + 0.5), 0.0), 255.0))


def shade_image(
    cast_triangle: np.ndarray,
    cast_distance: np.ndarray,
    inv_intrinsics: np.ndarray,
    global_from_camera_rotation: np.ndarray,
    camera_origin: np.ndarray,
    planes: np.ndarray,
    material: np.ndarray,
    agent: np.ndarray,
    color_rgb: np.ndarray,
    loops: np.ndarray,
    sun_direction: np.ndarray,
    noise_seed: int,
    height: int,
    width: int,
    noise_std: float = NOISE_STD,
) -> np.ndarray:
    """Shade an `(height, width, 3)` uint8 RGB image from a ray-cast at a coarser (or equal) resolution.

    Each pixel takes the triangle of the nearest cast ray, intersects its own ray with that
    triangle's plane (so textures such as lane paint and windows stay sharp at the shading
    resolution), and shades the point like `cameras.shade_hits`: base colour by material and
    ground class, windows on facades, Lambert light from the sun, distance haze, a sky gradient
    where the cast ray hit nothing, then Gaussian sensor noise (std `noise_std`, a pure function of
    `noise_seed` and the pixel) and rounding.

    Args:
        cast_triangle, cast_distance: `(h, w)` int32 triangle index (-1: sky) and float32 distance
            (m) of the cast rays through the pixel centres of the `(h, w)` image.
        inv_intrinsics: `(3, 3)` inverse intrinsic matrix of the `(height, width)` image.
        global_from_camera_rotation, camera_origin: `(3, 3)` and `(3,)` the camera pose (map frame).
        planes: `(T, 4)` `triangle_planes` of the mesh; material, agent `(T,)` int64; color_rgb `(T, 3)` uint8.
        loops: `loop_table(layout)`; sun_direction: `(3,)` unit vector towards the sun.
    """
    out = np.empty((height, width, 3), np.uint8)
    _shade_kernel(
        np.ascontiguousarray(cast_triangle, np.int32),
        np.ascontiguousarray(cast_distance, np.float32),
        np.ascontiguousarray(inv_intrinsics, np.float64),
        np.ascontiguousarray(global_from_camera_rotation, np.float64),
        np.ascontiguousarray(camera_origin, np.float64),
        planes,
        material,
        agent,
        color_rgb,
        loops,
        np.ascontiguousarray(sun_direction, np.float64),
        np.uint64(noise_seed),
        float(noise_std),
        out,
    )
    return out


@numba.njit(cache=True, nogil=True)
def _count_box_rays_kernel(
    origins: np.ndarray,
    directions: np.ndarray,
    owner: np.ndarray,
    distance: np.ndarray,
    width: int,
    rects: np.ndarray,
    agents: np.ndarray,
    centers: np.ndarray,
    half_lwh: np.ndarray,
    yaws: np.ndarray,
    visible: np.ndarray,
    occluded: np.ndarray,
) -> None:
    bo = np.empty(3)  # ray origin and direction in the box frame (x along the length)
    bd = np.empty(3)
    for k in range(rects.shape[0]):
        c, s = math.cos(yaws[k]), math.sin(yaws[k])
        for row in range(rects[k, 2], rects[k, 3]):
            for col in range(rects[k, 0], rects[k, 1]):
                i = row * width + col
                ox, oy = origins[i, 0] - centers[k, 0], origins[i, 1] - centers[k, 1]
                bo[0], bo[1], bo[2] = c * ox + s * oy, -s * ox + c * oy, origins[i, 2] - centers[k, 2]
                dx, dy = directions[i, 0], directions[i, 1]
                bd[0], bd[1], bd[2] = c * dx + s * dy, -s * dx + c * dy, directions[i, 2]
                t_near, t_far = -np.inf, np.inf
                for axis in range(3):
                    if bd[axis] != 0.0:
                        t1 = (-half_lwh[k, axis] - bo[axis]) / bd[axis]
                        t2 = (half_lwh[k, axis] - bo[axis]) / bd[axis]
                        t_near = max(t_near, min(t1, t2))
                        t_far = min(t_far, max(t1, t2))
                    elif abs(bo[axis]) > half_lwh[k, axis]:
                        t_near, t_far = np.inf, -np.inf  # parallel to the slab and outside it
                if not (t_near <= t_far and t_far > 0.0):
                    continue
                if owner[i] == agents[k]:
                    visible[k] += 1
                elif distance[i] < max(t_near, 0.0):
                    occluded[k] += 1


def count_box_rays(
    origins: np.ndarray,
    directions: np.ndarray,
    owner: np.ndarray,
    distance_m: np.ndarray,
    width: int,
    rects: np.ndarray,
    agents: np.ndarray,
    centers: np.ndarray,
    sizes_wlh: np.ndarray,
    yaws: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """For each of K upright boxes, count the rays of its pixel rectangle that enter the box and
    first hit the box's agent (visible) or something else nearer than the box (occluded).

    Args:
        origins, directions: `(h*w, 3)` float rays (map frame, unit directions), row-major over a
            `width`-wide image (views into `pinhole_rays`' output are fine).
        owner, distance_m: `(h*w,)` the agent each ray hits first (-1: none) and at what distance (m, inf: nothing).
        rects: `(K, 4)` int64 pixel rectangles `(col_lo, col_hi, row_lo, row_hi)`, half-open.
        agents: `(K,)` agent index of each box; centers `(K, 3)`, sizes_wlh `(K, 3)`, yaws `(K,)` (map frame).
    Returns:
        `(visible (K,), occluded (K,))` int64 ray counts.
    """
    visible = np.zeros(len(agents), np.int64)
    occluded = np.zeros(len(agents), np.int64)
    half_lwh = np.ascontiguousarray(np.asarray(sizes_wlh, np.float64)[:, [1, 0, 2]] / 2)
    _count_box_rays_kernel(
        origins,
        directions,
        np.ascontiguousarray(owner, np.int64),
        np.ascontiguousarray(distance_m, np.float64),
        int(width),
        np.ascontiguousarray(rects, np.int64),
        np.ascontiguousarray(agents, np.int64),
        np.ascontiguousarray(centers, np.float64),
        half_lwh,
        np.ascontiguousarray(yaws, np.float64),
        visible,
        occluded,
    )
    return visible, occluded
