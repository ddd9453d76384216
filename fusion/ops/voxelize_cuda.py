"""Voxelization on a GPU with `numba.cuda`: the same outputs as the CPU kernels, bit for bit.

Determinism comes from never letting thread scheduling choose an order. Atomics only compute
order-independent quantities (a minimum, a count); orders are derived from point indices:

1. per point: its cell key (float32 arithmetic, as on the CPU), and `atomic.min` of the point
   index into a dense per-cell table -> the first point of every cell;
2. per point: a flag "I am my cell's first point"; an exclusive prefix sum of the flags gives each
   cell its rank in first-seen order, which is its voxel number (voxels >= max_voxels are dropped);
3. slots inside a voxel are handed out in rounds: in round r every voxel's smallest not yet placed
   point index takes slot r (`atomic.min`), for r < max_points_per_voxel;
4. per voxel: decode (z, y, x), gather the placed points, zero the padding; reset the table.

It runs on a real GPU or, for tests, on Numba's CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`, set before
`numba.cuda` is first imported). Inputs: a CUDA torch tensor (outputs are torch tensors allocated on
its device and written in place through `__cuda_array_interface__`: no copies), or a host array
(copied to the GPU, outputs copied back). Kernels run on the default stream; the caller's current
torch stream is synchronized first.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numba import config as numba_config
from numba import cuda, int32

from avfusion.fusion.ops.voxelize_types import (
    DynamicVoxels,
    VoxelConfig,
    Voxels,
    check_points,
    host_points,
)

_INT32_MAX = np.iinfo(np.int32).max
# The simulator runs each thread of a block as a Python thread: keep blocks small there.
_THREADS = 64 if numba_config.ENABLE_CUDASIM else 256
_SCAN_BLOCK = 128  # compile-time size of the scan's shared memory
_lock = threading.Lock()  # the cached cell table is shared: one voxelization at a time
_tables: dict[int, Any] = {}


def cuda_available() -> bool:
    """True when kernels can run: a usable GPU, or the simulator."""
    return bool(cuda.is_available())


def _blocks(n: int, threads: int = _THREADS) -> int:
    return max(1, (n + threads - 1) // threads)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@cuda.jit
def _fill_kernel(array, value):  # pragma: no cover - device code
    i = cuda.grid(1)
    if i < array.shape[0]:
        array[i] = value


@cuda.jit
def _keys_kernel(points, range_min, voxel_size, grid_xyz, keys, table, drops):  # pragma: no cover
    """keys[i] = cell key or -1 (out of range) / -2 (NaN); table[key] = min point index."""
    i = cuda.grid(1)
    if i >= points.shape[0]:
        return
    x = points[i, 0]
    y = points[i, 1]
    z = points[i, 2]
    if x != x or y != y or z != z:
        keys[i] = -2
        cuda.atomic.add(drops, 0, 1)
        return
    fx = (x - range_min[0]) / voxel_size[0]
    fy = (y - range_min[1]) / voxel_size[1]
    fz = (z - range_min[2]) / voxel_size[2]
    gx = grid_xyz[0]
    gy = grid_xyz[1]
    gz = grid_xyz[2]
    if fx >= 0 and fx < gx and fy >= 0 and fy < gy and fz >= 0 and fz < gz:
        key = (int32(fz) * gy + int32(fy)) * gx + int32(fx)
        keys[i] = key
        cuda.atomic.min(table, key, i)
    else:
        keys[i] = -1
        cuda.atomic.add(drops, 1, 1)


@cuda.jit
def _first_flags_kernel(keys, table, flags):  # pragma: no cover - device code
    i = cuda.grid(1)
    if i < keys.shape[0]:
        key = keys[i]
        flags[i] = 1 if key >= 0 and table[key] == i else 0


@cuda.jit
def _block_scan_kernel(values, exclusive, block_sums):  # pragma: no cover - device code
    """Exclusive prefix sum inside each block of _SCAN_BLOCK values (Hillis-Steele)."""
    shared = cuda.shared.array(_SCAN_BLOCK, int32)
    t = cuda.threadIdx.x
    i = cuda.blockIdx.x * _SCAN_BLOCK + t
    value = values[i] if i < values.shape[0] else 0
    shared[t] = value
    cuda.syncthreads()
    offset = 1
    while offset < _SCAN_BLOCK:
        add = shared[t - offset] if t >= offset else 0
        cuda.syncthreads()
        shared[t] += add
        cuda.syncthreads()
        offset *= 2
    if i < values.shape[0]:
        exclusive[i] = shared[t] - value
    if t == _SCAN_BLOCK - 1:
        block_sums[cuda.blockIdx.x] = shared[t]


@cuda.jit
def _add_block_offsets_kernel(exclusive, block_offsets):  # pragma: no cover - device code
    i = cuda.grid(1)
    if i < exclusive.shape[0]:
        exclusive[i] += block_offsets[i // _SCAN_BLOCK]


@cuda.jit
def _voxel_ids_kernel(keys, table, ranks, max_voxels, point_voxel_index, voxel_keys, counts, stats):  # pragma: no cover
    """point -> voxel = rank of its cell's first point; counts per voxel. stats: [.., .., overflow, max count]."""
    i = cuda.grid(1)
    if i >= keys.shape[0]:
        return
    key = keys[i]
    if key < 0:
        point_voxel_index[i] = -1
        return
    first = table[key]
    voxel = ranks[first]
    if voxel >= max_voxels:
        point_voxel_index[i] = -1
        cuda.atomic.add(stats, 2, 1)
        return
    point_voxel_index[i] = voxel
    count = cuda.atomic.add(counts, voxel, 1) + 1
    cuda.atomic.max(stats, 3, count)
    if first == i:
        voxel_keys[voxel] = key


