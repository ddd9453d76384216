"""A gated model's gate map: kept by `avfusion replay --save-bev`, read back for the viewer, and
computed live when the viewer runs the detector itself; all three agree with the fuser's gate.

The network is the tiny preset with the gated fuser and seeded random weights; the gate's conv
gets random weights too (it starts at zero, an all-equal gate that would test nothing).
"""

from __future__ import annotations

import glob
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.fusion.checkpoint import save_checkpoint
from avfusion.fusion.config import configure
from avfusion.fusion.fuser import GatedFuser
from avfusion.fusion.model import BEVFusion
from avfusion.tools.replay.engine import run_replay
from avfusion.tools.replay.frames import FrameProcessor
from avfusion.tools.replay.types import ReplayRequest
from avfusion.tools.viz import render
from avfusion.tools.viz.scene import DetectorPredictions
from avfusion.tools.viz.viewer import RunPredictions, SceneFrames, read_bev_gate

VERSION = "v1.0-mini"


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AVFUSION_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(log root, checkpoint, run folder) of a replay of a one-keyframe scene with --save-bev."""
    root = make_synthetic_log(
        tmp_path_factory.mktemp("log") / "log", num_scenes=1, seconds=0.5, seed=3, image_scale=0.125, progress=False
    )
    torch.manual_seed(0)
    config = configure("tiny", fusion="gated")
    model = BEVFusion.from_config(config)
    assert isinstance(model.fuser, GatedFuser)
    with torch.no_grad():
        model.fuser.gate.weight.normal_(0.0, 0.5)
        model.fuser.gate.bias.zero_()
    checkpoint = tmp_path_factory.mktemp("weights") / "gated.pt"
    save_checkpoint(checkpoint, config, {"model": model.state_dict()})
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    request = ReplayRequest(
        dataroot=root, version=VERSION, out_dir=run_dir, checkpoint=checkpoint, save_bev=True, evaluate=False
    )
    run_replay(request, progress=False)
    return root, checkpoint, run_dir


@pytest.fixture(scope="module")
def processor(gated_run: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> FrameProcessor:
    """The gated detector and the frame reader options the replay used."""
    root, checkpoint, _ = gated_run
    out = tmp_path_factory.mktemp("unused")
    return FrameProcessor(ReplayRequest(dataroot=root, version=VERSION, out_dir=out, checkpoint=checkpoint))


def test_replay_keeps_the_gate_the_fuser_computed(
    gated_run: tuple[Path, Path, Path], processor: FrameProcessor
) -> None:
    root, _, run_dir = gated_run
    log = NuScenesLog.open(root, VERSION)
    tokens = log.sample_tokens()
    assert len(tokens) == 1
    fuser = processor.detector.model.fuser
    grid = processor.detector.config.grid
    for token in tokens:
        with np.load(run_dir / "bev" / f"{token}.npz", allow_pickle=False) as kept:
            assert kept.files == ["heatmap", "x_range_m", "y_range_m", "gate", "gate_branches"]
            assert kept["gate"].dtype == np.float16 and list(kept["gate_branches"]) == ["lidar", "camera", "map"]
        gate = read_bev_gate(run_dir / "bev" / f"{token}.npz")
        assert gate is not None and gate.values.shape == (3, grid.shape_hw[0], grid.shape_hw[1])
        assert gate.x_range_m == grid.x_range_m and gate.y_range_m == grid.y_range_m
        assert gate.values.std() > 0.01  # varies over the grid
        # The same frame through the detector again: the fuser's gate is what the file holds.
        processor.detector.detect(log.frame(token, processor.frame_options))
        np.testing.assert_allclose(gate.values, fuser.last_gate[0].numpy(), atol=1e-3)


def test_viewer_shows_the_gate_from_a_run_and_live(
    gated_run: tuple[Path, Path, Path], processor: FrameProcessor
) -> None:
    root, _, run_dir = gated_run
    log = NuScenesLog.open(root, VERSION)
    token = log.sample_tokens()[0]
    kept = read_bev_gate(run_dir / "bev" / f"{token}.npz")
    assert kept is not None

    def load(sample_token: str):
        return log.frame(sample_token, processor.frame_options)

    from_run = SceneFrames(load, [token], RunPredictions(run_dir))[0]
    live = DetectorPredictions(processor.detector)(load(token))
    assert from_run.gate_bev is not None and live.gate is not None and live.heatmap is not None
    assert from_run.gate_bev.branch_names == live.gate.branch_names == ("lidar", "camera", "map")
    np.testing.assert_allclose(from_run.gate_bev.values, kept.values)
    np.testing.assert_allclose(live.gate.values, kept.values, atol=1e-3)  # the file is float16
    assert live.gate.x_range_m == kept.x_range_m and live.gate.y_range_m == kept.y_range_m


_VIZ_SCRIPT = textwrap.dedent(
    """
    import sys
    from avfusion.tools.cli import main

    common = sys.argv[1:-2]
    sys.exit(main([*common, "--out", sys.argv[-2]]) or main([*common, "--no-gate", "--out", sys.argv[-1]]))
    """
)


def test_viz_headless_draws_the_gate_unless_asked_not_to(gated_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    if not (glob.glob("/usr/share/vulkan/icd.d/*.json") or glob.glob("/usr/lib/*/libEGL_mesa.so*")):
        pytest.skip("no Vulkan ICD or Mesa EGL: install libvulkan1 mesa-vulkan-drivers (make system-deps)")
    root, _, run_dir = gated_run
    common = ["viz", "--dataroot", str(root), "--version", VERSION, "--run", str(run_dir), "--headless", "--no-video"]
    result = subprocess.run(  # noqa: PLW1510 - the return code is asserted below with stderr shown
        [sys.executable, "-c", _VIZ_SCRIPT, *common, str(tmp_path / "gate"), str(tmp_path / "heat")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (gate_png,) = sorted((tmp_path / "gate").glob("*.png"))
    (heat_png,) = sorted((tmp_path / "heat").glob("*.png"))
    with_gate = cv2.imread(str(gate_png))[..., ::-1].astype(np.int64)
    with_heat = cv2.imread(str(heat_png))[..., ::-1].astype(np.int64)
    view = render.BevView()
    token = NuScenesLog.open(root, VERSION).sample_tokens()[0]
    gate = read_bev_gate(run_dir / "bev" / f"{token}.npz")
    assert gate is not None
    # On the network's grid the ground is the gate composite (the drivable area under it shifts a
    # colour by at most 0.2 * 70; lidar points cover some pixels): most pixels match it. The
    # heatmap picture, dark there, does not.
    expected = render.ground_texture(None, None, view, frozenset({render.Layer.GATE}), gate).astype(np.int64)
    (x0, x1), (y0, y1) = gate.x_range_m, gate.y_range_m
    (left, top), (right, bottom) = render.bev_pixel_from_ego(np.array([[x1, y1], [x0, y0]]), view).astype(int)
    region = (slice(top, bottom), slice(left, right))

    def matching(picture: np.ndarray) -> float:
        return float((np.abs(picture[region] - expected[region]).max(axis=2) <= 20).mean())

    assert matching(with_gate) > 0.6 and matching(with_heat) < 0.2, (matching(with_gate), matching(with_heat))
    # The key under the title names the branches in their colours; the heatmap picture has none.
    key_gate, key_heat = with_gate[28:54, :400], with_heat[28:54, :400]
    for channel in range(3):
        others = [c for c in range(3) if c != channel]
        in_colour = (key_gate[..., channel] > 200) & (key_gate[..., others] < 150).all(axis=-1)
        assert in_colour.sum() > 10, f"no key text in channel {channel}"
    assert not ((key_heat[..., 2] > 200) & (key_heat[..., :2] < 150).all(axis=-1)).any()
