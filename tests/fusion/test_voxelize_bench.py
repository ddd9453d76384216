"""`avfusion bench voxelize` on a small cloud: it runs, checks identity in the same run, writes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avfusion.errors import InputError
from avfusion.fusion.ops.voxelize import VoxelConfig
from avfusion.tools.bench.voxelize import load_sweeps, tile_sweeps, torch_unique_voxelize
from avfusion.tools.cli import main


def test_tile_sweeps_rotates_jitters_and_stamps_time_lags() -> None:
    sweep = np.array([[10, 0, 1, 5, 0], [0, 20, -1, 7, 3]], np.float32)
    cloud = tile_sweeps([sweep], 5, seed=0)
    assert cloud.shape == (5, 5) and cloud.dtype == np.float32
    np.testing.assert_allclose(cloud[:, 4], [0, 0, 0.05, 0.05, 0.1], atol=1e-7)
    np.testing.assert_array_equal(cloud[:, 3], [5, 7, 5, 7, 5])
    # A yaw of at most 3 degrees and 2 cm jitter keep the range from the origin within ~10 cm.
    np.testing.assert_allclose(np.linalg.norm(cloud[:, :2], axis=1), [10, 20, 10, 20, 10], atol=0.1)
    assert not np.allclose(cloud[0, :2], cloud[2, :2])


def test_synthetic_source_needs_a_dataroot(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--dataroot"):
        load_sweeps("synthetic", None, tmp_path)
    with pytest.raises(InputError, match="LIDAR_TOP"):
        load_sweeps("synthetic", str(tmp_path), tmp_path)
    with pytest.raises(InputError, match="no real LIDAR_TOP sweep"):
        load_sweeps("real", None, tmp_path)


def test_torch_unique_peer_hand_worked() -> None:
    import torch

    config = VoxelConfig((0, 0, 0, 2, 2, 1), (1, 1, 1), max_points_per_voxel=1, max_voxels=2)
    points = torch.tensor([[1.5, 0.5, 0.5], [0.5, 0.5, 0.5], [1.2, 0.2, 0.2], [0.5, 1.5, 0.5], [2.0, 0, 0]])
    features, coords, num_points = torch_unique_voxelize(points, config)
    assert coords.tolist() == [[0, 0, 1], [0, 0, 0]]  # first seen first, the third cell over the cap
    assert num_points.tolist() == [1, 1]
    assert features[:, 0].tolist() == [[1.5, 0.5, 0.5], [0.5, 0.5, 0.5]]


def test_bench_voxelize_on_the_real_sweep(realdata_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    realdata = realdata_root.parents[1]
    code = main(
        [
            "bench",
            "voxelize",
            "--points",
            "40000",
            "--repeats",
            "1",
            "--no-jit-timing",
            "--realdata",
            str(realdata),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["points"] == 40000
    for name in ("voxels", "pillars"):
        cpu = payload[name]["cpu"]
        assert list(cpu["methods"]) == [
            "numba_voxelizer",
            "numba_voxelizer_1_thread",
            "numba_voxelize_fresh",
            "numba_voxelize_fresh_1_thread",
        ]
        assert cpu["facts"]["numba_voxelizer_1_thread_ratio_vs_numpy_reference"] > 0
        assert cpu["facts"]["identical_voxelizer_views_to_voxelize"] is True
        assert set(cpu["facts"]["cpu_ms_median"]) == set(cpu["methods"]) | set(cpu["peers"])
        assert len(cpu["facts"]["load_average_1_5_15_min"]) == 3
        if Path("/proc/stat").is_file():  # Linux: the host's steal share over the timed calls
            assert 0.0 <= cpu["facts"]["host_steal_percent"] <= 100.0
        assert {"numpy_reference", "torch_unique_cpu"} <= set(cpu["peers"])
        assert cpu["facts"]["identical_to_numpy_reference"] is True
        assert cpu["facts"]["identical_to_torch_unique"] is True
        if "spconv_cpu" in cpu["peers"]:
            assert cpu["facts"]["identical_to_spconv"] is True and cpu["ratio_vs_spconv_cpu"] > 0
        assert "gpu" in payload[name]
    assert "ratio_vs_numpy_reference" in capsys.readouterr().out
