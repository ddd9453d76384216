"""Warm start (`fusion.warmstart`): a fused model built from a lidar(+map) and a camera(+map) model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from avfusion.errors import InputError
from avfusion.fusion.batch import collate
from avfusion.fusion.checkpoint import load_checkpoint, save_checkpoint
from avfusion.fusion.config import FusionConfig, tiny_for_tests
from avfusion.fusion.model import BEVFusion
from avfusion.fusion.train import train
from avfusion.fusion.warmstart import warm_start


def _with_modalities(config: FusionConfig, *, lidar: bool, camera: bool, map: bool) -> FusionConfig:
    return config.replace(train=dataclasses.replace(config.train, use_lidar=lidar, use_camera=camera, use_map=map))


def _trained_like(config: FusionConfig, seed: int) -> BEVFusion:
    """A model with random, non-default weights everywhere, batch-norm statistics included."""
    torch.manual_seed(seed)
    model = BEVFusion.from_config(config)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5 if "running_var" in name else torch.randn_like(value) * 0.1)
    return model.eval()


@pytest.fixture
def sources(tmp_path):
    base = tiny_for_tests()
    lidar_config = _with_modalities(base, lidar=True, camera=False, map=True)
    camera_config = _with_modalities(base, lidar=False, camera=True, map=True)
    lidar_model, camera_model = _trained_like(lidar_config, 1), _trained_like(camera_config, 2)
    save_checkpoint(tmp_path / "lidar.pt", lidar_config, {"model": lidar_model.state_dict()})
    save_checkpoint(tmp_path / "camera.pt", camera_config, {"model": camera_model.state_dict()})
    return base, lidar_model, camera_model, tmp_path


def test_fused_model_warm_started_from_lidar_then_camera_computes_the_lidar_model(sources, frame_factory) -> None:
    base, lidar_model, camera_model, folder = sources
    fused_config = _with_modalities(base, lidar=True, camera=True, map=True)
    torch.manual_seed(3)
    fused = BEVFusion.from_config(fused_config)
    report = warm_start(fused, fused_config, [folder / "lidar.pt", folder / "camera.pt"])
    assert report.branch_sources == {
        "lidar": str(folder / "lidar.pt"),
        "map": str(folder / "lidar.pt"),
        "camera": str(folder / "camera.pt"),
    }
    assert report.zeroed_fuser_inputs == ("camera",)

    # Branches come from their sources; the map from the first one that has it (the trunk).
    fused_state, lidar_state, camera_state = fused.state_dict(), lidar_model.state_dict(), camera_model.state_dict()
    for name, value in fused_state.items():
        if name.startswith("camera."):
            torch.testing.assert_close(value, camera_state[name], rtol=0, atol=0, msg=name)
        elif name.startswith(("lidar.", "map.", "backbone.", "head.")) or (
            name.startswith("fuser.") and "layers.0." not in name
        ):
            torch.testing.assert_close(value, lidar_state[name], rtol=0, atol=0, msg=name)
    weight = fused_state["fuser.layers.0.weight"]
    slices = fused.fuser.input_slices()
    assert float(weight[:, slices["camera"]].abs().sum()) == 0.0
    assert float(weight[:, slices["lidar"]].abs().sum()) > 0 and float(weight[:, slices["map"]].abs().sum()) > 0

    # With the camera inputs at zero, the fused model computes exactly what the lidar model does.
    batch = collate([frame_factory(0), frame_factory(1)], fused_config)
    with torch.no_grad():
        expected = lidar_model(batch)
        found = fused.eval()(batch)
    torch.testing.assert_close(found.heatmap_logits, expected.heatmap_logits, rtol=1e-5, atol=1e-5)
    for field in ("offset", "z", "log_size", "yaw_sincos", "velocity", "attribute_logits"):
        torch.testing.assert_close(getattr(found, field), getattr(expected, field), rtol=1e-5, atol=1e-5, msg=field)


def test_warm_start_refuses_a_source_built_for_another_grid(sources) -> None:
    base, _, _, folder = sources
    other = _with_modalities(base, lidar=True, camera=False, map=True)
    other = other.replace(grid=dataclasses.replace(other.grid, cell_m=other.grid.cell_m * 2))
    save_checkpoint(folder / "coarse.pt", other, {"model": BEVFusion.from_config(other).state_dict()})
    fused_config = _with_modalities(base, lidar=True, camera=True, map=True)
    with pytest.raises(InputError, match=r"coarse\.pt has a different grid config"):
        warm_start(BEVFusion.from_config(fused_config), fused_config, [folder / "coarse.pt"])
    with pytest.raises(InputError, match="does not exist"):
        warm_start(BEVFusion.from_config(fused_config), fused_config, [folder / "missing.pt"])


def test_training_records_its_warm_start_and_a_resume_keeps_training_the_same_weights(sources, frame_factory) -> None:
    base, lidar_model, _, folder = sources
    config = _with_modalities(base, lidar=True, camera=True, map=True)
    config = config.replace(train=dataclasses.replace(config.train, epochs=2))
    frames = [frame_factory(seed) for seed in range(2)]
    init = [folder / "lidar.pt", folder / "camera.pt"]
    straight = train(config, frames, folder / "straight", progress=False, checkpoint_every=1, init_from=init)
    recorded = json.loads((folder / "straight" / "warm_start.json").read_text())
    assert recorded["trunk"] == str(folder / "lidar.pt") and recorded["zeroed_fuser_inputs"] == ["camera"]
    # Training moved the weights away from the warm start (the step is real) ...
    _, trained = load_checkpoint(straight.weights_path)
    moved = trained["model"]["head.shared.0.weight"] - lidar_model.state_dict()["head.shared.0.weight"]
    assert float(moved.abs().max()) > 0
    # ... and a resumed run continues from its checkpoint, not from the warm start again.
    train(config, frames, folder / "resumed", progress=False, max_steps=1, checkpoint_every=1, init_from=init)
    resumed = train(config, frames, folder / "resumed", resume=True, progress=False, checkpoint_every=1, init_from=init)
    _, again = load_checkpoint(resumed.weights_path)
    for name, value in trained["model"].items():
        torch.testing.assert_close(again["model"][name], value, msg=f"{name} differs after resuming")


def test_training_only_options_do_not_block_a_warm_start_but_weight_shapes_do(sources) -> None:
    """The guided lift and the target filter change how a model is run or trained, not its weights."""
    base, _, camera_model, folder = sources
    fused_config = _with_modalities(base, lidar=True, camera=True, map=True)
    fused_config = fused_config.replace(
        camera=dataclasses.replace(fused_config.camera, lift_at_lidar_depth=True),
        head=dataclasses.replace(fused_config.head, min_target_lidar_points=5),
    )
    model = BEVFusion.from_config(fused_config)
    record = warm_start(model, fused_config, [folder / "lidar.pt", folder / "camera.pt"])
    assert record.branch_sources["camera"].endswith("camera.pt")
    torch.testing.assert_close(model.camera.state_dict(), camera_model.camera.state_dict())
    # Another number of depth bins is another camera branch: refused by name.
    other = _with_modalities(base, lidar=False, camera=True, map=True)
    other = other.replace(camera=dataclasses.replace(other.camera, num_depth_bins=other.camera.num_depth_bins + 2))
    save_checkpoint(folder / "deeper.pt", other, {"model": BEVFusion.from_config(other).state_dict()})
    with pytest.raises(InputError, match=r"deeper\.pt has a different camera config"):
        warm_start(BEVFusion.from_config(fused_config), fused_config, [folder / "lidar.pt", folder / "deeper.pt"])


def test_a_fused_model_trained_further_keeps_its_own_mode_trunks(tmp_path) -> None:
    """Warm-starting from a fused model that has lidar-free and camera-free trunks copies every
    weight of it, the trunks included (they are not left at their initialisation)."""
    base = tiny_for_tests()
    config = base.replace(train=dataclasses.replace(base.train, lidar_free_trunk=True, camera_free_trunk=True))
    source = _trained_like(config, 4)
    assert source.lidar_free is not None and source.camera_free is not None
    save_checkpoint(tmp_path / "fused.pt", config, {"model": source.state_dict()})
    torch.manual_seed(5)
    model = BEVFusion.from_config(config)
    report = warm_start(model, config, [tmp_path / "fused.pt"])
    assert report.lidar_free_trunk_source == report.camera_free_trunk_source == str(tmp_path / "fused.pt")
    expected = source.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)
