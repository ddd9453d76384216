"""Map branch: the drivable-area patch on the BEV grid -> map features."""

from __future__ import annotations

import torch
from torch import nn

from avfusion.fusion.config import MapConfig


class MapEncoder(nn.Module):
    """`(B, 1, H, W)` drivable probability -> `(B, C, H, W)` features (two 3x3 convs)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.channels = channels

    @staticmethod
    def from_config(config: MapConfig) -> MapEncoder:
        return MapEncoder(config.channels)

    def forward(self, map_bev: torch.Tensor) -> torch.Tensor:
        return self.layers(map_bev)
