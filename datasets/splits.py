"""Split names -> scene names, the one resolver every command uses (replay, eval, train, bench).

nuscenes-devkit 1.2.0 decides a split's scenes by name: a built-in name (train, val, test,
mini_train, mini_val, train_detect, train_track) always means its own hard-coded scene list, and
only other names are read from `<version>/splits.json`. The metric follows the devkit, so every
command resolves names in the same order:

1. a built-in name, when the version is the one it belongs to (`mini_val` needs a `-mini`
   version): the devkit's scene list;
2. a name that `<version>/splits.json` defines;
3. `synth_<name>` when splits.json defines it (synthetic logs name their splits `synth_train`,
   `synth_val`, `synth_all`, so `--split val` on a synthetic log means `synth_val`);
4. otherwise an `InputError` listing what is defined.

A splits.json that defines a built-in name is refused: the devkit would evaluate that name with its
own scene list, not the file's, so a replay and its evaluation would disagree.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from avfusion.errors import FileFormatError, InputError

# The devkit's built-in split names and the version suffix each belongs to (nuscenes/utils/splits.py).
DEVKIT_SPLIT_VERSIONS: dict[str, str] = {
    "train": "trainval",
    "val": "trainval",
    "train_detect": "trainval",
    "train_track": "trainval",
    "mini_train": "mini",
    "mini_val": "mini",
    "test": "test",
}
SYNTHETIC_PREFIX = "synth_"


@dataclass(frozen=True, slots=True)
class ResolvedSplit:
    """What a split name means for one dataroot/version.

    name: the split actually used (`synth_val` for `val` on a synthetic log).
    scene_names: its scenes, in the order the split lists them.
    predefined: whether it is one of the devkit's built-in splits (the metric then keeps the
        results file's sample order, see `eval.data`).
    """

    name: str
    scene_names: tuple[str, ...]
    predefined: bool


def read_splits_file(dataroot: str | os.PathLike[str], version: str) -> dict[str, list[str]]:
    """`<version>/splits.json` as name -> scene names ({} when absent), checked: an object of lists
    of strings that reuses no devkit built-in name."""
    path = Path(dataroot) / version / "splits.json"
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    try:
        splits = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(path, f"not valid JSON ({error})") from None
    if not isinstance(splits, dict):
        raise FileFormatError(path, f"expected an object of split name -> scene names, found {type(splits).__name__}")
    for name, scenes in splits.items():
        if not isinstance(scenes, list) or not all(isinstance(scene, str) for scene in scenes):
            raise FileFormatError(path, f"split {name!r} must be a list of scene names")
    reused = sorted(set(splits) & set(DEVKIT_SPLIT_VERSIONS))
    if reused:
        raise FileFormatError(
            path,
            f"defines {', '.join(map(repr, reused))}, a nuscenes-devkit built-in split name: the devkit (and the metric) "
            f"would use its own scene list for it, not this file's; rename it (e.g. {SYNTHETIC_PREFIX}{reused[0]})",
        )
    return splits


def resolve_split(dataroot: str | os.PathLike[str], version: str, split: str) -> ResolvedSplit:
    """The scenes of `split` for `dataroot`/`version`, in the order of the module docstring."""
    custom = read_splits_file(dataroot, version)
    suffix = DEVKIT_SPLIT_VERSIONS.get(split)
    if suffix is not None and version.endswith(suffix):
        from nuscenes.utils.splits import create_splits_scenes

        return ResolvedSplit(split, tuple(create_splits_scenes(verbose=False)[split]), True)
    for name in (split, SYNTHETIC_PREFIX + split):
        if name in custom:
            return ResolvedSplit(name, tuple(custom[name]), False)
    where = Path(dataroot) / version
    if suffix is not None:
        raise InputError(
            f"split {split!r} is a nuscenes-devkit split of the {suffix!r} version, not of {version!r}, and "
            f"{where / 'splits.json'} defines neither it nor {SYNTHETIC_PREFIX + split!r} ({sorted(custom) or 'no splits'})"
        )
    raise InputError(
        f"unknown split {split!r} for {where}: splits.json defines {sorted(custom) or 'none'}; the nuscenes-devkit "
        f"splits are {sorted(DEVKIT_SPLIT_VERSIONS)}"
    )
