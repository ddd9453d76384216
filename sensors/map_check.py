"""Is the drivable-area map believable where the car is? A map that is not is treated as missing.

A wrong map costs more than no map: a detector trained with a map uses it to tell road from kerb,
and a blank or shifted raster makes it drop real objects (issue 17: a blank raster halved what
the shipped weights found on the real keyframe). `check_map` looks at the raster around the ego
and at the lidar's own view of the ground, and returns why the map should not be used, or None:

1. no drivable area: under `min_drivable_fraction` of the disk of `drivable_radius_m` around the
   ego is drivable (a blank raster, an ego pose off the map, the wrong location);
2. the lidar's ground disagrees: of the ground returns between `ground_inner_m` and
   `ground_outer_m` from the ego (ground as in `lidar_statistics.ground_returns`), under
   `min_ground_on_drivable` lie on drivable pixels. The car drives on the road, and the road
   fills most of the ground near it; a map shifted or rotated by more than a lane width, or of
   another place, puts that ground on non-drivable pixels;
3. drivable pixels under walls: of the ego-frame cells (`wall_cell_m`) whose returns reach from
   below `wall_bottom_m` to above `wall_top_m` (building fronts, walls: not vehicles, which stop
   lower), over `max_walls_on_drivable` lie on drivable pixels (an all-drivable raster, a map of
   another place), judged once there are `min_wall_cells` such cells.

Frames: points in the ego frame (x forward, y left, z up, metres, z = 0 on the road);
`global_from_ego` places them in the raster's map frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avfusion.calibration.se3 import SE3
from avfusion.sensors.lidar_statistics import cell_indices, ground_returns
from avfusion.sensors.map_raster import MapRaster


@dataclass(frozen=True, slots=True)
class MapCheckConfig:
    """Thresholds of `check_map` (see the module docstring)."""

    drivable_radius_m: float = 20.0
    min_drivable_fraction: float = 0.03
    ground_inner_m: float = 2.5
    ground_outer_m: float = 12.0
    min_ground_returns: int = 200
    min_ground_on_drivable: float = 0.5
    wall_cell_m: float = 1.0
    wall_bottom_m: float = 0.8
    wall_top_m: float = 5.0
    wall_range_m: float = 40.0
    min_wall_cells: int = 20
    max_walls_on_drivable: float = 0.5


def _to_map_xy(global_from_ego: SE3, xy_ego: np.ndarray) -> np.ndarray:
    yaw = global_from_ego.yaw_rad
    c, s = np.cos(yaw), np.sin(yaw)
    tx, ty = global_from_ego.translation[:2]
    return np.stack([c * xy_ego[:, 0] - s * xy_ego[:, 1] + tx, s * xy_ego[:, 0] + c * xy_ego[:, 1] + ty], axis=1)


def drivable_fraction_near(raster: MapRaster, global_from_ego: SE3, radius_m: float) -> float:
    """Fraction of the disk of `radius_m` around the ego that is drivable (sampled every 0.5 m)."""
    steps = np.arange(-radius_m, radius_m + 0.25, 0.5)
    gx, gy = np.meshgrid(steps, steps)
    inside = np.hypot(gx, gy) <= radius_m
    xy_ego = np.stack([gx[inside], gy[inside]], axis=1)
    return float(raster.is_drivable(_to_map_xy(global_from_ego, xy_ego)).mean())


def wall_cells(points_ego: np.ndarray, config: MapCheckConfig) -> np.ndarray:
    """`(K, 2)` ego-frame xy centres of the cells whose returns span from below `wall_bottom_m`
    to above `wall_top_m`, within `wall_range_m` of the ego."""
    near = np.hypot(points_ego[:, 0], points_ego[:, 1]) <= config.wall_range_m
    points = points_ego[near]
    if len(points) == 0:
        return np.zeros((0, 2))
    unique, index = cell_indices(points[:, :2], config.wall_cell_m)
    low = np.full(len(unique), np.inf)
    high = np.full(len(unique), -np.inf)
    np.minimum.at(low, index, points[:, 2])
    np.maximum.at(high, index, points[:, 2])
    walls = (low < config.wall_bottom_m) & (high > config.wall_top_m)
    return (unique[walls] + 0.5) * config.wall_cell_m


def check_map(
    raster: MapRaster, global_from_ego: SE3, points_ego: np.ndarray | None, config: MapCheckConfig = MapCheckConfig()
) -> str | None:
    """Why the map should be treated as missing at this pose, or None when it is believable.

    Args:
        raster: the location's drivable-area raster.
        global_from_ego: the ego pose in the raster's map frame.
        points_ego: `(N, >=3)` lidar returns in the ego frame (the ego's own roof removed), or
            None without lidar (then only the drivable-area rule applies).
    """
    fraction = drivable_fraction_near(raster, global_from_ego, config.drivable_radius_m)
    if fraction < config.min_drivable_fraction:
        return (
            f"no drivable area around the ego: {100 * fraction:.1f}% of the {config.drivable_radius_m:g} m disk "
            f"is drivable (needs {100 * config.min_drivable_fraction:g}%)"
        )
    if points_ego is None or len(points_ego) == 0:
        return None
    xyz = np.asarray(points_ego, dtype=np.float64)[:, :3]
    range_m = np.hypot(xyz[:, 0], xyz[:, 1])
    near = xyz[(range_m >= config.ground_inner_m) & (range_m <= config.ground_outer_m)]
    near_ground = near[ground_returns(near, np.zeros(len(near), dtype=bool))]
    if len(near_ground) >= config.min_ground_returns:
        on_drivable = float(raster.is_drivable(_to_map_xy(global_from_ego, near_ground[:, :2])).mean())
        if on_drivable < config.min_ground_on_drivable:
            return (
                f"disagrees with the lidar's ground: {100 * on_drivable:.0f}% of the ground returns "
                f"{config.ground_inner_m:g}-{config.ground_outer_m:g} m from the ego lie on drivable pixels "
                f"(needs {100 * config.min_ground_on_drivable:g}%)"
            )
    walls = wall_cells(xyz, config)
    if len(walls) >= config.min_wall_cells:
        on_drivable = float(raster.is_drivable(_to_map_xy(global_from_ego, walls)).mean())
        if on_drivable > config.max_walls_on_drivable:
            return (
                f"disagrees with the lidar's walls: {100 * on_drivable:.0f}% of {len(walls)} wall cells lie on "
                f"drivable pixels (allows {100 * config.max_walls_on_drivable:g}%)"
            )
    return None
