"""The lidar-free and camera-free trunks (`TrainConfig.lidar_free_trunk` / `camera_free_trunk`):
routing by mode, warm start, training on every sample's twins."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avfusion.fusion.augment import SampleAugmentation, camera_free_copy, lidar_free_copy
from avfusion.fusion.batch import collate
from avfusion.fusion.checkpoint import save_checkpoint
from avfusion.fusion.config import FusionConfig, cpu_default, gpu_large, tiny_for_tests
from avfusion.fusion.losses import total_loss
from avfusion.fusion.model import CAMERA_FREE, LIDAR_FREE, MAIN, BEVFusion
from avfusion.fusion.train import _StepBatches
from avfusion.fusion.warmstart import warm_start

HEAD_FIELDS = ("heatmap_logits", "offset", "z", "log_size", "yaw_sincos", "velocity", "attribute_logits")


def _config(*, lidar: bool = True, camera: bool = True, free: bool = True, camera_free: bool = False) -> FusionConfig:
    base = tiny_for_tests()
    base = base.replace(camera=dataclasses.replace(base.camera, lift_at_lidar_depth=True))
    train = dataclasses.replace(
        base.train, use_lidar=lidar, use_camera=camera, lidar_free_trunk=free, camera_free_trunk=camera_free
    )
    return base.replace(train=train)


def _sub_model(model: BEVFusion, config: FusionConfig, prefix: str, branches: tuple[str, ...]) -> BEVFusion:
    """A model of `config` holding `model`'s `prefix` trunk (`""`: the main one) and its `branches`."""
    state = model.state_dict()
    if prefix:
        sub = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    else:
        sub = {k: v for k, v in state.items() if k.startswith(("fuser.", "backbone.", "head."))}
    sub.update({k: v for k, v in state.items() if k.startswith(tuple(b + "." for b in branches))})
    small = BEVFusion.from_config(config).eval()
    small.load_state_dict(sub)
    return small


def _randomised(model: BEVFusion, seed: int) -> BEVFusion:
    """Random, non-default weights everywhere, batch-norm statistics included."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5 if "running_var" in name else torch.randn_like(value) * 0.1)
    return model.eval()


def _assert_same(found, expected, sample_found: int, sample_expected: int) -> None:
    for name in HEAD_FIELDS:
        torch.testing.assert_close(
            getattr(found, name)[sample_found], getattr(expected, name)[sample_expected], rtol=1e-5, atol=1e-5, msg=name
        )


def _saved_single_models(tmp_path, lidar_seed: int, camera_seed: int) -> tuple:
    """A random lidar(+map) and camera(+map) model saved as tmp_path/lidar.pt and camera.pt ->
    (lidar_config, lidar_model, camera_config, camera_model)."""
    lidar_config, camera_config = _config(camera=False), _config(lidar=False)
    lidar_model = _randomised(BEVFusion.from_config(lidar_config), lidar_seed)
    camera_model = _randomised(BEVFusion.from_config(camera_config), camera_seed)
    save_checkpoint(tmp_path / "lidar.pt", lidar_config, {"model": lidar_model.state_dict()})
    save_checkpoint(tmp_path / "camera.pt", camera_config, {"model": camera_model.state_dict()})
    return lidar_config, lidar_model, camera_config, camera_model


def _assert_trunk_kept_without_source(config: FusionConfig, mode: str, sources: list) -> None:
    """Warm-started from `sources` (none with the one primary sensor the `mode` trunk serves), the
    trunk keeps its initialisation and the report names no source for it."""
    fresh = BEVFusion.from_config(config)
    before = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith(mode + ".")}
    assert getattr(warm_start(fresh, config, sources), f"{mode}_trunk_source") is None
    for name, value in before.items():
        torch.testing.assert_close(fresh.state_dict()[name], value, rtol=0, atol=0)


def test_presets_build_the_trunks_only_for_models_with_lidar_and_cameras() -> None:
    for preset in (cpu_default(), gpu_large()):
        assert preset.train.builds_lidar_free_trunk and preset.augment.drop_lidar_probability == 0.0
        assert preset.train.builds_camera_free_trunk and preset.augment.drop_cameras_probability == 0.0
    for single in (_config(camera=False, camera_free=True), _config(lidar=False, camera_free=True)):
        assert not single.train.builds_lidar_free_trunk and not single.train.builds_camera_free_trunk
        model = BEVFusion.from_config(single)
        assert model.lidar_free is None and model.camera_free is None
    assert BEVFusion.from_config(_config(camera_free=True)).camera_free is not None
    assert BEVFusion.from_config(_config()).camera_free is None
    assert BEVFusion.from_config(_config(camera=False)).lidar_free is None
    assert BEVFusion.from_config(_config()).lidar_free is not None
    assert BEVFusion.from_config(_config(free=False)).lidar_free is None


def test_each_sample_goes_through_the_trunk_of_its_mode(frame_factory) -> None:
    """In one batch, a sample with lidar gets the main trunk's outputs and one without gets the
    lidar-free trunk's: each equals the sample run alone through a model with only that trunk."""
    config = _config()
    model = _randomised(BEVFusion.from_config(config), 1)
    frames = [frame_factory(0), frame_factory(1)]
    augmentations = [SampleAugmentation(), SampleAugmentation(drop=frozenset({"lidar"}))]
    batch = collate(frames, config, augmentations=augmentations)
    assert batch.modality.lidar.tolist() == [True, False]
    with torch.no_grad():
        found = model(batch)

    main_only = _sub_model(model, _config(free=False), "", ("lidar", "camera", "map"))
    camera_config = _config(lidar=False)
    camera_only = _sub_model(model, camera_config, "lidar_free.", ("camera", "map"))
    with torch.no_grad():
        expected_main = main_only(collate(frames[:1], config))
        expected_free = camera_only(collate(frames[1:], camera_config))
    _assert_same(found, expected_main, 0, 0)
    _assert_same(found, expected_free, 1, 0)
    # The two trunks differ, so the routing is visible: the main trunk on sample 1 is another answer.
    with torch.no_grad():
        main_on_free = main_only(collate(frames[1:], config, drop={"lidar"}))
    assert not torch.allclose(main_on_free.heatmap_logits[0], found.heatmap_logits[1], atol=1e-3)


