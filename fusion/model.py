"""`BEVFusion`: the branches, fuser, backbone and head composed; `from_config` is the one place
that reads a `FusionConfig`."""

from __future__ import annotations

import torch
from torch import nn

from avfusion.fusion.backbone import BEVBackbone
from avfusion.fusion.batch import FusionBatch
from avfusion.fusion.camera import CameraBranch
from avfusion.fusion.config import FusionConfig
from avfusion.fusion.fuser import ConvFuser
from avfusion.fusion.head import CenterHead, HeadOutputs
from avfusion.fusion.lidar import PillarEncoder
from avfusion.fusion.map import MapEncoder


class BEVFusion(nn.Module):
    """Lidar / camera / map branches -> fuser -> BEV backbone -> center head.

    A branch given as None is absent from the model (single-modality ablations); a sensor missing
    from a sample is announced by the batch's `ModalityMask` and zeroed in the fuser.
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
    ) -> None:
        super().__init__()
        if lidar is None and camera is None and map is None:
            raise ValueError("BEVFusion needs at least one branch")
        self.lidar, self.camera, self.map = lidar, camera, map
        self.fuser, self.backbone, self.head = fuser, backbone, head
        self.depth_bins, self.feature_hw = depth_bins, feature_hw

    @staticmethod
    def from_config(config: FusionConfig) -> BEVFusion:
        train = config.train
        lidar = PillarEncoder.from_config(config.lidar, config.grid) if train.use_lidar else None
        camera = CameraBranch.from_config(config.camera, config.grid) if train.use_camera else None
        map_encoder = MapEncoder.from_config(config.map) if train.use_map else None
        fuser = ConvFuser.from_config(
            config.fuser,
            lidar.channels if lidar else 0,
            camera.channels if camera else 0,
            map_encoder.channels if map_encoder else 0,
        )
        backbone = BEVBackbone.from_config(config.backbone, fuser.channels)
        head = CenterHead.from_config(config.head, backbone.out_channels)
        return BEVFusion(
            lidar=lidar, camera=camera, map=map_encoder, fuser=fuser, backbone=backbone, head=head,
            depth_bins=config.camera.num_depth_bins, feature_hw=config.camera.feature_hw,
        )  # fmt: skip

    def forward(self, batch: FusionBatch) -> HeadOutputs:
        modality = batch.modality
        lidar_bev = None
        if self.lidar is not None:
            lidar_bev = self.lidar(
                batch.pillar_features, batch.pillar_num_points, batch.pillar_coords_bij, batch.batch_size
            )  # (B, C_l, H, W)
        camera_bev = coverage = None
        depth_logits = batch.images.new_zeros((0, self.depth_bins, *self.feature_hw))
        camera_index = torch.zeros(0, dtype=torch.int64, device=batch.images.device)
        if self.camera is not None:
            out = self.camera(batch.images, modality.camera, batch.rig, batch.bev_from_ego, batch.lidar_depth_bin)
            camera_bev, coverage = out.features, out.coverage  # (B, C_c, H, W), (B, 1, H, W)
            depth_logits, camera_index = out.depth_logits, out.camera_index
        map_bev = self.map(batch.map_bev) if self.map is not None else None
        fused = self.fuser(lidar_bev, camera_bev, coverage, map_bev, modality.lidar, modality.map)
        return self.head(self.backbone(fused), depth_logits, camera_index)
