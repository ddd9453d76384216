"""`avfusion bench voxelize`: our voxelizers beside spconv's `PointToVoxel`, in one run.

The cloud is nuScenes-sized: ten sweeps, about 300k points (x, y, z, intensity, time_lag_s). With
`--source real` it is the real LIDAR_TOP sweep of ../shared/realdata tiled: each copy rotated by a
small yaw and jittered by 2 cm, its time lag 0.05 s per copy, as ten accumulated sweeps look. With
`--source synthetic --dataroot D` it is the first LIDAR_TOP files of a synthetic log (no motion
compensation: it only has to look like a lidar cloud), tiled likewise up to `--points`.

For the CenterPoint/BEVFusion nuScenes voxels and pillars it times, on the same cloud, our Numba
CPU kernels (ours: a reused `Voxelizer` returning views into its buffers, and the functional
`voxelize` returning fresh arrays; each on all Numba threads and on one), our NumPy twin, spconv's
CPU `PointToVoxel` (the peer; skipped with a message when spconv is not importable) and a
torch.unique voxelizer, and checks in the same run that all give identical voxels. Methods are
timed round-robin with the caches overwritten before each call (`CacheEvictor`), and the load
average is recorded. On a machine with a CUDA GPU it also times our numba.cuda path against
spconv's CUDA `PointToVoxel` (when spconv's CUDA build is installed) and the torch.unique voxelizer
on the GPU. It reports the Numba JIT compile time cold (empty cache) and
from the on-disk cache, each in a fresh interpreter.

    avfusion bench voxelize [--points 300000] [--repeats 10] [--source real|synthetic] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch

from avfusion.errors import InputError
from avfusion.fileio import write_json_atomic
from avfusion.fusion.ops.voxelize import (
    VoxelConfig,
    Voxelizer,
    Voxels,
    hash_table_bits,
    numba_threads,
    nuscenes_pillar_config,
    nuscenes_voxel_config,
    voxelize,
)
from avfusion.sensors.pcd import read_pcd_bin
from avfusion.tools.bench.common import BenchReport, HostCpuTimes, Timing, host_state_facts

REALDATA_SWEEP_GLOB = "nuscenes_fixture/mmdetection3d/demo/data/nuscenes/*LIDAR_TOP*.pcd.bin"
DEFAULT_REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
SWEEP_INTERVAL_S = 0.05  # nuScenes lidar: 20 Hz


# ---------------------------------------------------------------------------------------------
# The cloud
# ---------------------------------------------------------------------------------------------


def tile_sweeps(sweeps: list[np.ndarray], num_points: int, seed: int) -> np.ndarray:
    """(num_points, 5) float32 x, y, z, intensity, time_lag_s from copies of the (M_k, >=4) sweeps.

    Copy k is sweep k % len(sweeps), rotated about z by a yaw in [-3, 3] degrees, jittered by
    N(0, 2 cm) in x, y, z, with time lag k * 0.05 s. Copies are added until num_points is reached.
    """
    if not sweeps or sum(len(s) for s in sweeps) == 0:
        raise InputError("no lidar points to build the benchmark cloud from")
    rng = np.random.default_rng(seed)
    copies = []
    total = 0
    k = 0
    while total < num_points:
        sweep = sweeps[k % len(sweeps)]
        yaw = np.deg2rad(rng.uniform(-3.0, 3.0))
        rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        xyz = sweep[:, :3].astype(np.float64)
        xyz[:, :2] = xyz[:, :2] @ rotation.T
        xyz += rng.normal(0.0, 0.02, size=xyz.shape)
        time_lag = np.full((len(sweep), 1), k * SWEEP_INTERVAL_S)
        copies.append(np.concatenate([xyz, sweep[:, 3:4], time_lag], axis=1).astype(np.float32))
        total += len(sweep)
        k += 1
    return np.ascontiguousarray(np.concatenate(copies)[:num_points])


def load_sweeps(source: str, dataroot: str | None, realdata: Path) -> tuple[list[np.ndarray], str]:
    """The lidar sweeps to tile, and a description of where they came from."""
    if source == "real":
        paths = sorted(realdata.glob(REALDATA_SWEEP_GLOB))
        if not paths:
            raise InputError(
                f"no real LIDAR_TOP sweep under {realdata} (expected {REALDATA_SWEEP_GLOB}); "
                "pass --realdata, or use --source synthetic --dataroot <synthetic log>"
            )
        return [read_pcd_bin(paths[0])], f"real nuScenes sweep {paths[0].name}"
    if dataroot is None:
        raise InputError(
            "--source synthetic needs --dataroot: a synthetic log (make one with `avfusion dataset make-synthetic`)"
        )
    root = Path(dataroot)
    paths = sorted((root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))[:1]
    paths += sorted((root / "sweeps" / "LIDAR_TOP").glob("*.pcd.bin"))[:9]
    if not paths:
        raise InputError(f"{root}: no samples/LIDAR_TOP or sweeps/LIDAR_TOP .pcd.bin files")
    return [read_pcd_bin(path) for path in paths], f"{len(paths)} synthetic sweeps from {root}"


# ---------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------


def spconv_voxelizer(config: VoxelConfig, num_features: int, device: str = "cpu") -> tuple[Any | None, str]:
    """spconv's PointToVoxel on `device` ("cpu" or "cuda"), or (None, why it is unavailable).

    On "cuda" it needs spconv's CUDA build (spconv-cu1xx; the `peers` extra installs the CPU one):
    the generator is tried on a few points first, so that a CPU-only build says so here.
    """
    try:
        from spconv.pytorch.utils import PointToVoxel
    except ImportError as error:
        return None, f"spconv is not importable ({error}); install the `peers` extra to compare"
    try:
        generator = PointToVoxel(
            vsize_xyz=list(config.voxel_size),
            coors_range_xyz=list(config.point_cloud_range),
            num_point_features=num_features,
            max_num_voxels=config.max_voxels,
            max_num_points_per_voxel=config.max_points_per_voxel,
            device=torch.device(device),
        )
        if device != "cpu":
            probe = torch.zeros((4, num_features), dtype=torch.float32, device=device)
            generator.generate_voxel_with_id(probe)
    except Exception as error:  # spconv raises its own and RuntimeError types for a missing CUDA build
        return None, f"spconv's PointToVoxel does not run on {device} ({type(error).__name__}: {error})"
    return generator, ""


def torch_unique_voxelize(points: torch.Tensor, config: VoxelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A torch voxelizer built on `torch.unique` (the GPU peer): same contract as `voxelize`.

    points: (N, C) float32 tensor on any device. Returns (features (V, P, C), coords_zyx (V, 3)
    int32, num_points (V,) int32).
    """
    device = points.device
    n = points.shape[0]
    gx, gy, _ = config.grid_size_xyz
    scaled = (points[:, :3] - torch.from_numpy(config.range_min_f32).to(device)) / torch.from_numpy(
        config.voxel_size_f32
    ).to(device)
    grid = torch.tensor(config.grid_size_xyz, device=device)
    inside = ((scaled >= 0) & (scaled < grid)).all(dim=1)  # NaN compares False
    index = torch.nonzero(inside).squeeze(1)
    cell = scaled[index].floor().long()
    key = (cell[:, 2] * gy + cell[:, 1]) * gx + cell[:, 0]
    unique_keys, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    first = torch.full((unique_keys.shape[0],), n, dtype=torch.long, device=device)
    first = first.scatter_reduce(0, inverse, index, reduce="amin")
    order = torch.argsort(first)  # sorted keys -> first-seen order (first indices are distinct)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.shape[0], device=device)
    voxel = rank[inverse]
    sorted_voxel, permutation = torch.sort(voxel, stable=True)
    group_start = torch.searchsorted(sorted_voxel, sorted_voxel)
    slot = torch.empty_like(voxel)
    slot[permutation] = torch.arange(voxel.shape[0], device=device) - group_start
    keep = (voxel < config.max_voxels) & (slot < config.max_points_per_voxel)
    num_voxels = min(unique_keys.shape[0], config.max_voxels)
    features = torch.zeros((num_voxels, config.max_points_per_voxel, points.shape[1]), device=device)
    features[voxel[keep], slot[keep]] = points[index[keep]]
    kept_keys = unique_keys[order[:num_voxels]]
    coords = torch.stack([kept_keys // (gx * gy), (kept_keys // gx) % gy, kept_keys % gx], dim=1).int()
    num_points = counts[order[:num_voxels]].clamp(max=config.max_points_per_voxel).int()
    return features, coords, num_points


def same_voxels(ours: Voxels, peer: tuple[Any, ...]) -> bool:
    """Same voxel set in the same order, same points per voxel, same features."""
    features, coords, num_points = (_host(t) for t in peer[:3])
    return (
        np.array_equal(_host(ours.coords_zyx), coords)
        and np.array_equal(_host(ours.num_points), num_points)
        and np.array_equal(_host(ours.features), features)
    )


def _same_voxel_set(ours: Voxels, peer: tuple[Any, ...]) -> bool:
    """The same voxel coordinates with the same point counts, in any order."""
    ours_rows = np.column_stack([_host(ours.coords_zyx), _host(ours.num_points)])
    peer_rows = np.column_stack([_host(peer[1]), _host(peer[2])])
    return ours_rows.shape == peer_rows.shape and np.array_equal(
        np.unique(ours_rows, axis=0), np.unique(peer_rows, axis=0)
    )


def _host(array: Any) -> np.ndarray:
    """A NumPy array of `array`, copied from the GPU when it is a CUDA tensor."""
    return array.cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


class CacheEvictor:
    """Overwrites a buffer twice the size of the last-level cache before each timed call, so that
    every method starts with caches holding someone else's data, as in the pipeline, where the
    network runs between two voxelizations. Without it the method timed right after a peer that
    sweeps tens of MB would pay for the peer's cache misses (measured: ~6 ms of 11 ms)."""

    def __init__(self, size_bytes: int = 64 * 2**20) -> None:
        self._buffer = np.zeros(size_bytes // 8, np.int64)
        self._value = 0

    def __call__(self) -> None:
        self._value += 1
        self._buffer.fill(self._value)


def time_interleaved(
    methods: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    before_each: Callable[[], None] | None = None,
    cpu_ms: dict[str, float] | None = None,
) -> dict[str, Timing]:
    """Time the methods round-robin, one call each per round, so that the load other processes put
    on the machine falls on all of them alike (timings on a shared machine drift over seconds).
    `before_each` runs untimed before every timed call (cache eviction). `cpu_ms`, when given,
    receives each method's median CPU time of the process (all threads, spinning included): on a
    loaded machine it shows the work done, which wall time mixes with waiting for a core."""
    for _ in range(warmup):
        for function in methods.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu_times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, function in methods.items():
            if before_each is not None:
                before_each()
            start_cpu = time.process_time()
            start = time.perf_counter()
            function()
            times[name].append((time.perf_counter() - start) * 1e3)
            cpu_times[name].append((time.process_time() - start_cpu) * 1e3)
    if cpu_ms is not None:
        cpu_ms.update({name: statistics.median(values) for name, values in cpu_times.items()})
    return {name: Timing(name, tuple(values)) for name, values in times.items()}


def on_one_thread(function: Callable[[], object]) -> Callable[[], object]:
    """`function` run with Numba's parallel kernels on one thread: spconv's CPU voxelizer is
    single-threaded, so this is the like-for-like comparison, and the robust one when other
    processes keep the machine's cores busy."""

    def call() -> object:
        threads = numba_threads()
        numba.set_num_threads(1)
        try:
            return function()
        finally:
            numba.set_num_threads(threads)

    return call


TIMED_MODES = (
    "numba_voxelizer: one Voxelizer(config) reused, outputs are views into its buffers, valid until "
    "the next call (as one reused spconv PointToVoxel; spconv 2.3.8 returns clones of its buffers); "
    "numba_voxelize_fresh: voxelize(points, config), fresh output arrays each call; "
    "spconv_cpu: one PointToVoxel reused, generate_voxel_with_id (its defaults); "
    "_1_thread: Numba on one thread (spconv's CPU voxelizer is single-threaded); "
    "caches overwritten before every timed call"
)


def bench_cpu(cloud: np.ndarray, config: VoxelConfig, name: str, repeats: int) -> BenchReport:
    """Ours (Numba: the reusable Voxelizer, and the functional voxelize) on two threads and on one;
    NumPy twin, spconv CPU and torch.unique CPU as peers; the same cloud for all."""
    report = BenchReport(f"voxelize {name}: {cloud.shape[0]} points, grid xyz {config.grid_size_xyz}, CPU")
    tensor = torch.from_numpy(cloud)
    voxelizer = Voxelizer(config)
    ours = voxelize(cloud, config)  # compiles (or loads from cache) outside the timing
    report.facts["identical_voxelizer_views_to_voxelize"] = same_voxels(
        voxelizer(cloud), (ours.features, ours.coords_zyx, ours.num_points)
    )
    methods: dict[str, Callable[[], object]] = {
        "numba_voxelizer": lambda: voxelizer(cloud),
        "numba_voxelizer_1_thread": on_one_thread(lambda: voxelizer(cloud)),
        "numba_voxelize_fresh": lambda: voxelize(cloud, config),
        "numba_voxelize_fresh_1_thread": on_one_thread(lambda: voxelize(cloud, config)),
        "numpy_reference": lambda: voxelize(cloud, config, backend="reference"),
    }
    ours_names = [name for name in methods if name.startswith("numba_")]
    reference = voxelize(cloud, config, backend="reference")
    report.facts["identical_to_numpy_reference"] = same_voxels(
        ours, (reference.features, reference.coords_zyx, reference.num_points)
    )
    generator, why = spconv_voxelizer(config, cloud.shape[1])
    if generator is None:
        report.skipped["spconv_cpu"] = why
    else:
        methods["spconv_cpu"] = lambda: generator.generate_voxel_with_id(tensor)
        peer = generator.generate_voxel_with_id(tensor)
        report.facts["identical_to_spconv"] = same_voxels(ours, peer) and np.array_equal(
            np.asarray(ours.point_voxel_index), peer[3].numpy()
        )
    methods["torch_unique_cpu"] = lambda: torch_unique_voxelize(tensor, config)
    report.facts["identical_to_torch_unique"] = same_voxels(ours, torch_unique_voxelize(tensor, config))
    cpu_ms: dict[str, float] = {}
    host_before = HostCpuTimes.read()
    timings = time_interleaved(methods, repeats, before_each=CacheEvictor(), cpu_ms=cpu_ms)
    host = host_state_facts(host_before)
    report.ours.extend(timings.pop(name) for name in ours_names)
    report.peers.extend(timings.values())
    for name in ours_names[1:]:
        report.facts.update({f"{name}_{key}": value for key, value in report.ratios(name).items()})
    report.facts["cpu_ms_median"] = {name: round(value, 3) for name, value in cpu_ms.items()}
    if "spconv_cpu" in cpu_ms:
        report.facts["cpu_time_ratio_vs_spconv_cpu"] = {
            name: round(cpu_ms["spconv_cpu"] / cpu_ms[name], 3) for name in ours_names
        }
    report.facts["timed_modes"] = TIMED_MODES
    report.facts["voxels"] = ours.num_voxels
    report.facts["points_dropped"] = {
        "out_of_range": ours.num_out_of_range,
        "nan": ours.num_nan,
        "voxel_overflow": ours.num_voxel_overflow,
        "point_overflow": ours.num_point_overflow,
    }
    report.facts["hash_table_bytes"] = 4 << hash_table_bits(min(config.max_voxels, cloud.shape[0]))
    report.facts["frames_per_s"] = 1000.0 / report.ours[0].median_ms
    report.facts["numba_threads"] = numba_threads()
    report.facts.update(host)
    return report


def bench_gpu(cloud: np.ndarray, config: VoxelConfig, name: str, repeats: int) -> BenchReport:
    """Our numba.cuda path against spconv's CUDA PointToVoxel (when spconv's CUDA build is there)
    and torch.unique on the GPU, CUDA tensors in and out."""
    report = BenchReport(f"voxelize {name}: {cloud.shape[0]} points, GPU {torch.cuda.get_device_name()}")
    points = torch.from_numpy(cloud).cuda()

    def ours_call() -> Voxels:
        result = voxelize(points, config, backend="cuda")
        torch.cuda.synchronize()
        return result

    def peer_call() -> tuple:
        result = torch_unique_voxelize(points, config)
        torch.cuda.synchronize()
        return result

    methods: dict[str, Callable[[], object]] = {"numba_cuda": ours_call, "torch_unique_cuda": peer_call}
    generator, why = spconv_voxelizer(config, cloud.shape[1], device="cuda")
    if generator is None:
        report.skipped["spconv_cuda"] = why
    else:
        spconv_generator = generator

        def spconv_call() -> tuple:
            result = spconv_generator.generate_voxel_with_id(points)
            torch.cuda.synchronize()
            return result

        methods = {"numba_cuda": ours_call, "spconv_cuda": spconv_call, "torch_unique_cuda": peer_call}
    ours = ours_call()
    timings = time_interleaved(methods, repeats, warmup=2)
    report.ours.append(timings["numba_cuda"])
    report.peers.extend(timings[peer] for peer in methods if peer != "numba_cuda")
    report.facts["identical_to_torch_unique"] = same_voxels(ours, peer_call())
    if generator is not None:
        spconv_result = spconv_call()
        # spconv's GPU kernels number voxels in their own (hash) order: compare the voxel sets.
        report.facts["identical_to_spconv_cuda"] = same_voxels(ours, spconv_result)
        report.facts["same_voxel_set_as_spconv_cuda"] = _same_voxel_set(ours, spconv_result)
    report.facts["identical_to_numba_cpu"] = same_voxels(
        ours, tuple(getattr(voxelize(cloud, config), f) for f in ("features", "coords_zyx", "num_points"))
    )
    report.facts["frames_per_s"] = 1000.0 / report.ours[0].median_ms
    return report


_JIT_PROBE = """
import time, numpy as np
from avfusion.fusion.ops.voxelize import VoxelConfig, voxelize, dynamic_voxelize
points = np.random.default_rng(0).uniform(-1, 1, size=(1000, 4)).astype(np.float32)
config = VoxelConfig((-1, -1, -1, 1, 1, 1), (0.1, 0.1, 0.1), 4, 100)
start = time.perf_counter()
voxelize(points, config)
dynamic_voxelize(points, config)
print(time.perf_counter() - start)
"""


def jit_compile_times() -> dict[str, float]:
    """Seconds of the first hard + dynamic call in a fresh interpreter: cold, then from the cache."""
    with tempfile.TemporaryDirectory(prefix="avfusion-numba-cache-") as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        times = {}
        for label in ("jit_cold_s", "jit_cached_s"):
            result = subprocess.run(
                [sys.executable, "-c", _JIT_PROBE], env=env, capture_output=True, text=True, check=True
            )
            times[label] = float(result.stdout.strip().splitlines()[-1])
    return times


def run_benchmark(cloud: np.ndarray, repeats: int, jit_timing: bool) -> dict[str, Any]:
    """All reports (printed as they finish) and the JSON payload."""
    payload: dict[str, Any] = {"points": int(cloud.shape[0])}
    configs = {"voxels": nuscenes_voxel_config(), "pillars": nuscenes_pillar_config()}
    for name, config in configs.items():
        cpu = bench_cpu(cloud, config, name, repeats)
        print(cpu.table(), end="\n\n")
        payload[name] = {
            "config": {
                "point_cloud_range": config.point_cloud_range,
                "voxel_size": config.voxel_size,
                "max_points_per_voxel": config.max_points_per_voxel,
                "max_voxels": config.max_voxels,
            },
            "cpu": cpu.as_dict(),
        }
        if torch.cuda.is_available():
            gpu = bench_gpu(cloud, config, name, repeats)
            print(gpu.table(), end="\n\n")
            payload[name]["gpu"] = gpu.as_dict()
        else:
            payload[name]["gpu"] = {"skipped": "no CUDA GPU on this machine: numba_cuda vs torch_unique_cuda not run"}
            print(f"skipped GPU {name}: no CUDA GPU on this machine\n")
    if jit_timing:
        payload["jit"] = jit_compile_times()
        print(
            f"Numba JIT, first hard + dynamic call: cold {payload['jit']['jit_cold_s']:.2f} s, "
            f"from cache {payload['jit']['jit_cached_s']:.2f} s"
        )
    return payload


def run(args: argparse.Namespace) -> int:
    if args.points < 1 or args.repeats < 1:
        raise InputError(f"--points and --repeats must be >= 1, got {args.points} and {args.repeats}")
    sweeps, origin = load_sweeps(args.source, args.dataroot, Path(args.realdata))
    cloud = tile_sweeps(sweeps, args.points, args.seed)
    print(f"cloud: {cloud.shape[0]} points from {origin} ({math.ceil(cloud.shape[0] / len(sweeps[0]))} copies)\n")
    payload = run_benchmark(cloud, args.repeats, args.jit_timing)
    payload["source"] = origin
    if args.json is not None:
        write_json_atomic(args.json, payload)
        print(f"wrote {args.json}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "voxelize", help="voxelization: Numba CPU / NumPy / spconv PointToVoxel (and CUDA vs torch on a GPU)"
    )
    parser.add_argument("--points", type=int, default=300_000, help="points in the cloud (default 300000)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per method (median reported)")
    parser.add_argument(
        "--source",
        choices=("real", "synthetic"),
        default="real",
        help="tile the real nuScenes sweep, or the sweeps of a synthetic log (--dataroot)",
    )
    parser.add_argument("--dataroot", default=None, help="synthetic log for --source synthetic")
    parser.add_argument("--realdata", default=str(DEFAULT_REALDATA), help="the shared realdata folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-jit-timing",
        dest="jit_timing",
        action="store_false",
        help="skip the cold / cached JIT compile measurement (two fresh interpreters)",
    )
    parser.add_argument("--json", default=None, help="write the figures as JSON here")
    parser.set_defaults(func=run)
