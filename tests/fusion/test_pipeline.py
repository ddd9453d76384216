"""From SyncedFrames through collate, one training step, a checkpoint and the Detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avfusion.errors import InputError
from avfusion.fusion.augment import SampleAugmentation, draw_augmentation
from avfusion.fusion.batch import collate, depth_target
from avfusion.fusion.checkpoint import load_checkpoint, save_checkpoint
from avfusion.fusion.config import CAMERA_NAMES, FusionConfig, tiny_for_tests
from avfusion.fusion.inference import Detector, fuse_conv_batchnorm
from avfusion.fusion.losses import sample_weights, total_loss
from avfusion.fusion.model import BEVFusion
from avfusion.fusion.train import train


def test_one_training_step_has_finite_loss_and_gradients_in_every_branch(frame_factory) -> None:
    torch.manual_seed(0)
    config = tiny_for_tests()
    frames = [frame_factory(0), frame_factory(1)]
    rng = np.random.default_rng(0)
    augmentations = [
        draw_augmentation(
            rng,
            config.augment.__class__(
                drop_lidar_probability=0.0,
                drop_cameras_probability=0.0,
                drop_one_camera_probability=0.0,
                drop_map_probability=0.0,
            ),
            has_map=True,
        )
        for _ in frames
    ]
    batch = collate(frames, config, augmentations=augmentations, with_targets=True)
    assert bool(batch.modality.lidar.all()) and bool(batch.modality.camera.all()) and bool(batch.modality.map.all())
    assert int(batch.targets.mask.sum()) == 12  # 6 boxes each, all within +-25.6 m
    assert int((batch.depth_target_bin >= 0).sum()) > 0
    model = BEVFusion.from_config(config).train()
    outputs = model(batch)
    loss, parts = total_loss(outputs, batch.targets, batch.depth_target_bin, config.loss)
    assert torch.isfinite(loss)
    assert set(parts) == {"heatmap", "regression", "attribute", "depth"}
    assert all(np.isfinite(v) and v > 0 for v in parts.values())
    loss.backward()
    first_weights = {
        "lidar": model.lidar.linear.weight,
        "camera encoder": model.camera.encoder.layers[0].weight,
        "camera depth": model.camera.lift.depth_context.weight,
        "map": model.map.layers[0].weight,
        "fuser": model.fuser.layers[0].weight,
        "backbone": model.backbone.stages[0][0][0].weight,
        "head": model.head.shared[0].weight,
    }
    for name, weight in first_weights.items():
        assert weight.grad is not None and float(weight.grad.abs().sum()) > 0, f"no gradient reaches the {name}"
    # Every parameter of the model receives a gradient from the full modality set.
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_dropped_sensors_are_masked_and_zeroed(frame_factory) -> None:
    config = tiny_for_tests()
    frame = frame_factory(2)
    batch = collate([frame], config, drop={"lidar", "CAM_BACK", "map"})
    assert not bool(batch.modality.lidar[0]) and not bool(batch.modality.map[0])
    assert batch.modality.camera[0].tolist() == [name != "CAM_BACK" for name in CAMERA_NAMES]
    assert batch.pillar_features.shape[0] == 0
    assert float(batch.images[0, CAMERA_NAMES.index("CAM_BACK")].abs().sum()) == 0.0
    assert float(batch.map_bev.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="unknown sensors"):
        collate([frame], config, drop={"radar"})


def test_map_from_gnss_equals_map_from_pose_when_the_fix_is_exact(frame_factory) -> None:
    config = tiny_for_tests()
    frame = frame_factory(3)
    from_pose = collate([frame], config).map_bev
    gnss_config = config.replace(map=config.map.__class__(channels=config.map.channels, pose_source="gnss"))
    from_gnss = collate([frame], gnss_config).map_bev
    assert float(from_pose.sum()) > 0
    torch.testing.assert_close(from_gnss, from_pose, atol=1e-3, rtol=0)
    assert not bool(collate([frame], gnss_config, drop={"gnss"}).modality.map[0])


def test_flip_augmentation_mirrors_boxes_points_and_map(frame_factory) -> None:
    config = tiny_for_tests()
    frame = frame_factory(4)
    plain = collate([frame], config, with_targets=True)
    flipped = collate([frame], config, augmentations=[SampleAugmentation(flip_y=True)], with_targets=True)
    # The grid's y range is symmetric, so mirroring y mirrors the rows.
    torch.testing.assert_close(flipped.map_bev, plain.map_bev.flip(2))
    torch.testing.assert_close(flipped.targets.heatmap.flip(2).sum(), plain.targets.heatmap.sum())
    boxes = SampleAugmentation(flip_y=True).transform_boxes(frame.gt_boxes)
    np.testing.assert_allclose(boxes.center[:, 1], -frame.gt_boxes.center[:, 1])
    np.testing.assert_allclose(boxes.yaw_rad, -frame.gt_boxes.yaw_rad)


def test_detector_loads_a_checkpoint_and_detects_in_both_frames(frame_factory, tmp_path) -> None:
    torch.manual_seed(0)
    config = tiny_for_tests()
    model = BEVFusion.from_config(config)
    save_checkpoint(tmp_path / "w.pt", config, {"model": model.state_dict()})
    detector = Detector.load(tmp_path / "w.pt")
    frame = frame_factory(5)
    detections = detector.detect(frame)
    assert detections.sample_token == "sample-5"
    assert len(detections.boxes_ego) <= 500
    assert {"prepare", "voxelize", "network", "decode"} <= set(detections.timings_ms)
    expected = frame.global_from_ego.apply(detections.boxes_ego.center)
    np.testing.assert_allclose(detections.boxes_global.center, expected)
    for drop in ({"lidar"}, {"camera"}, {"CAM_FRONT"}, {"map"}, {"gnss"}, {"lidar", "map"}):
        assert len(detector.detect(frame, drop=drop).boxes_ego) <= 500
    with pytest.raises(InputError, match="radar"):
        detector.detect(frame, drop={"radar"})
    with pytest.raises(InputError, match="does not exist"):
        Detector.load(tmp_path / "missing.pt")


def test_resumed_training_equals_uninterrupted_training(frame_factory, tmp_path) -> None:
    import dataclasses
    import json

    config = tiny_for_tests()
    config = config.replace(train=dataclasses.replace(config.train, epochs=2))
    frames = [frame_factory(seed) for seed in range(2)]
    straight = train(config, frames, tmp_path / "straight", progress=False, checkpoint_every=1)
    assert straight.steps == 2  # 2 frames, batch 2: one step per epoch
    train(config, frames, tmp_path / "resumed", progress=False, max_steps=1, checkpoint_every=1)
    resumed = train(config, frames, tmp_path / "resumed", resume=True, progress=False, checkpoint_every=1)
    assert resumed.steps == 2
    _, a = load_checkpoint(straight.weights_path)
    _, b = load_checkpoint(resumed.weights_path)
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, msg=f"{name} differs after resuming")
    log = [json.loads(line) for line in (tmp_path / "resumed" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert FusionConfig.load_json(tmp_path / "resumed" / "config.json") == config
    assert (tmp_path / "resumed" / "loss.png").is_file()


def test_depth_target_keeps_the_nearest_return_per_feature_pixel() -> None:
    config = tiny_for_tests()  # input 32 x 64, stride 8 -> 4 x 8 feature pixels; bins of 3 m from 1 m
    intrinsics = np.array([[32.0, 0.0, 31.5], [0.0, 32.0, 15.5], [0.0, 0.0, 1.0]])
    ego_from_camera = np.eye(4)  # the camera frame is the ego frame here: z is depth
    points = np.array(
        [
            [0.0, 0.0, 10.0],  # u = 31.5, v = 15.5 -> feature (row 16 // 8, col 32 // 8) = (2, 4), bin 3
            [0.0, 0.0, 5.0],  # same pixel, nearer: bin 1 wins
            [0.0, 0.0, 20.0],  # same pixel, farther
            [-31.0, -15.0, 31.0],  # u = 0.5, v = 0.5 -> feature (0, 0), but bin 10 is past the 8 bins
            [1.0, 0.0, -5.0],  # behind the camera
        ]
    )
    target = depth_target(points, intrinsics, ego_from_camera, np.eye(3), config)
    assert target.shape == (4, 8)
    assert target[2, 4] == 1
    assert (target >= 0).sum() == 1


def test_conv_batchnorm_fusion_keeps_the_outputs(frame_factory) -> None:
    import copy

    torch.manual_seed(0)
    config = tiny_for_tests()
    model = BEVFusion.from_config(config)
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    fused = fuse_conv_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    batch = collate([frame_factory(7)], config)
    with torch.inference_mode():
        torch.testing.assert_close(fused(batch).heatmap_logits, model(batch).heatmap_logits, atol=1e-4, rtol=1e-4)


def test_modality_dropout_never_leaves_a_single_modality_model_without_its_sensor() -> None:
    config = tiny_for_tests().augment
    draws = {}
    for branches in ((True, True), (True, False), (False, True)):
        rng = np.random.default_rng(7)
        draws[branches] = [
            draw_augmentation(rng, config, has_lidar_branch=branches[0], has_camera_branch=branches[1])
            for _ in range(400)
        ]
    fused = [a.drop for a in draws[True, True]]
    lidar_drops = sum("lidar" in d for d in fused) / len(fused)
    camera_drops = sum("camera" in d for d in fused) / len(fused)
    assert abs(lidar_drops - config.drop_lidar_probability) < 0.07
    assert abs(camera_drops - config.drop_cameras_probability) < 0.07
    assert not any({"lidar", "camera"} <= d for d in fused)
    for branches in ((True, False), (False, True)):
        assert not any({"lidar", "camera"} & a.drop for a in draws[branches]), branches
        # The same draws otherwise: geometry, single cameras and the map do not depend on the branches.
        for single, both in zip(draws[branches], draws[True, True], strict=True):
            assert (single.rotation_rad, single.scale, single.flip_y) == (both.rotation_rad, both.scale, both.flip_y)
            assert single.drop == both.drop - {"lidar", "camera"}


def test_sample_weights_scale_each_samples_terms_linearly(frame_factory) -> None:
    """Loss weights per sample: ones equal no weights, and every part is linear in the weights."""
    torch.manual_seed(0)
    config = tiny_for_tests()
    batch = collate([frame_factory(0), frame_factory(1)], config, with_targets=True)
    outputs = BEVFusion.from_config(config).train()(batch)

    def parts(weight):
        return total_loss(outputs, batch.targets, batch.depth_target_bin, config.loss, weight)[1]

    plain, ones = parts(None), parts(torch.ones(2))
    first, second, mixed = (
        parts(torch.tensor([1.0, 0.0])),
        parts(torch.tensor([0.0, 1.0])),
        parts(torch.tensor([0.3, 2.0])),
    )
    for name in plain:
        assert ones[name] == pytest.approx(plain[name], rel=1e-5)
        assert first[name] > 0 and second[name] > 0, name
        assert mixed[name] == pytest.approx(0.3 * first[name] + 2.0 * second[name], rel=1e-4), name
    # Only lidar-dropped samples of a model with lidar get the configured weight.
    loss_config = config.loss.__class__(lidar_dropped_weight=0.25)
    has_lidar = torch.tensor([True, False, True])
    assert sample_weights(has_lidar, loss_config, model_has_lidar=True).tolist() == [1.0, 0.25, 1.0]
    assert sample_weights(has_lidar, loss_config, model_has_lidar=False) is None
    assert sample_weights(torch.tensor([True, True]), loss_config, model_has_lidar=True) is None
    assert sample_weights(has_lidar, config.loss, model_has_lidar=True) is None
