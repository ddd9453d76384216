"""Center-based detection head: per-class heatmaps and per-cell box regression on the BEV grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from avfusion.fusion.config import HeadConfig


@dataclass(frozen=True, slots=True, eq=False)
class HeadOutputs:
    """Raw network outputs on the BEV grid (`B` samples, `H x W` cells, BEV frame).

    Attributes:
        heatmap_logits: `(B, num_classes, H, W)` centre-heatmap logits (sigmoid = probability).
        offset: `(B, 2, H, W)` sub-cell centre offset in cells (x, y).
        z: `(B, 1, H, W)` centre height, m.
        log_size: `(B, 3, H, W)` log of w, l, h in metres.
        yaw_sincos: `(B, 2, H, W)` sin and cos of the yaw.
        velocity: `(B, 2, H, W)` vx, vy, m/s.
        attribute_logits: `(B, num_attributes, H, W)`.
        depth_logits: `(N, D, h', w')` depth-bin logits of the N present cameras (N = 0 without cameras).
        depth_camera_index: `(N,)` flat `b * K + k` of those cameras.
        paint_logits: early fusion with painted scores: `(V, P, num_classes + 1)` the camera
            network's class and background logits at each pillar point; else None.
    """

    heatmap_logits: torch.Tensor
    offset: torch.Tensor
    z: torch.Tensor
    log_size: torch.Tensor
    yaw_sincos: torch.Tensor
    velocity: torch.Tensor
    attribute_logits: torch.Tensor
    depth_logits: torch.Tensor
    depth_camera_index: torch.Tensor
    paint_logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        batch, _, height, width = self.heatmap_logits.shape
        for name, channels in (("offset", 2), ("z", 1), ("log_size", 3), ("yaw_sincos", 2), ("velocity", 2)):
            shape = tuple(getattr(self, name).shape)
            if shape != (batch, channels, height, width):
                raise ValueError(f"HeadOutputs.{name} must be {(batch, channels, height, width)}, got {shape}")

    def regression(self) -> torch.Tensor:
        """`(B, 10, H, W)` in the target order: offset x, y; z; log w, l, h; sin, cos; vx, vy."""
        return torch.cat([self.offset, self.z, self.log_size, self.yaw_sincos, self.velocity], dim=1)


class CenterHead(nn.Module):
    """A shared 3x3 conv, then a 3x3 + 1x1 heatmap branch and 1x1 regression outputs."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, num_attributes: int) -> None:
        super().__init__()
        self.shared = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.heatmap = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            classifier := nn.Conv2d(channels, num_classes, 1),  # named in place: construction order sets the init
        )
        # Start every cell at probability 0.1 so the focal loss does not begin with a huge push.
        assert classifier.bias is not None
        nn.init.constant_(classifier.bias, -math.log((1 - 0.1) / 0.1))
        self.box = nn.Conv2d(channels, 10, 1)
        self.attribute = nn.Conv2d(channels, num_attributes, 1)

    @staticmethod
    def from_config(config: HeadConfig, in_channels: int) -> CenterHead:
        return CenterHead(in_channels, config.channels, config.num_classes, config.num_attributes)

    def forward(self, bev: torch.Tensor, depth_logits: torch.Tensor, depth_camera_index: torch.Tensor) -> HeadOutputs:
        shared = self.shared(bev)
        box = self.box(shared)  # (B, 10, H, W)
        return HeadOutputs(
            heatmap_logits=self.heatmap(shared),
            offset=box[:, 0:2],
            z=box[:, 2:3],
            log_size=box[:, 3:6],
            yaw_sincos=box[:, 6:8],
            velocity=box[:, 8:10],
            attribute_logits=self.attribute(shared),
            depth_logits=depth_logits,
            depth_camera_index=depth_camera_index,
        )
