"""Numba's threading layer: OpenMP without a warning, even after Open3D loaded its own TBB."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("error")  # a NumbaWarning about TBB fails the run
    import open3d  # noqa: F401  (loads a TBB older than Numba accepts)
    import numba
    import numpy as np
    from avfusion.fusion.ops.voxelize import nuscenes_pillar_config, voxelize
    voxelize(np.random.default_rng(0).random((1000, 4), dtype=np.float32), nuscenes_pillar_config())
    print(numba.threading_layer())
    """
)


def _run(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env={**env, **extra_env}, capture_output=True, text=True, check=False
    )


def test_parallel_kernels_use_openmp_without_a_warning() -> None:
    result = _run({})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "omp"


def test_the_users_threading_layer_is_kept() -> None:
    result = _run({"NUMBA_THREADING_LAYER": "workqueue"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "workqueue"
