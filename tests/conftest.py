"""Shared fixtures: where the real nuScenes files are, and visible skips when something is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA_ROOT = Path(os.environ.get("AVFUSION_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))
NUSCENES_FIXTURE = REALDATA_ROOT / "nuscenes_fixture" / "mmdetection3d"


@pytest.fixture(scope="session")
def realdata_root() -> Path:
    """The real nuScenes fixture (../shared/realdata); skips with the reason when it is absent."""
    if not NUSCENES_FIXTURE.is_dir():
        pytest.skip(f"real nuScenes files not found at {NUSCENES_FIXTURE} (set AVFUSION_REALDATA)")
    return NUSCENES_FIXTURE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine (the `gpu` cases run on a GPU host)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
