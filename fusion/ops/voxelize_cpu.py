"""The CPU backend of voxelization: the memory the Numba kernels work in, and the calls that run them.

`Voxelizer` is the reusable hard voxelizer; `voxelize_numba` and `dynamic_voxelize_numba` are the
functional forms behind `voxelize(..., backend="numba")`, with scratch memory kept per thread.

Memory: the CPU backend finds a point's voxel in a dense int32 table over the cells when the grid
has at most 16 cells per voxel it may make (1.2 MB for the nuScenes pillar preset), otherwise in
linear-probing hash tables of int32 local voxel numbers (the key compared is the voxel's own),
one per thread, each sized to at most twice `min(max_voxels, N)` (1 MB for the nuScenes voxel
preset) and starting at about 1/T of that (dynamic mode: one table of int64 key-voxel entries,
twice N), kept with the other scratch per thread and config, so its
cost follows the points, not the grid. `Voxelizer` also owns its (max_voxels, P, C) outputs and
returns views into them (spconv's `PointToVoxel` design): no allocation per call. The grid is
capped at 2**30 cells (int32 cell keys; the CUDA backend's dense per-cell table).
"""

from __future__ import annotations

import mmap
import threading
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from avfusion.fusion.ops.voxelize_kernels import (
    _EMPTY,
    KEY_BLOCK,
    SYNC_SIZE,
    _assign_dynamic_kernel,
    _decode_keys_kernel,
    _hard_voxelize_kernel,
    _route_points_kernel,
    hash_table_bits,
)
from avfusion.fusion.ops.voxelize_types import DynamicVoxels, VoxelConfig, Voxels, convert_voxels, host_points

# The CPU hard voxelizer indexes a dense int32 cell table, instead of hashing, when the grid has at
# most this many cells per voxel it may make (at most 4 times the hash tables' size): the nuScenes
# pillar grid (291,600 cells for 30k pillars), not the voxel grid (83M cells).
DENSE_CELLS_PER_VOXEL = 16


def _grid_array(config: VoxelConfig) -> np.ndarray:
    return np.asarray(config.grid_size_xyz, dtype=np.int32)


HUGE_PAGE = 2 * 2**20


def _huge_page_empty(size: int, dtype: type) -> np.ndarray:
    """np.empty((size,), dtype) in private anonymous memory that asks Linux for transparent huge
    pages (2 MB), from a 2 MB boundary: the kernels' scratch is read at random (hash tables,
    voxel numbers) or in several streams at once, over more memory than the TLB covers with 4 kB
    pages. NumPy asks for huge pages only for arrays of 4 MB or more, and most of the scratch is
    smaller (the bench's hash tables, voxel lists and routes are 1-2.4 MB each). Arrays under
    1 MB stay np.empty: a huge page would map 2 MB for them."""
    nbytes = size * np.dtype(dtype).itemsize
    if nbytes < HUGE_PAGE // 2:
        return np.empty(size, dtype)
    buffer = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    raw = np.frombuffer(buffer, np.uint8)  # keeps the mapping alive
    offset = -raw.ctypes.data % HUGE_PAGE
    return raw[offset : offset + nbytes].view(dtype)[:size]


