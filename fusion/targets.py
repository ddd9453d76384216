"""Center-head training targets from ground-truth boxes in the BEV frame.

For each box: a Gaussian peak on its class heatmap at the cell holding its centre (radius from the
box footprint, CenterNet's rule), and at that cell the regression target
`(offset_x, offset_y, z, log w, log l, log h, sin yaw, cos yaw, vx, vy)` (offsets in cells within
[0, 1), z and velocity in metres and m/s of the BEV frame, NaN velocity = unknown), plus its
attribute index (-1 = none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avfusion.calibration.boxes import Boxes3D
from avfusion.fusion.config import FusionConfig

REGRESSION_CHANNELS = 10


@dataclass(frozen=True, slots=True, eq=False)
class HeadTargets:
    """Targets for B samples with at most M objects each.

    Attributes:
        heatmap: `(B, num_classes, H, W)` float32 in [0, 1], 1 exactly at object centres.
        index: `(B, M)` int64 flat cell `row * W + column` of each object centre.
        mask: `(B, M)` bool, True for real objects.
        regression: `(B, M, 10)` float32 (see the module docstring); NaN velocity = unknown.
        attribute: `(B, M)` int64 attribute index, -1 none.
    """

    heatmap: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor
    regression: torch.Tensor
    attribute: torch.Tensor

    def __post_init__(self) -> None:
        batch, objects = self.index.shape
        if self.heatmap.ndim != 4 or self.heatmap.shape[0] != batch:
            raise ValueError(f"HeadTargets.heatmap must be ({batch}, C, H, W), got {tuple(self.heatmap.shape)}")
        if tuple(self.mask.shape) != (batch, objects) or tuple(self.attribute.shape) != (batch, objects):
            raise ValueError(f"HeadTargets.mask/attribute must be ({batch}, {objects})")
        if tuple(self.regression.shape) != (batch, objects, REGRESSION_CHANNELS):
            raise ValueError(
                f"HeadTargets.regression must be ({batch}, {objects}, 10), got {tuple(self.regression.shape)}"
            )

    def to(self, device: torch.device | str) -> HeadTargets:
        return HeadTargets(
            *(t.to(device) for t in (self.heatmap, self.index, self.mask, self.regression, self.attribute))
        )


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float) -> float:
    """CenterNet's radius: the largest corner shift keeping IoU >= `min_overlap` with the true box.

    The smallest root of the three quadratic cases (both corners inside, both outside, one each).
    """
    h, w = length_cells, width_cells
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, row: int, column: int, radius: int) -> None:
    """Max-merge a Gaussian of `radius` cells (sigma = diameter / 6) centred on (row, column) into `heatmap` (H, W).

    Writes into `heatmap` on purpose: it is a buffer this module owns while building targets.
    """
    diameter = 2 * radius + 1
    sigma = diameter / 6.0
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma * sigma))
    height, width = heatmap.shape
    top, bottom = min(row, radius), min(height - row, radius + 1)
    left, right = min(column, radius), min(width - column, radius + 1)
    window = heatmap[row - top : row + bottom, column - left : column + right]
    patch = kernel[radius - top : radius + bottom, radius - left : radius + right]
    np.maximum(window, patch, out=window)


def build_head_targets(boxes_per_sample: Sequence[Boxes3D], config: FusionConfig) -> HeadTargets:
    """Targets for a batch from each sample's boxes in its BEV frame.

    Boxes off the grid are skipped, and so are boxes known to hold fewer than
    `config.head.min_target_lidar_points` lidar points (an unknown count, -1, is kept).
    """
    grid, head = config.grid, config.head
    height, width = grid.shape_hw
    batch, objects = len(boxes_per_sample), head.max_objects
    heatmap = np.zeros((batch, head.num_classes, height, width), dtype=np.float32)
    index = np.zeros((batch, objects), dtype=np.int64)
    mask = np.zeros((batch, objects), dtype=bool)
    regression = np.zeros((batch, objects, REGRESSION_CHANNELS), dtype=np.float32)
    attribute = np.full((batch, objects), -1, dtype=np.int64)
    for b, boxes in enumerate(boxes_per_sample):
        if len(boxes) == 0:
            continue
        column_f = (boxes.center[:, 0] - grid.x_range_m[0]) / grid.cell_m
        row_f = (boxes.center[:, 1] - grid.y_range_m[0]) / grid.cell_m
        inside = (column_f >= 0) & (column_f < width) & (row_f >= 0) & (row_f < height)
        inside &= (boxes.label >= 0) & (boxes.label < head.num_classes)
        inside &= (boxes.num_lidar_pts < 0) | (boxes.num_lidar_pts >= head.min_target_lidar_points)
        for slot, n in enumerate(np.flatnonzero(inside)[:objects]):
            row, column = int(row_f[n]), int(column_f[n])
            w_m, l_m, h_m = boxes.size_wlh[n]
            radius = gaussian_radius(l_m / grid.cell_m, w_m / grid.cell_m, head.gaussian_overlap)
            draw_gaussian(heatmap[b, boxes.label[n]], row, column, max(head.min_radius_cells, int(radius)))
            index[b, slot] = row * width + column
            mask[b, slot] = True
            yaw = boxes.yaw_rad[n]
            regression[b, slot] = (
                column_f[n] - column,
                row_f[n] - row,
                boxes.center[n, 2],
                math.log(max(w_m, 1e-3)),
                math.log(max(l_m, 1e-3)),
                math.log(max(h_m, 1e-3)),
                math.sin(yaw),
                math.cos(yaw),
                boxes.velocity_xy[n, 0],
                boxes.velocity_xy[n, 1],
            )
            attribute[b, slot] = boxes.attribute[n]
    return HeadTargets(
        heatmap=torch.from_numpy(heatmap),
        index=torch.from_numpy(index),
        mask=torch.from_numpy(mask),
        regression=torch.from_numpy(regression),
        attribute=torch.from_numpy(attribute),
    )
