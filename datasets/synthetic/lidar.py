"""The spinning lidar: 32 beams x 1084 firings a sweep, ray-cast, with noise, intensity and ring index.

A sweep is simulated as the real sensor records it: each firing leaves from where the car is at
its firing time (the ego keeps moving during the 50 ms revolution), the returns are then
motion-compensated into the LIDAR_TOP frame at the sweep timestamp, as nuScenes' points are.
Agents are frozen at the sweep timestamp (their annotation time), so the hits on an agent lie in
its annotated box. Like nuScenes' files, every firing gives one point: a ray that returns nothing
(sky, beyond range, dropped) is recorded at the sensor origin of its firing with intensity 0, and
the lowest beams hit the car's own roof.

Output columns (float32): x, y, z (LIDAR_TOP frame: x right, y forward, z up, metres),
intensity (0-255), ring index (0 = lowest beam).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np
import open3d as o3d

from avfusion.calibration.se3 import SE3
from avfusion.datasets.synthetic.geometry import _FRUSTUM_TRIANGLES, RayCaster, frustum_vertices
from avfusion.datasets.synthetic.layout import LocationLayout, Material
from avfusion.datasets.synthetic.rig import (
    EGO_FROM_LIDAR,
    LIDAR_BEAMS,
    LIDAR_FIRINGS_PER_SWEEP,
    LIDAR_MAX_RANGE_M,
    LIDAR_RANGE_NOISE_M,
    firing_directions_ego,
    firing_offsets_us,
)
from avfusion.datasets.synthetic.roads import LANE_WIDTH_M, ROAD_HALF_WIDTH_M, SIDEWALK_OUTER_M
from avfusion.datasets.synthetic.shading import (
    GROUND_KERB_FLAG,
    ground_class,
    hash_bits,
    irwin_hall_normal,
    loop_table,
)

# Lidar reflectivity per material (mean intensity at normal incidence, 0-255).
REFLECTIVITY = {
    Material.BUILDING: 28.0,
    Material.POLE: 40.0,
    Material.TRUNK: 18.0,
    Material.FOLIAGE: 12.0,
    Material.EGO_BODY: 25.0,
    Material.BODY: 30.0,
    Material.GLASS: 6.0,
    Material.TYRE: 4.0,
    Material.CLOTHES: 14.0,
    Material.TROUSERS: 10.0,
    Material.SKIN: 16.0,
    Material.CONE: 45.0,
    Material.REFLECTOR: 220.0,
    Material.BARRIER: 35.0,
    Material.MACHINE: 40.0,
    Material.LIGHT: 80.0,
    Material.WALL: 30.0,
    Material.FENCE: 25.0,
    Material.BIN: 20.0,
}
ROAD_REFLECTIVITY = 13.0
MARKING_REFLECTIVITY = 60.0
SIDEWALK_REFLECTIVITY = 24.0
PLAZA_REFLECTIVITY = 15.0
# By `shading.ground_classes` class (verge, sidewalk, road, white paint, yellow paint): the
# compiled twin of `ground_reflectivity`.
GROUND_CLASS_REFLECTIVITY = np.array(
    [PLAZA_REFLECTIVITY, SIDEWALK_REFLECTIVITY, ROAD_REFLECTIVITY, MARKING_REFLECTIVITY, MARKING_REFLECTIVITY]
)

# The car's body in the ego frame (x forward, y left, z up): (x range, y half width, z range).
# The cabin roof 0.38 m below the sensor catches about half of the lowest beams (fore and aft),
# the hood and boot a few more; from about ring 7 on the beams clear the car, as on the real
# nuScenes sweep (`avfusion bench realism`: rings 0-6 see the roof 49 % down to 23 % of the time).
EGO_ROOF = ((-0.9, 1.56), 0.55, (0.95, 1.46))
EGO_BODY = ((-0.9, 3.0), 0.87, (0.30, 0.80))
# The top of the windscreen just ahead of the roof: the steepest forward beams (rings 0-2) end on
# it without a return, as on the real sweep, where about a third of ring 0 returns nothing.
EGO_WINDSCREEN = ((1.56, 1.72), 0.70, (1.00, 1.44))


@dataclass(frozen=True, slots=True, eq=False)
class SimulatedSweep:
    """One simulated sweep.

    Attributes:
        points: `(N, 5)` float32 x, y, z, intensity, ring in the LIDAR_TOP frame at the sweep time.
        agent: `(N,)` int64 index of the agent each point hit, -1 for none.
    """

    points: np.ndarray
    agent: np.ndarray


@functools.lru_cache(maxsize=1)
def _ego_body_distances() -> np.ndarray:
    """`(F, B)` distance from the sensor to the car's own body along each beam (inf: misses it;
    -1: ends on the windscreen without a return).

    The body moves with the sensor, so this is the same for every sweep."""
    boxes = [EGO_ROOF, EGO_BODY, EGO_WINDSCREEN]
    center_xy = np.array([[(b[0][0] + b[0][1]) / 2, 0.0] for b in boxes])
    size_xy = np.array([[b[0][1] - b[0][0], 2 * b[1]] for b in boxes])
    vertices = frustum_vertices(
        center_xy,
        np.array([b[2][0] for b in boxes]),
        np.array([b[2][1] for b in boxes]),
        size_xy,
        size_xy,
        np.zeros(len(boxes)),
    )
    triangles = (_FRUSTUM_TRIANGLES[None] + 8 * np.arange(len(boxes))[:, None, None]).reshape(-1, 3)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(vertices.reshape(-1, 3), np.float32)),
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(triangles, np.uint32)),
    )
    directions = firing_directions_ego().reshape(-1, 3)
    origins = np.broadcast_to(EGO_FROM_LIDAR.translation, directions.shape)
    rays = np.concatenate([origins, directions], axis=1).astype(np.float32)
    result = scene.cast_rays(o3d.core.Tensor.from_numpy(rays))
    distance = result["t_hit"].numpy().astype(np.float64)
    windscreen = np.isfinite(distance) & (result["primitive_ids"].numpy() // 12 == 2)
    distance[windscreen] = -1.0
    return distance.reshape(LIDAR_FIRINGS_PER_SWEEP, LIDAR_BEAMS)


def ground_reflectivity(layout: LocationLayout, xy_map: np.ndarray) -> np.ndarray:
    """Lidar reflectivity of the ground at map points `(N, 2)`: asphalt, paint, concrete, plaza
    (the NumPy statement of the rule; the simulator uses `GROUND_CLASS_REFLECTIVITY` of `ground_classes`)."""
    offset = layout.road_offset(xy_map)
    magnitude = np.abs(offset)
    result = np.full(len(magnitude), PLAZA_REFLECTIVITY)
    result[magnitude <= SIDEWALK_OUTER_M] = SIDEWALK_REFLECTIVITY
    road = magnitude <= ROAD_HALF_WIDTH_M
    result[road] = ROAD_REFLECTIVITY
    result[road & lane_marking(layout, xy_map, offset)] = MARKING_REFLECTIVITY
    return result


def lane_marking(layout: LocationLayout, xy_map: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Whether map points `(N, 2)` at road offsets `offset` lie on paint: the double centre line,
    dashed lane dividers (3 m of paint every 9 m) and the solid edge lines of the travel lanes."""
    magnitude = np.abs(offset)
    centre = np.abs(magnitude - 0.15) < 0.06
    edge = np.abs(magnitude - 2 * LANE_WIDTH_M) < 0.08
    divider = np.abs(magnitude - LANE_WIDTH_M) < 0.07
    paint = centre | edge
    if divider.any():
        index = np.flatnonzero(divider)
        loops = layout.nearest_loop(xy_map[index])
        arc = np.zeros(index.size)
        for loop_index, loop in enumerate(layout.loops):
            m = loops == loop_index
            if m.any():
                arc[m] = loop.arc_of(xy_map[index[m]])
        paint[index] = np.mod(arc, 9.0) < 3.0
    return paint