def _cache_aligned_empty(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """np.empty starting on a 64-byte cache line, so that rows of whole cache lines written by
    different threads share none."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + size].view(dtype).reshape(shape)


class _KeyStage:
    """The routing pass's staging rows, (T, 3, KEY_BLOCK) float32 (768 bytes a thread), and its
    block keys, (T, KEY_BLOCK) int32: each row on cache lines of its own."""

    def __init__(self) -> None:
        self._stage = np.empty((0, 3, KEY_BLOCK), np.float32)
        self._keys = np.empty((0, KEY_BLOCK), np.int32)

    def rows(self, num_threads: int) -> np.ndarray:
        if self._stage.shape[0] != num_threads:
            self._stage = _cache_aligned_empty((num_threads, 3, KEY_BLOCK), np.float32)
        return self._stage

    def key_rows(self, num_threads: int) -> np.ndarray:
        if self._keys.shape[0] != num_threads:
            self._keys = _cache_aligned_empty((num_threads, KEY_BLOCK), np.int32)
        return self._keys


class _Routes:
    """The routing pass's memory for N points in C chunks and T partitions, grown as needed and
    reused: `arrays` (route_points, route_keys and, for the hard numbering, route_locals and
    route_slots beside them, (C, T, ceil(N / C)) int32 each), `counts` (C, >= T) and `drops`
    (max(C, T), 8) int64 with rows on cache lines of their own, and the key stage."""

    def __init__(self) -> None:
        self._routes = np.empty(0, np.int32)
        self.counts = np.empty((0, 8), np.int64)
        self.drops = np.empty((0, 8), np.int64)
        self.key_stage = _KeyStage()

    def arrays(self, num_points: int, num_chunks: int, num_parts: int, num_arrays: int) -> np.ndarray:
        """(num_arrays, C, T, ceil(N / C)) int32; also sizes `counts` and `drops`."""
        capacity = -(-num_points // num_chunks)
        size = num_arrays * num_chunks * num_parts * capacity
        # Uninitialized: a route is written only as far as its points go, so about N entries of
        # each array in all are ever touched (with 2 MB pages, the rest of a touched page is mapped
        # too: at most the T * C * 4 bytes * ceil(N / C) of each array).
        if self._routes.shape[0] < size:
            self._routes = _huge_page_empty(size, np.int32)
        width = -(-num_parts // 8) * 8
        if self.counts.shape != (num_chunks, width):
            self.counts = _cache_aligned_empty((num_chunks, width), np.int64)
        if self.drops.shape[0] != max(num_chunks, num_parts):
            self.drops = _cache_aligned_empty((max(num_chunks, num_parts), 8), np.int64)
        return self._routes[:size].reshape(num_arrays, num_chunks, num_parts, capacity)


class _Scratch:
    """Dynamic mode's per-call scratch memory (routes, hash table, voxel keys and counts), grown
    as needed and reused: allocating (and page-faulting) it per call costs as much as the kernels."""

    def __init__(self) -> None:
        self.routes = _Routes()
        self.table = np.empty(0, np.int64)
        self.voxel_keys = np.empty(0, np.int32)
        self.counts = np.empty(0, np.int32)

    def reserve(self, num_voxels: int) -> tuple[np.ndarray, int]:
        """Grow to V voxels; return the hash table for V keys, all entries free, and its log2 size."""
        if self.voxel_keys.shape[0] < num_voxels:
            self.voxel_keys = np.empty(num_voxels, np.int32)
            self.counts = np.empty(num_voxels, np.int32)
        bits = hash_table_bits(num_voxels)
        if self.table.shape[0] < 1 << bits:
            self.table = np.empty(1 << bits, np.int64)
        table = self.table[: 1 << bits]
        table.fill(_EMPTY)  # at most 16 bytes a voxel: cheaper than resetting entry by entry
        return table, bits


class _PartitionScratch:
    """Scratch of the partitioned hard numbering for T partitions of at most L local voxels each
    (and T chunks of points): the routes, the cell table (dense, or a hash table per partition),
    per local voxel its key, points, first point and final number. Grown as needed and reused;
    the kernels clear what they use."""

    def __init__(self) -> None:
        self.routes = _Routes()
        self.tables = np.empty(0, np.int32)
        self.dense_table = np.empty(0, np.int32)
        self.local = np.empty(0, np.int32)  # 4 arrays of T * L: keys, counts, first point, voxel
        self.sample = np.empty(512, np.int32)
        self.sync = _cache_aligned_empty((SYNC_SIZE,), np.int64)
        self.splits = np.empty(0, np.int64)
        self.sizes = np.empty(0, np.int64)

    def reserve(self, max_local: int, num_parts: int, num_cells: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Grow to T partitions of L local voxels; return the dense cell table (empty when the grid
        is large), the (T, 2**max_bits) hash tables (T rows of 1 entry with a dense table), and the
        log2 size each hash table starts at."""
        if self.local.shape[0] < 4 * num_parts * max_local:
            self.local = _huge_page_empty(4 * num_parts * max_local, np.int32)
        if self.sizes.shape[0] != num_parts:
            self.splits = np.empty(num_parts + 1, np.int64)
            self.sizes = np.empty(num_parts, np.int64)
        if num_cells <= DENSE_CELLS_PER_VOXEL * max_local:
            if self.dense_table.shape[0] < num_cells:
                self.dense_table = _huge_page_empty(num_cells, np.int32)
            if self.tables.shape[0] < num_parts:
                self.tables = np.empty(num_parts, np.int32)
            return self.dense_table[:num_cells], self.tables[:num_parts].reshape(num_parts, 1), 0
        max_bits = hash_table_bits(max_local)
        if self.tables.shape[0] < num_parts << max_bits:
            self.tables = _huge_page_empty(num_parts << max_bits, np.int32)
        tables = self.tables[: num_parts << max_bits].reshape(num_parts, 1 << max_bits)
        # Balanced partitions hold about L / T cells each: start there, double on demand.
        start_bits = hash_table_bits(-(-max_local // num_parts))
        return self.dense_table[:0], tables, start_bits


# Plans a Voxelizer keeps, one per number of partitions (thread count) it was called with.
MAX_PLANS = 4


@dataclass(frozen=True, slots=True)
class _CallPlan:
    """The kernels' scratch arguments for calls on N points with T partitions: views into a
    `_PartitionScratch`, built once and reused while N stays the same, one per T (with cold
    caches, as after the network ran, rebuilding them costs ~0.1 ms of Python a call). Plans of
    different T share the large scratch arrays, which a call only uses once it has cleared them;
    each keeps the small per-T arrays it was built with, even after the scratch replaced them."""

    num_points: int
    num_parts: int
    capacity: int  # local voxels a partition may make: min(max_voxels, N)
    dense_table: np.ndarray
    tables: np.ndarray
    start_bits: int
    sample: np.ndarray
    sync: np.ndarray
    splits: np.ndarray
    sizes: np.ndarray
    stage: np.ndarray
    block_keys: np.ndarray
    route_points: np.ndarray
    route_keys: np.ndarray
    route_locals: np.ndarray
    route_slots: np.ndarray
    route_counts: np.ndarray
    drops: np.ndarray
    part_keys: np.ndarray
    part_counts: np.ndarray
    part_first: np.ndarray
    local_to_voxel: np.ndarray

    @classmethod
    def build(cls, scratch: _PartitionScratch, config: VoxelConfig, num_points: int, num_parts: int) -> _CallPlan:
        # More voxels than valid points cannot exist: size the scratch by the smaller.
        capacity = min(config.max_voxels, num_points)
        dense_table, tables, start_bits = scratch.reserve(capacity, num_parts, config.num_cells)
        routes = scratch.routes
        route_points, route_keys, route_locals, route_slots = routes.arrays(num_points, num_parts, num_parts, 4)
        part_keys, part_counts, part_first, local_to_voxel = scratch.local[: 4 * num_parts * capacity].reshape(4, -1)
        return cls(
            num_points,
            num_parts,
            capacity,
            dense_table,
            tables,
            start_bits,
            scratch.sample,
            scratch.sync,
            scratch.splits,
            scratch.sizes,
            routes.key_stage.rows(num_parts),
            routes.key_stage.key_rows(num_parts),
            route_points,
            route_keys,
            route_locals,
            route_slots,
            routes.counts,
            routes.drops,
            part_keys,
            part_counts,
            part_first,
            local_to_voxel,
        )


class Voxelizer:
    """Hard voxelization with one `VoxelConfig`, reusing its memory from call to call.

    It allocates its output buffers once, (max_voxels, P, C) features and friends, as spconv's
    `PointToVoxel` does (spconv 2.3.8 then returns clones of them), and a call writes into them: no
    allocation, no page faults, and only the slots that held points in the previous call and not
    now are re-zeroed. The `Voxels` a call returns are views into these buffers, valid until the
    next call (keep one across calls only with `copy=True`, which returns fresh arrays and leaves
    the buffers alone). Same rules and outputs as `voxelize` (module docstring).

    Memory: the feature buffer is max_voxels * P * C * 4 bytes (24 MB for the nuScenes voxel preset
    with C = 5); the scratch is 16 bytes a point (the routes) plus, per thread, at most 24 bytes a
    voxel (a hash table of int32 entries at most half full: 1 MB for 120k voxels, and 16 bytes of
    bookkeeping), or a dense int32 cell table for small grids (module docstring).

    Not thread-safe: use one Voxelizer per thread.
    """

    def __init__(self, config: VoxelConfig) -> None:
        self.config = config
        self._grid = _grid_array(config)
        self._range_min = config.range_min_f32
        self._voxel_size = config.voxel_size_f32
        self._scratch = _PartitionScratch()
        self._features = np.zeros((0, config.max_points_per_voxel, 0), np.float32)
        self._filled = np.zeros(0, np.int32)  # per voxel slot of `_features`: slots >= filled are zero
        self._coords_zyx = np.zeros((config.max_voxels, 3), np.int32)
        self._num_points = np.zeros(config.max_voxels, np.int32)
        self._point_voxel_index = np.zeros(0, np.int32)
        # The last call's plan for each number of partitions: calls that alternate thread counts
        # (as the benchmark's 2-thread and 1-thread rows do) rebuild none.
        self._plans: dict[int, _CallPlan] = {}

    def __call__(self, points: Any, copy: bool = False) -> Voxels:
        """Voxelize (N, C>=3) float32 points (NumPy array or CPU torch tensor; never modified).

        copy=False: the returned arrays are views into this Voxelizer's buffers (torch tensors
        sharing them when `points` is a tensor), overwritten by the next call.
        """
        host = host_points(points)
        result = self._voxelize(host, fresh=copy)
        return convert_voxels(points, result)

    def _output_buffers(self, num_points: int, num_features: int) -> tuple[np.ndarray, np.ndarray]:
        config = self.config
        if self._features.shape[2] != num_features:
            # np.empty, not np.zeros: NumPy asks Linux for transparent huge pages for large empty
            # arrays but not for zeroed ones (calloc), and 4 kB pages cost TLB misses on every
            # voxel written. The buffer starts as garbage: filled = P marks every slot dirty.
            shape = (config.max_voxels, config.max_points_per_voxel, num_features)
            self._features = np.empty(shape, np.float32)
            self._filled = np.full(config.max_voxels, config.max_points_per_voxel, np.int32)
        if self._point_voxel_index.shape[0] < num_points:
            self._point_voxel_index = _huge_page_empty(num_points, np.int32)
        return self._features, self._point_voxel_index[:num_points]

    def _run(
        self,
        plan: _CallPlan,
        num_workers: int,
        points: np.ndarray,
        point_voxel_index: np.ndarray,
        features: np.ndarray,
        coords_zyx: np.ndarray,
        num_points: np.ndarray,
        fresh: bool,
    ) -> tuple[int, int, int, int, int]:
        return _hard_voxelize_kernel(
            num_workers,
            plan.sync,
            points,
            self._range_min,
            self._voxel_size,
            self._grid,
            plan.sample,
            plan.splits,
            plan.stage,
            plan.block_keys,
            plan.route_points,
            plan.route_keys,
            plan.route_counts,
            plan.dense_table,
            plan.tables,
            plan.start_bits,
            plan.capacity,
            self.config.max_voxels,
            plan.part_keys,
            plan.part_counts,
            plan.part_first,
            plan.sizes,
            plan.route_locals,
            plan.route_slots,
            plan.local_to_voxel,
            point_voxel_index,
            features,
            coords_zyx,
            num_points,
            self._filled,
            fresh,
            plan.drops,
        )

    def _voxelize(self, points: np.ndarray, fresh: bool, num_parts: int | None = None) -> Voxels:
        """num_parts: slabs of x columns numbered in parallel, one per Numba thread by default (any
        number gives the same result; tests use others)."""
        config = self.config
        n = points.shape[0]
        # Asked once a call: with cold caches numba.get_num_threads() costs ~50 us (its lock).
        num_workers = numba.get_num_threads()
        if num_parts is None:
            num_parts = num_workers
        plan = self._plans.get(num_parts)
        if plan is None or plan.num_points != n:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            plan = self._plans[num_parts] = _CallPlan.build(self._scratch, config, n, num_parts)
        if fresh:
            # Sized for the most voxels the call can make (min(max_voxels, N)), so that one parallel
            # region does the whole call, and returned as views of their first V rows: the rows
            # beyond are never written, so their pages are never touched (np.empty maps memory
            # lazily); the caller owns the arrays (a second region, once V is known, cost one more
            # wake-up of the worker threads, 0.2-0.4 ms here).
            point_voxel_index = np.empty(n, np.int32)
            features = np.empty((plan.capacity, config.max_points_per_voxel, points.shape[1]), np.float32)
            coords_zyx = np.empty((plan.capacity, 3), np.int32)
            num_points = np.empty(plan.capacity, np.int32)
        else:
            features, point_voxel_index = self._output_buffers(n, points.shape[1])
            coords_zyx, num_points = self._coords_zyx, self._num_points
        num_local, num_nan, num_out_of_range, num_voxel_overflow, num_point_overflow = self._run(
            plan,
            num_workers,
            points,
            point_voxel_index,
            features,
            coords_zyx,
            num_points,
            fresh,
        )
        num_voxels = min(num_local, config.max_voxels)
        features = features[:num_voxels]
        coords_zyx = coords_zyx[:num_voxels]
        num_points = num_points[:num_voxels]
        return Voxels(
            features,
            coords_zyx,
            num_points,
            point_voxel_index,
            num_nan=num_nan,
            num_out_of_range=num_out_of_range,
            num_voxel_overflow=num_voxel_overflow,
            num_point_overflow=num_point_overflow,
        )


class _ThreadCache(threading.local):
    """The functional API's memory, one per thread: a Voxelizer per recent config, and the dynamic
    mode's scratch."""

    def __init__(self) -> None:
        self.voxelizers: dict[VoxelConfig, Voxelizer] = {}
        self.dynamic_scratch = _Scratch()

    def voxelizer(self, config: VoxelConfig) -> Voxelizer:
        voxelizer = self.voxelizers.pop(config, None)
        if voxelizer is None:
            # Keep the two most recent configs (a voxel and a pillar config side by side).
            while len(self.voxelizers) >= 2:
                del self.voxelizers[next(iter(self.voxelizers))]
            voxelizer = Voxelizer(config)
        self.voxelizers[config] = voxelizer  # re-inserted: most recent last
        return voxelizer


_cache = _ThreadCache()


def voxelize_numba(points: np.ndarray, config: VoxelConfig) -> Voxels:
    # Fresh outputs: the caller owns them; only the scratch is reused.
    return _cache.voxelizer(config)._voxelize(points, fresh=True)


def dynamic_voxelize_numba(points: np.ndarray, config: VoxelConfig) -> DynamicVoxels:
    n = points.shape[0]
    scratch = _cache.dynamic_scratch
    table, bits = scratch.reserve(n)
    num_chunks = numba.get_num_threads()
    routes = scratch.routes
    route_points, route_keys = routes.arrays(n, num_chunks, 1, 2)
    point_voxel_index = np.empty(n, np.int32)
    grid = _grid_array(config)
    whole_grid = np.array([0, config.num_cells], np.int64)  # one partition owns every cell
    _route_points_kernel(
        points,
        config.range_min_f32,
        config.voxel_size_f32,
        grid,
        whole_grid,
        routes.key_stage.rows(num_chunks),
        routes.key_stage.key_rows(num_chunks),
        route_points,
        route_keys,
        routes.counts,
        point_voxel_index,
        routes.drops,
    )
    num_voxels = _assign_dynamic_kernel(
        route_points, route_keys, routes.counts, table, bits, point_voxel_index, scratch.voxel_keys, scratch.counts
    )
    coords_zyx = np.empty((num_voxels, 3), np.int32)
    _decode_keys_kernel(scratch.voxel_keys, grid, coords_zyx)
    drops = routes.drops.sum(axis=0)
    return DynamicVoxels(
        point_voxel_index,
        coords_zyx,
        scratch.counts[:num_voxels].copy(),
        num_nan=int(drops[0]),
        num_out_of_range=int(drops[1]),
    )
