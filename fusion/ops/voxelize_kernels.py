"""Numba CPU kernels of hard and dynamic voxelization, and of the scatter reductions.

None allocates: every buffer is passed in, preallocated by `voxelize_cpu`, which owns the memory
and calls them; the contract they implement is in `voxelize`'s docstring.

Parallel hard mode on the CPU (T Numba threads; the outputs do not depend on T): the cells are split
into T slabs of x columns holding about equal numbers of points. A routing pass (T chunks of
consecutive points, one a thread) computes every point's cell key and lists each chunk's points
under the slab that owns their cell; thread t then reads its slab's lists chunk after chunk, which
is its points in input order, and numbers its cells in the order their first point appears, so each
point's rank in its voxel is exact; a voxel's first-seen number is then the number of voxels of all
slabs whose first point comes earlier (a merge of T lists in input order), and the voxels numbered
>= max_voxels are dropped with all their points, as a serial pass would. The slabs' points
interleave in short runs (on the bench's nuScenes cloud, 24 points on average with two slabs: every
firing has returns near the sensor, at x ~ 0), so the threads keep per-point results beside their
route lists, not in arrays indexed by point. The three stages (routing, numbering, filling) run in
one parallel region whose workers claim each stage's chunks and partitions in turn and wait for the
stage to finish before the next (`_hard_voxelize_kernel`): a worker that starts late, its core taken
by another process, finds its share done instead of holding everyone up at three joins. Dynamic mode
routes all points to one partition.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from avfusion.fusion.ops.voxelize_types import KEY_NAN, KEY_OUT_OF_RANGE

# Numba's threading layer, chosen when the first parallel kernel runs. Its default order tries TBB
# first, and Open3D loads a TBB older than Numba accepts: Numba then warns and falls back to OpenMP.
# These kernels are built for OpenMP (one worker per thread, all running at once; OMP_WAIT_POLICY):
# try it first, then the workqueue, unless the user chose a layer. Set in the environment too, so
# that Numba keeps it when it re-reads its environment, and subprocesses inherit it.
if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = "omp workqueue tbb"
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]

# Fibonacci hashing: the top bits of key * 2**64 / golden ratio spread neighbouring cell keys
# (neighbouring voxels) over the whole table, so linear probing stays short.
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = -1  # a free hash table entry; used entries are (key << 32) | voxel, both >= 0


def hash_table_bits(max_entries: int) -> int:
    """log2 of the table size for `max_entries` keys: a power of two at least twice as large (the
    load factor stays <= 0.5, so a miss probes ~2.5 entries on average)."""
    return max(4, int(2 * max(max_entries, 1) - 1).bit_length())


# Indexing in the hot loops: Numba lets a negative integer index count from the end of the array,
# so every access with a signed index LLVM cannot prove >= 0 (one loaded from memory, or offset by
# a runtime base) costs a sign test and an add. The loops index with unsigned values where the
# index is known >= 0 (a voxel number once tested, a cell key, a hashed slot): measured, the whole
# call 4-10% faster on the bench cloud.

# Points a block of the routing pass copies to contiguous x, y and z arrays: the key arithmetic
# then runs on SIMD lanes (the row stride of an (N, C) array is unknown at compile time, which
# keeps LLVM from vectorizing the loop on the points themselves).
KEY_BLOCK = 64


@njit(cache=True)
def _block_cell_keys(xs, ys, zs, m, range_min, voxel_size, gx, gy, gz, keys):  # pragma: no cover - jitted
    """keys[j] for points (xs[j], ys[j], zs[j]), j < m: the linear cell key (x * gy + y) * gz + z,
    or KEY_OUT_OF_RANGE / KEY_NAN. Branch-free, so that LLVM vectorizes it.

    x-major: a range of keys is a slab of x columns, so the routing pass finds a point's slab
    by comparing its key with the T - 1 inner split keys."""
    x0, y0, z0 = range_min[0], range_min[1], range_min[2]
    dx, dy, dz = voxel_size[0], voxel_size[1], voxel_size[2]
    fgx, fgy, fgz = np.float32(gx), np.float32(gy), np.float32(gz)
    for j in range(m):
        x = xs[j]
        y = ys[j]
        z = zs[j]
        # float32 - float32 and / float32 stay float32: the same rounding as spconv's C++.
        fx = (x - x0) / dx
        fy = (y - y0) / dy
        fz = (z - z0) / dz
        # 0 <= f < g is floor(f) in [0, g) without trusting the conversion of an out-of-range
        # float to int (its key is discarded); NaN compares false.
        inside = (fx >= 0) & (fx < fgx) & (fy >= 0) & (fy < fgy) & (fz >= 0) & (fz < fgz)
        key = (np.int32(fx) * gy + np.int32(fy)) * gz + np.int32(fz)
        nan = (x != x) | (y != y) | (z != z)
        keys[j] = key if inside else (np.int32(KEY_NAN) if nan else np.int32(KEY_OUT_OF_RANGE))


@njit(cache=True)
def _divider(d):  # pragma: no cover - jitted
    """(m, s) such that n // d == (n * m) >> s in uint64 for all integers 0 <= n < 2**31 and
    1 <= d < 2**31: a multiplication and a shift instead of a division. Granlund & Montgomery 1994,
    theorem 4.2 with N = 32: m = floor(2**(32 + l) / d) + 1, l = ceil(log2 d), gives 2**(32 + l) <
    m * d <= 2**(32 + l) + 2**l, exact for n < 2**32; m <= 2**33, so n * m < 2**64 for n < 2**31."""
    log2_d = 0  # l in the theorem: ceil(log2 d)
    while (np.int64(1) << log2_d) < d:
        log2_d += 1
    shift = np.uint64(32 + log2_d)
    return (np.uint64(1) << shift) // np.uint64(d) + np.uint64(1), shift


@njit(cache=True)
def _key_decoder(grid_xyz):  # pragma: no cover - jitted
    """The constants `_decode_key` needs for cell keys of the grid: gz, gy * gz and their dividers."""
    gz = np.int64(grid_xyz[2])
    gyz = np.int64(grid_xyz[1]) * gz
    m_yz, s_yz = _divider(gyz)
    m_z, s_z = _divider(gz)
    return gz, gyz, m_yz, s_yz, m_z, s_z


@njit(cache=True)
def _decode_key(key, decoder):  # pragma: no cover - jitted
    """(z, y, x) int32 of a cell key (x * gy + y) * gz + z >= 0; decoder: `_key_decoder(grid)`.
    Divides by multiplying (`_divider`): the fill decodes every voxel, and two dependent float64
    divisions took twice as long (85k voxels: 0.24 vs 0.12 ms on one thread)."""
    gz, gyz, m_yz, s_yz, m_z, s_z = decoder
    x = np.int64((np.uint64(key) * m_yz) >> s_yz)
    rest = np.int64(key) - x * gyz
    y = np.int64((np.uint64(rest) * m_z) >> s_z)
    return np.int32(rest - y * gz), np.int32(y), np.int32(x)


@njit(cache=True)
def _hash_slot(key, bits):  # pragma: no cover - jitted
    """Home entry of `key` in a table of 2**bits entries: the top bits of Fibonacci hashing."""
    return np.int64((np.uint64(key) * _HASH_MULTIPLIER) >> np.uint64(64 - bits))


@njit(cache=True)
def _probe(table, bits, key):  # pragma: no cover - jitted
    """Index of `key`'s entry in the linear-probing table, or of the free entry where it goes."""
    mask = (np.int64(1) << bits) - 1
    h = _hash_slot(key, bits)
    while True:
        entry = table[h]
        if entry == _EMPTY or (entry >> 32) == key:
            return h
        h = (h + 1) & mask


