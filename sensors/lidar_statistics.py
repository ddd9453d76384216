"""What a lidar sweep looks like, as histograms that two sources of sweeps can be compared by.

`SweepStatistics` accumulates, over one or more keyframe sweeps: returns per ring, the xy range,
height and intensity of the returns, the share of returns on the ground, on annotated objects and
on everything else, and for each annotated box its class, distance and the returns inside it.
`compare` gives a distance per statistic between two accumulations (Jensen-Shannon distance of
the normalised histograms, base 2, in [0, 1], and the Wasserstein-1 distance in the statistic's
unit), which is what `avfusion bench realism` reports for the real sweep against synthetic ones.

Frames and units: points come in the LIDAR_TOP frame (x right, y forward, z up, metres) with the
ring index in column 4, as `.pcd.bin` stores them; statistics are taken in the ego frame
(x forward, y left, z up, z = 0 on the road under the car). A firing without a return is stored
at the sensor origin (both nuScenes and our generator do so) and counts as no return.

Ground, without labels: the ego-frame xy plane is cut into `GROUND_CELL_M` cells; a cell's ground
height is the lowest non-object return in it, accepted when it lies within `GROUND_BAND_M` (plus
a little per metre of range, for slopes) of the road plane z = 0; returns less than
`GROUND_ABOVE_M` above an accepted cell's ground are ground. Objects are the returns inside an
annotated box (before ground). The rest is "other": buildings, vegetation, poles, kerbs' faces,
parked things nobody annotated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import SE3

NUM_RINGS = 32
NO_RETURN_RANGE_M = 0.5  # returns closer than this to the sensor are firings without a return
RANGE_EDGES_M = np.arange(0.0, 102.0, 2.0)
HEIGHT_EDGES_M = np.arange(-3.0, 10.25, 0.25)
INTENSITY_EDGES = np.arange(0.0, 260.0, 4.0)
BOX_DISTANCE_EDGES_M = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
GROUND_CELL_M = 2.0
GROUND_BAND_M = 0.5
GROUND_ABOVE_M = 0.25
SHARE_NAMES = ("ground", "objects", "other")


@dataclass(slots=True)
class SweepStatistics:
    """Histograms accumulated over sweeps (counts, not normalised).

    Attributes:
        sweeps: sweeps added.
        firings: firings seen (returns + no-returns).
        ring_returns: `(32,)` returns per ring index.
        range_counts, height_counts, intensity_counts: histograms over `RANGE_EDGES_M` (xy range
            from the ego origin), `HEIGHT_EDGES_M` (ego z) and `INTENSITY_EDGES` (0-255); values
            beyond the edges go to the end bins.
        share_counts: `(3,)` returns on ground, objects, other.
        box_label, box_distance_m, box_points: one entry per annotated box: detection class index,
            xy distance from the ego origin, returns inside it (counted here).
        box_points_annotated: the box's own `num_lidar_pts` where the source gives it, else -1.
    """

    sweeps: int = 0
    firings: int = 0
    ring_returns: np.ndarray = field(default_factory=lambda: np.zeros(NUM_RINGS, np.int64))
    range_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(RANGE_EDGES_M) - 1, np.int64))
    height_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(HEIGHT_EDGES_M) - 1, np.int64))
    intensity_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(INTENSITY_EDGES) - 1, np.int64))
    share_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(SHARE_NAMES), np.int64))
    box_label: list[int] = field(default_factory=list)
    box_distance_m: list[float] = field(default_factory=list)
    box_points: list[int] = field(default_factory=list)
    box_points_annotated: list[int] = field(default_factory=list)

    def add(self, points_lidar: np.ndarray, ego_from_lidar: SE3, boxes_ego: Boxes3D | None) -> None:
        """Add one sweep: `points_lidar` `(N, >=5)` x, y, z, intensity, ring (LIDAR_TOP frame);
        `boxes_ego` its annotated boxes in the ego frame (None or empty: no objects)."""
        points = np.asarray(points_lidar, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] < 5:
            raise ValueError(f"sweep points must have shape (N, 5), got {points.shape}")
        self.sweeps += 1
        self.firings += len(points)
        returned = np.linalg.norm(points[:, :3], axis=1) >= NO_RETURN_RANGE_M
        points = points[returned]
        ring = np.clip(points[:, 4].astype(np.int64), 0, NUM_RINGS - 1)
        self.ring_returns += np.bincount(ring, minlength=NUM_RINGS)
        xyz = ego_from_lidar.apply(points[:, :3])  # (N, 3) ego frame
        self.range_counts += _histogram(np.hypot(xyz[:, 0], xyz[:, 1]), RANGE_EDGES_M)
        self.height_counts += _histogram(xyz[:, 2], HEIGHT_EDGES_M)
        self.intensity_counts += _histogram(points[:, 3], INTENSITY_EDGES)

        on_object = np.zeros(len(xyz), dtype=bool)
        if boxes_ego is not None and len(boxes_ego):
            inside = boxes_ego.points_in_boxes(xyz)  # (N, B)
            on_object = inside.any(axis=1)
            self.box_label.extend(int(v) for v in boxes_ego.label)
            self.box_distance_m.extend(float(v) for v in np.hypot(boxes_ego.center[:, 0], boxes_ego.center[:, 1]))
            self.box_points.extend(int(v) for v in inside.sum(axis=0))
            self.box_points_annotated.extend(int(v) for v in boxes_ego.num_lidar_pts)
        ground = ground_returns(xyz, on_object)
        self.share_counts += np.array([ground.sum(), on_object.sum(), (~ground & ~on_object).sum()], np.int64)

    def normalised(self) -> dict[str, np.ndarray]:
        """Each histogram as fractions of its total (ring: returns per firing of that ring)."""
        firings_per_ring = max(self.firings / NUM_RINGS, 1.0)
        return {
            "ring_return_rate": self.ring_returns / firings_per_ring,
            "range": _fractions(self.range_counts),
            "height": _fractions(self.height_counts),
            "intensity": _fractions(self.intensity_counts),
            "share": _fractions(self.share_counts),
        }

    def box_table(self) -> dict[tuple[int, int], np.ndarray]:
        """`(class index, distance bin)` -> returns inside each box of that class and distance bin."""
        table: dict[tuple[int, int], list[int]] = {}
        bins = np.digitize(self.box_distance_m, BOX_DISTANCE_EDGES_M) - 1
        for label, distance_bin, count in zip(self.box_label, bins, self.box_points, strict=True):
            if 0 <= distance_bin < len(BOX_DISTANCE_EDGES_M) - 1:
                table.setdefault((label, int(distance_bin)), []).append(count)
        return {key: np.array(values) for key, values in sorted(table.items())}


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(np.clip(values, edges[0], np.nextafter(edges[-1], -np.inf)), bins=edges)[0].astype(np.int64)


def _fractions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(len(counts))


def ground_returns(xyz_ego: np.ndarray, on_object: np.ndarray) -> np.ndarray:
    """`(N,)` bool: the returns `(N, 3)` (ego frame) that lie on the ground (module docstring's rule);
    returns flagged in `on_object` are never ground and do not set a cell's ground height."""
    result = np.zeros(len(xyz_ego), dtype=bool)
    candidates = np.flatnonzero(~on_object)
    if candidates.size == 0:
        return result
    _, cell_index = cell_indices(xyz_ego[candidates, :2], GROUND_CELL_M)
    z = xyz_ego[candidates, 2]
    lowest = np.full(cell_index.max() + 1, np.inf)
    np.minimum.at(lowest, cell_index, z)
    range_m = np.hypot(xyz_ego[candidates, 0], xyz_ego[candidates, 1])
    floor = lowest[cell_index]
    accepted = np.abs(floor) < GROUND_BAND_M + 0.02 * range_m
    result[candidates] = accepted & (z - floor < GROUND_ABOVE_M)
    return result


def cell_indices(xy: np.ndarray, cell_m: float) -> tuple[np.ndarray, np.ndarray]:
    """The square cells of side `cell_m` that points `(N, 2)` fall in: `(K, 2)` int64 cell
    coordinates (floor(xy / cell_m)) of the occupied cells and `(N,)` each point's cell index."""
    cells = np.floor(np.asarray(xy, dtype=np.float64) / cell_m).astype(np.int64)
    # One int64 key per cell (a sort of plain integers, far faster than unique rows).
    offset = 1 << 30
    keys = (cells[:, 0] + offset) * (1 << 31) + (cells[:, 1] + offset)
    unique, index = np.unique(keys, return_inverse=True)
    occupied = np.stack([unique // (1 << 31) - offset, unique % (1 << 31) - offset], axis=1)
    return occupied, index.reshape(-1)


@dataclass(frozen=True, slots=True)
class Distance:
    """How far apart two sources are on one statistic: Jensen-Shannon distance (base 2, 0 = same,
    1 = disjoint) and Wasserstein-1 distance in the statistic's unit (None where it has none)."""

    jensen_shannon: float
    wasserstein: float | None
    unit: str


def _js(p: np.ndarray, q: np.ndarray) -> float:
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(jensenshannon(p, q, base=2.0))


def _wasserstein(centres: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(wasserstein_distance(centres, centres, p, q))


def compare(reference: SweepStatistics, candidate: SweepStatistics) -> dict[str, Distance]:
    """Distance per statistic between two accumulations (see the module docstring).

    Ring: the distribution of returns over the rings (JS) and the mean absolute difference of the
    per-ring return rates (returns per firing). Box points: for every (class, distance bin) that
    both have boxes in, |log2| of the ratio of their median returns per box, averaged with the
    reference's box counts as weights (in "doublings"; JS does not apply)."""
    a, b = reference.normalised(), candidate.normalised()
    result = {
        "ring": Distance(
            _js(reference.ring_returns.astype(float), candidate.ring_returns.astype(float)),
            float(np.mean(np.abs(a["ring_return_rate"] - b["ring_return_rate"]))),
            "returns per firing",
        ),
        "range": Distance(
            _js(a["range"], b["range"]), _wasserstein(_centres(RANGE_EDGES_M), a["range"], b["range"]), "m"
        ),
        "height": Distance(
            _js(a["height"], b["height"]), _wasserstein(_centres(HEIGHT_EDGES_M), a["height"], b["height"]), "m"
        ),
        "intensity": Distance(
            _js(a["intensity"], b["intensity"]),
            _wasserstein(_centres(INTENSITY_EDGES), a["intensity"], b["intensity"]),
            "0-255",
        ),
        "share": Distance(
            _js(a["share"], b["share"]), float(np.abs(a["share"] - b["share"]).sum() / 2), "fraction moved"
        ),
    }
    ref_table, cand_table = reference.box_table(), candidate.box_table()
    weights, gaps = [], []
    for key, counts in ref_table.items():
        if key in cand_table:
            gaps.append(abs(np.log2((np.median(cand_table[key]) + 1.0) / (np.median(counts) + 1.0))))
            weights.append(len(counts))
    box_gap = float(np.average(gaps, weights=weights)) if gaps else float("nan")
    result["box_points"] = Distance(float("nan"), box_gap, "log2 ratio of median returns per box")
    return result


def _centres(edges: np.ndarray) -> np.ndarray:
    return 0.5 * (edges[1:] + edges[:-1])
