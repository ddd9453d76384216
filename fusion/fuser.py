"""Fuser: concatenate the branch BEV maps with modality indicators, then a 3x3 conv.

A missing input is zero in its channels *and* announced by an indicator channel, so the network
can tell "no lidar here" from "lidar saw nothing here": the lidar and map indicators are 1 where
the sample has the sensor, the camera indicator is the (log) number of frustum points of the present
cameras landing in each cell, i.e. where camera evidence exists at all.
"""

from __future__ import annotations

import torch
from torch import nn

from avfusion.fusion.config import FuserConfig


class ConvFuser(nn.Module):
    def __init__(self, lidar_channels: int, camera_channels: int, map_channels: int, channels: int) -> None:
        super().__init__()
        self.lidar_channels, self.camera_channels, self.map_channels = lidar_channels, camera_channels, map_channels
        indicators = int(lidar_channels > 0) + int(camera_channels > 0) + int(map_channels > 0)
        in_channels = lidar_channels + camera_channels + map_channels + indicators
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.channels = channels

    def input_slices(self) -> dict[str, slice]:
        """The input channel range of each branch the fuser has (its features, then its indicator
        channel), in the order `forward` concatenates them."""
        slices, start = {}, 0
        for name, channels in (
            ("lidar", self.lidar_channels),
            ("camera", self.camera_channels),
            ("map", self.map_channels),
        ):
            if channels:
                slices[name] = slice(start, start + channels + 1)
                start += channels + 1
        return slices

    @staticmethod
    def from_config(config: FuserConfig, lidar_channels: int, camera_channels: int, map_channels: int) -> ConvFuser:
        return ConvFuser(lidar_channels, camera_channels, map_channels, config.channels)

    def forward(
        self,
        lidar: torch.Tensor | None,
        camera: torch.Tensor | None,
        camera_coverage: torch.Tensor | None,
        map_features: torch.Tensor | None,
        has_lidar: torch.Tensor,
        has_map: torch.Tensor,
    ) -> torch.Tensor:
        """Branch maps `(B, C_x, H, W)` (None for a branch the model does not have), `camera_coverage`
        `(B, 1, H, W)`, `has_lidar`/`has_map` `(B,)` bool -> `(B, channels, H, W)`."""
        parts = []
        if self.lidar_channels:
            assert lidar is not None, "a fuser built with lidar channels needs the lidar branch"
            present = has_lidar.to(lidar.dtype).view(-1, 1, 1, 1)
            parts += [lidar * present, present.expand(-1, 1, *lidar.shape[2:])]
        if self.camera_channels:
            assert camera is not None and camera_coverage is not None, (
                "a fuser built with camera channels needs the camera branch"
            )
            parts += [camera, camera_coverage]
        if self.map_channels:
            assert map_features is not None, "a fuser built with map channels needs the map branch"
            present = has_map.to(map_features.dtype).view(-1, 1, 1, 1)
            parts += [map_features * present, present.expand(-1, 1, *map_features.shape[2:])]
        return self.layers(torch.cat(parts, dim=1))
