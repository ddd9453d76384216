"""Targets, losses and decode with hand-worked values; decode inverts the targets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from avfusion.calibration.boxes import Boxes3D
from avfusion.errors import FileFormatError
from avfusion.fileio import write_json_atomic
from avfusion.fusion.config import (
    CameraConfig,
    DecodeConfig,
    FusionConfig,
    GridConfig,
    cpu_default,
    gpu_large,
    tiny_for_tests,
)
from avfusion.fusion.decode import circle_nms, decode_sample
from avfusion.fusion.head import HeadOutputs
from avfusion.fusion.losses import depth_loss, heatmap_focal_loss, regression_l1_loss
from avfusion.fusion.targets import build_head_targets, draw_gaussian, gaussian_radius


def _boxes() -> Boxes3D:
    return Boxes3D(
        center=np.array([[1.2, -3.0, 0.9], [10.4, 7.6, 1.1]]),
        size_wlh=np.array([[1.9, 4.5, 1.6], [0.6, 0.7, 1.8]]),
        yaw_rad=np.array([0.5, -2.0]),
        velocity_xy=np.array([[3.0, -1.0], [np.nan, np.nan]]),
        label=np.array([0, 5]),
        attribute=np.array([5, 4]),
    )


def test_gaussian_radius_and_drawing_by_hand() -> None:
    # A 4 x 4 cell box with overlap 0.5: the three CenterNet roots are
    # (8 + sqrt(64 - 4 * 16/3)) / 2 = 7.266, (16 + sqrt(256 - 128)) / 2 = 13.657 and
    # (-8 + sqrt(64 + 64)) / 2 = 4 (sqrt 2 - 1) = 1.657; the smallest wins.
    assert gaussian_radius(4.0, 4.0, 0.5) == pytest.approx(4 * (math.sqrt(2) - 1))
    heatmap = np.zeros((5, 5), dtype=np.float32)
    draw_gaussian(heatmap, 0, 4, 1)  # corner: the kernel is clipped
    sigma = 3 / 6
    assert heatmap[0, 4] == 1.0
    assert heatmap[1, 4] == pytest.approx(math.exp(-1 / (2 * sigma**2)))
    assert heatmap[1, 3] == pytest.approx(math.exp(-2 / (2 * sigma**2)))
    assert heatmap[2:, :].sum() == 0 and heatmap[:, :3].sum() == 0


def test_targets_by_hand() -> None:
    config = FusionConfig(grid=GridConfig(x_range_m=(-16.0, 16.0), y_range_m=(-16.0, 16.0), cell_m=0.8))
    targets = build_head_targets([_boxes()], config)
    width = 40
    # Box 0: column (1.2 + 16) / 0.8 = 21.5, row (-3 + 16) / 0.8 = 16.25.
    assert targets.index[0, 0] == 16 * width + 21
    np.testing.assert_allclose(targets.regression[0, 0, :2].numpy(), [0.5, 0.25], atol=1e-5)
    np.testing.assert_allclose(targets.regression[0, 0, 3:6].numpy(), np.log([1.9, 4.5, 1.6]), atol=1e-6)
    np.testing.assert_allclose(targets.regression[0, 0, 6:8].numpy(), [math.sin(0.5), math.cos(0.5)], atol=1e-6)
    assert targets.heatmap[0, 0, 16, 21] == 1.0 and targets.heatmap[0, 5].max() == 1.0
    assert targets.mask[0].tolist()[:3] == [True, True, False]
    assert bool(torch.isnan(targets.regression[0, 1, 8:]).all())
    assert targets.attribute[0, :2].tolist() == [5, 4]


def test_targets_skip_boxes_without_lidar_points() -> None:
    """Boxes the evaluation ignores (no lidar point) are not targets; an unknown count (-1) is kept."""
    config = FusionConfig(grid=GridConfig(x_range_m=(-16.0, 16.0), y_range_m=(-16.0, 16.0), cell_m=0.8))
    base = _boxes()
    centres = np.array([[1.2, -3.0, 0.9], [10.0, 7.6, 1.1], [-8.0, 4.0, 0.8]])
    boxes = Boxes3D(
        center=centres,
        size_wlh=np.repeat(base.size_wlh[:1], 3, axis=0),
        yaw_rad=np.zeros(3),
        velocity_xy=np.zeros((3, 2)),
        label=np.array([0, 0, 0]),
        attribute=np.array([5, 5, 5]),
        num_lidar_pts=np.array([0, 3, -1]),
    )
    targets = build_head_targets([boxes], config)
    width = 40
    kept_cells = sorted(int(c) for c in targets.index[0][targets.mask[0]])
    # Box 1: column (10 + 16) / 0.8 = 32.5, row (7.6 + 16) / 0.8 = 29.5; box 2: column 10, row 25.
    assert kept_cells == sorted([29 * width + 32, 25 * width + 10])
    assert targets.heatmap[0, 0, 16, 21] < 1.0  # box 0's centre cell holds no peak
    everything = build_head_targets(
        [boxes], config.replace(head=dataclasses.replace(config.head, min_target_lidar_points=0))
    )
    assert int(everything.mask.sum()) == 3 and everything.heatmap[0, 0, 16, 21] == 1.0


def _outputs_from_targets(config: FusionConfig, boxes: Boxes3D) -> HeadOutputs:
    """Perfect head outputs: logits +-20 at/around the centres, regression written at the centres."""
    targets = build_head_targets([boxes], config)
    height, width = config.grid.shape_hw
    regression = torch.zeros(1, 10, height * width)
    attribute = torch.zeros(1, 8, height * width)
    for slot in range(int(targets.mask.sum())):
        cell = targets.index[0, slot]
        regression[0, :, cell] = torch.nan_to_num(targets.regression[0, slot])
        attribute[0, targets.attribute[0, slot], cell] = 5.0
    regression = regression.view(1, 10, height, width)
    heatmap_logits = torch.where(targets.heatmap == 1.0, torch.tensor(20.0), torch.tensor(-20.0))
    return HeadOutputs(
        heatmap_logits=heatmap_logits,
        offset=regression[:, 0:2],
        z=regression[:, 2:3],
        log_size=regression[:, 3:6],
        yaw_sincos=regression[:, 6:8],
        velocity=regression[:, 8:10],
        attribute_logits=attribute.view(1, 8, height, width),
        depth_logits=torch.zeros(0, 4, 2, 2),
        depth_camera_index=torch.zeros(0, dtype=torch.int64),
    )


def test_decode_inverts_the_targets() -> None:
    config = FusionConfig(grid=GridConfig(x_range_m=(-16.0, 16.0), y_range_m=(-16.0, 16.0), cell_m=0.8))
    boxes = _boxes()
    decoded = decode_sample(_outputs_from_targets(config, boxes), 0, config.grid, config.decode)
    assert len(decoded) == 2
    order = np.argsort(decoded.label)
    np.testing.assert_allclose(decoded.center[order], boxes.center, atol=1e-5)
    np.testing.assert_allclose(decoded.size_wlh[order], boxes.size_wlh, atol=1e-5)
    np.testing.assert_allclose(decoded.yaw_rad[order], boxes.yaw_rad, atol=1e-5)
    np.testing.assert_allclose(decoded.velocity_xy[order][0], boxes.velocity_xy[0], atol=1e-5)
    assert decoded.label[order].tolist() == [0, 5]
    assert decoded.attribute[order].tolist() == [5, 4]
    assert np.all(decoded.score > 0.99)


def test_circle_nms_by_hand() -> None:
    xy = np.array([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [3.9, 0.0]])
    scores = np.array([0.9, 0.95, 0.5, 0.6])
    assert circle_nms(xy, scores, 1.0).tolist() == [1, 3]
    assert sorted(circle_nms(xy, scores, 0.0).tolist()) == [0, 1, 2, 3]


def test_decode_caps_at_max_boxes_and_threshold() -> None:
    config = tiny_for_tests()
    height, width = config.grid.shape_hw
    generator = torch.Generator().manual_seed(0)
    zeros = lambda c: torch.zeros(1, c, height, width)  # noqa: E731
    outputs = HeadOutputs(
        heatmap_logits=torch.randn(1, 10, height, width, generator=generator) * 3,
        offset=zeros(2),
        z=zeros(1),
        log_size=zeros(3),
        yaw_sincos=zeros(2),
        velocity=zeros(2),
        attribute_logits=zeros(8),
        depth_logits=torch.zeros(0, 4, 2, 2),
        depth_camera_index=torch.zeros(0, dtype=torch.int64),
    )
    capped = decode_sample(outputs, 0, config.grid, DecodeConfig(max_boxes=50, score_threshold=0.0))
    assert len(capped) == 50 and np.all(np.diff(capped.score) <= 0)
    strict = decode_sample(outputs, 0, config.grid, DecodeConfig(score_threshold=0.999))
    assert np.all(strict.score >= 0.999)
    # Classes without attributes get -1; cars get a vehicle attribute.
    assert set(capped.attribute[capped.label >= 8].tolist()) <= {-1}
    assert set(capped.attribute[capped.label == 0].tolist()) <= {5, 6, 7}


def test_focal_loss_by_hand() -> None:
    # One positive cell at p = 0.5 and one negative cell with target 0.5 at p = 0.5.
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.5]]]])
    expected = -(0.5**2) * math.log(0.5) - (0.5**4) * (0.5**2) * math.log(0.5)
    assert float(heatmap_focal_loss(logits, target)) == pytest.approx(expected)


def test_regression_loss_ignores_unknown_velocity_and_padding() -> None:
    config = FusionConfig(grid=GridConfig(x_range_m=(-16.0, 16.0), y_range_m=(-16.0, 16.0), cell_m=0.8))
    boxes = _boxes()
    perfect = _outputs_from_targets(config, boxes)
    targets = build_head_targets([boxes], config)
    weights = (1.0,) * 10
    assert float(regression_l1_loss(perfect, targets, weights)) == pytest.approx(0.0, abs=1e-6)
    shifted = HeadOutputs(**{**{f: getattr(perfect, f) for f in perfect.__slots__}, "z": perfect.z + 1.0})
    # Both objects are off by 1 m in z: (1 + 1) / 2 objects.
    assert float(regression_l1_loss(shifted, targets, weights)) == pytest.approx(1.0)


def test_depth_loss_uses_only_pixels_with_lidar() -> None:
    logits = torch.zeros(1, 4, 1, 2)
    logits[0, 2, 0, 0] = 10.0
    outputs = HeadOutputs(
        heatmap_logits=torch.zeros(1, 1, 1, 1),
        offset=torch.zeros(1, 2, 1, 1),
        z=torch.zeros(1, 1, 1, 1),
        log_size=torch.zeros(1, 3, 1, 1),
        yaw_sincos=torch.zeros(1, 2, 1, 1),
        velocity=torch.zeros(1, 2, 1, 1),
        attribute_logits=torch.zeros(1, 8, 1, 1),
        depth_logits=logits,
        depth_camera_index=torch.tensor([1]),
    )
    target = torch.full((1, 2, 1, 2), -1, dtype=torch.int64)
    target[0, 1, 0, 0] = 2  # camera slot 1, pixel (0, 0): bin 2; pixel (0, 1) has no lidar
    expected = -math.log(math.exp(10) / (math.exp(10) + 3))
    assert float(depth_loss(outputs, target)) == pytest.approx(expected, rel=1e-3)  # float32 softmax


def test_camera_config_rejects_inconsistent_stride() -> None:
    with pytest.raises(ValueError, match="stride"):
        CameraConfig(encoder_channels=(8, 8), feature_stride=8)


def test_config_round_trips_through_json(tmp_path) -> None:
    for config in (cpu_default(), gpu_large(), tiny_for_tests()):
        write_json_atomic(tmp_path / "c.json", config.to_dict())
        assert FusionConfig.load_json(tmp_path / "c.json") == config
    assert cpu_default().grid.shape_hw == (128, 128) and gpu_large().grid.shape_hw == (256, 256)
    assert cpu_default().camera.feature_hw == (14, 25)
    write_json_atomic(tmp_path / "bad.json", {"grid": {"cell": 1.0}})
    with pytest.raises(FileFormatError, match=r"bad\.json.*cell"):
        FusionConfig.load_json(tmp_path / "bad.json")
