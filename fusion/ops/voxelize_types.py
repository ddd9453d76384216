"""Voxelization's values: the configuration, the results, and the array conventions of every backend.

`VoxelConfig` says where and how finely to voxelize; `Voxels` (hard mode) and `DynamicVoxels` hold
the results. The rules the backends follow are in `avfusion.fusion.ops.voxelize`'s docstring. The
backends (`voxelize_cpu`, `voxelize_reference`, `voxelize_cuda`) and the dispatch in `voxelize` all
import them from here, so that no backend imports the dispatch module that imports it.

Torch tensors are accepted wherever NumPy arrays are, and the outputs are then torch tensors
sharing memory with the kernels' output arrays (CPU: `torch.from_numpy`; CUDA: the tensors are
allocated by torch and written by the kernels through `__cuda_array_interface__`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Backend = Literal["numba", "reference", "cuda"]

# Key values of points that have no cell; real cell keys are >= 0.
KEY_OUT_OF_RANGE = -1
KEY_NAN = -2

# Cell keys are int32, and the CUDA backend's cell table is dense over the grid: cap its size.
MAX_GRID_CELLS = 2**30


# ---------------------------------------------------------------------------------------------
# Configuration and results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoxelConfig:
    """Where and how finely to voxelize.

    point_cloud_range: `(xmin, ymin, zmin, xmax, ymax, zmax)` in metres, the frame of the points.
    voxel_size: `(dx, dy, dz)` in metres.
    max_points_per_voxel: hard mode keeps at most this many points a voxel (first come).
    max_voxels: hard mode makes at most this many voxels (first seen); dynamic mode has no caps.
    """

    point_cloud_range: tuple[float, float, float, float, float, float]
    voxel_size: tuple[float, float, float]
    max_points_per_voxel: int
    max_voxels: int

    def __post_init__(self) -> None:
        point_cloud_range = tuple(float(v) for v in self.point_cloud_range)
        voxel_size = tuple(float(v) for v in self.voxel_size)
        if len(point_cloud_range) != 6:
            raise ValueError(f"point_cloud_range must have 6 values, got {len(point_cloud_range)}")
        if len(voxel_size) != 3:
            raise ValueError(f"voxel_size must have 3 values, got {len(voxel_size)}")
        if not all(math.isfinite(v) for v in (*point_cloud_range, *voxel_size)):
            raise ValueError(f"range and voxel size must be finite, got {point_cloud_range}, {voxel_size}")
        if any(v <= 0 for v in voxel_size):
            raise ValueError(f"voxel_size must be positive, got {voxel_size}")
        if any(point_cloud_range[i + 3] <= point_cloud_range[i] for i in range(3)):
            raise ValueError(f"point_cloud_range needs max > min on each axis, got {point_cloud_range}")
        if int(self.max_points_per_voxel) < 1 or int(self.max_voxels) < 1:
            raise ValueError(
                f"max_points_per_voxel and max_voxels must be >= 1, got "
                f"{self.max_points_per_voxel} and {self.max_voxels}"
            )
        object.__setattr__(self, "point_cloud_range", point_cloud_range)
        object.__setattr__(self, "voxel_size", voxel_size)
        object.__setattr__(self, "max_points_per_voxel", int(self.max_points_per_voxel))
        object.__setattr__(self, "max_voxels", int(self.max_voxels))
        grid = self.grid_size_xyz
        if min(grid) < 1:
            raise ValueError(f"the range holds less than one voxel on some axis: grid {grid}")
        if self.num_cells > MAX_GRID_CELLS:
            raise ValueError(
                f"grid {grid} has {self.num_cells} cells, more than the {MAX_GRID_CELLS} int32 "
                "cell keys (and the CUDA backend's dense cell table) allow; use a larger voxel_size or a smaller range"
            )

    @classmethod
    def pillars(
        cls,
        point_cloud_range: tuple[float, float, float, float, float, float],
        pillar_size_xy: tuple[float, float],
        max_points_per_pillar: int,
        max_pillars: int,
    ) -> VoxelConfig:
        """Pillars: voxels whose z extent is the whole range (one voxel along z)."""
        z_extent = float(point_cloud_range[5]) - float(point_cloud_range[2])
        return cls(
            point_cloud_range=point_cloud_range,
            voxel_size=(float(pillar_size_xy[0]), float(pillar_size_xy[1]), z_extent),
            max_points_per_voxel=max_points_per_pillar,
            max_voxels=max_pillars,
        )

    @property
    def range_min_f32(self) -> np.ndarray:
        """`(xmin, ymin, zmin)` as float32, the precision the kernels compute in."""
        return np.asarray(self.point_cloud_range[:3], dtype=np.float32)

    @property
    def voxel_size_f32(self) -> np.ndarray:
        return np.asarray(self.voxel_size, dtype=np.float32)

    @property
    def grid_size_xyz(self) -> tuple[int, int, int]:
        """Number of voxels along x, y, z: `round((max - min) / size)` in float32, as spconv."""
        extent = np.asarray(self.point_cloud_range[3:], np.float32) - self.range_min_f32
        cells = extent / self.voxel_size_f32  # float32 / float32 stays float32
        return tuple(math.floor(float(c) + 0.5) for c in cells)  # type: ignore[return-value]

    @property
    def grid_size_zyx(self) -> tuple[int, int, int]:
        x, y, z = self.grid_size_xyz
        return (z, y, x)

    @property
    def num_cells(self) -> int:
        x, y, z = self.grid_size_xyz
        return x * y * z


def nuscenes_voxel_config() -> VoxelConfig:
    """CenterPoint / BEVFusion nuScenes voxels: 0.075 x 0.075 x 0.2 m, 10 points, 120k voxels."""
    return VoxelConfig((-54.0, -54.0, -5.0, 54.0, 54.0, 3.0), (0.075, 0.075, 0.2), 10, 120000)


def nuscenes_pillar_config() -> VoxelConfig:
    """CenterPoint-PointPillars nuScenes pillars: 0.2 x 0.2 m, 20 points, 30k pillars."""
    return VoxelConfig.pillars((-54.0, -54.0, -5.0, 54.0, 54.0, 3.0), (0.2, 0.2), 20, 30000)


def _dtype_name(array: Any) -> str:
    return str(array.dtype).removeprefix("torch.")


_NUMPY_DTYPES = {"float32": np.dtype(np.float32), "int32": np.dtype(np.int32)}


def _check(name: str, array: Any, ndim: int, dtype: str) -> None:
    if type(array) is np.ndarray and array.ndim == ndim and array.dtype is _NUMPY_DTYPES[dtype]:
        return  # the common case without building the dtype's name
    if len(array.shape) != ndim or _dtype_name(array) != dtype:
        raise ValueError(f"{name} must be {ndim}-D {dtype}, got shape {tuple(array.shape)} {_dtype_name(array)}")


@dataclass(frozen=True, slots=True)
class Voxels:
    """Hard voxelization of N points into V voxels of up to P points with C features.

    features: (V, P, C) float32, the first `num_points[v]` rows of voxel v are its points in input
        order (all C input columns); the rest are zero.
    coords_zyx: (V, 3) int32 voxel indices (z, y, x); voxels are in first-seen order.
    num_points: (V,) int32 in [1, P].
    point_voxel_index: (N,) int32, the voxel of each input point, -1 when the point was dropped
        (NaN, out of range, or its cell got no voxel because `max_voxels` were used). A point beyond
        its voxel's `max_points_per_voxel` keeps the voxel's index although it is not in `features`
        (spconv's `pc_voxel_id` convention).
    num_nan / num_out_of_range / num_voxel_overflow / num_point_overflow: how many points were
        dropped for each reason (NaN in x, y or z; outside the range; no voxel left; voxel full).

    The arrays are NumPy arrays or torch tensors, the same kind (and device) as the input points.
    """

    features: Any
    coords_zyx: Any
    num_points: Any
    point_voxel_index: Any
    num_nan: int
    num_out_of_range: int
    num_voxel_overflow: int
    num_point_overflow: int

    def __post_init__(self) -> None:
        _check("features", self.features, 3, "float32")
        _check("coords_zyx", self.coords_zyx, 2, "int32")
        _check("num_points", self.num_points, 1, "int32")
        _check("point_voxel_index", self.point_voxel_index, 1, "int32")
        num_voxels = self.features.shape[0]
        if tuple(self.coords_zyx.shape) != (num_voxels, 3) or tuple(self.num_points.shape) != (num_voxels,):
            raise ValueError(
                f"features {tuple(self.features.shape)}, coords_zyx {tuple(self.coords_zyx.shape)} and "
                f"num_points {tuple(self.num_points.shape)} disagree on the number of voxels"
            )

    @property
    def num_voxels(self) -> int:
        return int(self.features.shape[0])

    def __len__(self) -> int:
        return self.num_voxels


@dataclass(frozen=True, slots=True)
class DynamicVoxels:
    """Dynamic voxelization of N points into V voxels, without caps.

    point_voxel_index: (N,) int32, the voxel of each point, -1 when dropped (NaN or out of range).
    coords_zyx: (V, 3) int32 voxel indices (z, y, x) in first-seen order.
    num_points: (V,) int32 >= 1, points in each voxel.
    num_nan / num_out_of_range: points dropped for each reason.

    Features per voxel come from `scatter_mean` / `scatter_max` over `point_voxel_index`.
    """

    point_voxel_index: Any
    coords_zyx: Any
    num_points: Any
    num_nan: int
    num_out_of_range: int

    def __post_init__(self) -> None:
        _check("point_voxel_index", self.point_voxel_index, 1, "int32")
        _check("coords_zyx", self.coords_zyx, 2, "int32")
        _check("num_points", self.num_points, 1, "int32")
        num_voxels = self.coords_zyx.shape[0]
        if tuple(self.coords_zyx.shape) != (num_voxels, 3) or tuple(self.num_points.shape) != (num_voxels,):
            raise ValueError(
                f"coords_zyx {tuple(self.coords_zyx.shape)} and num_points {tuple(self.num_points.shape)} "
                "disagree on the number of voxels"
            )

    @property
    def num_voxels(self) -> int:
        return int(self.coords_zyx.shape[0])

    def __len__(self) -> int:
        return self.num_voxels


# ---------------------------------------------------------------------------------------------
# Input / output conversion (torch tensors in and out without copies)
# ---------------------------------------------------------------------------------------------


def is_torch(array: Any) -> bool:
    return type(array).__module__.startswith("torch")


def is_cuda_tensor(array: Any) -> bool:
    return is_torch(array) and array.device.type == "cuda"


def host_points(points: Any) -> np.ndarray:
    """(N, C) float32 C-contiguous NumPy view of `points` (a copy only when not contiguous)."""
    if (
        type(points) is np.ndarray
        and points.dtype == np.float32
        and points.ndim == 2
        and points.shape[1] >= 3
        and points.flags.c_contiguous
    ):
        return points  # the common case in few steps (with cold caches: ~30 us instead of ~120 us)
    if is_cuda_tensor(points):
        raise ValueError("points are a CUDA tensor: use backend='cuda'")
    array = points.detach().numpy() if is_torch(points) else np.asarray(points)
    check_points(array)
    return np.ascontiguousarray(array)


def check_points(points: Any) -> None:
    if len(points.shape) != 2 or points.shape[1] < 3 or _dtype_name(points) != "float32":
        raise ValueError(
            f"points must be (N, C>=3) float32 (x, y, z, ...), got shape {tuple(points.shape)} {_dtype_name(points)}"
        )


def as_output_kind(like: Any, array: np.ndarray) -> Any:
    """`array` as the same kind as `like`: a torch tensor sharing memory, or the array itself."""
    if is_torch(like):
        import torch

        return torch.from_numpy(array)
    return array


def convert_voxels(like: Any, voxels: Voxels) -> Voxels:
    if not is_torch(like):
        return voxels
    return Voxels(
        as_output_kind(like, voxels.features),
        as_output_kind(like, voxels.coords_zyx),
        as_output_kind(like, voxels.num_points),
        as_output_kind(like, voxels.point_voxel_index),
        voxels.num_nan,
        voxels.num_out_of_range,
        voxels.num_voxel_overflow,
        voxels.num_point_overflow,
    )


def convert_dynamic(like: Any, voxels: DynamicVoxels) -> DynamicVoxels:
    if not is_torch(like):
        return voxels
    return DynamicVoxels(
        as_output_kind(like, voxels.point_voxel_index),
        as_output_kind(like, voxels.coords_zyx),
        as_output_kind(like, voxels.num_points),
        voxels.num_nan,
        voxels.num_out_of_range,
    )
