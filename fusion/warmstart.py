"""Warm start: a model's branches and trunk initialised from models trained on fewer modalities.

The staged recipe BEVFusion popularised: train a lidar model and a camera model alone, then train
the fused model starting from their weights. Here a fused `BEVFusion` takes

- from the **first** checkpoint (the *trunk* source): its branches, the fuser's input weights of
  those branches, and the whole fuser output (batch norm), BEV backbone and head;
- from each **later** checkpoint: only the branches that no earlier source supplied.

The fuser's input channels of a branch no source supplied (the cameras, when the trunk is a
lidar(+map) model) start at zero. The warm-started model therefore computes exactly what the trunk
model computed, and the new branch earns its way in through training instead of adding noise to a
trained trunk on the first step.

An early-fusion model's camera network for painted scores (`fusion.painter`) comes from a source
that has one, else its image encoder from a source's camera branch.

A model's lidar-free trunk (`TrainConfig.lidar_free_trunk`) comes whole from the first source
without lidar that has cameras (the camera stage-one model): its fuser, backbone and head have the
same shapes there, so on samples without lidar the warm-started model computes what that model did.
Its camera-free trunk (`TrainConfig.camera_free_trunk`) comes likewise from the first source with
lidar and no cameras (the lidar stage-one model). A source that has such a trunk itself (a fused
model trained further) supplies it instead, when it comes first.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from avfusion.errors import InputError
from avfusion.fusion.checkpoint import load_checkpoint
from avfusion.fusion.config import FusionConfig
from avfusion.fusion.model import BEVFusion

BRANCHES: tuple[str, ...] = ("lidar", "camera", "map")
# Components whose config must agree between the trunk source and the model for the trunk to mean
# the same thing (same cells, same heads).
_TRUNK_COMPONENTS: tuple[str, ...] = ("grid", "fuser", "backbone", "head")
# Fields that change how a component is trained or run, not what its weights compute: a camera
# model trained without the lidar-guided lift warm-starts the camera branch of one that uses it.
# A fuser's strategy and late-fusion model change what is built around the shared weights, which
# `warm_start` matches by name and shape (a gated fuser's gate and a painted lidar encoder's paint
# columns are new and start at their initialisation / zero).
_FREE_FIELDS: dict[str, tuple[str, ...]] = {
    "camera": ("lift_at_lidar_depth",),
    "head": ("min_target_lidar_points",),
    "fuser": ("strategy", "late_model", "paint_scores"),
}
# The lidar encoder's linear layer: a painted model's has more input columns (the paint, last).
_LIDAR_LINEAR = "lidar.linear.weight"


def _same_weights(component: str, source: FusionConfig, config: FusionConfig) -> bool:
    """Whether `component` has the same config in both, the `_FREE_FIELDS` aside."""
    free = _FREE_FIELDS.get(component, ())
    ours, theirs = getattr(config, component), getattr(source, component)
    if free:
        theirs = dataclasses.replace(theirs, **{name: getattr(ours, name) for name in free})
    return theirs == ours


def _check_trunk_config(path: str, source: FusionConfig, config: FusionConfig) -> None:
    """Raise `InputError` naming `path` when a trunk source's `_TRUNK_COMPONENTS` differ from the model's."""
    for component in _TRUNK_COMPONENTS:
        if not _same_weights(component, source, config):
            raise InputError(f"warm start: {path} has a different {component} config than the model being trained")


@dataclass(frozen=True, slots=True)
class WarmStart:
    """What a warm start copied: `branch_sources[b]` is the checkpoint each branch came from
    (absent: trained from scratch), `trunk_source` the one of the fuser, backbone and head."""

    trunk_source: str
    branch_sources: dict[str, str]
    zeroed_fuser_inputs: tuple[str, ...]
    lidar_free_trunk_source: str | None = None
    camera_free_trunk_source: str | None = None
    painter_source: str | None = None

    def to_dict(self) -> dict:
        return {
            "trunk": self.trunk_source,
            "branches": dict(self.branch_sources),
            "zeroed_fuser_inputs": list(self.zeroed_fuser_inputs),
            "lidar_free_trunk": self.lidar_free_trunk_source,
            "camera_free_trunk": self.camera_free_trunk_source,
            "painter": self.painter_source,
        }


def _has(config: FusionConfig, branch: str) -> bool:
    """Whether the model built from `config` has `branch` (early fusion reads the cameras for paint
    only, without a camera branch)."""
    if branch == "camera":
        return config.builds_camera_branch
    return bool(getattr(config.train, f"use_{branch}"))


def warm_start(model: BEVFusion, config: FusionConfig, sources: Sequence[str | os.PathLike[str]]) -> WarmStart:
    """Copy weights into `model` (built from `config`) from `sources`, in place; see the module
    docstring for which weights come from where. Raises `InputError` naming the checkpoint and the
    component when a source was built with a different config for what it supplies."""
    if not sources:
        raise ValueError("warm_start needs at least one source checkpoint")
    target = model.state_dict()
    loaded = [(str(path), *load_checkpoint(path)) for path in sources]
    trunk_path, trunk_config, trunk_payload = loaded[0]
    _check_trunk_config(trunk_path, trunk_config, config)

    branch_sources: dict[str, str] = {}
    new_state = dict(target)
    for path, source_config, payload in loaded:
        state = payload["model"]
        for branch in BRANCHES:
            if branch in branch_sources or not (_has(config, branch) and _has(source_config, branch)):
                continue
            if not _same_weights(branch, source_config, config):
                raise InputError(f"warm start: {path} has a different {branch} config than the model being trained")
            names = [name for name in target if name.startswith(branch + ".")]
            for name in names:
                if name == _LIDAR_LINEAR and name in state and _widened(state[name], target[name]):
                    # A source with fewer paint columns (unpainted, or painted without scores): its
                    # columns, and zero for the new paint, so the model starts out computing what
                    # the source did.
                    weight = torch.zeros_like(target[name])
                    weight[:, : state[name].shape[1]] = state[name].to(weight.dtype)
                    new_state[name] = weight
                    continue
                if name not in state or state[name].shape != target[name].shape:
                    raise InputError(f"warm start: {path} lacks {name} of shape {tuple(target[name].shape)}")
                new_state[name] = state[name].to(target[name].dtype)
            branch_sources[branch] = path

    lidar_free_source = camera_free_source = None
    if model.lidar_free is not None:
        lidar_free_source = _copy_mode_trunk("lidar_free", target, new_state, loaded, config)
    if model.camera_free is not None:
        camera_free_source = _copy_mode_trunk("camera_free", target, new_state, loaded, config)

    trunk_state = trunk_payload["model"]
    trunk_prefixes = ("fuser.", "backbone.", "head.")
    fuser_weight = "fuser.layers.0.weight"
    for name in target:
        if name.startswith("fuser.gate.") and name not in trunk_state:
            continue  # a gated fuser's gate, new: it starts open (`fuser.GatedFuser`)
        if name.startswith(trunk_prefixes) and name != fuser_weight:
            if name not in trunk_state or trunk_state[name].shape != target[name].shape:
                raise InputError(f"warm start: {trunk_path} lacks {name} of shape {tuple(target[name].shape)}")
            new_state[name] = trunk_state[name].to(target[name].dtype)

    # The fuser's 3x3 conv, (out, in, 3, 3): the trunk's input channels go to where the same
    # branch sits in this model; a branch the trunk did not have starts at zero.
    trunk_slices = BEVFusion.from_config(trunk_config).fuser.input_slices()
    weight = torch.zeros_like(target[fuser_weight])
    zeroed = []
    for branch, where in model.fuser.input_slices().items():
        if branch in trunk_slices:
            weight[:, where] = trunk_state[fuser_weight][:, trunk_slices[branch]].to(weight.dtype)
        else:
            zeroed.append(branch)
    new_state[fuser_weight] = weight
    painter_source = _copy_painter(target, new_state, loaded) if model.painter is not None else None
    model.load_state_dict(new_state)
    return WarmStart(trunk_path, branch_sources, tuple(zeroed), lidar_free_source, camera_free_source, painter_source)


def _copy_painter(target: dict, new_state: dict, loaded: list) -> str | None:
    """Fill `new_state`'s `painter.*` (early fusion's camera network, `fusion.painter`) from the
    first source that has one, or else its image encoder from the first source with a camera
    branch of the same encoder (its classifier then keeps its initialisation) -> that source's
    path (None: none, the painter keeps its initialisation)."""
    names = [name for name in target if name.startswith("painter.")]
    for path, _, payload in loaded:
        state = payload["model"]
        if all(name in state and state[name].shape == target[name].shape for name in names):
            for name in names:
                new_state[name] = state[name].to(target[name].dtype)
            return path
    encoder = {name: "camera." + name.removeprefix("painter.") for name in names if name.startswith("painter.encoder.")}
    for path, _, payload in loaded:
        state = payload["model"]
        if all(theirs in state and state[theirs].shape == target[ours].shape for ours, theirs in encoder.items()):
            for ours, theirs in encoder.items():
                new_state[ours] = state[theirs].to(target[ours].dtype)
            return path
    return None


def _widened(source: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether `target` is `source` with more input columns (a 2-D weight)."""
    return source.ndim == target.ndim == 2 and source.shape[0] == target.shape[0] and source.shape[1] < target.shape[1]


