"""Voxelization of lidar points: hard (capped) voxels, dynamic voxels and pillars.

The public entry points are `voxelize` (hard mode), `Voxelizer` (hard mode, reusing its buffers
from call to call), `dynamic_voxelize`, `scatter_mean` and `scatter_max`. Each has three
interchangeable backends that give identical outputs:

- `"numba"`: the CPU kernels in `voxelize_kernels` (`@njit(parallel=True, cache=True)`), run by
  `voxelize_cpu`;
- `"reference"`: the plain NumPy twin in `voxelize_reference` (slow, obviously correct);
- `"cuda"`: the `numba.cuda` kernels in `voxelize_cuda` (hard and dynamic voxelization).

Geometry contract (shared by all backends, and equal to spconv 2.3.8's `PointToVoxel` on the CPU):

- points are `(N, C)` float32, `C >= 3`, columns `x, y, z, ...` in metres in whatever frame the
  range is given in (the lidar or ego frame); all `C` columns are copied into the voxel features;
- the voxel index along each axis is `floor((p - range_min) / voxel_size)`, computed in float32
  arithmetic (as spconv does), and a point is kept when `0 <= index < grid_size` on all three axes:
  a point exactly on the upper face of the range is outside, one on the lower face is inside;
- `grid_size = round((range_max - range_min) / voxel_size)` in float32, rounding halves away from 0;
- hard mode: voxels are numbered in the order their first point appears in the input; once
  `max_voxels` voxels exist, points of new cells are dropped; each voxel keeps its first
  `max_points_per_voxel` points in input order; unused feature slots are zero;
- coordinates are `(z, y, x)` voxel indices (int32), the layout spconv and the sparse
  convolutions expect.

Differences from spconv, by choice: a point with NaN in x, y or z is dropped and counted in
`num_nan` (spconv drops it silently as out of range); the counts of points dropped for each reason
are reported. NaN in the other columns is copied through unchanged, as spconv does.

The modules: `voxelize_types` (config, results, array conventions), `voxelize_kernels` (the Numba
kernels), `voxelize_cpu` (their memory and calls), `voxelize_reference` (the NumPy twin),
`voxelize_cuda` (the GPU kernels) and this one, which picks a backend.
"""

from __future__ import annotations

from typing import Any, Literal

import numba
import numpy as np

from avfusion.fusion.ops import voxelize_reference
from avfusion.fusion.ops.voxelize_cpu import Voxelizer, dynamic_voxelize_numba, voxelize_numba
from avfusion.fusion.ops.voxelize_kernels import _scatter_max_kernel, _scatter_mean_kernel, hash_table_bits
from avfusion.fusion.ops.voxelize_types import (
    Backend,
    DynamicVoxels,
    VoxelConfig,
    Voxels,
    as_output_kind,
    check_points,
    convert_dynamic,
    convert_voxels,
    host_points,
    is_cuda_tensor,
    is_torch,
    nuscenes_pillar_config,
    nuscenes_voxel_config,
)

__all__ = [
    "Backend",
    "DynamicVoxels",
    "VoxelConfig",
    "Voxelizer",
    "Voxels",
    "check_points",
    "dynamic_voxelize",
    "hash_table_bits",
    "host_points",
    "numba_threads",
    "nuscenes_pillar_config",
    "nuscenes_voxel_config",
    "scatter_max",
    "scatter_mean",
    "voxelize",
]


def voxelize(points: Any, config: VoxelConfig, backend: Backend = "numba") -> Voxels:
    """Hard voxelization (see the module docstring for the exact rules).

    points: (N, C>=3) float32 NumPy array or torch tensor, columns x, y, z, ... in the frame of
        `config.point_cloud_range`; never modified.
    backend: "numba" (CPU kernels), "reference" (NumPy twin) or "cuda" (numba.cuda; takes CUDA
        tensors, or host arrays that it copies to the GPU and back).
    Returns `Voxels` whose arrays are of the same kind and device as `points`.
    """
    if backend == "cuda":
        # Imported on first use: numba.cuda reads NUMBA_ENABLE_CUDASIM when it is first imported.
        from avfusion.fusion.ops import voxelize_cuda

        return voxelize_cuda.voxelize_cuda(points, config)
    host = host_points(points)
    if backend == "numba":
        result = voxelize_numba(host, config)
    elif backend == "reference":
        result = voxelize_reference.voxelize_reference(host, config)
    else:
        raise ValueError(f"backend must be 'numba', 'reference' or 'cuda', got {backend!r}")
    return convert_voxels(points, result)


