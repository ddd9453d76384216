"""Plain NumPy twin of the voxelization kernels: slow, vectorized, obviously correct.

It follows the contract in `voxelize`'s module docstring step by step, with `np.unique` in place
of the kernels' cell table, so that the fast backends can be checked against it.
"""

from __future__ import annotations

import numpy as np

from avfusion.fusion.ops.voxelize_types import DynamicVoxels, VoxelConfig, Voxels


def cell_keys_reference(points: np.ndarray, config: VoxelConfig) -> np.ndarray:
    """(N,) int64 linear cell key `(z * gy + y) * gx + x`, -1 out of range, -2 NaN in x, y or z.

    points: (N, C>=3) float32 in the frame of `config.point_cloud_range`.
    """
    xyz = points[:, :3]
    scaled = (xyz - config.range_min_f32) / config.voxel_size_f32  # float32 throughout, as spconv
    grid = np.asarray(config.grid_size_xyz, np.int64)
    with np.errstate(invalid="ignore"):  # NaN compares False: such points are out of range
        inside = np.all((scaled >= 0) & (scaled < grid), axis=1)
    cells = np.zeros((points.shape[0], 3), np.int64)
    cells[inside] = np.floor(scaled[inside]).astype(np.int64)
    keys = (cells[:, 2] * grid[1] + cells[:, 1]) * grid[0] + cells[:, 0]
    keys[~inside] = -1
    keys[np.isnan(xyz).any(axis=1)] = -2
    return keys


def _first_seen_voxels(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels of the valid keys numbered in first-seen order.

    Returns (voxel of each point, -1 where key < 0), the key of each voxel, and for each valid
    point its rank among the points of its voxel in input order (0 = first).
    """
    n = keys.shape[0]
    valid = np.flatnonzero(keys >= 0)
    point_voxel = np.full(n, -1, np.int64)
    rank_in_voxel = np.full(n, -1, np.int64)
    if valid.size == 0:
        return point_voxel, np.zeros(0, np.int64), rank_in_voxel
    unique_keys, first_index, inverse = np.unique(keys[valid], return_index=True, return_inverse=True)
    order = np.argsort(first_index, kind="stable")  # sorted-key order -> first-seen order
    voxel_of_sorted = np.empty_like(order)
    voxel_of_sorted[order] = np.arange(order.size)
    voxel = voxel_of_sorted[inverse]
    point_voxel[valid] = voxel
    # Rank within the voxel: a stable sort by voxel keeps input order inside each group.
    by_voxel = np.argsort(voxel, kind="stable")
    group_start = np.searchsorted(voxel[by_voxel], voxel[by_voxel], side="left")
    ranks = np.empty(valid.size, np.int64)
    ranks[by_voxel] = np.arange(valid.size) - group_start
    rank_in_voxel[valid] = ranks
    return point_voxel, unique_keys[order], rank_in_voxel


def _coords_zyx(voxel_keys: np.ndarray, config: VoxelConfig) -> np.ndarray:
    gx, gy, _ = config.grid_size_xyz
    return np.stack([voxel_keys // (gx * gy), (voxel_keys // gx) % gy, voxel_keys % gx], axis=1).astype(np.int32)


def voxelize_reference(points: np.ndarray, config: VoxelConfig) -> Voxels:
    """Hard voxelization of (N, C) float32 points; see `voxelize.voxelize`."""
    keys = cell_keys_reference(points, config)
    point_voxel, voxel_keys, rank = _first_seen_voxels(keys)
    # Voxels beyond the cap are the last seen; their points are dropped entirely.
    voxel_overflow = point_voxel >= config.max_voxels
    point_voxel[voxel_overflow] = -1
    voxel_keys = voxel_keys[: config.max_voxels]
    stored = (point_voxel >= 0) & (rank < config.max_points_per_voxel)
    num_voxels = voxel_keys.shape[0]
    features = np.zeros((num_voxels, config.max_points_per_voxel, points.shape[1]), np.float32)
    features[point_voxel[stored], rank[stored]] = points[stored]
    num_points = np.bincount(point_voxel[stored], minlength=num_voxels).astype(np.int32)
    return Voxels(
        features=features,
        coords_zyx=_coords_zyx(voxel_keys, config),
        num_points=num_points,
        point_voxel_index=point_voxel.astype(np.int32),
        num_nan=int(np.count_nonzero(keys == -2)),
        num_out_of_range=int(np.count_nonzero(keys == -1)),
        num_voxel_overflow=int(np.count_nonzero(voxel_overflow)),
        num_point_overflow=int(np.count_nonzero((point_voxel >= 0) & ~stored)),
    )


def dynamic_voxelize_reference(points: np.ndarray, config: VoxelConfig) -> DynamicVoxels:
    """Dynamic voxelization of (N, C) float32 points; see `voxelize.dynamic_voxelize`."""
    keys = cell_keys_reference(points, config)
    point_voxel, voxel_keys, _ = _first_seen_voxels(keys)
    num_points = np.bincount(point_voxel[point_voxel >= 0], minlength=voxel_keys.shape[0]).astype(np.int32)
    return DynamicVoxels(
        point_voxel_index=point_voxel.astype(np.int32),
        coords_zyx=_coords_zyx(voxel_keys, config),
        num_points=num_points,
        num_nan=int(np.count_nonzero(keys == -2)),
        num_out_of_range=int(np.count_nonzero(keys == -1)),
    )


def scatter_mean_reference(features: np.ndarray, point_voxel_index: np.ndarray, num_voxels: int) -> np.ndarray:
    """(V, C) float32 mean per voxel, float64 sums accumulated in point order; empty voxels 0."""
    keep = point_voxel_index >= 0
    sums = np.zeros((num_voxels, features.shape[1]), np.float64)
    np.add.at(sums, point_voxel_index[keep], features[keep].astype(np.float64))
    counts = np.bincount(point_voxel_index[keep], minlength=num_voxels)
    out = np.zeros_like(sums)
    np.divide(sums, counts[:, None], out=out, where=counts[:, None] > 0)
    return out.astype(np.float32)


def scatter_max_reference(features: np.ndarray, point_voxel_index: np.ndarray, num_voxels: int) -> np.ndarray:
    """(V, C) float32 maximum per voxel (NaN propagates, as np.maximum); empty voxels 0."""
    keep = point_voxel_index >= 0
    out = np.full((num_voxels, features.shape[1]), -np.inf, np.float32)
    np.maximum.at(out, point_voxel_index[keep], features[keep])
    out[np.bincount(point_voxel_index[keep], minlength=num_voxels) == 0] = 0.0
    return out
