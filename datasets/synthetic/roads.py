"""Closed loop roads: rounded rectangles, their parallel lanes, and where a map point lies on them.

A loop's centre-line is a rectangle with rounded corners, centred on `center_xy` in the map frame
(x east, y north, metres). Its parallel curve at lateral offset `o` (positive outward, away from the
block the loop encloses) is again a rounded rectangle with half extents `(a + o, b + o)` and corner
radius `r + o`, so every lane, parking strip and sidewalk line has a closed-form arc-length
parametrization. Arc length `s` runs counter-clockwise (seen from above), starting at the left end
of the bottom straight; the curve is periodic in `s` with its perimeter.

All functions are vectorized: `a`, `b`, `r` and `s` broadcast against each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cross-section of every loop road, as lateral offsets from the centre-line in metres.
LANE_WIDTH_M = 3.5
LANE_CENTERS_M = (1.75, 5.25)  # two travel lanes each way
# Travel lanes reach 7.0; the parking strip (7.0 .. 9.8) is wide enough that a bus parked there
# clears a bus in the outer lane (both at most 3.15 m wide).
ROAD_HALF_WIDTH_M = 9.8
PARKING_STRIP_M = 8.5
SIDEWALK_OUTER_M = 16.5  # sidewalk from the kerb at 9.8 to 16.5
BUILDING_SETBACK_M = 17.0


def perimeter(a: object, b: object, r: object) -> np.ndarray:
    """Perimeter (m) of the rounded rectangle with half extents `a`, `b` and corner radius `r`."""
    a, b, r = np.asarray(a, float), np.asarray(b, float), np.asarray(r, float)
    return 4.0 * (a - r) + 4.0 * (b - r) + 2.0 * np.pi * r


def point_at(s: object, a: object, b: object, r: object) -> tuple[np.ndarray, np.ndarray]:
    """Point and tangent heading on the rounded rectangle centred at the origin.

    Args:
        s: arc length (m), any real value (wrapped by the perimeter).
        a, b, r: half extent along x, half extent along y, corner radius (m), `0 < r <= min(a, b)`.
    Returns:
        `(xy (..., 2), heading_rad (...))`: the point, relative to the loop centre, and the
        direction of increasing `s` (counter-clockwise travel), radians from +x.
    """
    s, a, b, r = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (s, a, b, r)))
    ax, by = a - r, b - r  # half lengths of the straights' ends (the corner-circle centres)
    sx, sy, arc = 2.0 * ax, 2.0 * by, 0.5 * np.pi * r
    s = np.mod(s, perimeter(a, b, r))
    # Eight pieces in order: bottom straight, corner, right straight, corner, top, corner, left, corner.
    lengths = np.stack([sx, arc, sy, arc, sx, arc, sy, arc], axis=-1)
    starts = np.cumsum(lengths, axis=-1) - lengths
    piece = np.clip((s[..., None] >= starts).sum(axis=-1) - 1, 0, 7)
    u = s - np.take_along_axis(starts, piece[..., None], axis=-1)[..., 0]  # distance into the piece
    x = np.empty_like(s)
    y = np.empty_like(s)
    heading = np.empty_like(s)
    # Straights: start point and direction per straight piece.
    for index, (x0, y0, dx, dy, h) in enumerate(
        [(-ax, -b, 1, 0, 0.0), (a, -by, 0, 1, 0.5 * np.pi), (ax, b, -1, 0, np.pi), (-a, by, 0, -1, -0.5 * np.pi)]
    ):
        m = piece == 2 * index
        x[m] = x0[m] + dx * u[m]
        y[m] = y0[m] + dy * u[m]
        heading[m] = h
    # Corners: centre of the corner circle and the polar angle at the start of the arc.
    for index, (cx, cy, phi0) in enumerate(
        [(ax, -by, -0.5 * np.pi), (ax, by, 0.0), (-ax, by, 0.5 * np.pi), (-ax, -by, np.pi)]
    ):
        m = piece == 2 * index + 1
        phi = phi0 + u[m] / r[m]
        x[m] = cx[m] + r[m] * np.cos(phi)
        y[m] = cy[m] + r[m] * np.sin(phi)
        heading[m] = phi + 0.5 * np.pi
    heading = np.mod(heading + np.pi, 2.0 * np.pi) - np.pi
    return np.stack([x, y], axis=-1), heading


def signed_offset(xy: object, a: float, b: float, r: float) -> np.ndarray:
    """Signed lateral distance (m) of points `(..., 2)` (relative to the loop centre) from the
    rounded rectangle: positive outside, negative inside (its signed distance function)."""
    p = np.abs(np.asarray(xy, dtype=np.float64))
    qx = p[..., 0] - (a - r)
    qy = p[..., 1] - (b - r)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside - r


def arc_position(xy: object, a: float, b: float, r: float) -> np.ndarray:
    """Arc length (m, in [0, perimeter)) of the point of the centre-line nearest to each point
    `(..., 2)` (relative to the loop centre). Points deep inside the block get some valid arc
    length of the nearest straight."""
    p = np.asarray(xy, dtype=np.float64)
    x, y = p[..., 0], p[..., 1]
    ax, by = a - r, b - r
    cx = np.clip(x, -ax, ax)
    cy = np.clip(y, -by, by)
    dx, dy = x - cx, y - cy
    arc = 0.5 * np.pi * r
    sx, sy = 2 * ax, 2 * by
    s = np.zeros_like(x)
    corner = (dx != 0) & (dy != 0)
    phi = np.arctan2(dy, dx)  # polar angle around the corner centre
    # Which corner: the signs of dx, dy.
    for sgx, sgy, start, phi0 in [
        (1, -1, sx, -0.5 * np.pi),
        (1, 1, sx + arc + sy, 0.0),
        (-1, 1, 2 * sx + 2 * arc + sy, 0.5 * np.pi),
        (-1, -1, 2 * sx + 3 * arc + 2 * sy, np.pi),
    ]:
        m = corner & (np.sign(dx) == sgx) & (np.sign(dy) == sgy)
        s[m] = start + r * np.mod(phi[m] - phi0, 2 * np.pi)
    # Straights (and the block interior): pick the nearest side by the normalized distance to it.
    rest = ~corner
    dist_sides = np.stack([y + b, a - x, b - y, x + a], axis=-1)  # bottom, right, top, left
    side = np.argmin(np.where(rest[..., None], dist_sides, np.inf), axis=-1)
    straight_s = np.stack(
        [
            cx + ax,  # bottom, heading +x from (-ax, -b)
            sx + arc + (cy + by),  # right, heading +y from (a, -by)
            sx + 2 * arc + sy + (ax - cx),  # top, heading -x from (ax, b)
            2 * sx + 3 * arc + sy + (by - cy),  # left, heading -y from (-a, by)
        ],
        axis=-1,
    )
    s[rest] = np.take_along_axis(straight_s, side[..., None], axis=-1)[..., 0][rest]
    return np.mod(s, perimeter(a, b, r))


@dataclass(frozen=True, slots=True)
class LoopRoad:
    """One closed road around a city block.

    Attributes:
        center_xy: `(2,)` loop centre in the map frame (m).
        half_x_m, half_y_m: half extents of the centre-line rectangle (m).
        corner_radius_m: centre-line corner radius (m); larger than every inward offset used
            (sidewalk at -16.5 m), so every parallel curve is a proper rounded rectangle.
    """

    center_xy: tuple[float, float]
    half_x_m: float
    half_y_m: float
    corner_radius_m: float

    def __post_init__(self) -> None:
        if not (SIDEWALK_OUTER_M < self.corner_radius_m <= min(self.half_x_m, self.half_y_m)):
            raise ValueError(
                f"LoopRoad corner radius must lie in ({SIDEWALK_OUTER_M}, {min(self.half_x_m, self.half_y_m)}], "
                f"got {self.corner_radius_m}"
            )

    def curve(self, offset_m: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(a, b, r)` of the parallel curve at lateral `offset_m` (positive outward)."""
        o = np.asarray(offset_m, dtype=np.float64)
        return self.half_x_m + o, self.half_y_m + o, self.corner_radius_m + o

    def perimeter_at(self, offset_m: object) -> np.ndarray:
        return perimeter(*self.curve(offset_m))

    def pose_at(self, s_m: object, offset_m: object) -> tuple[np.ndarray, np.ndarray]:
        """Map-frame `(xy (..., 2), heading_rad (...))` at arc length `s_m` on the curve at `offset_m`
        (heading of counter-clockwise travel)."""
        xy, heading = point_at(s_m, *self.curve(offset_m))
        return xy + np.asarray(self.center_xy), heading

    def offset_of(self, xy_map: object) -> np.ndarray:
        """Signed lateral offset (m, positive outward) of map points `(..., 2)` from the centre-line."""
        local = np.asarray(xy_map, dtype=np.float64) - np.asarray(self.center_xy)
        return signed_offset(local, self.half_x_m, self.half_y_m, self.corner_radius_m)

    def transfer_arc(self, s_m: object, from_offset_m: float, to_offset_m: float) -> np.ndarray:
        """Arc length on the curve at `to_offset_m` beside arc length `s_m` of the curve at
        `from_offset_m` (arc lengths differ between parallel curves by the corners' extra length)."""
        xy, _ = self.pose_at(s_m, from_offset_m)
        return self.arc_of(xy, to_offset_m)

    def arc_of(self, xy_map: object, offset_m: float = 0.0) -> np.ndarray:
        """Arc length on the curve at `offset_m` nearest to map points `(..., 2)`."""
        local = np.asarray(xy_map, dtype=np.float64) - np.asarray(self.center_xy)
        a, b, r = self.curve(offset_m)
        return arc_position(local, float(a), float(b), float(r))
