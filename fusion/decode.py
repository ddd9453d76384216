"""Head outputs -> 3D boxes: heatmap peaks, top-k, score threshold, circle NMS per class, a cap.

Boxes come out in the BEV frame of the batch (the ego frame at inference, where `bev_from_ego` is
the identity): box centre (m), size (w, l, h) m, yaw about z, velocity (m/s), class label index
into `DETECTION_CLASSES`, score = heatmap probability, attribute = the most likely of the class's
scored attributes (-1 for classes without attributes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import libm_elementwise
from avfusion.fusion.config import DecodeConfig, GridConfig
from avfusion.fusion.head import HeadOutputs
from avfusion.labels import ATTRIBUTE_INDEX, CLASS_ATTRIBUTES, DETECTION_CLASSES

# (num_classes, num_attributes) bool: the attributes the metric scores for each class.
_ALLOWED_ATTRIBUTES = np.zeros((len(DETECTION_CLASSES), len(ATTRIBUTE_INDEX)), dtype=bool)
for _label, _name in enumerate(DETECTION_CLASSES):
    for _attribute in CLASS_ATTRIBUTES[_name]:
        _ALLOWED_ATTRIBUTES[_label, ATTRIBUTE_INDEX[_attribute]] = True


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """Boxes found in one frame.

    Attributes:
        sample_token: the frame's sample token.
        boxes_ego: `Boxes3D` in the ego frame at the frame's lidar timestamp.
        boxes_global: the same boxes in the global (map) frame.
        timings_ms: stage name -> milliseconds spent on this frame (empty when not measured).
    """

    sample_token: str
    boxes_ego: Boxes3D
    boxes_global: Boxes3D
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.boxes_ego) != len(self.boxes_global):
            raise ValueError(f"Detections: {len(self.boxes_ego)} ego boxes but {len(self.boxes_global)} global boxes")


def circle_nms(xy: np.ndarray, scores: np.ndarray, radius_m: float) -> np.ndarray:
    """Greedy NMS by centre distance: indices kept, highest score first.

    A box is suppressed when a kept box of higher score lies strictly closer than `radius_m`.
    Args:
        xy: `(N, 2)` centres, m. scores: `(N,)`.
    """
    order = np.argsort(-scores, kind="stable")
    if radius_m <= 0 or len(order) <= 1:
        return order
    points = xy[order]
    close = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1) < radius_m * radius_m  # (N, N)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= close[i]
    return np.asarray(keep, dtype=np.int64)


def decode_sample(outputs: HeadOutputs, sample: int, grid: GridConfig, config: DecodeConfig) -> Boxes3D:
    """Boxes of sample `sample` of the batch, in its BEV frame, sorted by descending score."""
    # Peaks and the threshold are found on the logits (sigmoid is monotonic), so the sigmoid and
    # every regression map are evaluated at the few candidate cells only.
    logits = outputs.heatmap_logits[sample].detach().float()  # (C, H, W)
    _, height, width = logits.shape
    is_peak = F.max_pool2d(logits.unsqueeze(0), 3, stride=1, padding=1)[0] == logits
    threshold = config.score_threshold
    threshold_logit = (
        -math.inf if threshold <= 0 else math.inf if threshold >= 1 else math.log(threshold / (1 - threshold))
    )
    flat = torch.nonzero((is_peak & (logits >= threshold_logit)).reshape(-1), as_tuple=False).view(-1)
    candidate_logits = logits.reshape(-1)[flat]
    if len(flat) > config.top_k:
        candidate_logits, order = candidate_logits.topk(config.top_k)
        flat = flat[order]
    scores_t = candidate_logits.sigmoid()
    label_t = torch.div(flat, height * width, rounding_mode="floor")
    cell = flat % (height * width)
    row_t = torch.div(cell, width, rounding_mode="floor")
    column_t = cell % width
    at_cells = lambda dense: dense[sample].detach().float().reshape(dense.shape[1], -1)[:, cell].T  # noqa: E731
    regression_t = torch.cat(
        [
            at_cells(outputs.offset),
            at_cells(outputs.z),
            at_cells(outputs.log_size),
            at_cells(outputs.yaw_sincos),
            at_cells(outputs.velocity),
        ],
        dim=1,
    )  # (N, 10)
    attribute_logits_t = at_cells(outputs.attribute_logits)  # (N, A)

    # The rest runs in NumPy on the few candidates.
    regression, scores = regression_t.cpu().numpy().astype(np.float64), scores_t.cpu().numpy().astype(np.float64)
    label, row, column = label_t.cpu().numpy(), row_t.cpu().numpy(), column_t.cpu().numpy()
    attribute_logits = attribute_logits_t.cpu().numpy()
    center = np.stack(
        [
            grid.x_range_m[0] + (column + regression[:, 0]) * grid.cell_m,
            grid.y_range_m[0] + (row + regression[:, 1]) * grid.cell_m,
            regression[:, 2],
        ],
        axis=1,
    )
    keep_all = []
    for class_index in np.unique(label):
        members = np.flatnonzero(label == class_index)
        kept = circle_nms(center[members, :2], scores[members], config.nms_radius_m[class_index])
        keep_all.append(members[kept])
    chosen = np.concatenate(keep_all) if keep_all else np.zeros(0, dtype=np.int64)
    chosen = chosen[np.argsort(-scores[chosen], kind="stable")][: config.max_boxes]

    allowed = _ALLOWED_ATTRIBUTES[label[chosen]]  # (N, A)
    masked = np.where(allowed, attribute_logits[chosen], -np.inf)
    attribute = np.where(allowed.any(axis=1), masked.argmax(axis=1) if len(chosen) else np.zeros(0, np.int64), -1)
    return Boxes3D(
        center=center[chosen],
        size_wlh=np.exp(np.clip(regression[chosen, 3:6], -5.0, 5.0)),
        yaw_rad=libm_elementwise(math.atan2, regression[chosen, 6], regression[chosen, 7]),  # bit-stable, see there
        velocity_xy=regression[chosen, 8:10],
        label=label[chosen].astype(np.int64),
        score=scores[chosen],
        attribute=attribute.astype(np.int64),
        num_lidar_pts=np.full(len(chosen), -1, dtype=np.int64),
    )


def decode(outputs: HeadOutputs, grid: GridConfig, config: DecodeConfig) -> list[Boxes3D]:
    """One `Boxes3D` per sample of the batch, in its BEV frame."""
    return [decode_sample(outputs, b, grid, config) for b in range(outputs.heatmap_logits.shape[0])]
