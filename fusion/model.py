"""`BEVFusion`: the branches, fuser, backbone and head composed; `from_config` is the one place
that reads a `FusionConfig`."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from avfusion.fusion.backbone import BEVBackbone
from avfusion.fusion.batch import FusionBatch, ModalityMask
from avfusion.fusion.camera import CameraBranch
from avfusion.fusion.config import FusionConfig
from avfusion.fusion.fuser import ConvFuser
from avfusion.fusion.head import CenterHead, HeadOutputs
from avfusion.fusion.lidar import PillarEncoder
from avfusion.fusion.map import MapEncoder
from avfusion.fusion.painter import PaintScorer


class ModeTrunk(nn.Module):
    """The fuser, BEV backbone and head a fused model runs on the samples of one sensor mode.

    The lidar-free trunk's fuser takes only the camera and map maps, so it has the shapes of a
    camera(+map) model's trunk; the camera-free trunk's takes the lidar and map maps, a lidar(+map)
    model's. Each warm-starts from such a model (`fusion.warmstart`).
    """

    def __init__(self, fuser: ConvFuser, backbone: BEVBackbone, head: CenterHead) -> None:
        super().__init__()
        self.fuser, self.backbone, self.head = fuser, backbone, head


def _trunk_modules(
    config: FusionConfig, lidar_channels: int, camera_channels: int, map_channels: int, main: bool = True
) -> tuple[ConvFuser, BEVBackbone, CenterHead]:
    """A fuser over the given branch channels (0 = branch absent), and the backbone and head after it.
    The strategy's fuser is the main trunk's; a mode trunk (one sensor, `main` False) concatenates."""
    fuser_config = config.fuser if main else dataclasses.replace(config.fuser, strategy="intermediate")
    fuser = ConvFuser.from_config(fuser_config, lidar_channels, camera_channels, map_channels)
    backbone = BEVBackbone.from_config(config.backbone, fuser.channels)
    return fuser, backbone, CenterHead.from_config(config.head, backbone.out_channels)


def _trunk_outputs(
    fuser: ConvFuser,
    backbone: BEVBackbone,
    head: CenterHead,
    fuser_inputs: tuple,
    depth_logits: torch.Tensor,
    camera_index: torch.Tensor,
) -> HeadOutputs:
    return head(backbone(fuser(*fuser_inputs)), depth_logits, camera_index)


# Which trunk a sample goes to (`BEVFusion.trunk_of_each_sample`).
MAIN, LIDAR_FREE, CAMERA_FREE = 0, 1, 2


def _select(tensor: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor.index_select(0, index)


def merge_by_sample(
    parts: list[tuple[torch.Tensor, HeadOutputs]],
    batch_size: int,
    depth_logits: torch.Tensor,
    camera_index: torch.Tensor,
) -> HeadOutputs:
    """One `HeadOutputs` of `batch_size` samples from trunk outputs of disjoint sample subsets
    (`(index (B_i,), outputs)` pairs covering every sample once); the per-camera depth logits are
    the branch's own, not a trunk's."""
    index = torch.cat([where for where, _ in parts])
    order = torch.empty_like(index)
    order[index] = torch.arange(batch_size, device=index.device)  # inverse permutation
    dense = {}
    for name in ("heatmap_logits", "offset", "z", "log_size", "yaw_sincos", "velocity", "attribute_logits"):
        dense[name] = torch.cat([getattr(outputs, name) for _, outputs in parts]).index_select(0, order)
    return HeadOutputs(**dense, depth_logits=depth_logits, depth_camera_index=camera_index)


class BEVFusion(nn.Module):
    """Lidar / camera / map branches -> fuser -> BEV backbone -> center head.

    A branch given as None is absent from the model (single-modality ablations); a sensor missing
    from a sample is announced by the batch's `ModalityMask` and zeroed in the fuser. A model with a
    `lidar_free` trunk runs the samples without lidar through it instead (`TrainConfig.lidar_free_trunk`).
    """

    def __init__(
        self,
        *,
        lidar: PillarEncoder | None,
        camera: CameraBranch | None,
        map: MapEncoder | None,
        fuser: ConvFuser,
        backbone: BEVBackbone,
        head: CenterHead,
        depth_bins: int,
        feature_hw: tuple[int, int],
        lidar_free: ModeTrunk | None = None,
        camera_free: ModeTrunk | None = None,
        painter: PaintScorer | None = None,
    ) -> None:
        super().__init__()
        if lidar is None and camera is None and map is None:
            raise ValueError("BEVFusion needs at least one branch")
        if lidar_free is not None and (lidar is None or camera is None):
            raise ValueError("BEVFusion: a lidar-free trunk needs both a lidar and a camera branch")
        if camera_free is not None and (lidar is None or camera is None):
            raise ValueError("BEVFusion: a camera-free trunk needs both a lidar and a camera branch")
        self.lidar, self.camera, self.map = lidar, camera, map
        self.fuser, self.backbone, self.head = fuser, backbone, head
        self.lidar_free, self.camera_free = lidar_free, camera_free
        self.depth_bins, self.feature_hw = depth_bins, feature_hw
        # Early fusion with painted scores: the camera network whose scores the points carry.
        self.painter = painter

    @staticmethod
    def from_config(config: FusionConfig) -> BEVFusion:
        train = config.train
        lidar = (
            PillarEncoder.from_config(config.lidar, config.grid, paint_channels=config.paint_channels)
            if train.use_lidar
            else None
        )
        camera = CameraBranch.from_config(config.camera, config.grid) if config.builds_camera_branch else None
        map_encoder = MapEncoder.from_config(config.map) if train.use_map else None
        camera_channels = camera.channels if camera else 0
        map_channels = map_encoder.channels if map_encoder else 0
        lidar_channels = lidar.channels if lidar else 0
        fuser, backbone, head = _trunk_modules(config, lidar_channels, camera_channels, map_channels)
        lidar_free = camera_free = None
        if config.builds_lidar_free_trunk:
            lidar_free = ModeTrunk(*_trunk_modules(config, 0, camera_channels, map_channels, main=False))
        if config.builds_camera_free_trunk:
            camera_free = ModeTrunk(*_trunk_modules(config, lidar_channels, 0, map_channels, main=False))
        return BEVFusion(
            lidar=lidar,
            camera=camera,
            map=map_encoder,
            fuser=fuser,
            backbone=backbone,
            head=head,
            depth_bins=config.camera.num_depth_bins,
            feature_hw=config.camera.feature_hw,
            lidar_free=lidar_free,
            camera_free=camera_free,
            painter=PaintScorer(config.camera, config.head.num_classes) if config.paints_scores else None,
        )

    def trunk_of_each_sample(self, modality: ModalityMask) -> torch.Tensor:
        """`(B,)` int64: `MAIN`, or `LIDAR_FREE` for a sample without lidar when the model has that
        trunk, or `CAMERA_FREE` for a sample with lidar and no camera when it has that one."""
        route = torch.full_like(modality.lidar, MAIN, dtype=torch.int64)
        if self.lidar_free is not None:
            route[~modality.lidar] = LIDAR_FREE
        if self.camera_free is not None:
            route[modality.lidar & ~modality.camera.any(dim=1)] = CAMERA_FREE
        return route

    def forward(self, batch: FusionBatch) -> HeadOutputs:
        features, paint_logits = batch.pillar_features, None
        if self.painter is not None:
            features, paint_logits = self.painter(
                features, batch.pillar_coords_bij, batch.images, batch.modality.camera
            )
        outputs = self._forward(batch, features)
        return outputs if paint_logits is None else dataclasses.replace(outputs, paint_logits=paint_logits)

    def _forward(self, batch: FusionBatch, pillar_features: torch.Tensor) -> HeadOutputs:
        modality = batch.modality
        lidar_bev = None
        if self.lidar is not None:
            lidar_bev = self.lidar(
                pillar_features, batch.pillar_num_points, batch.pillar_coords_bij, batch.batch_size
            )  # (B, C_l, H, W)
        camera_bev = coverage = None
        depth_logits = batch.images.new_zeros((0, self.depth_bins, *self.feature_hw))
        camera_index = torch.zeros(0, dtype=torch.int64, device=batch.images.device)
        if self.camera is not None:
            out = self.camera(batch.images, modality.camera, batch.rig, batch.bev_from_ego, batch.lidar_depth_bin)
            camera_bev, coverage = out.features, out.coverage  # (B, C_c, H, W), (B, 1, H, W)
            depth_logits, camera_index = out.depth_logits, out.camera_index
        map_bev = self.map(batch.map_bev) if self.map is not None else None
        inputs = (lidar_bev, camera_bev, coverage, map_bev, modality.lidar, modality.map)
        trunks: dict[int, tuple[BEVFusion | ModeTrunk, tuple[torch.Tensor | None, ...]]] = {MAIN: (self, inputs)}
        if self.lidar_free is not None:
            trunks[LIDAR_FREE] = (self.lidar_free, (None, *inputs[1:]))
        if self.camera_free is not None:
            trunks[CAMERA_FREE] = (self.camera_free, (lidar_bev, None, None, *inputs[3:]))
        route = self.trunk_of_each_sample(modality)
        used = route.unique().tolist()
        if len(used) == 1:  # a batch all in one mode runs that trunk alone, without selects
            trunk, trunk_inputs = trunks[used[0]]
            return _trunk_outputs(trunk.fuser, trunk.backbone, trunk.head, trunk_inputs, depth_logits, camera_index)
        # Each sample through the trunk of its mode; batch norm there sees that mode's samples only.
        parts = []
        for mode in used:
            trunk, trunk_inputs = trunks[mode]
            where = torch.nonzero(route == mode, as_tuple=False).view(-1)  # (B_mode,)
            selected = tuple(_select(t, where) for t in trunk_inputs)
            parts.append(
                (where, _trunk_outputs(trunk.fuser, trunk.backbone, trunk.head, selected, depth_logits, camera_index))
            )
        return merge_by_sample(parts, batch.batch_size, depth_logits, camera_index)
