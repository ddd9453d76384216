"""`avfusion viz --headless` on a replay run: the pictures show the ground truth where it is, the
run's predictions come back from its submission, and the animation files are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.fusion.checkpoint import save_checkpoint
from avfusion.fusion.config import FusionConfig, GridConfig
from avfusion.fusion.model import BEVFusion
from avfusion.tools.replay.engine import run_replay
from avfusion.tools.replay.types import ReplayRequest
from avfusion.tools.viz import render
from avfusion.tools.viz.viewer import RunPredictions

VERSION = "v1.0-mini"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = make_synthetic_log(
        tmp_path_factory.mktemp("log") / "log", num_scenes=1, seconds=1.0, seed=5, image_scale=0.25, progress=False
    )
    torch.manual_seed(0)
    config = FusionConfig(grid=GridConfig(cell_m=1.6))
    checkpoint = tmp_path_factory.mktemp("weights") / "w.pt"
    save_checkpoint(checkpoint, config, {"model": BEVFusion.from_config(config).state_dict()})
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    run_replay(
        ReplayRequest(dataroot=root, version=VERSION, out_dir=run_dir, checkpoint=checkpoint, save_bev=True),
        progress=False,
    )
    return root, run_dir


def test_run_predictions_read_back_the_submission(replayed: tuple[Path, Path]) -> None:
    root, run_dir = replayed
    log = NuScenesLog.open(root, VERSION)
    token = log.sample_tokens()[0]
    frame = log.frame(token, FrameOptions(load_images=False, load_lidar=False))
    predictions = RunPredictions(run_dir)(frame)
    boxes_ego, heatmap = predictions.boxes_ego, predictions.heatmap
    assert predictions.gate is None  # an ungated model keeps no gate map
    records = json.loads((run_dir / "submission.json").read_text())["results"][token]
    assert len(boxes_ego) == len(records)
    back_to_global = boxes_ego.transform(frame.global_from_ego)
    np.testing.assert_allclose(back_to_global.center, [r["translation"] for r in records], atol=1e-9)
    np.testing.assert_allclose(back_to_global.score, [r["detection_score"] for r in records])
    assert (
        heatmap is not None
        and heatmap.values.shape == (64, 64)
        and 0.0 <= heatmap.values.min() <= heatmap.values.max() <= 1.0
    )


def test_viz_headless_renders_the_scene(replayed: tuple[Path, Path], tmp_path: Path) -> None:
    root, run_dir = replayed
    out = tmp_path / "pictures"
    command = [
        sys.executable,
        "-m",
        "avfusion.tools.cli",
        "viz",
        "--dataroot",
        str(root),
        "--version",
        VERSION,
        "--run",
        str(run_dir),
        "--headless",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = NuScenesLog.open(root, VERSION)
    scene = log.scene_names[0]
    pngs = sorted(out.glob(f"{scene}_*.png"))
    assert len(pngs) == len(log.sample_tokens(scene)) == 2
    assert (out / f"{scene}s.gif").stat().st_size > 0 and (out / f"{scene}s.mp4").stat().st_size > 0

    # In the first picture, ground-truth outlines of each class appear over their boxes.
    picture = cv2.imread(str(pngs[0]))[..., ::-1]
    gt = log.frame(log.sample_tokens(scene)[0], FrameOptions(load_images=False, load_lidar=False)).gt_boxes
    view = render.BevView()
    (x0, x1), (y0, y1) = view.x_range_m, view.y_range_m
    inside = (
        (gt.center[:, 0] > x0 + 3)
        & (gt.center[:, 0] < x1 - 3)
        & (gt.center[:, 1] > y0 + 3)
        & (gt.center[:, 1] < y1 - 3)
    )
    checked = 0
    for label in np.unique(gt.label[inside]):
        boxes = gt[gt.label == label]  # all of them: a box at the picture's edge draws there too
        mask = np.all(picture[: view.height_px, : view.width_px] == render.CLASS_COLORS_RGB[label], axis=2)
        rows, cols = np.nonzero(mask)
        assert len(rows) > 0, f"no pixels of class {label}'s colour"
        corners_px = render.bev_pixel_from_ego(boxes.bev_corners().reshape(-1, 2), view).reshape(len(boxes), 4, 2)
        low, high = corners_px.min(axis=1) - 4, corners_px.max(axis=1) + 4  # (B, 2) each
        on_some_box = (
            (cols[:, None] >= low[None, :, 0])
            & (cols[:, None] <= high[None, :, 0])
            & (rows[:, None] >= low[None, :, 1])
            & (rows[:, None] <= high[None, :, 1])
        ).any(axis=1)
        # Nearly every pixel of the class colour is on one of its boxes (a predicted box cannot
        # take it: predictions are faded), and most boxes got some.
        assert on_some_box.mean() > 0.95, (label, on_some_box.mean())
        checked += 1
    assert checked >= 3