def test_warm_start_takes_the_lidar_free_trunk_from_the_camera_model(tmp_path, frame_factory) -> None:
    lidar_config, lidar_model, camera_config, camera_model = _saved_single_models(tmp_path, 2, 3)
    config = _config()
    fused = BEVFusion.from_config(config)
    report = warm_start(fused, config, [tmp_path / "lidar.pt", tmp_path / "camera.pt"])
    assert report.lidar_free_trunk_source == str(tmp_path / "camera.pt")
    assert report.to_dict()["lidar_free_trunk"] == str(tmp_path / "camera.pt")
    frame = frame_factory(4)
    with torch.no_grad():
        fused.eval()
        # Without lidar the fused model computes the camera model; with lidar, the lidar model.
        _assert_same(
            fused(collate([frame], config, drop={"lidar"})), camera_model(collate([frame], camera_config)), 0, 0
        )
        _assert_same(fused(collate([frame], config)), lidar_model(collate([frame], lidar_config)), 0, 0)
    # No camera-only source: the trunk keeps its initialisation, and the report says so.
    _assert_trunk_kept_without_source(config, "lidar_free", [tmp_path / "lidar.pt"])


def test_lidar_free_copy_keeps_the_geometry_and_restores_the_cameras() -> None:
    drawn = SampleAugmentation(
        rotation_rad=0.2, scale=1.03, flip_y=True, image_scale=1.04, drop=frozenset({"camera", "map"})
    )
    copy = lidar_free_copy(drawn)
    assert copy.drop == frozenset({"lidar", "map"})
    assert (copy.rotation_rad, copy.scale, copy.flip_y, copy.image_scale) == (0.2, 1.03, True, 1.04)
    assert lidar_free_copy(SampleAugmentation(drop=frozenset({"CAM_BACK"}))).drop == frozenset({"CAM_BACK", "lidar"})


def test_a_training_step_pairs_every_sample_and_trains_both_trunks(frame_factory) -> None:
    config = _config()
    frames = [frame_factory(i) for i in range(4)]
    batch = _StepBatches(frames, config, steps_per_epoch=2, rank=0, world=1)[0]
    per_step = config.train.batch_size
    assert batch.batch_size == 2 * per_step
    assert batch.sample_tokens[:per_step] == batch.sample_tokens[per_step:]
    assert not batch.modality.lidar[per_step:].any() and batch.modality.camera[per_step:].any()
    # The twins' targets are the same boxes under the same geometric augmentation.
    assert np.array_equal(batch.targets.heatmap[:per_step].numpy(), batch.targets.heatmap[per_step:].numpy())

    model = BEVFusion.from_config(config).train()
    outputs = model(batch)
    loss, _ = total_loss(outputs, batch.targets, batch.depth_target_bin, config.loss)
    assert torch.isfinite(loss)
    loss.backward()
    for prefix in (
        "lidar.",
        "camera.",
        "map.",
        "fuser.",
        "backbone.",
        "head.",
        "lidar_free.fuser.",
        "lidar_free.backbone.",
        "lidar_free.head.",
    ):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads), prefix
        assert sum(float(g.abs().sum()) for g in grads) > 0, prefix
    # A model without the trunk is not paired.
    plain = _StepBatches(frames, _config(free=False), steps_per_epoch=2, rank=0, world=1)[0]
    assert plain.batch_size == per_step


@pytest.mark.parametrize("drop", [frozenset(), frozenset({"lidar"}), frozenset({"camera"})])
def test_inference_of_one_sample_in_each_mode_is_finite(frame_factory, drop) -> None:
    config = _config(camera_free=True)
    model = _randomised(BEVFusion.from_config(config), 5)
    with torch.no_grad():
        outputs = model(collate([frame_factory(6)], config, drop=drop))
    assert outputs.heatmap_logits.shape[0] == 1 and torch.isfinite(outputs.heatmap_logits).all()


