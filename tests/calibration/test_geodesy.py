"""GPS <-> map frame: round trips, and agreement with nuscenes-devkit's export_poses conversion.

The reference is the devkit's own `nuscenes.scripts.export_poses.derive_latlon` (great-circle
destination from the map's south-west corner with bearing atan(x / y) and distance hypot(x, y) on a
6,378,137 m sphere; its bearing formula only holds for x, y > 0, hence the grid below).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from nuscenes.scripts.export_poses import REFERENCE_COORDINATES, derive_latlon

from avfusion.calibration.geodesy import (
    MAP_ORIGINS,
    geodetic_from_map,
    heading_deg_from_yaw,
    map_from_geodetic,
    yaw_from_heading_deg,
)
from avfusion.errors import InputError

RADIUS_M = 6.378137e6


def metres_between(lat_a: float, lon_a: float, lat_b: float, lon_b: float) -> float:
    lat_mid = math.radians(0.5 * (lat_a + lat_b))
    dy = math.radians(lat_a - lat_b) * RADIUS_M
    dx = math.radians(lon_a - lon_b) * RADIUS_M * math.cos(lat_mid)
    return math.hypot(dx, dy)


def test_map_origins_are_the_devkit_reference_coordinates() -> None:
    assert {name: tuple(latlon) for name, latlon in REFERENCE_COORDINATES.items()} == MAP_ORIGINS


@pytest.mark.parametrize("location", sorted(MAP_ORIGINS))
def test_round_trip_within_a_millimetre(location: str) -> None:
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(0, 3000, 200), rng.uniform(0, 3000, 200), rng.uniform(-5, 30, 200)])
    back = map_from_geodetic(location, geodetic_from_map(location, points))
    assert np.abs(back - points).max() < 1e-3


@pytest.mark.parametrize("location", sorted(MAP_ORIGINS))
def test_agrees_with_devkit_export_poses_over_3km(location: str) -> None:
    grid = np.linspace(1.0, 3000.0, 13)
    xs, ys = np.meshgrid(grid, grid)
    points = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)])
    ours = geodetic_from_map(location, points)
    devkit = derive_latlon(location, [{"timestamp": i, "translation": list(p)} for i, p in enumerate(points)])
    worst = max(metres_between(*ours[i, :2], d["latitude"], d["longitude"]) for i, d in enumerate(devkit))
    assert worst < 1.0
    # the origin is the map's (0, 0)
    np.testing.assert_allclose(geodetic_from_map(location, [[0.0, 0.0, 0.0]])[0, :2], MAP_ORIGINS[location], atol=1e-12)


def test_hand_worked_north_and_east() -> None:
    lat0, lon0 = MAP_ORIGINS["boston-seaport"]
    north = geodetic_from_map("boston-seaport", [[0.0, 1000.0, 2.0]])[0]
    assert north[0] == pytest.approx(lat0 + math.degrees(1000.0 / RADIUS_M), abs=1e-9)
    assert north[1] == pytest.approx(lon0, abs=1e-12)
    assert north[2] == 2.0
    east = geodetic_from_map("boston-seaport", [[1000.0, 0.0, 0.0]])[0]
    assert east[1] == pytest.approx(lon0 + math.degrees(1000.0 / (RADIUS_M * math.cos(math.radians(lat0)))), abs=1e-7)


def test_heading_conventions() -> None:
    # yaw 0 = east = heading 90; yaw pi/2 = north = heading 0; yaw -pi/2 = south = 180
    np.testing.assert_allclose(heading_deg_from_yaw(np.array([0.0, np.pi / 2, -np.pi / 2, np.pi])), [90, 0, 180, 270])
    np.testing.assert_allclose(
        yaw_from_heading_deg(np.array([90.0, 0.0, 180.0, 270.0, 45.0])),
        [0.0, np.pi / 2, -np.pi / 2, np.pi, np.pi / 4],
        atol=1e-12,
    )
    rng = np.random.default_rng(1)
    yaws = rng.uniform(-np.pi, np.pi, 100)
    np.testing.assert_allclose(yaw_from_heading_deg(heading_deg_from_yaw(yaws)), yaws, atol=1e-12)


def test_unknown_location() -> None:
    with pytest.raises(InputError, match="unknown map location 'atlantis'"):
        geodetic_from_map("atlantis", np.zeros((1, 3)))
