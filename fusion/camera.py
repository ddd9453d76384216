"""Camera branch: a small image encoder and the lift-splat `DepthLift` into the BEV grid.

Each feature pixel of each present camera predicts a softmax over depth bins and a context vector;
their outer product places the context along the pixel's ray, weighted by the depth probability
(Philion & Fidler's lift-splat). The frustum points are placed with the camera's own calibration
(`BatchedRig`: intrinsics, image augmentation, ego_from_camera), moved by the sample's
`bev_from_ego` augmentation, and summed into the grid by `fusion.ops.bev_pool`.

In a model with lidar, a pixel that holds a lidar return of the keyframe sweep can be lifted at the
return's depth bin instead (`CameraConfig.lift_at_lidar_depth`): the camera then adds what it sees
at the place lidar measured, and falls back to its own depth where lidar has no return or is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from avfusion.fusion.batch import BatchedRig
from avfusion.fusion.config import CameraConfig, GridConfig
from avfusion.fusion.ops.bev_pool import bev_cell_index, bev_pool


class ImageEncoder(nn.Module):
    """`(N, 3, h, w)` -> `(N, C_last, h / 2**S, w / 2**S)`: S stages of (3x3 stride 2, 3x3)."""

    def __init__(self, stage_channels: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for channels in stage_channels:
            layers += [
                nn.Conv2d(previous, channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            previous = channels
        self.layers = nn.Sequential(*layers)
        self.out_channels = previous

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


@dataclass(frozen=True, slots=True, eq=False)
class CameraBEV:
    """Output of the camera branch.

    Attributes:
        features: `(B, C, H, W)` pooled camera features on the BEV grid.
        coverage: `(B, 1, H, W)` log(1 + number of frustum points of present cameras per cell).
        depth_logits: `(N, D, h', w')` depth-bin logits of the N present cameras.
        camera_index: `(N,)` int64 flat `b * K + k` of each of those cameras.
    """

    features: torch.Tensor
    coverage: torch.Tensor
    depth_logits: torch.Tensor
    camera_index: torch.Tensor


class DepthLift(nn.Module):
    """Image features -> depth distribution x context -> frustum points -> BEV (`bev_pool`)."""

    depth_centers_m: torch.Tensor  # (D,) metres, a buffer registered in __init__

    def __init__(self, in_channels: int, config: CameraConfig, grid: GridConfig) -> None:
        super().__init__()
        self.config, self.grid = config, grid
        self.depth_context = nn.Conv2d(in_channels, config.num_depth_bins + config.channels, 1)
        self.register_buffer(
            "depth_centers_m", torch.tensor(config.depth_centers_m, dtype=torch.float32), persistent=False
        )

    def frustum_cells(self, rig: BatchedRig, bev_from_ego: torch.Tensor, camera_index: torch.Tensor) -> torch.Tensor:
        """`(N * D * h' * w',)` flat BEV cell of every frustum point of the chosen cameras, -1 outside.

        Feature pixel (i, j) looks along the ray through the input-image pixel at the centre of its
        `stride x stride` footprint, `((j + 0.5) stride - 0.5, (i + 0.5) stride - 0.5)`.
        """
        cfg = self.config
        feature_h, feature_w = cfg.feature_hw
        device = bev_from_ego.device
        cameras = rig.intrinsics.shape[1]
        batch_of_camera = torch.div(camera_index, cameras, rounding_mode="floor")
        v = (torch.arange(feature_h, device=device, dtype=torch.float32) + 0.5) * cfg.feature_stride - 0.5
        u = (torch.arange(feature_w, device=device, dtype=torch.float32) + 0.5) * cfg.feature_stride - 0.5
        depth = self.depth_centers_m
        grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")  # (h', w') each
        pixels = torch.stack([grid_u, grid_v, torch.ones_like(grid_u)], dim=-1)  # (h', w', 3)
        frustum = depth.view(-1, 1, 1, 1) * pixels  # (D, h', w', 3): (u d, v d, d)
        flat_rig = lambda t: t.reshape(-1, *t.shape[2:])[camera_index]  # noqa: E731  (B*K, ...) -> (N, ...)
        camera_from_image = torch.linalg.inv(flat_rig(rig.image_aug) @ flat_rig(rig.intrinsics))  # (N, 3, 3)
        bev_from_camera = bev_from_ego[batch_of_camera] @ flat_rig(rig.ego_from_camera)  # (N, 4, 4)
        linear = bev_from_camera[:, :3, :3] @ camera_from_image  # (N, 3, 3)
        points = frustum.view(1, -1, 3) @ linear.transpose(1, 2) + bev_from_camera[:, None, :3, 3]  # (N, D*h'*w', 3)
        grid = self.grid
        return bev_cell_index(points, grid.x_range_m, grid.y_range_m, grid.z_range_m, grid.cell_m, batch_of_camera)

    def forward(
        self,
        image_features: torch.Tensor,
        rig: BatchedRig,
        bev_from_ego: torch.Tensor,
        camera_index: torch.Tensor,
        lidar_depth_bin: torch.Tensor | None = None,
    ) -> CameraBEV:
        """`image_features` `(N, C_in, h', w')` of the cameras `camera_index` (flat b * K + k).

        `lidar_depth_bin` `(N, h', w')` int64 (-1 = no return): where given, a pixel is lifted
        entirely into that bin (the lidar-guided lift); elsewhere along its predicted distribution.
        """
        cfg = self.config
        batch = bev_from_ego.shape[0]
        shape_hw = self.grid.shape_hw
        out = self.depth_context(image_features)  # (N, D + C, h', w')
        depth_logits = out[:, : cfg.num_depth_bins]
        context = out[:, cfg.num_depth_bins :]
        depth = depth_logits.softmax(dim=1)
        if lidar_depth_bin is not None:
            measured = F.one_hot(lidar_depth_bin.clamp(min=0), cfg.num_depth_bins).permute(0, 3, 1, 2).to(depth.dtype)
            depth = torch.where((lidar_depth_bin >= 0).unsqueeze(1), measured, depth)
        volume = depth.unsqueeze(2) * context.unsqueeze(1)  # (N, D, C, h', w')
        volume = volume.permute(0, 1, 3, 4, 2).reshape(-1, cfg.channels)  # (N*D*h'*w', C)
        with torch.no_grad():
            cells = self.frustum_cells(rig, bev_from_ego, camera_index)
        features = bev_pool(volume, cells, batch, shape_hw)
        # Sum pooling grows with the number of frustum points per cell (near cells get many);
        # normalising by the count makes the feature scale independent of range.
        counts = bev_pool(torch.ones_like(volume[:, :1]), cells, batch, shape_hw)
        features = features / counts.clamp(min=1.0)
        return CameraBEV(features, torch.log1p(counts), depth_logits, camera_index)


class CameraBranch(nn.Module):
    def __init__(self, encoder: ImageEncoder, lift: DepthLift) -> None:
        super().__init__()
        self.encoder, self.lift = encoder, lift
        self.channels = lift.config.channels

    @staticmethod
    def from_config(config: CameraConfig, grid: GridConfig) -> CameraBranch:
        encoder = ImageEncoder(config.encoder_channels)
        return CameraBranch(encoder, DepthLift(encoder.out_channels, config, grid))

    def forward(
        self,
        images: torch.Tensor,
        present: torch.Tensor,
        rig: BatchedRig,
        bev_from_ego: torch.Tensor,
        lidar_depth_bin: torch.Tensor | None = None,
    ) -> CameraBEV:
        """`images` `(B, K, 3, h, w)`, `present` `(B, K)` bool: only present cameras are encoded.

        `lidar_depth_bin` `(B, K, h', w')`: see `DepthLift.forward` (None = predicted depth only).
        """
        batch, cameras = present.shape
        camera_index = torch.nonzero(present.reshape(-1), as_tuple=False).view(-1)  # (N,)
        chosen = images.reshape(batch * cameras, *images.shape[2:])[camera_index]  # (N, 3, h, w)
        if chosen.shape[0] == 0:
            shape_hw = self.lift.grid.shape_hw
            feature_h, feature_w = self.lift.config.feature_hw
            zeros = images.new_zeros((batch, self.channels, *shape_hw))
            empty_logits = images.new_zeros((0, self.lift.config.num_depth_bins, feature_h, feature_w))
            return CameraBEV(zeros, images.new_zeros((batch, 1, *shape_hw)), empty_logits, camera_index)
        measured = None
        if lidar_depth_bin is not None:
            measured = lidar_depth_bin.reshape(batch * cameras, *lidar_depth_bin.shape[2:])[camera_index]
        return self.lift(self.encoder(chosen), rig, bev_from_ego, camera_index, measured)
