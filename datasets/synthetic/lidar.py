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
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from avfusion.calibration.se3 import SE3
from avfusion.datasets.synthetic.geometry import RayCaster, frustum_vertices, _FRUSTUM_TRIANGLES
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
}
ROAD_REFLECTIVITY = 9.0
MARKING_REFLECTIVITY = 60.0
SIDEWALK_REFLECTIVITY = 18.0
PLAZA_REFLECTIVITY = 12.0

# The car's body in the ego frame (x forward, y left, z up): (x range, y half width, z range).
# The cabin roof 0.38 m below the sensor catches the lowest beams all around, the hood and boot
# stay below the middle beams (as in nuScenes, where rings 0-3 mostly see the roof).
EGO_ROOF = ((-0.3, 2.2), 0.70, (0.95, 1.46))
EGO_BODY = ((-0.8, 3.2), 0.87, (0.30, 0.95))


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
    """`(F, B)` distance from the sensor to the car's own body along each beam (inf: misses it).

    The body moves with the sensor, so this is the same for every sweep."""
    boxes = [EGO_ROOF, EGO_BODY]
    center_xy = np.array([[(b[0][0] + b[0][1]) / 2, 0.0] for b in boxes])
    size_xy = np.array([[b[0][1] - b[0][0], 2 * b[1]] for b in boxes])
    vertices = frustum_vertices(center_xy, np.array([b[2][0] for b in boxes]), np.array([b[2][1] for b in boxes]),
                                size_xy, size_xy, np.zeros(len(boxes)))
    triangles = (_FRUSTUM_TRIANGLES[None] + 8 * np.arange(len(boxes))[:, None, None]).reshape(-1, 3)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.reshape(-1, 3).astype(np.float32)),
                        o3d.core.Tensor(triangles.astype(np.uint32)))
    directions = firing_directions_ego().reshape(-1, 3)
    origins = np.broadcast_to(EGO_FROM_LIDAR.translation, directions.shape)
    rays = np.concatenate([origins, directions], axis=1).astype(np.float32)
    distance = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)
    return distance.reshape(LIDAR_FIRINGS_PER_SWEEP, LIDAR_BEAMS)


def ground_reflectivity(layout: LocationLayout, xy_map: np.ndarray) -> np.ndarray:
    """Lidar reflectivity of the ground at map points `(N, 2)`: asphalt, paint, concrete, plaza."""
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


def simulate_sweep(caster: RayCaster, layout: LocationLayout, ego_poses_at, sweep_time_s: float,
                   rng: np.random.Generator) -> SimulatedSweep:
    """Simulate the sweep whose timestamp is `sweep_time_s` (seconds from the scene start).

    Args:
        caster: ray caster over the world mesh at `sweep_time_s`.
        layout: the location (for ground reflectivity).
        ego_poses_at: callable `times_s (K,) -> (xy (K, 2), yaw_rad (K,))`, the ego's planar pose.
        sweep_time_s: the sweep timestamp: the end of the revolution.
        rng: noise source (range noise, dropouts, intensity speckle).
    """
    firing_times = sweep_time_s + firing_offsets_us() * 1e-6  # (F,)
    xy, yaw = ego_poses_at(firing_times)
    c, s = np.cos(yaw), np.sin(yaw)
    directions_ego = firing_directions_ego()  # (F, B, 3)
    dx = c[:, None] * directions_ego[..., 0] - s[:, None] * directions_ego[..., 1]
    dy = s[:, None] * directions_ego[..., 0] + c[:, None] * directions_ego[..., 1]
    directions = np.stack([dx, dy, directions_ego[..., 2]], axis=-1)  # (F, B, 3) map frame
    mount = EGO_FROM_LIDAR.translation
    origin = np.stack([xy[:, 0] + c * mount[0] - s * mount[1], xy[:, 1] + s * mount[0] + c * mount[1],
                       np.full(yaw.shape, mount[2])], axis=-1)  # (F, 3)
    origins = np.broadcast_to(origin[:, None, :], directions.shape)

    hits = caster.cast(origins.reshape(-1, 3), directions.reshape(-1, 3))
    distance = hits.distance_m.copy()
    triangle = hits.triangle.copy()
    body = _ego_body_distances().reshape(-1)
    on_body = body < distance
    distance[on_body] = body[on_body]
    triangle[on_body] = -1

    n = distance.size
    # Weak far returns drop out more often; a few percent drop anywhere.
    drop_probability = 0.015 + 0.5 * np.clip((distance - 60.0) / (LIDAR_MAX_RANGE_M - 60.0), 0.0, 1.0)
    valid = np.isfinite(distance) & (distance <= LIDAR_MAX_RANGE_M) & (rng.random(n) >= drop_probability)
    valid |= on_body
    distance = np.where(valid, distance + rng.normal(0.0, LIDAR_RANGE_NOISE_M, n), 0.0)
    points_map = origins.reshape(-1, 3) + directions.reshape(-1, 3) * distance[:, None]

    reflectivity = np.zeros(n)
    mesh = caster.mesh
    scene_hit = valid & ~on_body & (triangle >= 0)
    material = np.full(n, -1, np.int64)
    material[scene_hit] = mesh.material[triangle[scene_hit]]
    ground = material == int(Material.GROUND)
    if ground.any():
        reflectivity[ground] = ground_reflectivity(layout, points_map[ground, :2])
    lookup = np.zeros(max(int(m) for m in Material) + 1)
    for key, value in REFLECTIVITY.items():
        lookup[int(key)] = value
    other = scene_hit & ~ground
    reflectivity[other] = lookup[material[other]]
    reflectivity[on_body] = REFLECTIVITY[Material.EGO_BODY]
    cosine = np.abs(np.sum(hits.normal.reshape(-1, 3).astype(np.float64) * directions.reshape(-1, 3), axis=1))
    cosine[on_body] = 0.7
    falloff = 1.0 / (1.0 + (distance / 80.0) ** 2)
    intensity = reflectivity * (0.25 + 0.75 * cosine) * (0.7 + 0.3 * falloff) * rng.lognormal(0.0, 0.25, n)
    intensity = np.where(valid, np.clip(np.round(intensity), 0, 255), 0.0)

    end_xy, end_yaw = ego_poses_at(np.array([sweep_time_s]))
    global_from_ego = SE3.from_yaw(float(end_yaw[0]), (float(end_xy[0, 0]), float(end_xy[0, 1]), 0.0))
    lidar_from_global = (global_from_ego @ EGO_FROM_LIDAR).inverse()
    points_lidar = lidar_from_global.apply(points_map)
    ring = np.tile(np.arange(LIDAR_BEAMS, dtype=np.float64), LIDAR_FIRINGS_PER_SWEEP)
    points = np.concatenate([points_lidar, intensity[:, None], ring[:, None]], axis=1).astype(np.float32)
    agent = np.full(n, -1, np.int64)
    agent[scene_hit] = mesh.agent[triangle[scene_hit]]
    return SimulatedSweep(points, agent)