def test_three_modes_in_one_batch_each_get_their_own_trunk(frame_factory) -> None:
    """A full sample, one without lidar and one without cameras in one batch: each one's outputs
    equal those of a model holding only its trunk (and branches), run on it alone."""
    config = _config(camera_free=True)
    model = _randomised(BEVFusion.from_config(config), 7)
    frames = [frame_factory(0), frame_factory(1), frame_factory(2)]
    drops = [frozenset(), frozenset({"lidar"}), frozenset({"camera"})]
    batch = collate(frames, config, augmentations=[SampleAugmentation(drop=d) for d in drops])
    assert model.trunk_of_each_sample(batch.modality).tolist() == [MAIN, LIDAR_FREE, CAMERA_FREE]
    with torch.no_grad():
        found = model(batch)
    main_config, camera_config, lidar_config = _config(free=False), _config(lidar=False), _config(camera=False)
    main_only = _sub_model(model, main_config, "", ("lidar", "camera", "map"))
    camera_only = _sub_model(model, camera_config, "lidar_free.", ("camera", "map"))
    lidar_only = _sub_model(model, lidar_config, "camera_free.", ("lidar", "map"))
    with torch.no_grad():
        _assert_same(found, main_only(collate(frames[:1], main_config)), 0, 0)
        _assert_same(found, camera_only(collate(frames[1:2], camera_config)), 1, 0)
        _assert_same(found, lidar_only(collate(frames[2:], lidar_config)), 2, 0)
        # The main trunk would answer otherwise for the camera-less sample: the routing is visible.
        main_on_it = main_only(collate(frames[2:], main_config, drop={"camera"}))
        assert not torch.allclose(main_on_it.heatmap_logits[0], found.heatmap_logits[2], atol=1e-3)
        # One camera missing is still the main trunk's mode.
        one_missing = collate(frames[:1], config, drop={"CAM_BACK"})
        assert model.trunk_of_each_sample(one_missing.modality).tolist() == [MAIN]


def test_warm_start_takes_the_camera_free_trunk_from_the_lidar_model(tmp_path, frame_factory) -> None:
    lidar_config, lidar_model, _, _ = _saved_single_models(tmp_path, 8, 9)
    config = _config(camera_free=True)
    fused = BEVFusion.from_config(config)
    report = warm_start(fused, config, [tmp_path / "lidar.pt", tmp_path / "camera.pt"])
    assert report.camera_free_trunk_source == str(tmp_path / "lidar.pt")
    assert report.to_dict()["camera_free_trunk"] == str(tmp_path / "lidar.pt")
    assert report.lidar_free_trunk_source == str(tmp_path / "camera.pt")
    frame = frame_factory(5)
    with torch.no_grad():
        fused.eval()
        expected = lidar_model(collate([frame], lidar_config))
        _assert_same(fused(collate([frame], config, drop={"camera"})), expected, 0, 0)
        _assert_same(fused(collate([frame], config)), expected, 0, 0)
    # Without a lidar-only source the camera-free trunk keeps its initialisation.
    _assert_trunk_kept_without_source(config, "camera_free", [tmp_path / "camera.pt"])


def test_camera_free_copy_keeps_the_geometry_and_lidar_and_drops_every_camera() -> None:
    drawn = SampleAugmentation(
        rotation_rad=-0.1, scale=0.97, flip_y=True, image_scale=1.02, drop=frozenset({"lidar", "CAM_FRONT", "map"})
    )
    copy = camera_free_copy(drawn)
    assert copy.drop == frozenset({"camera", "map"})
    assert (copy.rotation_rad, copy.scale, copy.flip_y, copy.image_scale) == (-0.1, 0.97, True, 1.02)


def test_a_training_step_with_both_trunks_runs_every_sample_three_times(frame_factory) -> None:
    config = _config(camera_free=True)
    frames = [frame_factory(i) for i in range(4)]
    batch = _StepBatches(frames, config, steps_per_epoch=2, rank=0, world=1)[0]
    per_step = config.train.batch_size
    assert batch.batch_size == 3 * per_step
    assert (
        batch.sample_tokens[:per_step]
        == batch.sample_tokens[per_step : 2 * per_step]
        == batch.sample_tokens[2 * per_step :]
    )
    model = BEVFusion.from_config(config).train()
    route = model.trunk_of_each_sample(batch.modality).tolist()
    assert route == [MAIN] * per_step + [LIDAR_FREE] * per_step + [CAMERA_FREE] * per_step
    assert np.array_equal(batch.targets.heatmap[:per_step].numpy(), batch.targets.heatmap[2 * per_step :].numpy())
    outputs = model(batch)
    loss, _ = total_loss(outputs, batch.targets, batch.depth_target_bin, config.loss)
    assert torch.isfinite(loss)
    loss.backward()
    for prefix in (
        "lidar.",
        "camera.",
        "map.",
        "fuser.",
        "backbone.",
        "head.",
        "lidar_free.",
        "camera_free.fuser.",
        "camera_free.backbone.",
        "camera_free.head.",
    ):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads), prefix
        assert sum(float(g.abs().sum()) for g in grads) > 0, prefix
