"""One split resolver for every command: the same names mean the same scenes in replay, train,
bench and eval, and a splits.json that reuses a devkit built-in name is refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avfusion.datasets.frames import open_frames
from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.datasets.splits import resolve_split
from avfusion.errors import FileFormatError, InputError
from avfusion.eval.data import split_scene_names

VERSION = "v1.0-tiny"


def write_splits(root: Path, splits: object) -> None:
    (root / VERSION / "splits.json").write_text(json.dumps(splits))


def test_a_builtin_name_in_splits_json_is_refused_by_every_command(tiny_log_copy) -> None:
    root = tiny_log_copy()
    write_splits(root, {"mini_val": ["scene-tiny-0001"], "synth_val": ["scene-tiny-0001"]})
    reason = r"splits.json: defines 'mini_val', a nuscenes-devkit built-in split name: the devkit \(and the metric\) would use its own"
    for resolve in (
        lambda: resolve_split(root, VERSION, "synth_val"),
        lambda: NuScenesLog.open(root, VERSION, split="synth_val"),  # replay
        lambda: open_frames(str(root), VERSION, "synth_val", None, FrameOptions()),  # train, bench
        lambda: split_scene_names(root, VERSION, "synth_val"),  # eval
    ):
        with pytest.raises(FileFormatError, match=reason):
            resolve()


def test_every_command_resolves_a_name_in_the_same_order(tiny_log_copy) -> None:
    root = tiny_log_copy()
    write_splits(root, {"synth_val": ["scene-tiny-0001"], "custom": []})
    # A devkit name of another version falls through to the synthetic alias, for replay and eval alike.
    resolved = resolve_split(root, VERSION, "val")
    assert (resolved.name, resolved.scene_names, resolved.predefined) == ("synth_val", ("scene-tiny-0001",), False)
    assert split_scene_names(root, VERSION, "val") == (["scene-tiny-0001"], False)
    assert NuScenesLog.open(root, VERSION, split="val").scene_names == ("scene-tiny-0001",)
    # A devkit name of this version is the devkit's list, whatever splits.json holds.
    mini = resolve_split(root, "v1.0-mini", "mini_val")
    assert mini.predefined and "scene-0103" in mini.scene_names
    with pytest.raises(
        InputError, match=r"split 'train' is a nuscenes-devkit split of the 'trainval' version, not of 'v1.0-tiny'"
    ):
        resolve_split(root, VERSION, "train")
    with pytest.raises(InputError, match=r"unknown split 'nope' .*splits.json defines \['custom', 'synth_val'\]"):
        NuScenesLog.open(root, VERSION, split="nope")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected an object of split name -> scene names, found list"),
        ('{"synth_val": "scene-tiny-0001"}', "split 'synth_val' must be a list of scene names"),
        ('{"synth_val": [1]}', "split 'synth_val' must be a list of scene names"),
    ],
)
def test_a_malformed_splits_json_is_named(tiny_log_copy, content: str, expected: str) -> None:
    root = tiny_log_copy()
    (root / VERSION / "splits.json").write_text(content)
    with pytest.raises(FileFormatError, match=f"splits.json: {expected}"):
        resolve_split(root, VERSION, "synth_val")
