"""The lidar-guided lift: camera pixels with a keyframe lidar return are lifted at its depth bin."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from avfusion.fusion.batch import BatchedRig, collate, depth_target
from avfusion.fusion.camera import DepthLift
from avfusion.fusion.config import CAMERA_NAMES, FusionConfig, tiny_for_tests
from avfusion.fusion.losses import total_loss
from avfusion.fusion.model import BEVFusion


def _guided(config: FusionConfig) -> FusionConfig:
    return config.replace(camera=dataclasses.replace(config.camera, lift_at_lidar_depth=True))


def test_collate_gives_the_keyframe_returns_depth_bins_only_where_lidar_is_used(frame_factory) -> None:
    config = _guided(tiny_for_tests())
    frame = frame_factory(0)
    batch = collate([frame], config)
    keyframe = frame.lidar.points[:, 4] == 0
    assert 0 < keyframe.sum() < len(keyframe)  # the fixture mixes sweeps, so the filter matters
    points = frame.lidar.ego_from_lidar.apply(frame.lidar.points[keyframe, :3])
    for k in range(len(CAMERA_NAMES)):
        expected = depth_target(
            points,
            batch.rig.intrinsics[0, k].double().numpy(),
            batch.rig.ego_from_camera[0, k].double().numpy(),
            batch.rig.image_aug[0, k].double().numpy(),
            config,
        )
        np.testing.assert_array_equal(batch.lidar_depth_bin[0, k].numpy(), expected)
    assert int((batch.lidar_depth_bin >= 0).sum()) > 0
    # Without lidar in the sample: no measured depth anywhere.
    assert bool((collate([frame], config, drop={"lidar"}).lidar_depth_bin == -1).all())
    # A camera-only model never sees lidar, and a model without the option gets none.
    camera_only = config.replace(train=dataclasses.replace(config.train, use_lidar=False))
    assert collate([frame], camera_only).lidar_depth_bin is None
    assert collate([frame], tiny_for_tests()).lidar_depth_bin is None


def _lift_inputs(config: FusionConfig, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    cam = config.camera
    feature_h, feature_w = cam.feature_hw
    cameras = 2
    focal = 40.0
    intrinsics = torch.tensor([[focal, 0.0, cam.input_hw[1] / 2], [0.0, focal, cam.input_hw[0] / 2], [0.0, 0.0, 1.0]])
    # Camera looking along ego +x (camera z forward, x right = ego -y, y down = ego -z), 1.5 m up.
    ego_from_camera = torch.eye(4)
    ego_from_camera[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    ego_from_camera[2, 3] = 1.5
    rig = BatchedRig(
        intrinsics.expand(1, cameras, 3, 3).clone(),
        ego_from_camera.expand(1, cameras, 4, 4).clone(),
        torch.eye(3).expand(1, cameras, 3, 3).clone(),
    )
    features = torch.randn(cameras, 8, feature_h, feature_w, generator=generator)
    return features, rig, torch.eye(4).unsqueeze(0), torch.arange(cameras)


def test_lift_at_given_bins_equals_a_certain_prediction_and_minus_one_keeps_the_prediction() -> None:
    config = tiny_for_tests()
    torch.manual_seed(0)
    lift = DepthLift(8, config.camera, config.grid)
    features, rig, bev_from_ego, camera_index = _lift_inputs(config)
    feature_h, feature_w = config.camera.feature_hw
    bins = torch.randint(
        0, config.camera.num_depth_bins, (2, feature_h, feature_w), generator=torch.Generator().manual_seed(1)
    )
    guided = lift(features, rig, bev_from_ego, camera_index, bins)
    # The same lift whose depth logits put everything into those bins.
    certain = DepthLift(8, config.camera, config.grid)
    certain.load_state_dict(lift.state_dict())
    original_forward = certain.depth_context.forward

    def forced(x: torch.Tensor) -> torch.Tensor:
        out = original_forward(x).clone()
        one_hot = torch.nn.functional.one_hot(bins, config.camera.num_depth_bins).permute(0, 3, 1, 2).float()
        out[:, : config.camera.num_depth_bins] = one_hot * 1e4
        return out

    certain.depth_context.forward = forced
    expected = certain(features, rig, bev_from_ego, camera_index)
    assert float(guided.features.detach().abs().max()) > 0
    torch.testing.assert_close(guided.features, expected.features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(guided.coverage, expected.coverage)
    # The depth logits are the prediction either way (they are trained against lidar depth).
    torch.testing.assert_close(guided.depth_logits, lift(features, rig, bev_from_ego, camera_index).depth_logits)
    # No return anywhere: exactly the predicted lift.
    none = torch.full_like(bins, -1)
    torch.testing.assert_close(
        lift(features, rig, bev_from_ego, camera_index, none).features,
        lift(features, rig, bev_from_ego, camera_index).features,
    )


def test_guided_training_step_reaches_every_parameter_and_lidar_changes_the_camera_bev(frame_factory) -> None:
    torch.manual_seed(0)
    config = _guided(tiny_for_tests())
    frames = [frame_factory(0), frame_factory(1)]
    batch = collate(frames, config, with_targets=True)
    model = BEVFusion.from_config(config).train()
    loss, _ = total_loss(model(batch), batch.targets, batch.depth_target_bin, config.loss)
    assert torch.isfinite(loss)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        args = (batch.images, batch.modality.camera, batch.rig, batch.bev_from_ego)
        with_lidar = model.camera(*args, batch.lidar_depth_bin).features
        predicted = model.camera(*args, None).features
    assert not torch.allclose(with_lidar, predicted)
