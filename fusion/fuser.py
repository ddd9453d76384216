"""Fusers: concatenate the branch BEV maps with modality indicators, then a 3x3 conv
(`ConvFuser`, intermediate fusion), optionally after weighing each branch per cell (`GatedFuser`).

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
        if config.strategy == "gated" and sum(c > 0 for c in (lidar_channels, camera_channels, map_channels)) > 1:
            return GatedFuser(lidar_channels, camera_channels, map_channels, config.channels)
        return ConvFuser(lidar_channels, camera_channels, map_channels, config.channels)

    def branch_inputs(
        self,
        lidar: torch.Tensor | None,
        camera: torch.Tensor | None,
        camera_coverage: torch.Tensor | None,
        map_features: torch.Tensor | None,
        has_lidar: torch.Tensor,
        has_map: torch.Tensor,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`(features, indicator)` per branch the fuser has, in `input_slices` order; a missing
        sensor's features are zero."""
        parts = []
        if self.lidar_channels:
            assert lidar is not None, "a fuser built with lidar channels needs the lidar branch"
            present = has_lidar.to(lidar.dtype).view(-1, 1, 1, 1)
            parts.append((lidar * present, present.expand(-1, 1, *lidar.shape[2:])))
        if self.camera_channels:
            assert camera is not None and camera_coverage is not None, (
                "a fuser built with camera channels needs the camera branch"
            )
            parts.append((camera, camera_coverage))
        if self.map_channels:
            assert map_features is not None, "a fuser built with map channels needs the map branch"
            present = has_map.to(map_features.dtype).view(-1, 1, 1, 1)
            parts.append((map_features * present, present.expand(-1, 1, *map_features.shape[2:])))
        return parts

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
        parts = self.branch_inputs(lidar, camera, camera_coverage, map_features, has_lidar, has_map)
        return self.layers(self.combine(parts))

    def combine(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The conv's input from `branch_inputs`: every branch's features and indicator, concatenated."""
        return torch.cat([t for part in parts for t in part], dim=1)


class GatedFuser(ConvFuser):
    """Gated fusion: a 3x3 conv over all branch maps and indicators gives one gate in [0, 1] per
    branch and BEV cell; each branch's features are multiplied by their gate (its indicator is
    kept), then the `ConvFuser` conv runs as usual. The gate sees every modality, so where one
    disagrees with the others (a noisy or misaligned sensor) the network can turn it down.

    The gate starts near open (weights 0, bias 3: sigmoid 0.95), so a warm start from an
    intermediate model begins close to what that model computed. `last_gate` keeps the gate of
    the latest forward pass `(B, branches, H, W)` for `--save-bev` and the viewer.
    """

    def __init__(self, lidar_channels: int, camera_channels: int, map_channels: int, channels: int) -> None:
        super().__init__(lidar_channels, camera_channels, map_channels, channels)
        branches = [c for c in (lidar_channels, camera_channels, map_channels) if c]
        in_channels = sum(branches) + len(branches)
        self.gate = nn.Conv2d(in_channels, len(branches), 3, padding=1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, 3.0)  # type: ignore[arg-type]  # built with a bias
        self.branch_names = tuple(self.input_slices())
        self.last_gate: torch.Tensor | None = None

    def combine(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """As `ConvFuser.combine`, each branch's features weighed by its gate first."""
        gate = torch.sigmoid(self.gate(super().combine(parts)))  # (B, branches, H, W)
        self.last_gate = gate.detach()
        return super().combine(
            [(features * gate[:, k : k + 1], indicator) for k, (features, indicator) in enumerate(parts)]
        )