@njit(cache=True)
def _select(values, lo, hi, k):  # pragma: no cover - jitted
    """Reorder values[lo:hi] in place so that values[k] (lo <= k < hi) is the value a sort would
    put there, with values[lo:k] <= values[k] <= values[k + 1 : hi] (Hoare's quickselect, middle
    pivot): the splits need a few quantiles of a few hundred values, not a sort (a shell sort of
    the 512 samples was most of the splits' time)."""
    while hi - lo > 1:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi - 1
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        # values[lo : j + 1] <= pivot, values[j + 1 : i] == pivot, values[i:hi] >= pivot
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return


@njit(cache=True)
def _partition_splits_kernel(points, range_min, voxel_size, grid_xyz, sample, splits):  # pragma: no cover
    """Split the x columns [0, gx) into len(splits) - 1 slabs of about equal numbers of points.

    Partition t owns the cell keys splits[t] <= key < splits[t + 1] (x-major keys: a slab of x
    columns); splits[0] = 0 and splits[-1] = the number of cells, the inner splits start columns
    that are quantiles of the x columns of every k-th point (a sample of at most len(sample)
    points inside the range along x, reordered in place). Only the balance of the work depends
    on them, never the result.
    """
    num_parts = splits.shape[0] - 1
    n = points.shape[0]
    gx = grid_xyz[0]
    gyz = np.int64(grid_xyz[1] * grid_xyz[2])
    x0, dx, fgx = range_min[0], voxel_size[0], np.float32(gx)
    stride = max(1, n // sample.shape[0])
    m = np.int64(0)  # not the literal 0: callees would be compiled for Literal[int](0) too
    for i in range(0, n, stride):
        fx = (points[i, 0] - x0) / dx  # the routing pass's float32 arithmetic
        if fx >= 0 and fx < fgx and m < sample.shape[0]:
            sample[m] = np.int32(fx)
            m += 1
    splits[0] = 0
    lo = np.int64(0)
    for t in range(1, num_parts):
        rank = t * m // num_parts
        if m > 0 and rank >= lo:  # the ranks grow: select each among the values above the last
            _select(sample, lo, m, rank)
            lo = rank + 1
        column = sample[rank] if m > 0 else t * (gx // num_parts)
        splits[t] = column * gyz
    splits[num_parts] = gx * gyz


@njit(cache=True)
def _route_chunk(
    c,
    points,
    range_min,
    voxel_size,
    grid_xyz,
    splits,
    stage,
    block_keys,
    route_points,
    route_keys,
    route_counts,
    point_voxel_index,
    drops,
):  # pragma: no cover - jitted
    """Chunk c of `_route_points_kernel`."""
    gx, gy, gz = grid_xyz[0], grid_xyz[1], grid_xyz[2]
    n = points.shape[0]
    num_chunks = route_points.shape[0]
    num_parts = route_points.shape[1]
    block = stage.shape[2]
    xs = stage[c, 0]
    ys = stage[c, 1]
    zs = stage[c, 2]
    keys = block_keys[c]
    tails = route_counts[c]  # a cache line of its own: written once a point
    for part in range(num_parts):
        tails[part] = 0
    n_nan = 0
    n_out = 0
    chunk_points = route_points[c]
    chunk_keys = route_keys[c]
    chunk_start = c * n // num_chunks
    end = (c + 1) * n // num_chunks
    for start in range(chunk_start, end, block):
        m = min(block, end - start)
        for j in range(m):
            row = np.uint64(start + j)
            xs[j] = points[row, 0]
            ys[j] = points[row, 1]
            zs[j] = points[row, 2]
        _block_cell_keys(xs, ys, zs, m, range_min, voxel_size, gx, gy, gz, keys)
        for j in range(m):
            key = keys[j]
            if key < 0:
                point_voxel_index[np.uint64(start + j)] = -1
                n_nan += key == KEY_NAN
                n_out += key == KEY_OUT_OF_RANGE
                continue
            t = np.uint64(0)
            for u in range(1, num_parts):
                t += np.uint64(key >= splits[u])
            k = np.uint64(tails[t])
            chunk_points[t, k] = start + j
            chunk_keys[t, k] = key
            tails[t] = k + 1
    drops[c, 0] = n_nan
    drops[c, 1] = n_out


@njit(parallel=True, cache=True)
def _route_points_kernel(
    points,
    range_min,
    voxel_size,
    grid_xyz,
    splits,
    stage,
    block_keys,
    route_points,
    route_keys,
    route_counts,
    point_voxel_index,
    drops,
):  # pragma: no cover - jitted
    """The cell key of every point, and the points routed to the partitions that own their cells.

    The points are split into C chunks of consecutive indices (C = route_points.shape[0], one
    thread each). Chunk c computes its keys a block at a time (`_block_cell_keys`: stage[c],
    (C, 3, KEY_BLOCK) float32 staging rows, and block_keys[c], (C, KEY_BLOCK) int32); a point
    without a cell gets point_voxel_index -1 (the other entries are left alone) and is counted in
    drops[c, 0] (NaN) or drops[c, 1] (out of the range); a point with key k goes to the partition
    t with splits[t] <= k < splits[t + 1] (T = route_points.shape[1] partitions):
    route_points[c, t, j] / route_keys[c, t, j] are the index and key of the j-th such point of
    the chunk, j < route_counts[c, t]. (C, T, ceil(N / C)) int32 each; route_counts (C, >= T) and
    drops (C, 8) int64 have rows on cache lines of their own.

    Partition t's points in input order are then its lists of chunks 0, 1, ..., C - 1 in turn.
    The chunks keep the pass parallel with a single partition (dynamic mode).
    """
    for c in prange(route_points.shape[0]):
        _route_chunk(
            np.int64(c),
            points,
            range_min,
            voxel_size,
            grid_xyz,
            splits,
            stage,
            block_keys,
            route_points,
            route_keys,
            route_counts,
            point_voxel_index,
            drops,
        )


def _prefetch_codegen(for_write: int):
    """Code of a prefetch of the cache line of element `index` of a 1-D array, into all cache
    levels (llvm.prefetch: locality 3, data), for reading (0) or for writing (1)."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32])
        function = cgutils.get_or_insert_function(builder.module, function_type, "llvm.prefetch.p0")
        builder.call(function, [address, i32(for_write), i32(3), i32(1)])
        return context.get_dummy_value()

    return codegen


@intrinsic
def _prefetch(typingctx, array, index):  # pragma: no cover - compiled
    """Ask the CPU to bring the cache line of `array`'s element `index` (1-D) into all cache levels,
    without waiting for it: a hint, with no effect on results."""
    return types.void(array, types.intp), _prefetch_codegen(0)


@intrinsic
def _prefetch_for_write(typingctx, array, index):  # pragma: no cover - compiled
    """`_prefetch` for a line about to be written (PREFETCHW: the line arrives owned, so the store
    does not wait for the read-for-ownership)."""
    return types.void(array, types.intp), _prefetch_codegen(1)


@intrinsic
def _atomic_add(typingctx, array, index, value):  # pragma: no cover - compiled
    """array[index] += value as one atomic read-modify-write (1-D int64 array, sequentially
    consistent); returns the value before. With value 0 it is a load that is never hoisted out of
    a waiting loop and that sees every write made before the other threads' increments."""
    sig = types.int64(array, types.intp, types.int64)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", builder.gep(data, [args[1]]), args[2], "seq_cst")

    return sig, codegen


@intrinsic
def _spin_pause(typingctx):  # pragma: no cover - compiled
    """The x86 PAUSE of a spin-wait loop: the waiting core spends less power and fewer of the
    shared resources, and leaves the loop without a memory-order misprediction."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.VoidType(), [])
        builder.call(cgutils.get_or_insert_function(builder.module, function_type, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _yield_core(typingctx):  # pragma: no cover - compiled
    """sched_yield(): give the core to another runnable thread (a preempted worker) for a while.
    Linked by name, so the compiled code in Numba's cache holds no address of this process."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(32), [])
        builder.call(cgutils.get_or_insert_function(builder.module, function_type, "sched_yield"), [])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _copy_quad(typingctx, dst, dst_index, src, src_index):  # pragma: no cover - compiled
    """dst.flat[dst_index : dst_index + 4] = src.flat[src_index : src_index + 4] (C-contiguous
    float32 arrays) as one unaligned 16-byte load and store."""
    sig = types.void(dst, types.intp, src, types.intp)

    def codegen(context, builder, signature, args):
        vector_pointer = ir.VectorType(ir.FloatType(), 4).as_pointer()
        dst_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        src_data = context.make_array(signature.args[2])(context, builder, args[2]).data
        source = builder.bitcast(builder.gep(src_data, [args[3]]), vector_pointer)
        target = builder.bitcast(builder.gep(dst_data, [args[1]]), vector_pointer)
        builder.store(builder.load(source, align=4), target, align=4)
        return context.get_dummy_value()

    return sig, codegen


# The numbering prefetches the cell-table entry of the point this many points ahead: the table
# lookups are random accesses (hashed keys), and waiting for each in turn was most of the pass.
PREFETCH_DISTANCE = 16
# The fill asks for the feature row of the point this many points ahead, to be written: the rows
# are scattered over the (max_voxels, P, C) buffer, and most voxels of the nuScenes voxel preset
# hold 1-3 points, so most stores are the first to their cache line (measured, paired A/B over six
# processes: voxels 4-8% faster on 2 threads, 3-12% on one; pillars, 5 points a voxel, within +-2%).
FILL_PREFETCH_DISTANCE = 8


@njit(cache=True)
def _probe_local(table, bits, key, part_keys):  # pragma: no cover - jitted
    """Index of the entry of `key` in a linear-probing table of local voxels (int32, -1 = free;
    the key of local voxel l is part_keys[l]), or of the free entry where it goes.

    Voxel numbers alone, not (key, voxel) pairs: the table takes half the bytes (512 kB a
    partition for the nuScenes voxel preset on 2 threads, so it stays in L2) for a second load
    from part_keys, itself in L2 (measured: the numbering ~5% faster)."""
    mask = (np.int64(1) << bits) - 1
    h = _hash_slot(key, bits)
    while True:
        local = table[np.uint64(h)]
        if local < 0 or part_keys[np.uint32(local)] == key:
            return h
        h = (h + 1) & mask


@njit(cache=True)
def _rehash(table, bits, part_keys, first_local, size):  # pragma: no cover - jitted
    """Clear the first 2**bits entries of `table` and insert local voxels first_local + [0, size)."""
    table[: 1 << bits] = -1
    for local in range(first_local, first_local + size):
        table[_probe_local(table, bits, part_keys[local], part_keys)] = local


@njit(cache=True)
def _number_partition(
    t,
    route_points,
    route_keys,
    route_counts,
    splits,
    dense_table,
    tables,
    start_bits,
    max_local,
    part_keys,
    part_counts,
    part_first,
    part_sizes,
    route_locals,
    route_slots,
    drops,
):  # pragma: no cover - jitted
    """Partition t of the numbering stage of `_hard_voxelize_kernel`."""
    dense = dense_table.shape[0] > 0
    table = tables[t]
    bits = start_bits
    if dense:
        dense_table[splits[t] : splits[t + 1]] = -1
    else:
        table[: 1 << bits] = -1
    base = t * max_local
    size = np.int64(0)  # not the literal 0: _rehash would be compiled for Literal[int](0) too
    n_overflow = 0
    for c in range(route_points.shape[0]):
        own_points = route_points[c, t]
        own_keys = route_keys[c, t]
        own_locals = route_locals[c, t]
        own_slots = route_slots[c, t]
        num_own = route_counts[c, t]
        for k in range(num_own):
            ahead = own_keys[min(k + PREFETCH_DISTANCE, num_own - 1)]
            if dense:
                _prefetch(dense_table, ahead)
            else:
                _prefetch(table, _hash_slot(ahead, bits))
            key = own_keys[k]
            if dense:
                local = dense_table[np.uint32(key)]
                if local < 0 and size < max_local:
                    local = np.int32(base + size)
                    size += 1
                    dense_table[np.uint32(key)] = local
                    part_keys[np.uint32(local)] = key
                    part_counts[np.uint32(local)] = 0
                    part_first[np.uint32(local)] = own_points[k]
            else:
                h = _probe_local(table, bits, key, part_keys)
                local = table[np.uint64(h)]  # -1: a new cell (it stays -1, voxel overflow, past max_local)
                if local < 0 and size < max_local:
                    if size == 1 << (bits - 1):  # would be more than half full: double it
                        bits += 1
                        _rehash(table, bits, part_keys, base, size)
                        h = _probe_local(table, bits, key, part_keys)
                    local = np.int32(base + size)
                    size += 1
                    table[np.uint64(h)] = local
                    part_keys[np.uint32(local)] = key
                    part_counts[np.uint32(local)] = 0
                    part_first[np.uint32(local)] = own_points[k]
            own_locals[k] = local
            if local < 0:
                n_overflow += 1
            else:
                ul = np.uint32(local)
                slot = part_counts[ul]
                own_slots[k] = slot
                part_counts[ul] = slot + 1
    part_sizes[t] = size
    drops[t, 2] = n_overflow


@njit(cache=True)
def _first_seen_numbers(t, part_first, part_sizes, max_local, max_voxels, local_to_voxel):  # pragma: no cover
    """The voxel number of each of partition t's local voxels: the number of voxels, over all
    partitions, whose first point comes before its own. Each partition's first points are in
    input order, so for each other partition one merge walk counts them (a tight loop per
    partition, the count kept in a register). Numbers >= max_voxels get no voxel (-1)."""
    num_parts = part_sizes.shape[0]
    base = np.uint64(t * max_local)
    size = part_sizes[t]
    numbers = local_to_voxel[base : base + np.uint64(size)]
    firsts = part_first[base : base + np.uint64(size)]
    for j in range(size):
        numbers[j] = j
    for u in range(num_parts):
        if u == t:
            continue
        u_base = np.uint64(u * max_local)
        u_size = part_sizes[u]
        u_firsts = part_first[u_base : u_base + np.uint64(u_size)]
        c = 0
        for j in range(size):
            first = firsts[j]
            while c < u_size and u_firsts[c] < first:
                c += 1
            numbers[j] += c
    for j in range(size):
        if numbers[j] >= max_voxels:
            numbers[j] = -1


@njit(cache=True)
def _fill_partition(
    t,
    points,
    route_points,
    route_locals,
    route_slots,
    route_counts,
    part_first,
    part_sizes,
    max_local,
    part_keys,
    part_counts,
    local_to_voxel,
    point_voxel_index,
    grid_xyz,
    features,
    coords_zyx,
    num_points,
    filled,
    fresh,
    drops,
    num_voxels,
):  # pragma: no cover - jitted
    """Partition t of the fill stage of `_hard_voxelize_kernel`. num_voxels: V = min(all local
    voxels, max_voxels), so a number is < V exactly when it is < max_voxels."""
    num_features = points.shape[1]
    max_points = features.shape[1]
    decoder = _key_decoder(grid_xyz)
    point_overflow = 0
    voxel_overflow = 0
    _first_seen_numbers(t, part_first, part_sizes, max_local, num_voxels, local_to_voxel)
    base = np.uint64(t * max_local)
    size = np.uint64(part_sizes[t])
    for local in range(base, base + size):
        signed_v = local_to_voxel[local]
        if signed_v < 0:
            continue  # beyond max_voxels
        v = np.uint64(signed_v)
        coords_zyx[v, 0], coords_zyx[v, 1], coords_zyx[v, 2] = _decode_key(part_keys[local], decoder)
        count = min(part_counts[local], max_points)
        point_overflow += part_counts[local] - count
        num_points[v] = count
        end = max_points if fresh else filled[v]
        for s in range(count, end):
            for f in range(num_features):
                features[v, s, f] = 0.0
        if not fresh:
            filled[v] = count
    num_chunks = route_points.shape[0]
    features_flat = features.reshape(-1)  # (a view made in the loop would cost an allocation a point)
    for c in range(num_chunks):
        own_points = route_points[c, t]
        own_locals = route_locals[c, t]
        own_slots = route_slots[c, t]
        num_own = route_counts[c, t]
        for k in range(num_own):
            ahead = min(k + FILL_PREFETCH_DISTANCE, num_own - 1)
            local_ahead = own_locals[ahead]
            if local_ahead >= 0:
                v_ahead = local_to_voxel[np.uint32(local_ahead)]
                slot_ahead = own_slots[ahead]
                if v_ahead >= 0 and slot_ahead < max_points:
                    row = (np.int64(v_ahead) * max_points + slot_ahead) * num_features
                    _prefetch_for_write(features_flat, row)
            i = np.uint32(own_points[k])
            local = own_locals[k]
            if local < 0:  # the partition had no local voxel left (counted by the numbering)
                point_voxel_index[i] = -1
                continue
            v = local_to_voxel[np.uint32(local)]
            point_voxel_index[i] = v
            if v < 0:  # numbered >= max_voxels by the merge
                voxel_overflow += 1
                continue
            slot = own_slots[k]
            if slot < max_points:
                # 16-byte copies where the row allows: fewer stores waiting for their cache lines
                # (measured: the fill stage 2-3% faster for 5 features, 5-8% for pillars).
                target = (np.int64(v) * max_points + slot) * num_features
                source = np.int64(i) * num_features
                f = 0
                while f + 4 <= num_features:
                    _copy_quad(features, target + f, points, source + f)
                    f += 4
                while f < num_features:
                    features.flat[np.uint64(target + f)] = points.flat[np.uint64(source + f)]
                    f += 1
    drops[t, 3] = point_overflow
    drops[t, 4] = voxel_overflow


# The stages of `_hard_voxelize_kernel`, in order.
STAGE_ROUTE = 0
STAGE_NUMBER = 1
STAGE_FILL = 2
# Each stage's claim and done counters in the kernel's `sync` array, a cache line each.
SYNC_STRIDE = 8
SYNC_SIZE = 6 * SYNC_STRIDE
# Pauses (~23 ns each here) a waiting worker spins through, ~0.1 ms, before it offers its core to
# another thread: a yield mostly hands the core to another process for its time slice (a timeline
# showed workers leaving a wait 1-2 ms after it ended with 256 spins), and waits between stages are
# mostly shorter than this.
SPINS_BEFORE_YIELD = 4000


@njit(cache=True)
def _wait_until_done(sync, counter, target):  # pragma: no cover - jitted
    """Wait until sync[counter] reaches target (every item of a stage finished): spin, and yield
    the core now and then, so that a worker that holds a claim but was preempted can finish it."""
    spins = 0
    while _atomic_add(sync, counter, 0) < target:
        _spin_pause()
        spins += 1
        if spins == SPINS_BEFORE_YIELD:
            _yield_core()
            spins = 0


@njit(cache=True)
def _hard_worker(
    sync,
    points,
    range_min,
    voxel_size,
    grid_xyz,
    splits,
    stage,
    block_keys,
    route_points,
    route_keys,
    route_counts,
    dense_table,
    tables,
    start_bits,
    max_local,
    max_voxels,
    part_keys,
    part_counts,
    part_first,
    part_sizes,
    route_locals,
    route_slots,
    local_to_voxel,
    point_voxel_index,
    features,
    coords_zyx,
    num_points,
    filled,
    fresh,
    drops,
):  # pragma: no cover - jitted
    """One worker of `_hard_voxelize_kernel`: runs the three stages, taking each stage's items
    (chunks, then partitions) by claims, and waits for the others' items of a stage before it
    starts the next."""
    num_chunks = route_points.shape[0]
    num_parts = part_sizes.shape[0]
    claim, done = STAGE_ROUTE * 2 * SYNC_STRIDE, (STAGE_ROUTE * 2 + 1) * SYNC_STRIDE
    c = _atomic_add(sync, claim, 1)
    while c < num_chunks:
        _route_chunk(
            c,
            points,
            range_min,
            voxel_size,
            grid_xyz,
            splits,
            stage,
            block_keys,
            route_points,
            route_keys,
            route_counts,
            point_voxel_index,
            drops,
        )
        _atomic_add(sync, done, 1)
        c = _atomic_add(sync, claim, 1)
    _wait_until_done(sync, done, num_chunks)
    claim, done = STAGE_NUMBER * 2 * SYNC_STRIDE, (STAGE_NUMBER * 2 + 1) * SYNC_STRIDE
    t = _atomic_add(sync, claim, 1)
    while t < num_parts:
        _number_partition(
            t,
            route_points,
            route_keys,
            route_counts,
            splits,
            dense_table,
            tables,
            start_bits,
            max_local,
            part_keys,
            part_counts,
            part_first,
            part_sizes,
            route_locals,
            route_slots,
            drops,
        )
        _atomic_add(sync, done, 1)
        t = _atomic_add(sync, claim, 1)
    _wait_until_done(sync, done, num_parts)
    num_local = 0
    for u in range(num_parts):
        num_local += part_sizes[u]
    num_voxels = min(num_local, max_voxels)
    claim = STAGE_FILL * 2 * SYNC_STRIDE
    t = _atomic_add(sync, claim, 1)
    while t < num_parts:
        _fill_partition(
            t,
            points,
            route_points,
            route_locals,
            route_slots,
            route_counts,
            part_first,
            part_sizes,
            max_local,
            part_keys,
            part_counts,
            local_to_voxel,
            point_voxel_index,
            grid_xyz,
            features,
            coords_zyx,
            num_points,
            filled,
            fresh,
            drops,
            num_voxels,
        )
        t = _atomic_add(sync, claim, 1)


@njit(parallel=True, cache=True)
def _hard_voxelize_kernel(
    num_workers,
    sync,
    points,
    range_min,
    voxel_size,
    grid_xyz,
    sample,
    splits,
    stage,
    block_keys,
    route_points,
    route_keys,
    route_counts,
    dense_table,
    tables,
    start_bits,
    max_local,
    max_voxels,
    part_keys,
    part_counts,
    part_first,
    part_sizes,
    route_locals,
    route_slots,
    local_to_voxel,
    point_voxel_index,
    features,
    coords_zyx,
    num_points,
    filled,
    fresh,
    drops,
):  # pragma: no cover - jitted
    """Hard voxelization's three stages in one parallel region of num_workers workers
    (`_hard_worker`), with C = route_points.shape[0] chunks of points and T = part_sizes.shape[0]
    partitions (any numbers of each, independent of the workers).

    STAGE_ROUTE: the slab splits (`_partition_splits_kernel`, before the region), then the
    chunks' routing (`_route_chunk`, as `_route_points_kernel`). STAGE_NUMBER: partition t reads
    its points in input order (its route lists of chunks 0, 1, ...) and numbers the cells of its
    slab in the order their first point appears, as local voxels t * max_local + j
    (`_number_partition`). Each cell is seen by one partition only, in input order, so the slots
    (ranks of the points in their cell) are exact. A partition keeps at most max_local =
    min(max_voxels, N) cells: a cell it numbers j >= max_voxels has at least max_voxels cells
    before it, so the serial numbering drops it too; its points get local voxel -1 (counted in
    drops[t, 2] as voxel overflow). Cell -> local voxel: with a non-empty dense_table
    ((num_cells,) int32, small grids), directly; partition t clears its key range [splits[t],
    splits[t + 1]) of it. Otherwise row t of tables ((T, 2**max_bits) int32 local voxels, -1
    free, 2**max_bits >= 2 max_local) is partition t's hash table (`_probe_local`): it starts at
    2**start_bits entries and doubles whenever it would get more than half full. It writes, per
    partition, part_keys / part_counts / part_first (cell key, all its points, index of its
    first point) of its local voxels and part_sizes[t]; and per routed point route_locals[c, t,
    j] (its local voxel, or -1) and route_slots[c, t, j] (its slot), beside its route entry.
    Nothing is indexed by point: the partitions' points interleave in short runs (a lidar firing
    crosses the slab faces), and shared cache lines would bounce between the cores.
    STAGE_FILL: partition t numbers its local voxels (`_first_seen_numbers`), finishes its
    voxels (decode (z, y, x), cap the count, zero the padding slots) and copies its routed
    points to features[v, slot], writing point_voxel_index (`_fill_partition`). Every partition
    goes forwards: walking odd partitions backwards, so that two threads would not write the same
    stretch of the outputs at once, measured 5-14% slower on the bench cloud. fresh: `features` holds garbage beyond the
    points, zero every unused slot; otherwise voxel v of the reused buffer has zeros beyond slot
    filled[v]: only slots [count, filled[v]) are zeroed, and filled[v] becomes count. Counts the
    points beyond max_points_per_voxel in drops[t, 3] and those whose cell got a number >=
    max_voxels here in drops[t, 4].

    Why claims, not one item per thread and a parallel loop per stage: each parallel loop ends when
    its slowest thread does, and on a machine whose cores other processes share, a thread often
    starts late (a descheduled thread waits milliseconds for a core). Here the workers that run
    take the items in turn (an atomic counter per stage), so a late worker finds its share done,
    and the others wait only for items that have been started; a stage's outputs do not depend on
    which worker ran an item. sync: (SYNC_SIZE,) int64, zeroed here.

    Returns the number of local voxels of all partitions, and the drop totals over all rows of
    drops: NaN, out of range, voxel overflow (numbering and
    fill), point overflow.
    """
    for k in range(sync.shape[0]):
        sync[k] = 0
    _partition_splits_kernel(points, range_min, voxel_size, grid_xyz, sample, splits)
    for _worker in prange(num_workers):
        _hard_worker(
            sync,
            points,
            range_min,
            voxel_size,
            grid_xyz,
            splits,
            stage,
            block_keys,
            route_points,
            route_keys,
            route_counts,
            dense_table,
            tables,
            start_bits,
            max_local,
            max_voxels,
            part_keys,
            part_counts,
            part_first,
            part_sizes,
            route_locals,
            route_slots,
            local_to_voxel,
            point_voxel_index,
            features,
            coords_zyx,
            num_points,
            filled,
            fresh,
            drops,
        )
    num_local = 0
    for t in range(part_sizes.shape[0]):
        num_local += part_sizes[t]
    num_nan, num_out_of_range, voxel_overflow, point_overflow = 0, 0, 0, 0
    for row in range(drops.shape[0]):
        num_nan += drops[row, 0]
        num_out_of_range += drops[row, 1]
        voxel_overflow += drops[row, 2] + drops[row, 4]
        point_overflow += drops[row, 3]
    return num_local, num_nan, num_out_of_range, voxel_overflow, point_overflow


@njit(cache=True)
def _assign_dynamic_kernel(
    route_points, route_keys, route_counts, table, bits, point_voxel_index, voxel_keys, num_points
):  # pragma: no cover - jitted
    """Every routed point (one partition: its lists of chunks 0, 1, ... in turn are in input
    order) -> its voxel, voxels in first-seen order, no caps. Returns V."""
    num_voxels = 0
    for c in range(route_points.shape[0]):
        own_points = route_points[c, 0]
        own_keys = route_keys[c, 0]
        for k in range(route_counts[c, 0]):
            key = own_keys[k]
            h = _probe(table, bits, key)
            entry = table[h]
            if entry != _EMPTY:
                voxel = np.int32(entry & 0xFFFFFFFF)
            else:
                voxel = np.int32(num_voxels)
                num_voxels += 1
                table[h] = (np.int64(key) << 32) | voxel
                voxel_keys[voxel] = key
                num_points[voxel] = 0
            point_voxel_index[own_points[k]] = voxel
            num_points[voxel] += 1
    return num_voxels


@njit(cache=True)
def _decode_keys_kernel(voxel_keys, grid_xyz, coords_zyx):  # pragma: no cover - jitted
    """coords_zyx[v] = (z, y, x) of voxel_keys[v]. Serial: a few hundred microseconds for 100k
    voxels, and a parallel kernel costs about a second more to compile."""
    decoder = _key_decoder(grid_xyz)
    for v in range(coords_zyx.shape[0]):
        coords_zyx[v, 0], coords_zyx[v, 1], coords_zyx[v, 2] = _decode_key(voxel_keys[v], decoder)


@njit(cache=True)
def _scatter_mean_kernel(features, point_voxel_index, sums, counts, out):  # pragma: no cover - jitted
    """Serial in point order so the float64 sums equal the reference bit for bit."""
    num_features = features.shape[1]
    for i in range(features.shape[0]):
        v = point_voxel_index[i]
        if v < 0:
            continue
        counts[v] += 1
        for c in range(num_features):
            sums[v, c] += features[i, c]
    for v in range(out.shape[0]):
        for c in range(num_features):
            out[v, c] = sums[v, c] / counts[v] if counts[v] > 0 else 0.0


@njit(cache=True)
def _scatter_max_kernel(features, point_voxel_index, counts, out):  # pragma: no cover - jitted
    """counts: zeros on entry. NaN wins, like np.maximum; voxels without points end as 0."""
    num_features = features.shape[1]
    for i in range(features.shape[0]):
        v = point_voxel_index[i]
        if v < 0:
            continue
        first = counts[v] == 0
        counts[v] += 1
        for c in range(num_features):
            value = features[i, c]
            if first or value > out[v, c] or value != value:
                out[v, c] = value
