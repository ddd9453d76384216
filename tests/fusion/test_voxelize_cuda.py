"""The numba.cuda voxelizer equals the NumPy twin: under Numba's CUDA simulator, and on a real GPU.

The simulator must be switched on before `numba.cuda` is first imported, so those cases run this
file as a script in a subprocess with `NUMBA_ENABLE_CUDASIM=1`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from avfusion.fusion.ops.voxelize import (
    DynamicVoxels,
    VoxelConfig,
    Voxels,
    dynamic_voxelize,
    nuscenes_voxel_config,
    voxelize,
)

# Small: the simulator runs every GPU thread as a Python thread.
SIM_CONFIGS = [
    VoxelConfig((0, 0, 0, 4, 4, 2), (1, 1, 1), max_points_per_voxel=3, max_voxels=12),  # overflows
    VoxelConfig.pillars((-2, -2, -1, 2, 2, 1), (0.5, 0.5), max_points_per_pillar=4, max_pillars=100),
]


def small_cloud(seed: int, n: int, config: VoxelConfig) -> np.ndarray:
    """Points in and around the range, a third on voxel faces, a few NaN."""
    rng = np.random.default_rng(seed)
    lo = np.array(config.point_cloud_range[:3])
    hi = np.array(config.point_cloud_range[3:])
    points = rng.uniform(lo - 0.2, hi + 0.2, size=(n, 3))
    size = np.array(config.voxel_size)
    on_face = rng.random(n) < 0.33
    points[on_face] = lo + np.round((points[on_face] - lo) / size) * size
    cloud = np.concatenate([points, rng.normal(size=(n, 1))], axis=1).astype(np.float32)
    cloud[rng.random(n) < 0.05, 1] = np.nan
    return cloud


def mismatches(ours: Voxels | DynamicVoxels, expected: Voxels | DynamicVoxels) -> list[str]:
    return [
        name
        for name in type(expected).__slots__
        if not np.array_equal(np.asarray(getattr(ours, name)), np.asarray(getattr(expected, name)))
    ]


def run_simulated_cases() -> tuple[int, list[str]]:
    """All simulator cases: (how many comparisons ran, descriptions of the failures)."""
    failures = []
    checked = 1  # the empty cloud
    for index, config in enumerate(SIM_CONFIGS):
        cloud = small_cloud(index, 160, config)
        for mode, function in (("hard", voxelize), ("dynamic", dynamic_voxelize)):
            expected = function(cloud, config, backend="reference")
            ours = function(cloud, config, backend="cuda")
            failures += [f"config {index} {mode}: {name}" for name in mismatches(ours, expected)]
            checked += 1
        hard = voxelize(cloud, config, backend="reference")
        if index == 0 and not (hard.num_voxel_overflow and hard.num_point_overflow and hard.num_nan):
            failures.append("config 0 does not exercise both overflows and NaN")
    empty = voxelize(np.zeros((0, 4), np.float32), SIM_CONFIGS[0], backend="cuda")
    if empty.features.shape != (0, 3, 4) or empty.point_voxel_index.shape != (0,):
        failures.append(f"empty cloud: features {empty.features.shape}")
    return checked, failures


def test_cuda_kernels_under_the_simulator_equal_the_reference() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    result = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "simulated cases equal: 5" in result.stdout, result.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["hard", "dynamic"])
def test_cuda_on_a_gpu_equals_numba_with_torch_tensors_in_and_out(mode: str) -> None:
    import torch

    config = nuscenes_voxel_config()
    rng = np.random.default_rng(5)
    cloud = np.concatenate(
        [rng.uniform(-60, 60, size=(200_000, 2)), rng.uniform(-6, 4, size=(200_000, 1)), rng.random((200_000, 2))],
        axis=1,
    ).astype(np.float32)
    cloud[::997, 2] = np.nan
    function = voxelize if mode == "hard" else dynamic_voxelize
    ours = function(torch.from_numpy(cloud).cuda(), config, backend="cuda")
    for name in type(ours).__slots__:
        value = getattr(ours, name)
        if isinstance(value, torch.Tensor):
            assert value.device.type == "cuda", name
    assert mismatches(ours_host(ours), function(cloud, config, backend="numba")) == []


def ours_host(voxels: Voxels | DynamicVoxels) -> Voxels | DynamicVoxels:
    values = [getattr(voxels, name) for name in type(voxels).__slots__]
    return type(voxels)(*(v.cpu().numpy() if hasattr(v, "cpu") else v for v in values))


if __name__ == "__main__":
    from numba import config as numba_config

    if not numba_config.ENABLE_CUDASIM:
        sys.exit("run with NUMBA_ENABLE_CUDASIM=1")
    num_checked, found = run_simulated_cases()
    if found:
        sys.exit("CUDA simulator mismatches: " + "; ".join(found))
    print(f"simulated cases equal: {num_checked}")
