"""The real nuScenes keyframe as a SyncedFrame, and the detector running on it."""

from __future__ import annotations

import numpy as np
import torch

from avfusion.calibration.boxes import Boxes3D
from avfusion.fusion.checkpoint import save_checkpoint
from avfusion.fusion.config import tiny_for_tests
from avfusion.fusion.inference import Detector
from avfusion.fusion.model import BEVFusion
from avfusion.tools.bench.realdata import match_counts, real_keyframe


def test_real_keyframe_boxes_match_the_published_annotation(realdata_root, tmp_path) -> None:
    frame = real_keyframe(realdata_root.parents[1])  # the fixture root is <realdata>/nuscenes_fixture/mmdetection3d
    assert len(frame.lidar) == 34688 and len(frame.cameras) == 6
    assert len(frame.gt_boxes) == 68  # 69 instances, one of them outside the detection classes
    boxes_global = frame.gt_boxes.transform(frame.global_from_ego)
    # v1.0-mini annotation 83d881a6b3d94ef3a3bc3b585cc514f8 (the MANIFEST's truck).
    truck = int(np.argmin(np.linalg.norm(boxes_global.center[:, :2] - [409.989, 1164.099], axis=1)))
    np.testing.assert_allclose(boxes_global.center[truck], [409.989, 1164.099, 1.623], atol=0.07)
    np.testing.assert_allclose(boxes_global.size_wlh[truck], [2.877, 10.201, 3.595], atol=1e-3)
    # The lidar projects into every camera (calibration chain incl. ego motion is consistent).
    projection = frame.camera_rig().project_ego(frame.lidar.points_ego)
    assert np.all(projection.in_image.sum(axis=1) > 2000)

    torch.manual_seed(0)
    config = tiny_for_tests()
    save_checkpoint(tmp_path / "w.pt", config, {"model": BEVFusion.from_config(config).state_dict()})
    detections = Detector.load(tmp_path / "w.pt").detect(frame)
    assert len(detections.boxes_global) == len(detections.boxes_ego) <= 500


def test_match_counts_by_hand() -> None:
    gt = Boxes3D(center=[[0, 0, 0], [10, 0, 0]], size_wlh=[[1, 1, 1]] * 2, yaw_rad=[0, 0], label=[0, 5])
    predicted = Boxes3D(
        center=[[0.7, 0, 0], [10.2, 0, 0], [0.1, 0, 0]],
        size_wlh=[[1, 1, 1]] * 3,
        yaw_rad=[0, 0, 0],
        label=[0, 5, 5],
        score=[0.9, 0.8, 0.95],
    )
    # The car is 0.7 m off; the pedestrian 0.2 m off; the third box has the wrong class for the car.
    assert match_counts(predicted, gt) == {0.5: 1, 1.0: 2, 2.0: 2, 4.0: 2}
