"""Voxelization: hand-worked cases, Numba kernels == NumPy twin == spconv 2.3.8's PointToVoxel."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
import torch

from avfusion.fusion.ops import voxelize_cpu, voxelize_kernels
from avfusion.fusion.ops.voxelize import (
    DynamicVoxels,
    VoxelConfig,
    Voxelizer,
    Voxels,
    dynamic_voxelize,
    hash_table_bits,
    host_points,
    nuscenes_pillar_config,
    nuscenes_voxel_config,
    scatter_max,
    scatter_mean,
    voxelize,
)

NAN = np.nan
SMALL = VoxelConfig((0.0, 0.0, 0.0, 4.0, 4.0, 2.0), (1.0, 1.0, 1.0), max_points_per_voxel=2, max_voxels=3)


def assert_voxels_equal(a: Voxels, b: Voxels) -> None:
    for name in Voxels.__slots__:
        left, right = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert left.shape == right.shape, f"{name}: {left.shape} != {right.shape}"
        # NaN features (NaN in a non-xyz column) are copied through: compare them as equal.
        assert np.array_equal(left, right, equal_nan=left.dtype.kind == "f"), name


def assert_dynamic_equal(a: DynamicVoxels, b: DynamicVoxels) -> None:
    for name in DynamicVoxels.__slots__:
        assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name


def random_cloud(seed: int, n: int, config: VoxelConfig, num_features: int = 5) -> np.ndarray:
    """Points inside and around the range, some exactly on voxel faces, some NaN, many duplicates."""
    rng = np.random.default_rng(seed)
    lo = np.array(config.point_cloud_range[:3])
    hi = np.array(config.point_cloud_range[3:])
    margin = 0.1 * (hi - lo)
    points = rng.uniform(lo - margin, hi + margin, size=(n, 3))
    # A third snapped to voxel faces (the float32 boundary rule), including the upper face.
    on_face = rng.random(n) < 0.33
    size = np.array(config.voxel_size)
    points[on_face] = lo + np.round((points[on_face] - lo) / size) * size
    # Clusters: many points in few cells, so caps on points per voxel bite.
    cluster = rng.random(n) < 0.3
    points[cluster] = lo + (hi - lo) * 0.5 + rng.normal(0, 0.5, size=(cluster.sum(), 3)) * size
    cloud = np.concatenate([points, rng.normal(size=(n, num_features - 3))], axis=1).astype(np.float32)
    cloud[rng.random(n) < 0.02, rng.integers(0, 3)] = NAN
    return cloud


# --- configuration ------------------------------------------------------------------------------


def test_grid_sizes_of_the_nuscenes_presets() -> None:
    assert nuscenes_voxel_config().grid_size_xyz == (1440, 1440, 40)
    assert nuscenes_voxel_config().grid_size_zyx == (40, 1440, 1440)
    pillars = nuscenes_pillar_config()
    assert pillars.grid_size_xyz == (540, 540, 1)
    assert pillars.voxel_size == (0.2, 0.2, 8.0)
    assert (pillars.max_points_per_voxel, pillars.max_voxels) == (20, 30000)


def test_grid_size_rounds_like_spconv() -> None:
    # 2.5 / 1 -> 3 (halves away from zero, not to even); 0.94 / 0.1 = 9.4 -> 9;
    # float32(1.05) / float32(0.1) = 10.4999... -> 10 (float32 arithmetic, not decimal).
    config = VoxelConfig((0, 0, 0, 2.5, 0.94, 1.05), (1, 0.1, 0.1), 1, 1)
    assert config.grid_size_xyz == (3, 9, 10)
    utils = pytest.importorskip("spconv.pytorch.utils", reason="spconv (optional peer) is not installed")
    peer = utils.PointToVoxel(list(config.voxel_size), list(config.point_cloud_range), 3, 1, 1)
    assert tuple(peer.grid_size) == config.grid_size_zyx


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(point_cloud_range=(0, 0, 0, 1, 1), voxel_size=(1, 1, 1)), "6 values"),
        (dict(point_cloud_range=(0, 0, 0, 1, 1, 1), voxel_size=(1, 0, 1)), "positive"),
        (dict(point_cloud_range=(0, 0, 0, 1, -1, 1), voxel_size=(1, 1, 1)), "max > min"),
        (dict(point_cloud_range=(0, 0, 0, 1, 1, 1), voxel_size=(1, 1, 1), max_voxels=0), ">= 1"),
        (dict(point_cloud_range=(0, 0, 0, 1e4, 1e4, 1e4), voxel_size=(0.1, 0.1, 0.1)), "cells"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    kwargs = {"max_points_per_voxel": 1, "max_voxels": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        VoxelConfig(**kwargs)


def test_points_must_be_float32_n_by_c() -> None:
    with pytest.raises(ValueError, match=r"\(5, 2\) float32"):
        voxelize(np.zeros((5, 2), np.float32), SMALL)
    with pytest.raises(ValueError, match="float64"):
        voxelize(np.zeros((5, 4)), SMALL)


# --- hand-worked hard voxelization --------------------------------------------------------------

HAND_POINTS = np.array(
    [
        [0.5, 0.5, 0.5, 10],  # 0: cell (x0,y0,z0) -> voxel 0
        [1.0, 0.0, 0.0, 11],  # 1: exactly on the x=1 face -> cell x1 -> voxel 1
        [0.9, 0.1, 0.1, 12],  # 2: voxel 0, second point
        [0.2, 0.2, 0.2, 13],  # 3: voxel 0 is full (2 points): overflow, keeps index 0
        [4.0, 1.0, 1.0, 14],  # 4: on the upper x face -> out of range
        [NAN, 1.0, 1.0, 15],  # 5: NaN
        [3.5, 3.5, 1.5, 16],  # 6: cell (x3,y3,z1) -> voxel 2
        [2.5, 0.5, 0.5, 17],  # 7: a fourth cell, but max_voxels=3: dropped
        [1.5, 0.5, 0.5, 18],  # 8: voxel 1, second point
        [0.0, 0.0, -1e-4, 19],  # 9: below the lower z face -> out of range
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_hard_voxelization_hand_worked(backend: str) -> None:
    voxels = voxelize(HAND_POINTS, SMALL, backend=backend)
    p = HAND_POINTS
    expected_features = np.stack([np.stack([p[0], p[2]]), np.stack([p[1], p[8]]), np.stack([p[6], np.zeros(4)])])
    np.testing.assert_array_equal(voxels.features, expected_features.astype(np.float32))
    np.testing.assert_array_equal(voxels.coords_zyx, [[0, 0, 0], [0, 0, 1], [1, 3, 3]])
    np.testing.assert_array_equal(voxels.num_points, [2, 2, 1])
    np.testing.assert_array_equal(voxels.point_voxel_index, [0, 1, 0, 0, -1, -1, 2, -1, 1, -1])
    assert (voxels.num_nan, voxels.num_out_of_range, voxels.num_voxel_overflow, voxels.num_point_overflow) == (
        1,
        2,
        1,
        1,
    )
    assert voxels.coords_zyx.dtype == np.int32 and voxels.num_points.dtype == np.int32
    assert len(voxels) == 3


def test_pillars_are_one_voxel_tall() -> None:
    config = VoxelConfig.pillars((0, 0, -1, 2, 2, 3), (1.0, 1.0), max_points_per_pillar=4, max_pillars=10)
    assert config.grid_size_xyz == (2, 2, 1)
    points = np.array([[0.5, 0.5, -1.0, 0], [0.5, 0.5, 2.99, 1], [1.5, 0.5, 0.0, 2], [0.5, 0.5, 3.0, 3]], np.float32)
    voxels = voxelize(points, config)
    np.testing.assert_array_equal(voxels.coords_zyx, [[0, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(voxels.num_points, [2, 1])
    assert voxels.num_out_of_range == 1  # z == zmax is outside


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_empty_cloud(backend: str) -> None:
    voxels = voxelize(np.zeros((0, 5), np.float32), SMALL, backend=backend)
    assert voxels.features.shape == (0, 2, 5) and voxels.coords_zyx.shape == (0, 3)
    assert voxels.point_voxel_index.shape == (0,) and voxels.num_nan == 0
    dynamic = dynamic_voxelize(np.zeros((0, 3), np.float32), SMALL, backend=backend)
    assert dynamic.coords_zyx.shape == (0, 3) and dynamic.point_voxel_index.shape == (0,)


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_all_points_dropped(backend: str) -> None:
    points = np.array([[NAN, 0, 0], [9, 9, 9], [-1, 0, 0]], np.float32)
    voxels = voxelize(points, SMALL, backend=backend)
    assert voxels.num_voxels == 0
    assert (voxels.num_nan, voxels.num_out_of_range) == (1, 2)
    np.testing.assert_array_equal(voxels.point_voxel_index, [-1, -1, -1])


def test_input_is_not_modified_and_calls_do_not_leak_state() -> None:
    config = VoxelConfig((0, 0, 0, 8, 8, 4), (0.5, 0.5, 0.5), 3, 50)
    clouds = [random_cloud(seed, 400, config) for seed in range(3)]
    copies = [cloud.copy() for cloud in clouds]
    # The numba backend reuses its cell table between calls: alternate clouds and grids.
    for cloud in [*clouds, *clouds]:
        assert_voxels_equal(voxelize(cloud, config), voxelize(cloud, config, backend="reference"))
        assert_voxels_equal(voxelize(cloud, SMALL), voxelize(cloud, SMALL, backend="reference"))
    for cloud, copy in zip(clouds, copies, strict=True):
        np.testing.assert_array_equal(cloud, copy)


# --- numba == reference on random clouds --------------------------------------------------------

RANDOM_CONFIGS = [
    VoxelConfig((-3, -3, -1, 3, 3, 1), (0.25, 0.25, 0.5), 4, 10_000),  # no voxel cap reached
    VoxelConfig((-3, -3, -1, 3, 3, 1), (0.25, 0.25, 0.5), 3, 60),  # overflows max voxels
    VoxelConfig.pillars((-3.2, -3.2, -2, 3.2, 3.2, 2), (0.4, 0.4), 5, 40),
    VoxelConfig((-54, -54, -5, 54, 54, 3), (0.075, 0.075, 0.2), 10, 500),  # float32 rounding at scale
]


@pytest.mark.parametrize("config", RANDOM_CONFIGS, ids=["big", "overflow", "pillars", "nuscenes"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numba_equals_reference_on_random_clouds(config: VoxelConfig, seed: int) -> None:
    cloud = random_cloud(seed, 3000, config)
    expected = voxelize(cloud, config, backend="reference")
    assert_voxels_equal(voxelize(cloud, config, backend="numba"), expected)
    assert expected.num_nan > 0 and expected.num_out_of_range > 0 and expected.num_point_overflow > 0
    assert (expected.num_voxel_overflow > 0) == (config.max_voxels < 1000)
    assert_dynamic_equal(dynamic_voxelize(cloud, config), dynamic_voxelize(cloud, config, backend="reference"))


# --- spconv 2.3.8 PointToVoxel: the peer ------------------------------------------------------------


def spconv_voxelize(points: np.ndarray, config: VoxelConfig) -> tuple[np.ndarray, ...]:
    utils = pytest.importorskip("spconv.pytorch.utils", reason="spconv (optional peer) is not installed")
    generator = utils.PointToVoxel(
        vsize_xyz=list(config.voxel_size),
        coors_range_xyz=list(config.point_cloud_range),
        num_point_features=points.shape[1],
        max_num_voxels=config.max_voxels,
        max_num_points_per_voxel=config.max_points_per_voxel,
    )
    voxels, coords, num_points, point_voxel_id = generator.generate_voxel_with_id(torch.from_numpy(points))
    return voxels.numpy(), coords.numpy(), num_points.numpy(), point_voxel_id.numpy()


def assert_equals_spconv(ours: Voxels, peer: tuple[np.ndarray, ...]) -> None:
    features, coords, num_points, point_voxel_id = peer
    np.testing.assert_array_equal(ours.coords_zyx, coords)
    np.testing.assert_array_equal(ours.num_points, num_points)
    np.testing.assert_array_equal(ours.features, features)
    np.testing.assert_array_equal(ours.point_voxel_index, point_voxel_id)


@pytest.mark.parametrize("config", RANDOM_CONFIGS, ids=["big", "overflow", "pillars", "nuscenes"])
@pytest.mark.parametrize("seed", [10, 11])
def test_numba_equals_spconv_on_unseen_random_clouds(config: VoxelConfig, seed: int) -> None:
    cloud = random_cloud(seed, 3000, config)
    assert_equals_spconv(voxelize(cloud, config), spconv_voxelize(cloud, config))


def test_numba_equals_spconv_on_exact_voxel_faces() -> None:
    config = VoxelConfig((-1, -1, -1, 1, 1, 1), (0.1, 0.1, 0.5), 4, 1000)
    faces = np.float32([-1, -0.9, -0.3, 0, 0.1, 0.7, 0.9, 1.0, np.nextafter(np.float32(1), np.float32(0)), -1.0000001])
    grid = np.stack(np.meshgrid(faces, faces, np.float32([-1, 0, 0.5, 1])), axis=-1).reshape(-1, 3)
    points = np.concatenate([grid, np.arange(len(grid), dtype=np.float32)[:, None]], axis=1)
    ours = voxelize(points, config)
    assert_equals_spconv(ours, spconv_voxelize(points, config))
    assert ours.num_out_of_range > 0 and ours.num_voxels > 0


def real_sweep(realdata_root: Path) -> np.ndarray:
    path = next((realdata_root / "demo" / "data" / "nuscenes").glob("*LIDAR_TOP*.pcd.bin"))
    return np.fromfile(path, dtype=np.float32).reshape(-1, 5)


@pytest.mark.realdata
@pytest.mark.parametrize("config", [nuscenes_voxel_config(), nuscenes_pillar_config()], ids=["voxels", "pillars"])
def test_real_nuscenes_sweep_equals_spconv_and_reference(realdata_root: Path, config: VoxelConfig) -> None:
    sweep = real_sweep(realdata_root)
    assert sweep.shape == (34688, 5)
    ours = voxelize(sweep, config)
    assert_equals_spconv(ours, spconv_voxelize(sweep, config))
    assert_voxels_equal(ours, voxelize(sweep, config, backend="reference"))
    assert ours.num_point_overflow > 0 if config.voxel_size[2] > 1 else ours.num_voxels > 10_000


# --- the reusable Voxelizer --------------------------------------------------------------------


def test_voxelizer_views_equal_fresh_results_call_after_call() -> None:
    # Fewer voxels, then more, then fewer points per voxel: stale slots of the reused buffer
    # must read as zeros, and voxels beyond the current count must not leak into the views.
    config = VoxelConfig((-3, -3, -1, 3, 3, 1), (0.25, 0.25, 0.5), 4, 300)
    voxelizer = Voxelizer(config)
    clouds = [
        random_cloud(20, 3000, config),
        random_cloud(21, 200, config),
        random_cloud(22, 3000, config),
        HAND_POINTS[:, :3].copy(),
        np.repeat(random_cloud(23, 50, config), 3, axis=0),
    ]
    clouds[3] = np.concatenate([clouds[3], np.zeros((10, 2), np.float32)], axis=1)
    held = []
    for cloud in [*clouds, clouds[0]]:
        views = voxelizer(cloud)
        expected = voxelize(cloud, config, backend="reference")
        assert_voxels_equal(views, expected)
        assert_voxels_equal(voxelizer(cloud, copy=True), expected)
        held.append(voxelizer(cloud, copy=True))
    # copy=True results are the caller's: later calls do not change them.
    assert_voxels_equal(held[0], voxelize(clouds[0], config, backend="reference"))


def test_functional_results_are_the_callers_and_sized_to_their_voxels() -> None:
    # voxelize() sizes its buffers for the most voxels a call can make and returns their first V
    # rows: the next call must get new buffers, and the views must hold exactly V voxels.
    first = voxelize(HAND_POINTS, SMALL)
    second = voxelize(HAND_POINTS[::-1].copy(), SMALL)
    for name in ("features", "coords_zyx", "num_points", "point_voxel_index"):
        assert not np.shares_memory(getattr(first, name), getattr(second, name))
    assert first.features.shape[0] == first.coords_zyx.shape[0] == first.num_points.shape[0] == first.num_voxels
    assert_voxels_equal(first, voxelize(HAND_POINTS, SMALL, backend="reference"))


def test_voxelizer_views_are_overwritten_by_the_next_call() -> None:
    voxelizer = Voxelizer(SMALL)
    first = voxelizer(HAND_POINTS)
    assert np.shares_memory(first.features, voxelizer(HAND_POINTS[::-1].copy()).features)
    assert first.features[0, 0, 3] == 18  # now the reversed cloud's first point, not point 0 (10)


def test_voxelizer_takes_torch_tensors_and_a_change_of_feature_count() -> None:
    voxelizer = Voxelizer(SMALL)
    voxels = voxelizer(torch.from_numpy(HAND_POINTS.copy()))
    assert isinstance(voxels.features, torch.Tensor)
    assert_voxels_equal(voxels, voxelize(HAND_POINTS, SMALL))
    assert_voxels_equal(voxelizer(HAND_POINTS[:, :3].copy()), voxelize(HAND_POINTS[:, :3].copy(), SMALL))


def test_hash_table_is_at_most_half_full() -> None:
    assert hash_table_bits(120_000) == 18  # 2**18 = 262144 >= 2 * 120000 entries: 1 MB of int32
    assert hash_table_bits(30_000) == 16
    assert hash_table_bits(1 << 10) == 11 and hash_table_bits((1 << 10) + 1) == 12
    assert hash_table_bits(0) == 4


def test_many_keys_in_one_probe_run_equal_the_reference() -> None:
    # A dense block of cells: every hash entry collides with neighbours, long probe runs, and the
    # table is filled to its design limit (voxels == half the table).
    config = VoxelConfig((0, 0, 0, 64, 32, 1), (1, 1, 1), 2, 2048)
    xs, ys = np.meshgrid(np.arange(64, dtype=np.float32) + 0.5, np.arange(32, dtype=np.float32) + 0.5)
    cells = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 0.5, np.float32)], axis=1)
    rng = np.random.default_rng(5)
    cloud = np.concatenate([cells, cells[rng.permutation(len(cells))], cells[::-1]])
    cloud = np.concatenate([cloud, np.arange(len(cloud), dtype=np.float32)[:, None]], axis=1)
    voxels = voxelize(cloud, config)
    assert voxels.num_voxels == 2048 and voxels.num_point_overflow == 2048
    assert_voxels_equal(voxels, voxelize(cloud, config, backend="reference"))
    assert_dynamic_equal(dynamic_voxelize(cloud, config), dynamic_voxelize(cloud, config, backend="reference"))


# --- dynamic voxelization and scatter -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_dynamic_voxelization_hand_worked(backend: str) -> None:
    dynamic = dynamic_voxelize(HAND_POINTS, SMALL, backend=backend)
    # No caps: point 3 stays in voxel 0, and point 7's cell becomes voxel 3.
    np.testing.assert_array_equal(dynamic.point_voxel_index, [0, 1, 0, 0, -1, -1, 2, 3, 1, -1])
    np.testing.assert_array_equal(dynamic.coords_zyx, [[0, 0, 0], [0, 0, 1], [1, 3, 3], [0, 0, 2]])
    np.testing.assert_array_equal(dynamic.num_points, [3, 2, 1, 1])
    assert (dynamic.num_nan, dynamic.num_out_of_range) == (1, 2)


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_scatter_mean_and_max_hand_worked(backend: str) -> None:
    features = np.array([[1, -2], [3, 5], [10, 0], [7, 7], [2, NAN]], np.float32)
    index = np.array([0, 0, 2, -1, 3], np.int32)
    mean = scatter_mean(features, index, 4, backend=backend)
    np.testing.assert_array_equal(mean, np.array([[2, 1.5], [0, 0], [10, 0], [2, NAN]], np.float32))
    maximum = scatter_max(features, index, 4, backend=backend)
    np.testing.assert_array_equal(maximum, np.array([[3, 5], [0, 0], [10, 0], [2, NAN]], np.float32))


def test_scatter_numba_equals_reference_on_random_clouds() -> None:
    config = RANDOM_CONFIGS[0]
    cloud = random_cloud(3, 5000, config)
    dynamic = dynamic_voxelize(cloud, config)
    args = (cloud, dynamic.point_voxel_index, dynamic.num_voxels)
    np.testing.assert_array_equal(scatter_mean(*args), scatter_mean(*args, backend="reference"))
    np.testing.assert_array_equal(scatter_max(*args), scatter_max(*args, backend="reference"))


def test_scatter_rejects_indices_beyond_num_voxels() -> None:
    with pytest.raises(ValueError, match="num_voxels=2"):
        scatter_mean(np.zeros((2, 1), np.float32), np.array([0, 2], np.int32), 2)


# --- torch in, torch out ------------------------------------------------------------------------


def test_torch_tensors_in_and_out_without_copies() -> None:
    points = torch.from_numpy(HAND_POINTS.copy())
    assert np.shares_memory(host_points(points), points.numpy())  # the kernels read the tensor's memory
    voxels = voxelize(points, SMALL)
    assert isinstance(voxels.features, torch.Tensor) and voxels.features.dtype == torch.float32
    assert voxels.coords_zyx.dtype == torch.int32 and voxels.point_voxel_index.dtype == torch.int32
    assert_voxels_equal(voxels, voxelize(HAND_POINTS, SMALL))
    dynamic = dynamic_voxelize(points, SMALL)
    mean = scatter_mean(points, dynamic.point_voxel_index, dynamic.num_voxels)
    assert isinstance(mean, torch.Tensor) and mean.shape == (4, 4)


def test_voxels_validates_shapes() -> None:
    with pytest.raises(ValueError, match=r"coords_zyx \(2, 3\)"):
        Voxels(
            np.zeros((3, 2, 4), np.float32),
            np.zeros((2, 3), np.int32),
            np.zeros(3, np.int32),
            np.zeros(5, np.int32),
            0,
            0,
            0,
            0,
        )
    with pytest.raises(ValueError, match="int32"):
        DynamicVoxels(np.zeros(5, np.int64), np.zeros((2, 3), np.int32), np.zeros(2, np.int32), 0, 0)


# --- the partitioned parallel numbering -----------------------------------------------------------


def partitioned(points: np.ndarray, config: VoxelConfig, num_parts: int) -> Voxels:
    """Hard voxelization with the cells split into `num_parts` key ranges (one thread each by default)."""
    return Voxelizer(config)._voxelize(host_points(points), fresh=True, num_parts=num_parts)


@pytest.mark.parametrize("config", RANDOM_CONFIGS, ids=["big", "overflow", "pillars", "nuscenes"])
@pytest.mark.parametrize("num_parts", [1, 2, 3, 8])
def test_any_number_of_partitions_equals_the_reference(config: VoxelConfig, num_parts: int) -> None:
    cloud = random_cloud(30 + num_parts, 3000, config)  # NaN, faces, clusters, out of range
    assert_voxels_equal(partitioned(cloud, config, num_parts), voxelize(cloud, config, backend="reference"))


@pytest.mark.parametrize("dense_cells_per_voxel", [0, 10**6], ids=["hashed", "dense"])
@pytest.mark.parametrize("num_parts", [1, 3])
def test_dense_and_hashed_cell_tables_give_the_same_voxels(
    monkeypatch: pytest.MonkeyPatch, dense_cells_per_voxel: int, num_parts: int
) -> None:
    monkeypatch.setattr(voxelize_cpu, "DENSE_CELLS_PER_VOXEL", dense_cells_per_voxel)
    for config in RANDOM_CONFIGS[:3]:  # the small grids, where either table may be used
        cloud = random_cloud(40, 3000, config)
        assert_voxels_equal(partitioned(cloud, config, num_parts), voxelize(cloud, config, backend="reference"))


def skewed_cloud(num_cells: int, crowd: int) -> np.ndarray:
    """`crowd` points in a cell of x column 0 (x = y = z = 0.5), then one point in each of
    `num_cells` other cells (columns 1-100), then the crowd's cell again: with a large crowd every
    sampled quantile of the x columns is 0, so the last slab holds all the cells and the others none."""
    xs = (np.arange(num_cells) % 100 + 1.5).astype(np.float32)
    ys = (np.arange(num_cells) // 100 + 0.5).astype(np.float32)
    cells = np.stack([xs, ys, np.full(num_cells, 0.5, np.float32)], axis=1)
    crowd_points = np.full((crowd, 3), 0.5, np.float32)
    cloud = np.concatenate([crowd_points, cells, crowd_points[:10]])
    return np.concatenate([cloud, np.arange(len(cloud), dtype=np.float32)[:, None]], axis=1)


@pytest.mark.parametrize("num_parts", [2, 4])
def test_all_cells_in_one_partition_grow_its_hash_table(num_parts: int) -> None:
    # 101 x 100 x 100 cells of 1 m: hashed (more than 16 cells per voxel). The last partition gets
    # all 9001 cells (2 partitions) or 7496 (4): more than its table, sized for 10000 / num_parts
    # cells (8192 or 4096 at most half full), holds at first; it doubles on the way.
    config = VoxelConfig((0, 0, 0, 101, 100, 100), (1, 1, 1), 3, 10_000)
    cloud = skewed_cloud(9000, 20_000)
    voxels = partitioned(cloud, config, num_parts)
    assert voxels.num_voxels == 9001 and voxels.num_point_overflow == 20_010 - 3
    assert_voxels_equal(voxels, voxelize(cloud, config, backend="reference"))


@pytest.mark.parametrize("dense_cells_per_voxel", [0, 10**9], ids=["hashed", "dense"])
@pytest.mark.parametrize("num_parts", [1, 2, 4])
@pytest.mark.parametrize("crowd", [20_000, 3_000])
def test_max_voxels_overflow_within_and_across_partitions(
    monkeypatch: pytest.MonkeyPatch, dense_cells_per_voxel: int, num_parts: int, crowd: int
) -> None:
    # One slab holds all 5001 cells, more than max_voxels: it stops numbering at max_voxels (its
    # later cells cannot get a voxel). With 3000 crowd points the cells are split over several
    # slabs, each under max_voxels, and the merge drops the voxels numbered >= max_voxels.
    monkeypatch.setattr(voxelize_cpu, "DENSE_CELLS_PER_VOXEL", dense_cells_per_voxel)
    config = VoxelConfig((0, 0, 0, 101, 100, 100), (1, 1, 1), 3, 700)
    cloud = skewed_cloud(5000, crowd)
    voxels = partitioned(cloud, config, num_parts)
    assert voxels.num_voxels == 700 and voxels.num_voxel_overflow == 5001 - 700
    assert_voxels_equal(voxels, voxelize(cloud, config, backend="reference"))


@pytest.mark.parametrize("num_parts", [1, 2, 3, 5])
def test_splits_start_at_the_x_column_quantiles_of_the_sample(num_parts: int) -> None:
    config = RANDOM_CONFIGS[3]
    cloud = random_cloud(70 + num_parts, 3000, config)
    sample = np.empty(512, np.int32)
    splits = np.empty(num_parts + 1, np.int64)
    grid = np.asarray(config.grid_size_xyz, np.int32)
    voxelize_kernels._partition_splits_kernel(cloud, config.range_min_f32, config.voxel_size_f32, grid, sample, splits)
    fx = (cloud[:: max(1, len(cloud) // 512), 0] - config.range_min_f32[0]) / config.voxel_size_f32[0]
    columns = np.sort(fx[(fx >= 0) & (fx < grid[0])].astype(np.int32)[:512])
    gyz = int(grid[1]) * int(grid[2])
    expected = [0] + [int(columns[t * len(columns) // num_parts]) * gyz for t in range(1, num_parts)]
    np.testing.assert_array_equal(splits, [*expected, config.num_cells])


@pytest.mark.parametrize("num_parts", [2, 3, 8])
def test_partitions_split_at_a_cell_and_empty_partitions(num_parts: int) -> None:
    # Three cells of many points each, interleaved: the splits are their x columns (a split column
    # belongs to the slab above it), several splits coincide and some slabs are empty.
    config = VoxelConfig((0, 0, 0, 4, 4, 2), (1, 1, 1), 4, 3)
    cells = np.float32([[0.5, 0.5, 0.5], [3.5, 3.5, 1.5], [1.5, 0.5, 0.5]])
    xyz = np.tile(cells, (200, 1))
    cloud = np.concatenate([xyz, np.arange(len(xyz), dtype=np.float32)[:, None]], axis=1)
    voxels = partitioned(cloud, config, num_parts)
    np.testing.assert_array_equal(voxels.coords_zyx, [[0, 0, 0], [1, 3, 3], [0, 0, 1]])
    np.testing.assert_array_equal(voxels.features[:, :, 3], [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])
    assert_voxels_equal(voxels, voxelize(cloud, config, backend="reference"))


@pytest.mark.parametrize("dense_cells_per_voxel", [0, 10**6], ids=["hashed", "dense"])
@pytest.mark.parametrize("num_parts", [2, 3, 8])
def test_points_on_slab_faces_and_points_without_a_cell_in_any_slab(
    monkeypatch: pytest.MonkeyPatch, dense_cells_per_voxel: int, num_parts: int
) -> None:
    # Equal numbers of points in the 8 x columns, so the slabs split at column faces; a third of
    # the points exactly on an x face (they belong to the column above). Points without a cell in
    # every slab: NaN in y or z inside a middle column, NaN or -inf in x (first slab), x below the
    # range (first), x above it or +inf (last); each is counted once.
    monkeypatch.setattr(voxelize_cpu, "DENSE_CELLS_PER_VOXEL", dense_cells_per_voxel)
    config = VoxelConfig((0, 0, 0, 8, 2, 2), (1, 0.5, 0.5), 3, 1000)
    rng = np.random.default_rng(60)
    x = np.repeat(np.arange(8, dtype=np.float32), 60) + rng.choice([0.0, 0.25, 0.5, 0.75], 480).astype(np.float32)
    yz = rng.uniform(0, 2, size=(480, 2)).astype(np.float32)
    cloud = np.concatenate([x[:, None], yz, np.arange(480, dtype=np.float32)[:, None]], axis=1)[rng.permutation(480)]
    inf = np.inf
    invalid = np.float32(
        [
            [4.5, NAN, 1, -1],
            [3.5, 1, NAN, -2],
            [NAN, 1, 1, -3],
            [-inf, 1, 1, -4],
            [-0.5, 1, 1, -5],
            [8.0, 1, 1, -6],
            [inf, 1, 1, -7],
            [5.5, 2.0, 1, -8],
            [6.5, 1, -0.1, -9],
        ]
    )
    cloud = np.concatenate([cloud[:200], invalid, cloud[200:], invalid])
    voxels = partitioned(cloud, config, num_parts)
    assert (voxels.num_nan, voxels.num_out_of_range) == (6, 12)
    assert_voxels_equal(voxels, voxelize(cloud, config, backend="reference"))


@pytest.mark.parametrize("num_parts", [1, 3])
def test_partitions_of_empty_and_all_dropped_clouds(num_parts: int) -> None:
    empty = partitioned(np.zeros((0, 4), np.float32), SMALL, num_parts)
    assert empty.features.shape == (0, 2, 4) and empty.point_voxel_index.shape == (0,)
    inf = np.inf
    dropped = np.array(
        [[NAN, 0, 0], [9, 9, 9], [-1, 0, 0], [0, NAN, 1], [inf, 1, 1], [1, -inf, 1], [NAN, inf, 0]], np.float32
    )
    voxels = partitioned(dropped, SMALL, num_parts)
    assert voxels.num_voxels == 0 and (voxels.num_nan, voxels.num_out_of_range) == (3, 4)
    assert_voxels_equal(partitioned(HAND_POINTS, SMALL, num_parts), voxelize(HAND_POINTS, SMALL, backend="reference"))


def test_one_voxelizer_across_partition_counts_and_thread_counts() -> None:
    # The scratch is resized when the number of partitions changes; the public API takes it from
    # Numba's thread count.
    config = RANDOM_CONFIGS[3]
    voxelizer = Voxelizer(config)
    cloud = random_cloud(50, 3000, config)
    expected = voxelize(cloud, config, backend="reference")
    for num_parts in [2, 5, 1, 2]:
        assert_voxels_equal(voxelizer._voxelize(cloud, fresh=False, num_parts=num_parts), expected)
    # One plan per partition count: alternating counts reuses them, on scratch resized in between.
    plan_2, plan_5 = voxelizer._plans[2], voxelizer._plans[5]
    for num_parts in [5, 2, 1, 5]:
        assert_voxels_equal(voxelizer._voxelize(cloud, fresh=num_parts == 1, num_parts=num_parts), expected)
    assert voxelizer._plans[2] is plan_2 and voxelizer._plans[5] is plan_5
    threads = numba.get_num_threads()
    try:
        for count in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(count)
            assert_voxels_equal(voxelizer(cloud), expected)
            assert_voxels_equal(voxelize(cloud, config), expected)
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("grid_xyz", [(1440, 1440, 40), (540, 540, 1), (2**30, 1, 1), (1, 2**15, 2**15), (3, 7, 11)])
def test_decoding_a_key_by_multiplying_equals_integer_division(grid_xyz: tuple[int, int, int]) -> None:
    # CPU cell keys are x-major: (x * gy + y) * gz + z.
    gx, gy, gz = grid_xyz
    num_cells = gx * gy * gz
    rng = np.random.default_rng(7)
    keys = np.concatenate(
        [
            rng.integers(0, num_cells, 2000),
            [0, num_cells - 1, gz - 1, gz, gy * gz - 1, gy * gz],
            np.arange(1, min(gx, 50)) * gy * gz - 1,
            np.arange(1, min(gy, 50)) * gz,
        ]
    )
    decoder = voxelize_kernels._key_decoder(np.array(grid_xyz, np.int32))
    for key in keys[(keys >= 0) & (keys < num_cells)]:
        expected = (key % gz, (key // gz) % gy, key // (gy * gz))
        assert voxelize_kernels._decode_key(np.int32(key), decoder) == expected, key


@pytest.mark.parametrize("divisor", [1, 2, 3, 7, 40, 57600, 12345, 65537, 2**30 - 1, 2**30, 2**30 + 1, 2**31 - 1])
def test_dividing_by_multiplying_is_exact_for_int32_numerators(divisor: int) -> None:
    rng = np.random.default_rng(divisor)
    top = 2**31 - 1
    numerators = np.concatenate(
        [
            rng.integers(0, 2**31, 5000),
            [0, 1, divisor - 1, divisor, divisor + 1, top, top - 1],
            [top // divisor * divisor, top // divisor * divisor - 1],
        ]
    ).astype(np.uint64)
    multiplier, shift = voxelize_kernels._divider(np.int64(divisor))
    assert top * int(multiplier) < 2**64  # the uint64 product cannot wrap
    np.testing.assert_array_equal((numerators * np.uint64(multiplier)) >> np.uint64(shift), numerators // divisor)


@pytest.mark.parametrize("num_chunks, num_parts", [(1, 1), (2, 2), (3, 1), (3, 3), (7, 2), (2, 5)])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000])
def test_routing_pass_equals_numpy_per_point(num_chunks: int, num_parts: int, n: int) -> None:
    # Blocks of KEY_BLOCK points staged per chunk: chunks and blocks that do not divide N, faces,
    # NaN and infinities on each axis; points without a cell are marked -1 and counted per chunk;
    # the others are listed, in input order, under their chunk and the partition owning their key.
    config = RANDOM_CONFIGS[3]
    cloud = random_cloud(70 + n, max(n, 1), config)[:n]
    if n:
        cloud[::5, 0] = np.inf
        cloud[1::7, 1] = -np.inf
        cloud[2::11, 2] = NAN
    grid = np.asarray(config.grid_size_xyz, np.int32)
    # Uneven key ranges, one of them empty when there are 5 partitions.
    inner = np.sort(np.random.default_rng(n).integers(0, config.num_cells, num_parts - 1))
    if num_parts == 5:
        inner[2] = inner[1]
    splits = np.concatenate([[0], inner, [config.num_cells]]).astype(np.int64)
    routes = voxelize_cpu._Routes()
    route_points, route_keys = routes.arrays(n, num_chunks, num_parts, 2)
    point_voxel_index = np.full(n, 7, np.int32)
    voxelize_kernels._route_points_kernel(
        cloud,
        config.range_min_f32,
        config.voxel_size_f32,
        grid,
        splits,
        routes.key_stage.rows(num_chunks),
        routes.key_stage.key_rows(num_chunks),
        route_points,
        route_keys,
        routes.counts,
        point_voxel_index,
        routes.drops,
    )
    scaled = (cloud[:, :3] - config.range_min_f32) / config.voxel_size_f32  # float32 throughout
    inside = np.all((scaled >= 0) & (scaled < grid.astype(np.float32)), axis=1)
    cell = np.floor(scaled[inside]).astype(np.int64)
    expected = np.where(np.isnan(cloud[:, :3]).any(axis=1), -2, -1)
    expected[inside] = (cell[:, 0] * grid[1] + cell[:, 1]) * grid[2] + cell[:, 2]
    np.testing.assert_array_equal(point_voxel_index, np.where(expected < 0, -1, 7))
    chunk_starts = [c * n // num_chunks for c in range(num_chunks + 1)]
    for c in range(num_chunks):
        index = np.arange(chunk_starts[c], chunk_starts[c + 1])
        for t in range(num_parts):
            owned = index[(expected[index] >= splits[t]) & (expected[index] < splits[t + 1])]
            count = routes.counts[c, t]
            np.testing.assert_array_equal(route_points[c, t, :count], owned)
            np.testing.assert_array_equal(route_keys[c, t, :count], expected[owned])
        assert routes.drops[c, 0] == np.count_nonzero(expected[index] == -2)
        assert routes.drops[c, 1] == np.count_nonzero(expected[index] == -1)
    if n >= 1000:
        assert routes.drops[:, 0].sum() > 0 and routes.drops[:, 1].sum() > 0 and inside.sum() > n // 4


def test_route_counts_and_drops_rows_start_on_cache_lines() -> None:
    routes = voxelize_cpu._Routes()
    routes.arrays(100, 3, 2, 4)
    assert routes.counts.shape[0] == 3 and routes.drops.shape == (3, 8)
    assert all(routes.counts[c].ctypes.data % 64 == 0 and routes.drops[c].ctypes.data % 64 == 0 for c in range(3))


def test_key_stage_rows_start_on_cache_lines() -> None:
    stage = voxelize_cpu._KeyStage().rows(3)
    assert stage.shape == (3, 3, voxelize_kernels.KEY_BLOCK) and stage.dtype == np.float32
    assert all(stage[t].ctypes.data % 64 == 0 for t in range(3))
    keys = voxelize_cpu._KeyStage().key_rows(3)
    assert keys.shape == (3, voxelize_kernels.KEY_BLOCK) and keys.dtype == np.int32
    assert all(keys[t].ctypes.data % 64 == 0 for t in range(3))


@pytest.mark.parametrize("m", [1, 2, 3, 5, 511, 512])
@pytest.mark.parametrize("spread", [3, 50, 2**30])
def test_select_puts_the_value_of_each_rank_in_place(m: int, spread: int) -> None:
    # Few distinct values (a heavy x column, as near the sensor) as well as many.
    values = np.random.default_rng(m * spread).integers(0, spread, 512).astype(np.int32)
    for k in sorted({0, m // 3, m // 2, m - 1}):
        work = values.copy()
        voxelize_kernels._select(work, np.int64(0), np.int64(m), np.int64(k))
        assert work[k] == np.sort(values[:m])[k]
        assert (work[:k] <= work[k]).all() and (work[k + 1 : m] >= work[k]).all()
        np.testing.assert_array_equal(np.sort(work[:m]), np.sort(values[:m]))
        np.testing.assert_array_equal(work[m:], values[m:])


def test_atomic_add_returns_the_value_before_and_adds() -> None:
    @numba.njit
    def add_twice(array: np.ndarray) -> tuple[int, int, int]:
        first = voxelize_kernels._atomic_add(array, 3, 5)
        second = voxelize_kernels._atomic_add(array, 3, -2)
        return first, second, voxelize_kernels._atomic_add(array, 3, 0)

    array = np.arange(8, dtype=np.int64)
    assert add_twice(array) == (3, 8, 6)
    np.testing.assert_array_equal(array, [0, 1, 2, 6, 4, 5, 6, 7])


@pytest.mark.parametrize("num_parts", [1, 2, 5])
def test_stages_run_by_more_workers_than_items_equal_the_reference(num_parts: int) -> None:
    # Workers claim a stage's items (chunks, partitions) in turn: with 8 workers and fewer items most
    # find nothing to do, and the stages still run in order.
    config = RANDOM_CONFIGS[3]
    cloud = random_cloud(80 + num_parts, 3000, config)
    voxelizer = Voxelizer(config)
    plan = voxelize_cpu._CallPlan.build(voxelizer._scratch, config, len(cloud), num_parts)
    features, point_voxel_index = voxelizer._output_buffers(len(cloud), cloud.shape[1])
    totals = voxelize_kernels._hard_voxelize_kernel(
        8,
        plan.sync,
        cloud,
        voxelizer._range_min,
        voxelizer._voxel_size,
        voxelizer._grid,
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
        config.max_voxels,
        plan.part_keys,
        plan.part_counts,
        plan.part_first,
        plan.sizes,
        plan.route_locals,
        plan.route_slots,
        plan.local_to_voxel,
        point_voxel_index,
        features,
        voxelizer._coords_zyx,
        voxelizer._num_points,
        voxelizer._filled,
        False,
        plan.drops,
    )
    num_voxels = min(totals[0], config.max_voxels)
    voxels = Voxels(
        features[:num_voxels],
        voxelizer._coords_zyx[:num_voxels],
        voxelizer._num_points[:num_voxels],
        point_voxel_index,
        *totals[1:],
    )
    assert_voxels_equal(voxels, voxelize(cloud, config, backend="reference"))
    assert plan.sync[voxelize_kernels.STAGE_FILL * 2 * voxelize_kernels.SYNC_STRIDE] == num_parts + 8


@pytest.mark.parametrize("num_features", [3, 4, 5, 8, 9])
def test_feature_rows_of_any_width_are_copied_whole(num_features: int) -> None:
    # The fill copies 16 bytes at a time, then the remaining columns one by one.
    config = RANDOM_CONFIGS[0]
    cloud = random_cloud(90 + num_features, 3000, config, num_features=num_features)
    expected = voxelize(cloud, config, backend="reference")
    assert_voxels_equal(voxelize(cloud, config), expected)
    assert_voxels_equal(Voxelizer(config)(cloud), expected)
