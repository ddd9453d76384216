"""The street clutter of the synthetic world: deterministic per seed, off the road and the agents' tracks."""

from __future__ import annotations

import numpy as np

from avfusion.datasets.synthetic.layout import (
    KERB_HEIGHT_M,
    Material,
    build_location_layout,
)
from avfusion.datasets.synthetic.roads import ROAD_HALF_WIDTH_M, SIDEWALK_OUTER_M
from avfusion.datasets.synthetic.world import CYCLE_PARKING_M, WALK_OFFSETS_M

CLUTTER = (Material.WALL, Material.FENCE, Material.BIN, Material.FOLIAGE, Material.POLE, Material.REFLECTOR)


def _offsets(layout, centers: np.ndarray) -> np.ndarray:
    return np.abs(layout.road_offset(centers[:, :2]))


def test_clutter_is_deterministic_per_seed_and_differs_between_seeds() -> None:
    a = build_location_layout(5, "boston-seaport")
    b = build_location_layout(5, "boston-seaport")
    c = build_location_layout(6, "boston-seaport")
    for name in ("center", "size_xyz", "yaw_rad", "material", "color_rgb"):
        np.testing.assert_array_equal(getattr(a.structures, name), getattr(b.structures, name))
    assert len(a.structures) != len(c.structures) or not np.array_equal(a.structures.center, c.structures.center)
    counts = {m: int((a.structures.material == m).sum()) for m in CLUTTER}
    assert all(count > 10 for count in counts.values()), counts


def test_kerbs_line_the_road_and_clutter_stays_off_road_and_tracks() -> None:
    layout = build_location_layout(5, "singapore-onenorth")
    s = layout.structures
    kerb = (s.material == Material.GROUND) & np.isclose(s.size_xyz[:, 2], KERB_HEIGHT_M)
    assert kerb.sum() > 400
    kerb_offset = _offsets(layout, s.center[kerb])
    assert np.all(np.abs(kerb_offset - (ROAD_HALF_WIDTH_M + 0.15)) < 0.2)
    assert np.allclose(s.center[kerb, 2], KERB_HEIGHT_M / 2)
    # Everything else new stands off the road, and its footprint (half diagonal) clears the
    # walking lines and the parked cycles' reach.
    clutter = np.isin(s.material, [Material.WALL, Material.FENCE, Material.BIN]) | (
        (s.material == Material.FOLIAGE) & (s.center[:, 2] < 1.0)
    )
    offset = _offsets(layout, s.center[clutter])
    half = 0.5 * np.hypot(s.size_xyz[clutter, 0], s.size_xyz[clutter, 1])
    across = 0.5 * np.minimum(s.size_xyz[clutter, 0], s.size_xyz[clutter, 1])
    assert np.all(offset - across > ROAD_HALF_WIDTH_M)
    furniture = offset < 12.0
    assert np.all(offset[furniture] + across[furniture] < WALK_OFFSETS_M[0] - 0.3)
    edge = ~furniture
    assert np.all(offset[edge] - across[edge] > CYCLE_PARKING_M + 0.9)
    assert np.all(offset[edge] < SIDEWALK_OUTER_M + 1.0) and np.all(half > 0)
