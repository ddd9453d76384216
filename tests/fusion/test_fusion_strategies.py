"""The four fusion strategies (`FuserConfig.strategy`): early (point painting), intermediate,
gated and late, built, warm-started and run as a user would."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avfusion.calibration.boxes import Boxes3D
from avfusion.errors import InputError
from avfusion.fusion.batch import collate
from avfusion.fusion.checkpoint import save_checkpoint, weights_for_strategy
from avfusion.fusion.config import FusionConfig, configure, tiny_for_tests, with_strategy
from avfusion.fusion.fuser import ConvFuser, GatedFuser
from avfusion.fusion.inference import Detector, late_model_values
from avfusion.fusion.late import FEATURE_NAMES, LateScoreModel, merge
from avfusion.fusion.model import BEVFusion
from avfusion.fusion.paint import paint_points
from avfusion.fusion.warmstart import warm_start


def _modalities(config: FusionConfig, *, lidar: bool, camera: bool) -> FusionConfig:
    return config.replace(train=dataclasses.replace(config.train, use_lidar=lidar, use_camera=camera))


def _randomised(config: FusionConfig, seed: int) -> BEVFusion:
    """A model with random, non-default weights everywhere, batch-norm statistics included."""
    torch.manual_seed(seed)
    model = BEVFusion.from_config(config)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5 if "running_var" in name else torch.randn_like(value) * 0.1)
    return model.eval()


def test_a_painted_point_carries_the_pixel_it_projects_to_on_the_real_keyframe(painted_keyframe) -> None:
    k = painted_keyframe
    paint = paint_points(k.points_ego, k.rig, k.images)
    assert paint.shape == (len(k.points_ego), 4) and paint.dtype == np.float32
    seen = paint[:, 3] == 1.0
    assert 0.5 < seen.mean() <= 1.0 and np.all(paint[~seen] == 0.0)

    # The front camera's points (the first camera in order, so nothing else painted them).
    u, v, inside = k.front_camera_pixels()
    assert inside.sum() > 1000
    height, width = k.config.camera.input_hw
    rows = np.clip(np.rint(v[inside]).astype(int), 0, height - 1)
    columns = np.clip(np.rint(u[inside]).astype(int), 0, width - 1)
    front = k.images[k.names.index("CAM_FRONT")]
    np.testing.assert_array_equal(paint[inside, :3], front[:, rows, columns].T)
    assert np.all(paint[inside, 3] == 1.0)


def test_early_fusion_has_no_camera_branch_and_starts_as_its_lidar_model(tmp_path, frame_factory) -> None:
    lidar_config = _modalities(tiny_for_tests(), lidar=True, camera=False)
    lidar_model = _randomised(lidar_config, 1)
    save_checkpoint(tmp_path / "lidar.pt", lidar_config, {"model": lidar_model.state_dict()})
    early_config = with_strategy(tiny_for_tests(), "early")
    assert early_config.paints_points and not early_config.builds_camera_branch
    early = BEVFusion.from_config(early_config)
    assert early.camera is None and early.lidar_free is None and early.camera_free is None
    # Colour and seen flag (4) and the painted per-class scores (10).
    assert early.lidar.linear.in_features == 10 + 4 + 10 and early.painter is not None
    warm_start(early, early_config, [tmp_path / "lidar.pt"])
    assert float(early.lidar.linear.weight.detach()[:, 10:].abs().sum()) == 0.0

    frames = [frame_factory(0), frame_factory(1)]
    painted = collate(frames, early_config)
    # The cloud (5), the paint (4) and where to read the scores: camera, u, v.
    assert painted.pillar_features.shape[2] == 12 and float(painted.pillar_features[..., 8].max()) == 1.0
    with torch.no_grad():
        expected = lidar_model(collate(frames, lidar_config))
        found = early.eval()(painted)
    # Zero paint columns: the painted model computes what the lidar model computed.
    torch.testing.assert_close(found.heatmap_logits, expected.heatmap_logits, rtol=1e-5, atol=1e-5)

    # Without cameras every point is unpainted and still encoded.
    dark = collate(frames, early_config, drop={"camera"})
    assert float(dark.pillar_features[..., 5:9].abs().max()) == 0.0
    valid = torch.arange(dark.pillar_features.shape[1])[None, :] < dark.pillar_num_points[:, None]
    assert bool((dark.pillar_features[..., 9][valid] == -1.0).all())


def test_gated_fuser_starts_open_and_a_closed_gate_removes_its_branch(frame_factory) -> None:
    config = with_strategy(tiny_for_tests(), "gated")
    model = _randomised(config, 4)
    assert isinstance(model.fuser, GatedFuser) and model.fuser.branch_names == ("lidar", "camera", "map")
    fresh = BEVFusion.from_config(config).fuser
    assert isinstance(fresh, GatedFuser)
    batch = collate([frame_factory(0)], config)
    with torch.no_grad():
        model(batch)
    gate = model.fuser.last_gate
    assert gate is not None and gate.shape == (1, 3, *config.grid.shape_hw)
    assert float(gate.min()) >= 0.0 and float(gate.max()) <= 1.0

    # Gate weights zero and the camera's bias very negative: the camera's features are gone,
    # exactly as a concatenating fuser with the camera features zeroed computes.
    fuser = model.fuser
    with torch.no_grad():
        fuser.gate.weight.zero_()
        fuser.gate.bias.copy_(torch.tensor([50.0, -50.0, 50.0]))
    plain = ConvFuser(fuser.lidar_channels, fuser.camera_channels, fuser.map_channels, fuser.channels).eval()
    plain.layers.load_state_dict(fuser.layers.state_dict())
    shape = (1, 1, *config.grid.shape_hw)
    torch.manual_seed(0)
    lidar, camera, coverage, map_features = (
        torch.randn(1, fuser.lidar_channels, *shape[2:]),
        torch.randn(1, fuser.camera_channels, *shape[2:]),
        torch.rand(shape),
        torch.randn(1, fuser.map_channels, *shape[2:]),
    )
    present = torch.ones(1, dtype=torch.bool)
    with torch.no_grad():
        gated = fuser(lidar, camera, coverage, map_features, present, present)
        expected = plain(lidar, torch.zeros_like(camera), coverage, map_features, present, present)
    torch.testing.assert_close(gated, expected, rtol=1e-5, atol=1e-5)


def test_gated_and_early_warm_start_from_the_stage_one_models(tmp_path) -> None:
    base = tiny_for_tests()
    for name, lidar, camera in (("lidar", True, False), ("camera", False, True)):
        config = _modalities(base, lidar=lidar, camera=camera)
        save_checkpoint(tmp_path / f"{name}.pt", config, {"model": _randomised(config, 7).state_dict()})
    sources = [tmp_path / "lidar.pt", tmp_path / "camera.pt"]
    gated_config = with_strategy(base, "gated")
    gated = BEVFusion.from_config(gated_config)
    report = warm_start(gated, gated_config, sources)
    assert report.zeroed_fuser_inputs == ("camera",)
    assert float(gated.fuser.gate.bias.min().detach()) == 3.0  # the gate is new: it starts open
    early_config = with_strategy(base, "early")
    report = warm_start(BEVFusion.from_config(early_config), early_config, sources)
    assert "camera" not in report.branch_sources


def test_late_fusion_merges_the_two_trunks_boxes_with_its_score_model(tmp_path, frame_factory) -> None:
    base = tiny_for_tests()
    config = base.replace(train=dataclasses.replace(base.train, lidar_free_trunk=True, camera_free_trunk=True))
    model = _randomised(config, 5)
    score_model = LateScoreModel(np.linspace(-1.0, 1.0, len(FEATURE_NAMES)), gate_m=2.0)
    late_config = config.replace(
        fuser=dataclasses.replace(config.fuser, strategy="late", late_model=late_model_values(score_model))
    )
    save_checkpoint(tmp_path / "late.pt", late_config, {"model": model.state_dict()})
    save_checkpoint(tmp_path / "fused.pt", config, {"model": model.state_dict()})
    frame = frame_factory(0)
    late = Detector.load(tmp_path / "late.pt").detect(frame)
    fused = Detector.load(tmp_path / "fused.pt")
    merged = merge(
        fused.detect(frame, drop={"camera"}).boxes_ego, fused.detect(frame, drop={"lidar"}).boxes_ego, score_model
    )
    # At most `max_boxes` like any decode, the highest scores (both trunks' boxes exceed it here).
    assert len(merged) > config.decode.max_boxes
    expected = merged[: config.decode.max_boxes]
    assert len(late.boxes_ego) == len(expected)
    np.testing.assert_allclose(late.boxes_ego.center, expected.center, atol=1e-9)
    np.testing.assert_allclose(late.boxes_ego.score, expected.score, atol=1e-9)
    np.testing.assert_allclose(late.boxes_global.center, expected.transform(frame.global_from_ego).center, atol=1e-9)

    unfitted = config.replace(fuser=dataclasses.replace(config.fuser, strategy="late"))
    save_checkpoint(tmp_path / "unfitted.pt", unfitted, {"model": model.state_dict()})
    capped = late_config.replace(decode=dataclasses.replace(late_config.decode, max_boxes=3))
    save_checkpoint(tmp_path / "capped.pt", capped, {"model": model.state_dict()})
    few = Detector.load(tmp_path / "capped.pt").detect(frame)
    assert len(few.boxes_ego) == 3
    assert np.all(np.diff(few.boxes_ego.score) <= 0)  # the highest scores are the ones kept

    with pytest.raises(InputError, match="fitted score model"):
        Detector.load(tmp_path / "unfitted.pt")


def test_fusion_flag_refuses_weights_of_another_strategy(tmp_path) -> None:
    config = tiny_for_tests()
    save_checkpoint(tmp_path / "w.pt", config, {"model": BEVFusion.from_config(config).state_dict()})
    assert weights_for_strategy("intermediate", tmp_path / "w.pt") == tmp_path / "w.pt"
    with pytest.raises(InputError, match=r"--fusion gated: .*w\.pt holds weights for intermediate fusion"):
        weights_for_strategy("gated", tmp_path / "w.pt")
    with pytest.raises(InputError, match="'sideways' is not one of early, intermediate, gated, late"):
        weights_for_strategy("sideways", None)
    with pytest.raises(InputError, match="is not one of"):
        configure("tiny", fusion="sideways")


def test_merge_keeps_lidar_geometry_for_pairs() -> None:
    lidar = Boxes3D(center=[[10.0, 0.0, 0.0]], size_wlh=[[2.0, 4.0, 1.5]], yaw_rad=[0.1], label=[0], score=[0.6])
    camera = Boxes3D(center=[[10.8, 0.3, 0.2]], size_wlh=[[2.2, 4.4, 1.6]], yaw_rad=[0.3], label=[0], score=[0.5])
    model = LateScoreModel(np.zeros(len(FEATURE_NAMES)))
    merged = merge(lidar, camera, model)
    assert len(merged) == 1
    np.testing.assert_array_equal(merged.center, lidar.center)
    assert merged.score[0] == pytest.approx(0.5)
