"""The static city of one location: loop roads, buildings, street lights and trees.

A location's map is a 2 x 2 grid of square cells (`CELL_SIZE_M`), each holding one loop road around
a block (see `roads.py`) with buildings in rows outside and inside the loop and street furniture on
the sidewalks. The layout depends only on (seed, location), so every scene of a log at that
location drives through the same city and the drivable-area map matches it.

Frames: the map frame of nuScenes (x east, y north, z up, metres, origin at the map's south-west
corner, ground at z = 0).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from avfusion.datasets.synthetic.roads import (
    BUILDING_SETBACK_M,
    ROAD_HALF_WIDTH_M,
    SIDEWALK_OUTER_M,
    LoopRoad,
)

CELL_SIZE_M = 320.0
GRID_CELLS = (2, 2)  # columns (east), rows (north)
MAP_SIZE_M = (CELL_SIZE_M * GRID_CELLS[0], CELL_SIZE_M * GRID_CELLS[1])
POLE_OFFSET_M = 10.3  # street lights and trees stand on the kerb side of the sidewalk

LOCATIONS: tuple[str, ...] = (
    "boston-seaport",
    "singapore-onenorth",
    "singapore-hollandvillage",
    "singapore-queenstown",
)


class Material(enum.IntEnum):
    """What a surface is made of: its colour in the cameras and its lidar reflectivity."""

    GROUND = 0  # refined by position: road, lane marking, sidewalk, grass
    BUILDING = 1
    POLE = 2
    TRUNK = 3
    FOLIAGE = 4
    EGO_BODY = 5
    BODY = 6  # painted vehicle body, coloured per agent
    GLASS = 7
    TYRE = 8
    CLOTHES = 9  # coloured per agent
    TROUSERS = 10
    SKIN = 11
    CONE = 12
    REFLECTOR = 13  # retro-reflective bands and plates: the bright lidar returns
    BARRIER = 14
    MACHINE = 15  # construction-vehicle yellow
    LIGHT = 16  # tail and head lights
    WALL = 17  # garden walls, low concrete walls (no windows, unlike BUILDING)
    FENCE = 18  # metal railings and fences
    BIN = 19  # plastic litter bins, utility boxes


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the given parts, stable across runs and platforms (no `hash()`)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def traffic_side(location: str) -> int:
    """+1 where traffic keeps right (Boston), -1 where it keeps left (Singapore)."""
    return -1 if location.startswith("singapore") else 1


@dataclass(frozen=True, slots=True, eq=False)
class StaticBoxes:
    """Upright static boxes in the map frame (struct of arrays).

    Attributes:
        center: `(N, 3)` box centres (m).
        size_xyz: `(N, 3)` extents along the box's own x, y, z (m).
        yaw_rad: `(N,)` rotation about +z.
        material: `(N,)` int64 `Material` values.
        color_rgb: `(N, 3)` uint8 camera colour.
    """

    center: np.ndarray
    size_xyz: np.ndarray
    yaw_rad: np.ndarray
    material: np.ndarray
    color_rgb: np.ndarray

    def __post_init__(self) -> None:
        n = np.shape(self.center)[0]
        for name, shape in (
            ("center", (n, 3)),
            ("size_xyz", (n, 3)),
            ("yaw_rad", (n,)),
            ("material", (n,)),
            ("color_rgb", (n, 3)),
        ):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"StaticBoxes.{name} must have shape {shape}, got {np.shape(getattr(self, name))}")

    def __len__(self) -> int:
        return int(self.center.shape[0])

    def select(self, mask: np.ndarray) -> StaticBoxes:
        return StaticBoxes(
            self.center[mask], self.size_xyz[mask], self.yaw_rad[mask], self.material[mask], self.color_rgb[mask]
        )


@dataclass(frozen=True, slots=True, eq=False)
class LocationLayout:
    """The static city of one location.

    Attributes:
        location: nuScenes location name.
        loops: the loop roads, one per cell.
        structures: buildings, poles, trunks and canopies.
        size_m: `(width_east, height_north)` of the map (m).
    """

    location: str
    loops: tuple[LoopRoad, ...]
    structures: StaticBoxes
    size_m: tuple[float, float]

    def road_offset(self, xy_map: np.ndarray) -> np.ndarray:
        """Signed offset (m) of map points `(..., 2)` from the nearest loop's centre-line
        (the one with the smallest |offset|); positive outside that loop."""
        best = None
        for loop in self.loops:
            offset = loop.offset_of(xy_map)
            best = offset if best is None else np.where(np.abs(offset) < np.abs(best), offset, best)
        assert best is not None, "a layout has at least one loop"
        return best

    def nearest_loop(self, xy_map: np.ndarray) -> np.ndarray:
        """Index of the loop whose centre-line is nearest to each point `(..., 2)`."""
        offsets = np.stack([np.abs(loop.offset_of(xy_map)) for loop in self.loops], axis=-1)
        return np.argmin(offsets, axis=-1)


def _building_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    palette = np.array(
        [
            [186, 176, 160],
            [150, 140, 130],
            [205, 200, 190],
            [120, 110, 105],
            [170, 120, 100],
            [140, 150, 160],
            [200, 185, 150],
            [95, 100, 110],
        ],
        dtype=np.float64,
    )
    base = palette[rng.integers(0, len(palette), n)]
    return np.clip(base + rng.normal(0, 8, (n, 3)), 0, 255).astype(np.uint8)


def _buildings_along(loop: LoopRoad, rng: np.random.Generator, inside: bool) -> list[tuple[float, ...]]:
    """Axis-aligned building footprints `(cx, cy, size_x, size_y, height)` along the loop's four
    straights, on the outer or the inner side, kept `BUILDING_SETBACK_M` from the centre-line."""
    cx0, cy0 = loop.center_xy
    a, b = loop.half_x_m, loop.half_y_m
    sign = -1.0 if inside else 1.0
    footprints: list[tuple[float, ...]] = []
    # For each side: the axis the straight runs along and where its outward normal points.
    for along_x, normal_sign in ((True, -1.0), (False, 1.0), (True, 1.0), (False, -1.0)):
        half_run = (a if along_x else b) + (0.0 if inside else 20.0)
        position = -half_run + rng.uniform(0.0, 6.0)
        while position < half_run:
            frontage = rng.uniform(10.0, 30.0)
            depth = rng.uniform(10.0, 24.0)
            height = rng.uniform(5.0, 28.0) if rng.random() > 0.15 else rng.uniform(30.0, 55.0)
            setback = BUILDING_SETBACK_M + rng.uniform(0.0, 8.0)
            across = ((b if along_x else a) + sign * (setback + depth / 2.0)) * normal_sign
            centre_along = position + frontage / 2.0
            if along_x:
                footprint = (cx0 + centre_along, cy0 + across, frontage, depth, height)
            else:
                footprint = (cx0 + across, cy0 + centre_along, depth, frontage, height)
            footprints.append(footprint)
            position += frontage + rng.uniform(3.0, 20.0)
    return footprints


def _footprint_corners(footprint: tuple[float, ...]) -> np.ndarray:
    x, y, sx, sy = footprint[:4]
    return np.array(
        [[x - sx / 2, y - sy / 2], [x + sx / 2, y - sy / 2], [x + sx / 2, y + sy / 2], [x - sx / 2, y + sy / 2]]
    )


def build_location_layout(seed: int, location: str) -> LocationLayout:
    """The city of `location` for generator seed `seed` (deterministic)."""
    rng = np.random.default_rng(stable_seed(seed, "layout", location))
    loops = []
    for row in range(GRID_CELLS[1]):
        for column in range(GRID_CELLS[0]):
            centre = (CELL_SIZE_M * (column + 0.5) + rng.uniform(-8, 8), CELL_SIZE_M * (row + 0.5) + rng.uniform(-8, 8))
            half_x = rng.uniform(70.0, 100.0)
            half_y = rng.uniform(55.0, 90.0)
            radius = rng.uniform(18.0, 30.0)
            loops.append(LoopRoad((float(centre[0]), float(centre[1])), float(half_x), float(half_y), float(radius)))

    centers, sizes, yaws, materials, colors = [], [], [], [], []

    def add(center, size, yaw, material, color) -> None:
        centers.append(center)
        sizes.append(size)
        yaws.append(yaw)
        materials.append(int(material))
        colors.append(color)

    accepted: list[np.ndarray] = []  # (4, 2) corners of accepted footprints, axis-aligned
    for loop_index, loop in enumerate(loops):
        cell_lo = np.array([loop.center_xy[0] - CELL_SIZE_M / 2 + 8, loop.center_xy[1] - CELL_SIZE_M / 2 + 8])
        cell_hi = cell_lo + CELL_SIZE_M - 16
        for inside in (False, True):
            for footprint in _buildings_along(loop, rng, inside):
                corners = _footprint_corners(footprint)
                # Every building must clear the sidewalk; other loops lie in other cells, beyond the
                # cell bounds checked below. Edge midpoints too: corners can clear while an edge
                # crosses a rounded corner of the road.
                mids = 0.5 * (corners + np.roll(corners, 1, axis=0))
                clear = np.min(np.abs(loop.offset_of(np.concatenate([corners, mids])))) > SIDEWALK_OUTER_M + 0.5
                inside_of_loop = loop.offset_of(corners.mean(axis=0)) < 0
                if not clear or inside_of_loop != inside:
                    continue
                if np.any(corners < cell_lo) or np.any(corners > cell_hi):
                    continue
                lo, hi = corners.min(axis=0), corners.max(axis=0)
                if any(
                    np.all(lo < other.max(axis=0) + 1.0) and np.all(hi > other.min(axis=0) - 1.0) for other in accepted
                ):
                    continue
                accepted.append(corners)
                x, y, sx, sy, height = footprint
                add((x, y, height / 2), (sx, sy, height), 0.0, Material.BUILDING, None)
        # Street lights and trees on both sidewalks, alternating, every 12-20 m.
        for side in (-1.0, 1.0):
            offset = side * POLE_OFFSET_M
            length = float(loop.perimeter_at(offset))
            s = rng.uniform(0.0, 10.0)
            while s < length - 12.0:
                (xy,), (heading,) = loop.pose_at(np.array([s]), offset)
                if rng.random() < 0.5:
                    add((xy[0], xy[1], 3.75), (0.2, 0.2, 7.5), heading, Material.POLE, (110, 112, 115))
                else:
                    trunk_height = rng.uniform(2.2, 3.2)
                    canopy = rng.uniform(2.5, 4.0)
                    add(
                        (xy[0], xy[1], trunk_height / 2),
                        (0.35, 0.35, trunk_height),
                        heading,
                        Material.TRUNK,
                        (92, 70, 52),
                    )
                    add(
                        (xy[0], xy[1], trunk_height + canopy / 2),
                        (canopy, canopy, canopy),
                        heading + 0.4,
                        Material.FOLIAGE,
                        (58 + int(rng.integers(0, 30)), 110 + int(rng.integers(0, 40)), 52),
                    )
                s += rng.uniform(12.0, 20.0)
        _street_clutter(loop, rng, add)
        del loop_index

    building = np.array(materials) == Material.BUILDING
    color_array = np.zeros((len(centers), 3), dtype=np.uint8)
    color_array[building] = _building_colors(rng, int(building.sum()))
    for index, color in enumerate(colors):
        if color is not None:
            color_array[index] = color
    structures = StaticBoxes(
        np.array(centers, dtype=np.float64).reshape(-1, 3),
        np.array(sizes, dtype=np.float64).reshape(-1, 3),
        np.array(yaws, dtype=np.float64),
        np.array(materials, dtype=np.int64),
        color_array,
    )
    return LocationLayout(location, tuple(loops), structures, MAP_SIZE_M)


# Street clutter (`_street_clutter`): what a detector must learn is not an object. Offsets are
# from the loop's centre-line (positive outward; mirrored inside the block). The kerb stone rises
# at the road edge; bollards, signs and bins share the street-furniture line with the lights and
# trees; hedges, fences, low walls and bushes line the sidewalk's outer edge, beyond every agent
# track (the parked cycles reach 16.2 m) and before the buildings (17 m or more).
KERB_HEIGHT_M = 0.15
KERB_WIDTH_M = 0.3
KERB_SEGMENT_M = 2.0  # short enough that chords of the tightest inner corner stay within 6 cm of it
FURNITURE_OFFSET_M = POLE_OFFSET_M
EDGE_OFFSET_M = 16.75
EDGE_DEPTH_M = 0.45


def _street_clutter(loop: LoopRoad, rng: np.random.Generator, add) -> None:
    """Kerb stones along both road edges and clutter along both sidewalks of one loop (see above)."""
    for side in (-1.0, 1.0):
        # Kerb: straight stones following the road edge (chords of the curves at the corners).
        offset = side * (ROAD_HALF_WIDTH_M + KERB_WIDTH_M / 2)
        length = float(loop.perimeter_at(offset))
        count = int(np.ceil(length / KERB_SEGMENT_M))
        kerb_s = np.arange(count) * (length / count) + length / count / 2
        xy, heading = loop.pose_at(kerb_s, offset)
        for (x, y), h in zip(xy, heading, strict=True):
            add(
                (x, y, KERB_HEIGHT_M / 2),
                (length / count + 0.02, KERB_WIDTH_M, KERB_HEIGHT_M),
                h,
                Material.GROUND,
                (200, 200, 196),
            )
        # Street furniture between the lights and trees (which stand every 12-20 m on this line).
        offset = side * FURNITURE_OFFSET_M
        length = float(loop.perimeter_at(offset))
        s = rng.uniform(4.0, 12.0)
        while s < length - 4.0:
            (x, y), h = (v[0] for v in loop.pose_at(np.array([s]), offset))
            kind = rng.random()
            if kind < 0.35:  # a bollard or a short row of them
                for k in range(int(rng.integers(1, 4))):
                    (bx, by), bh = (v[0] for v in loop.pose_at(np.array([s + 1.5 * k]), offset))
                    add((bx, by, 0.45), (0.18, 0.18, 0.9), bh, Material.POLE, (70, 72, 75))
            elif kind < 0.65:  # a sign: post and plate
                height = rng.uniform(2.2, 3.0)
                add((x, y, height / 2), (0.08, 0.08, height), h, Material.POLE, (150, 152, 155))
                plate = rng.uniform(0.5, 0.9)
                add(
                    (x, y, height + plate / 2 - 0.1),
                    (plate, 0.04, plate),
                    h,
                    Material.REFLECTOR,
                    (30 + int(rng.integers(0, 200)), 60 + int(rng.integers(0, 120)), 160),
                )
            elif kind < 0.85:  # a litter bin or a utility box
                w, d, t = (0.5, 0.5, 1.0) if rng.random() < 0.6 else (0.9, 0.45, 1.3)
                add((x, y, t / 2), (w, d, t), h, Material.BIN, (40 + int(rng.integers(0, 60)), 90, 60))
            else:  # a bench along the kerb
                add((x, y, 0.23), (1.6, 0.45, 0.45), h, Material.WALL, (120, 95, 70))
            s += rng.uniform(6.0, 25.0)
        # The sidewalk's outer edge: runs of hedge, fence, low wall, bushes or nothing.
        offset = side * EDGE_OFFSET_M
        length = float(loop.perimeter_at(offset))
        s = rng.uniform(0.0, 10.0)
        while s < length - 2.0:
            run = min(rng.uniform(4.0, 30.0), length - s)
            kind = rng.random()
            # 3 m pieces; 1 m on the block side, whose corners curve as tightly as 1.25 m.
            pieces = max(1, int(np.ceil(run / (3.0 if side > 0 else 1.0))))
            centres = s + (np.arange(pieces) + 0.5) * run / pieces
            xy, heading = loop.pose_at(centres, offset)
            if kind < 0.3:  # hedge
                height = rng.uniform(0.6, 1.6)
                for (x, y), h in zip(xy, heading, strict=True):
                    add(
                        (x, y, height / 2),
                        (run / pieces + 0.05, EDGE_DEPTH_M, height),
                        h,
                        Material.FOLIAGE,
                        (50 + int(rng.integers(0, 30)), 100 + int(rng.integers(0, 40)), 45),
                    )
            elif kind < 0.5:  # fence or railing
                height = rng.uniform(0.9, 1.8)
                for (x, y), h in zip(xy, heading, strict=True):
                    add((x, y, height / 2), (run / pieces + 0.02, 0.06, height), h, Material.FENCE, (90, 95, 90))
            elif kind < 0.65:  # low wall
                height = rng.uniform(0.4, 1.2)
                for (x, y), h in zip(xy, heading, strict=True):
                    add((x, y, height / 2), (run / pieces + 0.02, 0.3, height), h, Material.WALL, (170, 165, 155))
            elif kind < 0.85:  # bushes, two-wheeler sized and larger
                for (x, y), h in zip(xy, heading, strict=True):
                    if rng.random() < 0.7:
                        size = rng.uniform(0.6, 1.8)
                        height = rng.uniform(0.5, 1.6)
                        add(
                            (x, y, height / 2),
                            (size, min(size, 0.6), height),
                            h + rng.uniform(-0.15, 0.15),
                            Material.FOLIAGE,
                            (45 + int(rng.integers(0, 35)), 95 + int(rng.integers(0, 50)), 40),
                        )
            s += run + rng.uniform(1.0, 12.0)


def drivable_mask(layout: LocationLayout, resolution_m: float = 0.1) -> np.ndarray:
    """The drivable-area raster of a layout: `(H, W)` uint8, 255 on the road surface, 0 elsewhere.

    nuScenes convention: pixel row 0 is the northern edge, column 0 the western edge, and pixel
    `(row, col)` covers map x in `[col, col + 1) * res`, y in `[H - row - 1, H - row) * res`.
    Each road is the band between its two kerb curves (offsets +-`ROAD_HALF_WIDTH_M`), filled as
    polygons sampled every 0.25 m with sub-pixel vertex precision.
    """
    width = round(layout.size_m[0] / resolution_m)
    height = round(layout.size_m[1] / resolution_m)
    mask = np.zeros((height, width), dtype=np.uint8)
    subpixel_bits = 4

    def polygon(loop: LoopRoad, offset: float) -> np.ndarray:
        count = int(np.ceil(float(loop.perimeter_at(offset)) / 0.25))
        s = np.linspace(0.0, float(loop.perimeter_at(offset)), count, endpoint=False)
        xy, _ = loop.pose_at(s, offset)
        # Pixel coordinates whose integer values are pixel centres (cv2's convention).
        col = xy[:, 0] / resolution_m - 0.5
        row = height - xy[:, 1] / resolution_m - 0.5
        return np.round(np.stack([col, row], axis=1) * (1 << subpixel_bits)).astype(np.int32)

    for loop in layout.loops:
        cv2.fillPoly(mask, [polygon(loop, ROAD_HALF_WIDTH_M)], (255,), lineType=cv2.LINE_8, shift=subpixel_bits)
        cv2.fillPoly(mask, [polygon(loop, -ROAD_HALF_WIDTH_M)], (0,), lineType=cv2.LINE_8, shift=subpixel_bits)
    return mask
