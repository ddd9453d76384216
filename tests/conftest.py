"""Shared fixtures: where the real nuScenes files are, visible skips when something is absent, an
isolated index cache, the records every hand-written test log needs, and a small replay setup.

Test modules and the conftest files of the folders below cannot import this file (pytest runs with
`--import-mode=importlib`), so what they share is handed to them as fixtures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from avfusion.datasets.index import TABLE_NAMES
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.fusion.checkpoint import save_checkpoint
from avfusion.fusion.config import BackboneConfig, CameraConfig, DecodeConfig, FusionConfig, GridConfig
from avfusion.fusion.model import BEVFusion
from avfusion.tools.replay.engine import run_replay
from avfusion.tools.replay.types import ReplayOutcome, ReplayRequest

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA_ROOT = Path(os.environ.get("AVFUSION_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))
NUSCENES_FIXTURE = REALDATA_ROOT / "nuscenes_fixture" / "mmdetection3d"
REPLAY_VERSION = "v1.0-mini"


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


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Index caches of every test go to a temporary folder, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("avfusion-cache")
        patch.setenv("AVFUSION_CACHE", str(cache))
        yield cache


# ----------------------------------------------------------------------------------------------
# Hand-written logs


class LogTables:
    """The 13 tables of a nuScenes-schema log that a test writes record by record (`rows`), with
    the records every such log needs made one way: sensors and their calibration, the log and its
    map, a scene and its chain of samples; `write` puts the tables and splits.json on disk."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_NAMES}

    def add_sensor(
        self,
        sensor_token: str,
        calibration_token: str,
        channel: str,
        translation: Sequence[float],
        rotation_wxyz: Sequence[float],
        camera_intrinsic: Sequence[Sequence[float]] = (),
    ) -> None:
        """A sensor and its calibrated_sensor record (ego_from_sensor: translation in metres, rotation)."""
        modality = "lidar" if channel.startswith("LIDAR") else "camera"
        self.rows["sensor"].append({"token": sensor_token, "channel": channel, "modality": modality})
        self.rows["calibrated_sensor"].append(
            {
                "token": calibration_token,
                "sensor_token": sensor_token,
                "translation": list(translation),
                "rotation": list(rotation_wxyz),
                "camera_intrinsic": [list(row) for row in camera_intrinsic],
            }
        )

    def add_log_with_map(
        self, root: Path, log_token: str, map_token: str, location: str, logfile: str, drivable: np.ndarray
    ) -> None:
        """A log record and its semantic-prior map, whose raster `drivable` (H, W) uint8 is written
        as `<root>/maps/<map_token>.png`."""
        self.rows["log"].append(
            {
                "token": log_token,
                "logfile": logfile,
                "vehicle": logfile,
                "date_captured": "2026-01-01",
                "location": location,
            }
        )
        filename = f"maps/{map_token}.png"
        (root / "maps").mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(root / filename), drivable):
            raise OSError(f"cannot write {root / filename}")
        self.rows["map"].append(
            {"token": map_token, "log_tokens": [log_token], "category": "semantic_prior", "filename": filename}
        )

    def add_scene(
        self, scene_token: str, name: str, log_token: str, sample_tokens: Sequence[str], timestamps_us: Sequence[int]
    ) -> None:
        """A scene record and its samples, linked by prev/next in the given order."""
        n = len(sample_tokens)
        for k, (token, timestamp) in enumerate(zip(sample_tokens, timestamps_us, strict=True)):
            self.rows["sample"].append(
                {
                    "token": token,
                    "timestamp": int(timestamp),
                    "scene_token": scene_token,
                    "prev": sample_tokens[k - 1] if k else "",
                    "next": sample_tokens[k + 1] if k + 1 < n else "",
                }
            )
        self.rows["scene"].append(
            {
                "token": scene_token,
                "name": name,
                "description": "",
                "log_token": log_token,
                "nbr_samples": n,
                "first_sample_token": sample_tokens[0],
                "last_sample_token": sample_tokens[-1],
            }
        )

    def write(self, root: Path, version: str, splits: dict[str, list[str]]) -> Path:
        """Write `<root>/<version>/<table>.json` for every table and splits.json; returns `root`."""
        version_dir = root / version
        version_dir.mkdir(parents=True, exist_ok=True)
        for name, records in self.rows.items():
            (version_dir / f"{name}.json").write_text(json.dumps(records))
        (version_dir / "splits.json").write_text(json.dumps(splits))
        return root


@pytest.fixture(scope="session")
def log_tables() -> type[LogTables]:
    """`LogTables`, for the conftest files that write logs by hand."""
    return LogTables


# ----------------------------------------------------------------------------------------------
# Replay


@pytest.fixture(scope="session")
def small_fusion_config() -> FusionConfig:
    """A fast network: 64 x 64 BEV grid at 1.6 m, 64 x 112 camera input, narrow backbone."""
    return FusionConfig(
        grid=GridConfig(cell_m=1.6),
        camera=CameraConfig(input_hw=(64, 112), encoder_channels=(8, 16, 16), channels=16, num_depth_bins=12),
        backbone=BackboneConfig(stage_channels=(16, 32), stage_blocks=(0, 1), neck_channels=8),
        decode=DecodeConfig(max_boxes=60),
    )


@pytest.fixture(scope="session")
def small_checkpoint(small_fusion_config: FusionConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`small_fusion_config` with seeded random weights (a real forward pass and decode; only the
    weights are untrained), so that replay tests stay fast and do not depend on the shipped weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "small.pt"
    save_checkpoint(path, small_fusion_config, {"model": BEVFusion.from_config(small_fusion_config).state_dict()})
    return path


@pytest.fixture(scope="session")
def replay_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic log of two scenes of two keyframes each, one in synth_train and one in
    synth_val; tests must not modify it (copy it first)."""
    return make_synthetic_log(
        tmp_path_factory.mktemp("replay-log") / "log",
        num_scenes=2,
        seconds=1.0,
        seed=11,
        image_scale=0.125,
        progress=False,
    )


@pytest.fixture(scope="session")
def replay_request() -> Callable[..., ReplayRequest]:
    """`make(dataroot, out, checkpoint, **changes)`: a replay request of the `v1.0-mini` tables,
    one torch thread unless `changes` say otherwise (runs compared byte for byte must agree on it)."""

    def make(dataroot: Path, out: Path, checkpoint: Path, **changes: Any) -> ReplayRequest:
        return ReplayRequest(
            **{
                "dataroot": dataroot,
                "version": REPLAY_VERSION,
                "out_dir": out,
                "checkpoint": checkpoint,
                "torch_threads": 1,
                **changes,
            }
        )

    return make


@pytest.fixture(scope="session")
def replay_full_run(
    replay_log: Path,
    small_checkpoint: Path,
    replay_request: Callable[..., ReplayRequest],
    tmp_path_factory: pytest.TempPathFactory,
) -> ReplayOutcome:
    """An uninterrupted replay of every scene of `replay_log` (4 frames): the reference that
    resumed, repeated and Ray runs must equal; tests must not modify its outputs."""
    out = tmp_path_factory.mktemp("runs") / "full"
    return run_replay(replay_request(replay_log, out, small_checkpoint), progress=False)
