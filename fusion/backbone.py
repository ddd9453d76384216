"""BEV backbone: conv stages at strides 1, 2, 4, ... of the grid and a neck that upsamples each
stage back to the grid and concatenates them (SECOND/CenterPoint style)."""

from __future__ import annotations

import torch
from torch import nn

from avfusion.fusion.config import BackboneConfig


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BEVBackbone(nn.Module):
    def __init__(
        self, in_channels: int, stage_channels: tuple[int, ...], stage_blocks: tuple[int, ...], neck_channels: int
    ) -> None:
        super().__init__()
        stages, necks = [], []
        previous = in_channels
        for level, (channels, blocks) in enumerate(zip(stage_channels, stage_blocks, strict=True)):
            layers = [conv_bn_relu(previous, channels, stride=1 if level == 0 else 2)]
            layers += [conv_bn_relu(channels, channels) for _ in range(blocks)]
            stages.append(nn.Sequential(*layers))
            scale = 2**level
            neck = [
                nn.Conv2d(channels, neck_channels, 1, bias=False),
                nn.BatchNorm2d(neck_channels),
                nn.ReLU(inplace=True),
            ]
            if scale > 1:
                neck.append(nn.Upsample(scale_factor=scale, mode="nearest"))
            necks.append(nn.Sequential(*neck))
            previous = channels
        self.stages = nn.ModuleList(stages)
        self.necks = nn.ModuleList(necks)
        self.out_channels = neck_channels * len(stage_channels)

    @staticmethod
    def from_config(config: BackboneConfig, in_channels: int) -> BEVBackbone:
        return BEVBackbone(in_channels, config.stage_channels, config.stage_blocks, config.neck_channels)

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        """`(B, C_in, H, W)` -> `(B, neck * stages, H, W)`; H and W must divide by 2**(stages-1)."""
        outputs = []
        x = bev
        for stage, neck in zip(self.stages, self.necks, strict=True):
            x = stage(x)
            outputs.append(neck(x))
        return torch.cat(outputs, dim=1)
