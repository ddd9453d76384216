"""Sweep statistics and their distances on hand-made sweeps."""

from __future__ import annotations

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import SE3
from avfusion.sensors.lidar_statistics import SweepStatistics, cell_indices, compare, ground_returns

IDENTITY = SE3.identity()


def scene(seed: int = 0, wall_x: float = 10.0) -> np.ndarray:
    """`(N, 5)` a flat ground disk, a wall, a box-shaped object and some no-returns at the origin."""
    rng = np.random.default_rng(seed)
    ground_xy = rng.uniform(-20, 20, (4000, 2))
    clear = (np.hypot(*ground_xy.T) > 1.0) & ~((np.abs(ground_xy[:, 0] - 5.0) < 1.5) & (np.abs(ground_xy[:, 1]) < 1.5))
    ground = np.c_[ground_xy[clear][:3000], np.zeros(3000)]  # not under the car, not at the sensor
    wall = np.c_[np.full(500, wall_x), rng.uniform(-5, 5, 500), rng.uniform(0, 6, 500)]
    car = np.c_[rng.uniform(4.1, 5.9, 200), rng.uniform(-0.9, 0.9, 200), rng.uniform(0.2, 1.5, 200)]
    none = np.zeros((300, 3))
    xyz = np.concatenate([ground, wall, car, none])
    ring = rng.integers(0, 32, len(xyz))
    intensity = rng.uniform(0, 50, len(xyz))
    return np.c_[xyz, intensity, ring].astype(np.float32)


CAR = Boxes3D(center=[[5.0, 0.0, 0.85]], size_wlh=[[2.0, 2.0, 1.8]], yaw_rad=[0.0], label=[0], num_lidar_pts=[200])


def test_shares_and_box_counts_by_hand() -> None:
    statistics = SweepStatistics()
    statistics.add(scene(), IDENTITY, CAR)
    assert statistics.firings == 4000 and statistics.ring_returns.sum() == 3700  # 300 no-returns
    ground, objects, other = statistics.share_counts
    assert objects == 200 and statistics.box_points == [200] and statistics.box_points_annotated == [200]
    # All 3000 ground returns are ground (the object's cells take their floor from the ground
    # around it); the wall's returns within 0.25 m of the ground are too.
    assert 3000 <= ground <= 3000 + 0.25 / 6 * 500 + 30 and ground + other == 3500
    table = statistics.box_table()
    assert list(table) == [(0, 0)] and table[(0, 0)].tolist() == [200]  # a car 0-10 m away, 200 returns


def test_ground_needs_a_floor_near_the_road_plane() -> None:
    roof = np.c_[np.random.default_rng(1).uniform(0, 4, (100, 2)), np.full(100, 3.0)]  # a flat roof 3 m up
    assert not ground_returns(roof, np.zeros(100, bool)).any()
    assert ground_returns(roof - [0, 0, 3.0], np.zeros(100, bool)).all()


def test_distances_are_zero_for_the_same_source_and_grow_with_a_change() -> None:
    a, b, c = SweepStatistics(), SweepStatistics(), SweepStatistics()
    a.add(scene(0), IDENTITY, CAR)
    b.add(scene(0), IDENTITY, CAR)
    c.add(scene(0, wall_x=40.0), IDENTITY, CAR)
    same, moved = compare(a, b), compare(a, c)
    assert all(d.jensen_shannon == 0.0 for name, d in same.items() if name != "box_points")
    assert same["range"].wasserstein == 0.0 and same["box_points"].wasserstein == 0.0
    # The wall moved 30 m out: its 500 of 3700 returns carry the range distance, about 30 x 500 / 3700 m.
    assert moved["range"].jensen_shannon > 0.1
    assert abs(moved["range"].wasserstein - 30.0 * 500 / 3700) < 0.6
    assert moved["intensity"].jensen_shannon == 0.0


def test_cell_indices_round_trip() -> None:
    xy = np.random.default_rng(3).uniform(-80, 80, (500, 2))
    cells, index = cell_indices(xy, 2.0)
    np.testing.assert_array_equal(cells[index], np.floor(xy / 2.0))
    assert len(np.unique(cells, axis=0)) == len(cells)