_GROUND, _EGO_BODY, _GLASS = int(Material.GROUND), int(Material.EGO_BODY), int(Material.GLASS)
# Intensity spread and dark-surface dropouts, fitted by eye to the real sweep's unlabelled
# intensity histogram (`avfusion bench realism`): a per-surface log-normal texture and per-return
# speckle; returns whose expected intensity is under DARK_BELOW are lost up to DARK_DROPOUT of the
# time (dark paint, tyres, wet asphalt at grazing angles), glass loses GLASS_DROPOUT more.
TEXTURE_SIGMA = 0.45
SPECKLE_SIGMA = 0.35
DARK_BELOW = 4.0
DARK_DROPOUT = 0.2
GLASS_DROPOUT = 0.3
_TEXTURE_SEED = 0x5EED_7E47


@functools.lru_cache(maxsize=1)
def _material_reflectivity() -> np.ndarray:
    """`REFLECTIVITY` as a table indexed by `Material` value (0 where not listed)."""
    lookup = np.zeros(max(int(m) for m in Material) + 1)
    for key, value in REFLECTIVITY.items():
        lookup[int(key)] = value
    return lookup


@numba.njit(cache=True, nogil=True)
def _returns_kernel(
    body: np.ndarray,
    distance: np.ndarray,
    triangle: np.ndarray,
    normal: np.ndarray,
    directions: np.ndarray,
    origins: np.ndarray,
    material: np.ndarray,
    owner: np.ndarray,
    reflectivity: np.ndarray,
    ground_reflectivity: np.ndarray,
    loops: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    seed: np.uint64,
    points: np.ndarray,
    agent: np.ndarray,
) -> None:
    """Returns of one sweep from its first hits (see `simulate_sweep`); writes `points` `(n, 5)` and `agent` `(n,)`.

    Per ray: a dropout (1.5 %, rising to 51.5 % from 60 m to the maximum range; more on dark and
    glassy surfaces, see `DARK_DROPOUT`), Gaussian range noise, intensity = reflectivity x surface
    texture x (0.5 + 0.5 |cos incidence|) x range falloff x log-normal speckle (`SPECKLE_SIGMA`).
    The texture is a log-normal factor (`TEXTURE_SIGMA`) per agent, and per 2 m map cell of static
    surfaces (stable from sweep to sweep: a wall keeps its shade); the rest of the randomness comes
    from one 64-bit hash of (seed, ray index)."""
    for i in range(body.size):
        firing = i // LIDAR_BEAMS
        on_body = math.isfinite(body[i])
        blocked = on_body and body[i] < 0.0  # on the windscreen: no return
        d = body[i] if on_body else distance[i]
        tri = -1 if on_body else triangle[i]
        bits = hash_bits(seed, np.uint64(i))
        u_drop = float(bits & np.uint64(0xFFFF)) / 65536.0
        drop_probability = 0.015 + 0.5 * min(max((d - 60.0) / (LIDAR_MAX_RANGE_M - 60.0), 0.0), 1.0)
        valid = not blocked and (on_body or (math.isfinite(d) and d <= LIDAR_MAX_RANGE_M))
        px = origins[firing, 0] + directions[i, 0] * d if valid else 0.0
        py = origins[firing, 1] + directions[i, 1] * d if valid else 0.0
        pz = origins[firing, 2] + directions[i, 2] * d if valid else 0.0
        scene_hit = valid and not on_body and tri >= 0
        intensity = 0.0
        if valid:
            texture = 1.0
            if on_body:
                surface, cosine = reflectivity[_EGO_BODY], 0.7
            else:
                surface, cosine = (
                    0.0,
                    abs(
                        normal[i, 0] * directions[i, 0]
                        + normal[i, 1] * directions[i, 1]
                        + normal[i, 2] * directions[i, 2]
                    ),
                )
                if scene_hit:
                    if material[tri] == _GROUND:
                        surface = ground_reflectivity[ground_class(px, py, loops) % GROUND_KERB_FLAG]
                    else:
                        surface = reflectivity[material[tri]]
                    if owner[tri] >= 0:
                        key = np.uint64(1 << 40) + np.uint64(owner[tri])
                    else:
                        key = (
                            np.uint64(math.floor(px / 2.0) + (1 << 20)) * np.uint64(1 << 21)
                            + np.uint64(math.floor(py / 2.0) + (1 << 20))
                        ) * np.uint64(64) + np.uint64(math.floor(pz / 2.0) + 32)
                    texture = math.exp(TEXTURE_SIGMA * irwin_hall_normal(hash_bits(np.uint64(_TEXTURE_SEED), key)))
                    if material[tri] == _GLASS:
                        drop_probability += GLASS_DROPOUT
            falloff = 1.0 / (1.0 + (d / 80.0) ** 2)
            speckle = math.exp(SPECKLE_SIGMA * irwin_hall_normal(bits >> np.uint64(37)))
            expected = surface * texture * (0.5 + 0.5 * cosine) * (0.7 + 0.3 * falloff)
            if not on_body and expected < DARK_BELOW:
                drop_probability += DARK_DROPOUT * (1.0 - expected / DARK_BELOW)
            intensity = min(max(math.floor(expected * speckle + 0.5), 0.0), 255.0)
            valid = on_body or u_drop >= drop_probability
        if valid:
            d = d + LIDAR_RANGE_NOISE_M * irwin_hall_normal(bits >> np.uint64(16))
            px = origins[firing, 0] + directions[i, 0] * d
            py = origins[firing, 1] + directions[i, 1] * d
            pz = origins[firing, 2] + directions[i, 2] * d
        else:
            px, py, pz, intensity = origins[firing, 0], origins[firing, 1], origins[firing, 2], 0.0
        scene_hit = scene_hit and valid
        for row in range(3):
            points[i, row] = rotation[row, 0] * px + rotation[row, 1] * py + rotation[row, 2] * pz + translation[row]
        points[i, 3] = intensity
        points[i, 4] = i % LIDAR_BEAMS
        agent[i] = owner[tri] if scene_hit else -1