@cuda.jit
def _round_min_kernel(point_voxel_index, slot, round_min):  # pragma: no cover - device code
    i = cuda.grid(1)
    if i < point_voxel_index.shape[0]:
        voxel = point_voxel_index[i]
        if voxel >= 0 and slot[i] < 0:
            cuda.atomic.min(round_min, voxel, i)


@cuda.jit
def _round_take_kernel(point_voxel_index, slot, round_min, round_index, voxel_points):  # pragma: no cover
    i = cuda.grid(1)
    if i < point_voxel_index.shape[0]:
        voxel = point_voxel_index[i]
        if voxel >= 0 and slot[i] < 0 and round_min[voxel] == i:
            slot[i] = round_index
            voxel_points[voxel, round_index] = i


@cuda.jit
def _finish_hard_kernel(
    points, voxel_points, counts, voxel_keys, grid_xyz, features, coords_zyx, num_points, stats
):  # pragma: no cover
    v = cuda.grid(1)
    if v >= features.shape[0]:
        return
    gx = grid_xyz[0]
    gy = grid_xyz[1]
    key = voxel_keys[v]
    coords_zyx[v, 0] = key // (gx * gy)
    coords_zyx[v, 1] = (key // gx) % gy
    coords_zyx[v, 2] = key % gx
    max_points = features.shape[1]
    count = min(counts[v], max_points)
    if counts[v] > max_points:
        cuda.atomic.add(stats, 4, counts[v] - max_points)
    num_points[v] = count
    for s in range(max_points):
        if s < count:
            i = voxel_points[v, s]
            for c in range(features.shape[2]):
                features[v, s, c] = points[i, c]
        else:
            for c in range(features.shape[2]):
                features[v, s, c] = 0.0


@cuda.jit
def _finish_dynamic_kernel(counts, voxel_keys, grid_xyz, coords_zyx, num_points):  # pragma: no cover
    v = cuda.grid(1)
    if v >= coords_zyx.shape[0]:
        return
    gx = grid_xyz[0]
    gy = grid_xyz[1]
    key = voxel_keys[v]
    coords_zyx[v, 0] = key // (gx * gy)
    coords_zyx[v, 1] = (key // gx) % gy
    coords_zyx[v, 2] = key % gx
    num_points[v] = counts[v]


@cuda.jit
def _reset_table_kernel(keys, table):  # pragma: no cover - device code
    """Every point of a cell writes the same value: the race is harmless."""
    i = cuda.grid(1)
    if i < keys.shape[0] and keys[i] >= 0:
        table[keys[i]] = _INT32_MAX


# ---------------------------------------------------------------------------------------------
# Host orchestration
# ---------------------------------------------------------------------------------------------


def exclusive_scan(values: Any) -> tuple[Any, int]:
    """Exclusive prefix sum of a 1-D int32 device array: (device array, total)."""
    n = values.shape[0]
    exclusive = cuda.device_array(n, np.int32)
    num_blocks = _blocks(n, _SCAN_BLOCK)
    block_sums = cuda.device_array(num_blocks, np.int32)
    _block_scan_kernel[num_blocks, _SCAN_BLOCK](values, exclusive, block_sums)
    if num_blocks > 1:
        block_offsets, _ = exclusive_scan(block_sums)
        _add_block_offsets_kernel[_blocks(n), _THREADS](exclusive, block_offsets)
    last = exclusive[n - 1 : n].copy_to_host()[0] + values[n - 1 : n].copy_to_host()[0]
    return exclusive, int(last)


def _cell_table(num_cells: int) -> Any:
    table = _tables.get(num_cells)
    if table is None:
        _tables.clear()
        table = cuda.device_array(num_cells, np.int32)
        _fill_kernel[_blocks(num_cells), _THREADS](table, _INT32_MAX)
        _tables[num_cells] = table
    return table


class _Outputs:
    """Allocates outputs where the input lives: torch tensors on its GPU, or device arrays."""

    def __init__(self, points: Any) -> None:
        self.torch_device = points.device if _is_torch_cuda(points) else None

    def empty(self, shape: tuple[int, ...], dtype: Any) -> tuple[Any, Any]:
        """(handle to return, device view for kernels)."""
        if self.torch_device is not None:
            import torch

            tensor = torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device=self.torch_device)
            return tensor, cuda.as_cuda_array(tensor)
        array = cuda.device_array(shape, dtype)
        return array, array

    def finish(self, handle: Any) -> Any:
        return handle if self.torch_device is not None else handle.copy_to_host()


def _is_torch_cuda(points: Any) -> bool:
    return type(points).__module__.startswith("torch") and points.device.type == "cuda"


def _device_points(points: Any) -> Any:
    if _is_torch_cuda(points):
        import torch

        check_points(points)
        torch.cuda.current_stream(points.device).synchronize()
        return cuda.as_cuda_array(points.detach().contiguous())
    return cuda.to_device(host_points(points))


def _cell_keys(d_points: Any, config: VoxelConfig, table: Any) -> tuple[Any, Any, Any]:
    n = d_points.shape[0]
    keys = cuda.device_array(n, np.int32)
    # stats: [nan, out_of_range, voxel_overflow, max points in a voxel, point_overflow]
    stats = cuda.to_device(np.zeros(5, np.int32))
    grid = cuda.to_device(np.asarray(config.grid_size_xyz, np.int32))
    _keys_kernel[_blocks(n), _THREADS](
        d_points, cuda.to_device(config.range_min_f32), cuda.to_device(config.voxel_size_f32), grid, keys, table, stats
    )
    return keys, stats, grid


def _voxel_ids(keys: Any, table: Any, max_voxels: int, stats: Any, point_voxel_index: Any) -> tuple[Any, Any, int]:
    """Fill point_voxel_index (N,); return (voxel_keys, counts, number of voxels kept)."""
    n = keys.shape[0]
    flags = cuda.device_array(n, np.int32)
    _first_flags_kernel[_blocks(n), _THREADS](keys, table, flags)
    ranks, num_cells_seen = exclusive_scan(flags)
    num_voxels = min(num_cells_seen, max_voxels)
    voxel_keys = cuda.device_array(max(num_voxels, 1), np.int32)
    counts = cuda.to_device(np.zeros(max(num_voxels, 1), np.int32))
    _voxel_ids_kernel[_blocks(n), _THREADS](
        keys, table, ranks, max_voxels, point_voxel_index, voxel_keys, counts, stats
    )
    return voxel_keys, counts, num_voxels


def voxelize_cuda(points: Any, config: VoxelConfig) -> Voxels:
    """Hard voxelization on the GPU; see `voxelize.voxelize` for the contract."""
    outputs = _Outputs(points)
    num_features = int(points.shape[1]) if len(points.shape) == 2 else -1
    if len(points.shape) == 2 and points.shape[0] == 0:
        check_points(points)
        return _empty_voxels(outputs, config, num_features)
    with _lock:
        d_points = _device_points(points)
        n = d_points.shape[0]
        table = _cell_table(config.num_cells)
        keys, stats, grid = _cell_keys(d_points, config, table)
        pvi, point_voxel_index = outputs.empty((n,), np.int32)
        voxel_keys, counts, num_voxels = _voxel_ids(keys, table, config.max_voxels, stats, point_voxel_index)
        max_points = config.max_points_per_voxel
        voxel_points = cuda.device_array((max(num_voxels, 1), max_points), np.int32)
        rounds = min(max_points, int(stats[3:4].copy_to_host()[0]))
        slot = cuda.device_array(n, np.int32)
        _fill_kernel[_blocks(n), _THREADS](slot, -1)
        round_min = cuda.device_array(max(num_voxels, 1), np.int32)
        for round_index in range(rounds):
            _fill_kernel[_blocks(num_voxels), _THREADS](round_min, _INT32_MAX)
            _round_min_kernel[_blocks(n), _THREADS](point_voxel_index, slot, round_min)
            _round_take_kernel[_blocks(n), _THREADS](point_voxel_index, slot, round_min, round_index, voxel_points)
        features, d_features = outputs.empty((num_voxels, max_points, num_features), np.float32)
        coords, d_coords = outputs.empty((num_voxels, 3), np.int32)
        num_points, d_num_points = outputs.empty((num_voxels,), np.int32)
        if num_voxels > 0:
            _finish_hard_kernel[_blocks(num_voxels), _THREADS](
                d_points, voxel_points, counts, voxel_keys, grid, d_features, d_coords, d_num_points, stats
            )
        _reset_table_kernel[_blocks(n), _THREADS](keys, table)
        host_stats = stats.copy_to_host()
        cuda.synchronize()
    return Voxels(
        outputs.finish(features),
        outputs.finish(coords),
        outputs.finish(num_points),
        outputs.finish(pvi),
        num_nan=int(host_stats[0]),
        num_out_of_range=int(host_stats[1]),
        num_voxel_overflow=int(host_stats[2]),
        num_point_overflow=int(host_stats[4]),
    )


def dynamic_voxelize_cuda(points: Any, config: VoxelConfig) -> DynamicVoxels:
    """Dynamic voxelization on the GPU; see `voxelize.dynamic_voxelize` for the contract."""
    outputs = _Outputs(points)
    if len(points.shape) == 2 and points.shape[0] == 0:
        check_points(points)
        point_voxel_index, coords_zyx, num_points = (
            outputs.finish(outputs.empty(shape, np.int32)[0]) for shape in ((0,), (0, 3), (0,))
        )
        return DynamicVoxels(point_voxel_index, coords_zyx, num_points, num_nan=0, num_out_of_range=0)
    with _lock:
        d_points = _device_points(points)
        n = d_points.shape[0]
        table = _cell_table(config.num_cells)
        keys, stats, grid = _cell_keys(d_points, config, table)
        pvi, point_voxel_index = outputs.empty((n,), np.int32)
        voxel_keys, counts, num_voxels = _voxel_ids(keys, table, _INT32_MAX, stats, point_voxel_index)
        coords, d_coords = outputs.empty((num_voxels, 3), np.int32)
        num_points, d_num_points = outputs.empty((num_voxels,), np.int32)
        if num_voxels > 0:
            _finish_dynamic_kernel[_blocks(num_voxels), _THREADS](counts, voxel_keys, grid, d_coords, d_num_points)
        _reset_table_kernel[_blocks(n), _THREADS](keys, table)
        host_stats = stats.copy_to_host()
        cuda.synchronize()
    return DynamicVoxels(
        outputs.finish(pvi),
        outputs.finish(coords),
        outputs.finish(num_points),
        num_nan=int(host_stats[0]),
        num_out_of_range=int(host_stats[1]),
    )


def _empty_voxels(outputs: _Outputs, config: VoxelConfig, num_features: int) -> Voxels:
    def make(shape: tuple[int, ...], dtype: Any) -> Any:
        return outputs.finish(outputs.empty(shape, dtype)[0])

    return Voxels(
        make((0, config.max_points_per_voxel, num_features), np.float32),
        make((0, 3), np.int32),
        make((0,), np.int32),
        make((0,), np.int32),
        num_nan=0,
        num_out_of_range=0,
        num_voxel_overflow=0,
        num_point_overflow=0,
    )
