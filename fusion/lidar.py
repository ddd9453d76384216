"""Lidar branch: a PointNet over the points of each one-cell pillar, scattered to the BEV grid."""

from __future__ import annotations

import torch
from torch import nn

from avfusion.fusion.config import GridConfig, LidarConfig
from avfusion.fusion.ops.bev_pool import bev_pool


class PillarEncoder(nn.Module):
    """Pillars `(V, P, 5)` -> BEV features `(B, C, H, W)`.

    Each point (x, y, z in the BEV frame, intensity, time lag) is decorated with its offset from the
    pillar's point mean (3) and from the pillar centre in x, y (2), mapped by a shared linear layer,
    and max-pooled over the pillar's points; the pillar vector lands in its grid cell.
    """

    def __init__(self, channels: int, grid: GridConfig) -> None:
        super().__init__()
        self.grid = grid
        self.linear = nn.Linear(10, channels, bias=False)
        self.norm = nn.BatchNorm1d(channels)
        self.channels = channels

    @staticmethod
    def from_config(lidar: LidarConfig, grid: GridConfig) -> PillarEncoder:
        return PillarEncoder(lidar.channels, grid)

    def decorate(self, features: torch.Tensor, num_points: torch.Tensor, coords_bij: torch.Tensor) -> torch.Tensor:
        """`(V, P, 5)` -> `(V, P, 10)` decorated point features; padded rows are zero."""
        pillars, points_per_pillar, _ = features.shape
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
        decorated = torch.cat([scaled, xyz - mean, to_center], dim=-1)  # (V, P, 10)
        return decorated * valid_f

    def forward(
        self, features: torch.Tensor, num_points: torch.Tensor, coords_bij: torch.Tensor, batch_size: int
    ) -> torch.Tensor:
        height, width = self.grid.shape_hw
        pillars, points_per_pillar, _ = features.shape
        if pillars == 0:
            return features.new_zeros((batch_size, self.channels, height, width))
        decorated = self.decorate(features, num_points, coords_bij)
        hidden = self.linear(decorated.view(-1, 10))  # (V*P, C)
        hidden = torch.relu(self.norm(hidden)).view(pillars, points_per_pillar, -1)
        valid = torch.arange(points_per_pillar, device=features.device)[None, :] < num_points[:, None]
        # ReLU output is >= 0, so zeroing padded points cannot change the max of a non-empty pillar.
        pillar = (hidden * valid.unsqueeze(-1)).amax(dim=1)  # (V, C)
        cell_index = (coords_bij[:, 0] * height + coords_bij[:, 1]) * width + coords_bij[:, 2]
        return bev_pool(pillar, cell_index, batch_size, (height, width))