def simulate_sweep(
    caster: RayCaster, layout: LocationLayout, ego_poses_at, sweep_time_s: float, rng: np.random.Generator
) -> SimulatedSweep:
    """Simulate the sweep whose timestamp is `sweep_time_s` (seconds from the scene start).

    Args:
        caster: ray caster over the world mesh at `sweep_time_s`.
        layout: the location (for ground reflectivity).
        ego_poses_at: callable `times_s (K,) -> (xy (K, 2), yaw_rad (K,))`, the ego's planar pose.
        sweep_time_s: the sweep timestamp: the end of the revolution.
        rng: one draw from it seeds the per-ray noise (range noise, dropouts, intensity speckle).
    """
    firing_times = sweep_time_s + firing_offsets_us() * 1e-6  # (F,)
    xy, yaw = ego_poses_at(firing_times)
    c, s = np.cos(yaw), np.sin(yaw)
    directions_ego = firing_directions_ego()  # (F, B, 3)
    dx = c[:, None] * directions_ego[..., 0] - s[:, None] * directions_ego[..., 1]
    dy = s[:, None] * directions_ego[..., 0] + c[:, None] * directions_ego[..., 1]
    directions = np.stack([dx, dy, directions_ego[..., 2]], axis=-1)  # (F, B, 3) map frame
    mount = EGO_FROM_LIDAR.translation
    origin = np.stack(
        [xy[:, 0] + c * mount[0] - s * mount[1], xy[:, 1] + s * mount[0] + c * mount[1], np.full(yaw.shape, mount[2])],
        axis=-1,
    )  # (F, 3)
    origins = np.broadcast_to(origin[:, None, :], directions.shape)  # (F, B, 3)

    # Rays that hit the car's own body first never reach the scene: cast only the others.
    body = _ego_body_distances().reshape(-1)
    on_body = np.isfinite(body)
    free = np.flatnonzero(~on_body)
    hits = caster.cast(origins.reshape(-1, 3)[free], directions.reshape(-1, 3)[free])
    distance = body.copy()
    distance[free] = hits.distance_m
    triangle = np.full(body.size, -1, np.int64)
    triangle[free] = hits.triangle
    normal = np.zeros((body.size, 3), np.float32)
    normal[free] = hits.normal

    end_xy, end_yaw = ego_poses_at(np.array([sweep_time_s]))
    global_from_ego = SE3.from_yaw(float(end_yaw[0]), (float(end_xy[0, 0]), float(end_xy[0, 1]), 0.0))
    lidar_from_global = (global_from_ego @ EGO_FROM_LIDAR).inverse()
    points = np.empty((body.size, 5), np.float32)
    agent = np.empty(body.size, np.int64)
    _returns_kernel(
        body,
        distance,
        triangle,
        normal,
        np.ascontiguousarray(directions.reshape(-1, 3)),
        origin,
        caster.mesh.material,
        caster.mesh.agent,
        _material_reflectivity(),
        GROUND_CLASS_REFLECTIVITY,
        loop_table(layout),
        lidar_from_global.rotation,
        lidar_from_global.translation,
        np.uint64(rng.integers(0, 2**63)),
        points,
        agent,
    )
    return SimulatedSweep(points, agent)
