"""`avfusion train` refuses what would silently lose or spoil a run: an earlier run in --out without
--resume/--force, counts and rates that make no run, a config changed on resume, a loss that turns
NaN; a checkpoint with non-finite weights is refused at load."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch

from avfusion.errors import FileFormatError, InputError
from avfusion.fusion.checkpoint import load_checkpoint, save_checkpoint
from avfusion.fusion.config import TrainConfig, configure, tiny_for_tests
from avfusion.fusion.model import BEVFusion
from avfusion.fusion.train import TrainingDiverged, train
from avfusion.tools.cli import main


def _config(**train_changes):
    config = tiny_for_tests()
    return config.replace(train=dataclasses.replace(config.train, **train_changes)) if train_changes else config


def test_an_earlier_run_is_neither_overwritten_nor_mixed(frame_factory, tmp_path: Path) -> None:
    frames = [frame_factory(seed) for seed in range(2)]
    out = tmp_path / "run"
    train(_config(), frames, out, progress=False, max_steps=1)
    weights = (out / "weights.pt").read_bytes()
    with pytest.raises(
        InputError, match=r"--out .*run already holds a training run \(config.json, checkpoint_last.pt, weights.pt"
    ):
        train(_config(), frames, out, progress=False, max_steps=1)
    assert (out / "weights.pt").read_bytes() == weights
    # --force replaces it: the loss log starts again.
    train(_config(), frames, out, progress=False, max_steps=1, overwrite=True)
    assert len((out / "loss_log.jsonl").read_text().splitlines()) == 1
    # A resume with another config names what differs.
    with pytest.raises(
        InputError, match=r"--resume: .*checkpoint_last.pt was made with another config \(train.learning_rate differ"
    ):
        train(_config(learning_rate=1e-4), frames, out, resume=True, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"--out .*file: is a file, not a run folder"):
        train(_config(), frames, tmp_path / "file", progress=False)


def test_a_batch_larger_than_the_samples_is_refused(frame_factory, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--batch-size 3 is larger than the 2 training samples"):
        train(_config(batch_size=3), [frame_factory(0), frame_factory(1)], tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"epochs": -1}, "--epochs must be a positive integer, got -1"),
        ({"epochs": 0}, "--epochs must be a positive integer, got 0"),
        ({"batch_size": 0}, "--batch-size must be a positive integer, got 0"),
        ({"learning_rate": math.nan}, "--lr must be a finite number, got nan"),
        ({"learning_rate": math.inf}, "--lr must be a finite number, got inf"),
        ({"learning_rate": -0.1}, "--lr must be > 0, got -0.1"),
        ({"seed": -2}, "--seed must be a non-negative integer, got -2"),
        ({"heading_weight": 0.0}, "--heading-weight must be a number > 0, got 0.0"),
        ({"heading_weight": math.nan}, "--heading-weight must be a number > 0, got nan"),
        ({"weather": 1.5}, "--weather must be a probability in [0, 1], got 1.5"),
        ({"weather": math.nan}, "--weather must be a probability in [0, 1], got nan"),
    ],
)
def test_train_arguments_are_checked(changes, expected) -> None:
    with pytest.raises(InputError, match=re.escape(expected)):
        configure("cpu", **changes)


def test_heading_weight_sets_the_sin_and_cos_channels_only() -> None:
    config = configure("cpu", heading_weight=3.0)
    assert config.loss.regression_channel_weights == (1.0,) * 6 + (3.0, 3.0) + (1.0, 1.0)
    assert config.replace(loss=configure("cpu").loss) == configure("cpu")


def test_weather_sets_the_weather_share_only() -> None:
    config = configure("cpu", weather=0.3)
    assert config.augment.weather_probability == 0.3
    assert config.replace(augment=configure("cpu").augment) == configure("cpu")


def test_a_config_file_with_bad_training_values_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"train\.grad_clip_norm must be > 0, got 0"):
        TrainConfig(grad_clip_norm=0)
    config = tiny_for_tests().to_dict()
    config["train"]["weight_decay"] = -1.0
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    with pytest.raises(FileFormatError, match=r"c.json: config section 'train': train.weight_decay must be >= 0"):
        configure("cpu", str(path))


def test_cli_counts_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in (
        (["--epochs", "-1"], "--epochs must be a positive integer, got -1"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1, got 0"),
        (["--resume", "--force"], "pass one of them"),
    ):
        code = main(["train", "--dataroot", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


def test_a_loss_that_turns_nan_stops_with_a_clear_error(frame_factory, tmp_path: Path) -> None:
    frames = [frame_factory(seed) for seed in range(2)]
    # A learning rate this large sends the weights to infinity within a few steps.
    config = _config(learning_rate=1e30, grad_clip_norm=1e30, epochs=20)
    with pytest.raises(
        TrainingDiverged,
        match=r"train: the loss became (nan|inf) at step \d+ \(learning rate .*stopped.*try a lower --lr",
    ):
        train(config, frames, tmp_path / "run", progress=False, checkpoint_every=1000)
    assert not (tmp_path / "run" / "weights.pt").exists()


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_for_tests()
    state = BEVFusion.from_config(config).state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 3)
    state[name] = state[name].clone()
    state[name].view(-1)[:3] = torch.tensor([math.nan, math.inf, 0.0])
    save_checkpoint(tmp_path / "nan.pt", config, {"model": state})
    with pytest.raises(FileFormatError, match=f"nan.pt: weight '{name}' has 2 NaN or infinite value"):
        load_checkpoint(tmp_path / "nan.pt")
