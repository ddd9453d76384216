"""The map check on hand-made scenes: a blank map, a shifted road, walls on drivable pixels."""

from __future__ import annotations

import numpy as np

from avfusion.calibration.se3 import SE3
from avfusion.sensors.map_check import MapCheckConfig, check_map, drivable_fraction_near, wall_cells
from avfusion.sensors.map_raster import MapRaster

RESOLUTION_M = 0.1
SIZE_PX = 1000  # a 100 m x 100 m raster; the ego stands at its centre, facing east
EGO = SE3.from_yaw(0.0, (50.0, 50.0, 0.0))


def road_raster(half_width_m: float, centre_y_m: float = 50.0) -> MapRaster:
    """A straight east-west road of the given half width (map y of its centre-line)."""
    drivable = np.zeros((SIZE_PX, SIZE_PX), np.uint8)
    rows_y = (SIZE_PX - np.arange(SIZE_PX) - 0.5) * RESOLUTION_M  # map y of each row's centre
    drivable[np.abs(rows_y - centre_y_m) <= half_width_m] = 255
    return MapRaster("singapore-onenorth", drivable, RESOLUTION_M)


def flat_ground(half_width_m: float = 15.0, step_m: float = 0.25) -> np.ndarray:
    """`(N, 3)` ego-frame returns on a flat road plane (z = 0) out to 15 m."""
    grid = np.arange(-half_width_m, half_width_m, step_m)
    x, y = np.meshgrid(grid, grid)
    keep = np.hypot(x, y) > 1.0
    return np.stack([x[keep], y[keep], np.zeros(keep.sum())], axis=1)


def test_a_blank_map_is_no_map() -> None:
    blank = MapRaster("singapore-onenorth", np.zeros((SIZE_PX, SIZE_PX), np.uint8), RESOLUTION_M)
    assert drivable_fraction_near(blank, EGO, 20.0) == 0.0
    reason = check_map(blank, EGO, flat_ground())
    assert reason is not None and reason.startswith("no drivable area")
    assert check_map(blank, EGO, None) is not None  # no lidar needed for this rule


def test_the_right_road_passes_and_a_shifted_one_does_not() -> None:
    ground = flat_ground()
    assert check_map(road_raster(10.0), EGO, ground) is None
    # The same road 14 m to the north: the ground around the car lies off it.
    reason = check_map(road_raster(10.0, centre_y_m=64.0), EGO, ground)
    assert reason is not None and reason.startswith("disagrees with the lidar's ground")
    # Without enough ground returns the ground rule does not judge.
    assert check_map(road_raster(10.0, centre_y_m=64.0), EGO, ground[:50]) is None


def test_walls_on_drivable_pixels() -> None:
    # Building fronts 12 m to either side of the car, 8 m high, along 30 m.
    along = np.arange(-15.0, 15.0, 0.2)
    height = np.arange(0.0, 8.0, 0.4)
    a, h = np.meshgrid(along, height)
    walls = np.concatenate([np.stack([a.ravel(), np.full(a.size, side), h.ravel()], axis=1) for side in (-12.0, 12.0)])
    points = np.concatenate([flat_ground(), walls])
    assert len(wall_cells(points, MapCheckConfig())) >= 40
    assert check_map(road_raster(10.0), EGO, points) is None  # the walls stand beside the road
    everywhere = MapRaster("singapore-onenorth", np.full((SIZE_PX, SIZE_PX), 255, np.uint8), RESOLUTION_M)
    reason = check_map(everywhere, EGO, points)
    assert reason is not None and reason.startswith("disagrees with the lidar's walls")
    # A car (1.7 m) or a bus (3.8 m) on the road is not a wall.
    bus = np.stack([a.ravel(), np.full(a.size, 3.0), np.minimum(h.ravel(), 3.8)], axis=1)
    assert len(wall_cells(bus, MapCheckConfig())) == 0
