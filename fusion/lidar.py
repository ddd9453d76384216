"""Lidar branch: a PointNet over the points of each one-cell pillar, scattered to the BEV grid."""

from __future__ import annotations

import torch
from torch import nn

from avfusion.fusion.config import GridConfig, LidarConfig
from avfusion.fusion.ops.bev_pool import bev_pool


class PillarEncoder(nn.Module):
    """Pillars `(V, P, 5 + paint)` -> BEV features `(B, C, H, W)`.

    Each point (x, y, z in the BEV frame, intensity, time lag, and with early fusion its camera
    paint) is decorated with its offset from the pillar's point mean (3) and from the pillar centre
    in x, y (2), mapped by a shared linear layer, and max-pooled over the pillar's points; the
    pillar vector lands in its grid cell. The linear layer's columns: the 5 raw features, the 5
    offsets, then the paint.
    """

    def __init__(self, channels: int, grid: GridConfig, paint_channels: int = 0) -> None:
        super().__init__()
        self.grid = grid
        self.paint_channels = paint_channels
        self.linear = nn.Linear(10 + paint_channels, channels, bias=False)
        self.norm = nn.BatchNorm1d(channels)
        self.channels = channels

    @staticmethod
    def from_config(lidar: LidarConfig, grid: GridConfig, paint_channels: int = 0) -> PillarEncoder:
        """`paint_channels`: the points carry that many more features (early fusion,
        `FusionConfig.paint_channels`)."""
        return PillarEncoder(lidar.channels, grid, paint_channels)

    def decorate(self, features: torch.Tensor, num_points: torch.Tensor, coords_bij: torch.Tensor) -> torch.Tensor:
        """`(V, P, 5)` -> `(V, P, 10)` decorated point features; padded rows are zero."""
        _, points_per_pillar, _ = features.shape
        valid = torch.arange(points_per_pillar, device=features.device)[None, :] < num_points[:, None]  # (V, P)
        valid_f = valid.unsqueeze(-1).to(features.dtype)
        xyz = features[..., :3]
        mean = (xyz * valid_f).sum(1, keepdim=True) / num_points.clamp(min=1).view(-1, 1, 1).to(features.dtype)
        cell = self.grid.cell_m
        center_x = self.grid.x_range_m[0] + (coords_bij[:, 2].to(features.dtype) + 0.5) * cell  # (V,)
        center_y = self.grid.y_range_m[0] + (coords_bij[:, 1].to(features.dtype) + 0.5) * cell
        to_center = xyz[..., :2] - torch.stack([center_x, center_y], dim=-1)[:, None, :]
        # Intensity in nuScenes is 0-255; keep all inputs near unit scale.
        scaled = torch.cat([features[..., :3], features[..., 3:4] * (1.0 / 255.0), features[..., 4:5]], dim=-1)
        decorated = torch.cat([scaled, xyz - mean, to_center, features[..., 5:]], dim=-1)  # (V, P, 10 + paint)
        return decorated * valid_f

    def point_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The linear layer folded onto raw point features: `decorate` is affine in the points, so
        `linear(decorate(p)) = p @ W_point^T - (mean @ W_mean^T + centre @ W_centre^T)`.

        Returns `W_point` `(C, 5 + paint)`, `W_mean` `(C, 3)`, `W_centre` `(C, 2)`.
        """
        weight = self.linear.weight  # (C, 10)
        scale = weight.new_tensor([1.0, 1.0, 1.0, 1.0 / 255.0, 1.0])
        w_point = weight[:, :5] * scale
        w_mean, w_centre = weight[:, 5:8], weight[:, 8:10]
        w_point = w_point + torch.cat([w_mean, w_mean.new_zeros(w_mean.shape[0], 2)], dim=1)
        w_point = w_point + torch.cat([w_centre, w_centre.new_zeros(w_centre.shape[0], 3)], dim=1)
        return torch.cat([w_point, weight[:, 10:]], dim=1), w_mean, w_centre

    def forward(
        self, features: torch.Tensor, num_points: torch.Tensor, coords_bij: torch.Tensor, batch_size: int
    ) -> torch.Tensor:
        height, width = self.grid.shape_hw
        pillars, points_per_pillar, _ = features.shape
        if pillars == 0:
            return features.new_zeros((batch_size, self.channels, height, width))
        # Only real points are encoded (padding rows never reach the linear layer or the batch
        # statistics); the folded weights avoid building the (V, P, 10) decorated tensor.
        valid = torch.arange(points_per_pillar, device=features.device)[None, :] < num_points[:, None]  # (V, P)
        point_pillar = torch.arange(pillars, device=features.device)[:, None].expand(-1, points_per_pillar)[valid]
        points = features[valid]  # (N, 5)
        counts = num_points.clamp(min=1).to(features.dtype).view(-1, 1)
        mean = (features[..., :3] * valid.unsqueeze(-1)).sum(1) / counts  # (V, 3)
        cell = self.grid.cell_m
        centre = torch.stack(
            [
                self.grid.x_range_m[0] + (coords_bij[:, 2].to(features.dtype) + 0.5) * cell,
                self.grid.y_range_m[0] + (coords_bij[:, 1].to(features.dtype) + 0.5) * cell,
            ],
            dim=-1,
        )  # (V, 2)
        w_point, w_mean, w_centre = self.point_weights()
        pillar_bias = mean @ w_mean.T + centre @ w_centre.T  # (V, C)
        hidden = points @ w_point.T - pillar_bias[point_pillar]  # (N, C)
        hidden = torch.relu(self.norm(hidden))
        # ReLU output is >= 0, so a zero start cannot change the max of a non-empty pillar.
        pillar = hidden.new_zeros((pillars, self.channels)).scatter_reduce(
            0, point_pillar[:, None].expand(-1, self.channels), hidden, reduce="amax", include_self=True
        )  # (V, C)
        cell_index = (coords_bij[:, 0] * height + coords_bij[:, 1]) * width + coords_bij[:, 2]
        return bev_pool(pillar, cell_index, batch_size, (height, width))
