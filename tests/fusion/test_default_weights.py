"""The shipped default weights: small, loadable, and detecting on a freshly generated demo log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.fusion.checkpoint import DEFAULT_WEIGHTS
from avfusion.fusion.config import FusionConfig, cpu_default
from avfusion.fusion.inference import Detector


def test_default_weights_are_shipped_small_and_match_their_config() -> None:
    assert DEFAULT_WEIGHTS.is_file(), f"default weights missing at {DEFAULT_WEIGHTS}"
    assert DEFAULT_WEIGHTS.stat().st_size < 5_000_000
    detector = Detector.load()
    beside = FusionConfig.load_json(DEFAULT_WEIGHTS.with_suffix(".json"))
    assert detector.config == beside
    # The shipped model is the CPU preset's network (training options may differ).
    preset = cpu_default()
    for part in ("grid", "lidar", "camera", "map", "fuser", "backbone", "head", "decode"):
        assert getattr(detector.config, part) == getattr(preset, part), part
    # ... with the preset's lidar-free and camera-free trunks for samples without lidar / cameras.
    assert detector.config.train.builds_lidar_free_trunk and detector.model.lidar_free is not None
    assert detector.config.train.builds_camera_free_trunk and detector.model.camera_free is not None


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory):
    return make_synthetic_log(
        tmp_path_factory.mktemp("demo") / "log", num_scenes=1, seconds=1.0, seed=424242, progress=False
    )


def test_default_weights_detect_on_the_demo_log(demo_log) -> None:
    detector = Detector.load()
    log = NuScenesLog.open(demo_log, "v1.0-mini")
    options = FrameOptions(num_sweeps=detector.config.lidar.num_sweeps, image_scale=detector.config.camera.decode_scale)
    frame = log.frame(log.sample_tokens()[0], options)
    detections = detector.detect(frame)
    boxes = detections.boxes_ego
    assert 0 < len(boxes) <= 500
    assert np.all(np.isfinite(boxes.center)) and np.all(boxes.size_wlh > 0)
    # A trained model is confident about some object in a scene full of agents, and its most
    # confident boxes sit on ground truth of the same class.
    gt = frame.gt_boxes
    confident = boxes[boxes.score >= 0.3]
    assert len(confident) > 0
    hits = 0
    for center, label in zip(confident.center, confident.label, strict=True):
        same = gt.label == label
        if same.any() and np.min(np.linalg.norm(gt.center[same, :2] - center[:2], axis=1)) < 2.0:
            hits += 1
    assert hits >= max(1, len(confident) // 4), f"{hits} of {len(confident)} confident boxes near ground truth"
    # Losing sensors still gives boxes.
    for drop in ({"lidar"}, {"camera"}, {"map"}):
        assert len(detector.detect(frame, drop=drop).boxes_ego) <= 500
    json.dumps(detections.timings_ms)