def _copy_mode_trunk(mode: str, target: dict, new_state: dict, loaded: list, config: FusionConfig) -> str | None:
    """Fill `new_state`'s `<mode>.*` (`lidar_free` or `camera_free`) from the first source that
    either has such a trunk itself (a fused model being trained further) or has the one primary
    sensor that trunk serves -> its path (None: no such source, the trunk keeps its
    initialisation)."""
    kept, dropped = {"lidar_free": ("camera", "lidar"), "camera_free": ("lidar", "camera")}[mode]
    prefix = mode + "."
    for path, source_config, payload in loaded:
        state = payload["model"]
        # A fused source names the trunk's weights as this model does; a single-sensor source
        # holds them as its own fuser, backbone and head.
        own_trunk = any(name.startswith(prefix) for name in state)
        if not own_trunk and (_has(source_config, dropped) or not _has(source_config, kept)):
            continue
        if _has(source_config, "map") != _has(config, "map"):
            raise InputError(
                f"warm start: {path} differs in having a map branch, so its trunk cannot be the {mode} trunk"
            )
        _check_trunk_config(path, source_config, config)
        for name, tensor in target.items():
            if name.startswith(prefix):
                source_name = name if own_trunk else name.removeprefix(prefix)
                if source_name not in state or state[source_name].shape != tensor.shape:
                    raise InputError(f"warm start: {path} lacks {source_name} of shape {tuple(tensor.shape)}")
                new_state[name] = state[source_name].to(tensor.dtype)
        return path
    return None