def dynamic_voxelize(points: Any, config: VoxelConfig, backend: Backend = "numba") -> DynamicVoxels:
    """Dynamic voxelization: every point's voxel (first-seen order), no caps on points or voxels.

    `config.max_points_per_voxel` and `config.max_voxels` are ignored. Same point contract and
    backends as `voxelize`.
    """
    if backend == "cuda":
        # Imported on first use: numba.cuda reads NUMBA_ENABLE_CUDASIM when it is first imported.
        from avfusion.fusion.ops import voxelize_cuda

        return voxelize_cuda.dynamic_voxelize_cuda(points, config)
    host = host_points(points)
    if backend == "numba":
        result = dynamic_voxelize_numba(host, config)
    elif backend == "reference":
        result = voxelize_reference.dynamic_voxelize_reference(host, config)
    else:
        raise ValueError(f"backend must be 'numba', 'reference' or 'cuda', got {backend!r}")
    return convert_dynamic(points, result)


def _scatter_inputs(features: Any, point_voxel_index: Any, num_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    if is_cuda_tensor(features) or is_cuda_tensor(point_voxel_index):
        raise ValueError("scatter_mean / scatter_max run on the CPU: move the tensors to the CPU first")
    feats = features.detach().numpy() if is_torch(features) else np.asarray(features)
    index = point_voxel_index.detach().numpy() if is_torch(point_voxel_index) else np.asarray(point_voxel_index)
    if feats.ndim != 2 or feats.dtype != np.float32:
        raise ValueError(f"features must be (N, C) float32, got shape {feats.shape} {feats.dtype}")
    if index.shape != (feats.shape[0],) or index.dtype != np.int32:
        raise ValueError(f"point_voxel_index must be ({feats.shape[0]},) int32, got shape {index.shape} {index.dtype}")
    if num_voxels < 0 or (index.size and int(index.max()) >= num_voxels):
        raise ValueError(f"point_voxel_index holds voxels beyond num_voxels={num_voxels}")
    return np.ascontiguousarray(feats), np.ascontiguousarray(index)


def scatter_mean(
    features: Any, point_voxel_index: Any, num_voxels: int, backend: Literal["numba", "reference"] = "numba"
) -> Any:
    """Mean of the features of each voxel's points.

    features: (N, C) float32; point_voxel_index: (N,) int32, -1 = ignore the point.
    Returns (num_voxels, C) float32 (sums in float64 in point order; empty voxels are 0), a
    torch tensor when `features` is one.
    """
    feats, index = _scatter_inputs(features, point_voxel_index, num_voxels)
    if backend == "reference":
        out = voxelize_reference.scatter_mean_reference(feats, index, num_voxels)
    elif backend == "numba":
        sums = np.zeros((num_voxels, feats.shape[1]), np.float64)
        counts = np.zeros(num_voxels, np.int64)
        out = np.empty((num_voxels, feats.shape[1]), np.float32)
        _scatter_mean_kernel(feats, index, sums, counts, out)
    else:
        raise ValueError(f"backend must be 'numba' or 'reference', got {backend!r}")
    return as_output_kind(features, out)


def scatter_max(
    features: Any, point_voxel_index: Any, num_voxels: int, backend: Literal["numba", "reference"] = "numba"
) -> Any:
    """Per-voxel maximum of each feature column (NaN propagates; empty voxels are 0).

    features: (N, C) float32; point_voxel_index: (N,) int32, -1 = ignore the point.
    Returns (num_voxels, C) float32, a torch tensor when `features` is one.
    """
    feats, index = _scatter_inputs(features, point_voxel_index, num_voxels)
    if backend == "reference":
        out = voxelize_reference.scatter_max_reference(feats, index, num_voxels)
    elif backend == "numba":
        out = np.zeros((num_voxels, feats.shape[1]), np.float32)
        _scatter_max_kernel(feats, index, np.zeros(num_voxels, np.int64), out)
    else:
        raise ValueError(f"backend must be 'numba' or 'reference', got {backend!r}")
    return as_output_kind(features, out)


def numba_threads() -> int:
    """Threads the parallel CPU kernels use (Numba's setting)."""
    return int(numba.get_num_threads())
