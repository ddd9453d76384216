"""Training losses, each a pure function of head outputs and targets.

- `heatmap_focal_loss`: CenterNet's penalty-reduced focal loss on the class heatmaps.
- `regression_l1_loss`: L1 on the box regression at object centres (unknown velocity ignored).
- `attribute_loss`: cross-entropy on attributes at object centres that have one.
- `depth_loss`: cross-entropy of the camera depth distribution against lidar depth bins.
`total_loss` weighs them with `LossConfig` and returns the parts for logging.
"""

from __future__ import annotations

import functools
import operator

import torch
import torch.nn.functional as F

from avfusion.fusion.config import LossConfig
from avfusion.fusion.head import HeadOutputs
from avfusion.fusion.targets import HeadTargets


def heatmap_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 2.0,
    beta: float = 4.0,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over cells of the focal loss, divided by the number of centres (cells with target 1).

    Positive cells: `-(1 - p)^alpha log p`; others: `-(1 - t)^beta p^alpha log(1 - p)`.
    `sample_weight` `(B,)` scales each sample's cells (None = 1).
    """
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = log_p.exp()
    positive = target.eq(1.0).to(logits.dtype)
    positive_loss = -((1 - p) ** alpha) * log_p * positive
    negative_loss = -((1 - target) ** beta) * (p**alpha) * log_not_p * (1 - positive)
    num_positive = positive.sum().clamp(min=1.0)
    per_cell = positive_loss + negative_loss
    if sample_weight is not None:
        per_cell = per_cell * sample_weight.to(per_cell.dtype).view(-1, 1, 1, 1)
    return per_cell.sum() / num_positive


def gather_at_centres(dense: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`(B, C, H, W)` sampled at flat cells `index` `(B, M)` -> `(B, M, C)`."""
    batch, channels = dense.shape[:2]
    flat = dense.reshape(batch, channels, -1)
    return flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1)).transpose(1, 2)


def regression_l1_loss(
    outputs: HeadOutputs,
    targets: HeadTargets,
    channel_weights: tuple[float, ...],
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted L1 over the 10 regression channels at object centres, per object (`sample_weight` `(B,)` scales a sample's objects)."""
    predicted = gather_at_centres(outputs.regression(), targets.index)  # (B, M, 10)
    target = targets.regression
    known = targets.mask.unsqueeze(-1) & ~torch.isnan(target)  # (B, M, 10)
    error = (predicted - torch.nan_to_num(target)).abs() * known
    weights = torch.tensor(channel_weights, dtype=error.dtype, device=error.device)
    if sample_weight is not None:
        error = error * sample_weight.to(error.dtype).view(-1, 1, 1)
    return (error * weights).sum() / targets.mask.sum().clamp(min=1)


def attribute_loss(
    outputs: HeadOutputs, targets: HeadTargets, sample_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over the objects that have an attribute (`sample_weight` `(B,)` scales a sample's terms)."""
    logits = gather_at_centres(outputs.attribute_logits, targets.index)  # (B, M, A)
    has = targets.mask & (targets.attribute >= 0)
    if not bool(has.any()):
        return logits.sum() * 0.0
    per_object = F.cross_entropy(logits[has], targets.attribute[has], reduction="none")
    if sample_weight is not None:
        per_object = per_object * sample_weight.to(per_object.dtype).view(-1, 1).expand_as(has)[has]
    return per_object.mean()


def depth_loss(
    outputs: HeadOutputs, depth_target_bin: torch.Tensor, sample_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of each camera feature pixel's depth distribution where lidar gives a bin.

    Args:
        depth_target_bin: `(B, K, h', w')` int64, -1 = no lidar return in that pixel.
        sample_weight: `(B,)` scales the pixels of each sample's cameras (None = 1).
    """
    logits = outputs.depth_logits  # (N, D, h', w')
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    target = depth_target_bin.reshape(-1, *depth_target_bin.shape[2:])[outputs.depth_camera_index]  # (N, h', w')
    valid = target >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    per_pixel = logits.permute(0, 2, 3, 1)[valid]  # (P, D)
    if sample_weight is None:
        return F.cross_entropy(per_pixel, target[valid])
    cameras = depth_target_bin.shape[1]
    camera_weight = sample_weight.to(per_pixel.dtype)[
        torch.div(outputs.depth_camera_index, cameras, rounding_mode="floor")
    ]
    pixel_weight = camera_weight.view(-1, 1, 1).expand_as(valid)[valid]
    return (F.cross_entropy(per_pixel, target[valid], reduction="none") * pixel_weight).mean()


def paint_loss(paint_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the painted scores' logits `(V, P, C + 1)` against each point's label
    `(V, P)` (a class, C for background, -1 for no loss: unseen points and padding)."""
    valid = labels >= 0
    if not bool(valid.any()):
        return paint_logits.sum() * 0.0
    return F.cross_entropy(paint_logits[valid], labels[valid])


def total_loss(
    outputs: HeadOutputs,
    targets: HeadTargets,
    depth_target_bin: torch.Tensor | None,
    config: LossConfig,
    sample_weight: torch.Tensor | None = None,
    point_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum and its parts (as floats, for the loss log); `sample_weight` `(B,)` scales
    each sample's terms in every part (see `sample_weights`) but the painted scores' (per point);
    `point_labels`: the batch's `pillar_point_labels`, for a model that paints scores."""
    w = sample_weight
    parts = {
        "heatmap": heatmap_focal_loss(outputs.heatmap_logits, targets.heatmap, sample_weight=w) * config.heatmap_weight,
        "regression": regression_l1_loss(outputs, targets, config.regression_channel_weights, w)
        * config.regression_weight,
        "attribute": attribute_loss(outputs, targets, w) * config.attribute_weight,
    }
    if depth_target_bin is not None:
        parts["depth"] = depth_loss(outputs, depth_target_bin, w) * config.depth_weight
    if outputs.paint_logits is not None and point_labels is not None:
        parts["paint"] = paint_loss(outputs.paint_logits, point_labels) * config.paint_weight
    total = functools.reduce(operator.add, parts.values())
    return total, {name: float(value.detach()) for name, value in parts.items()}


def sample_weights(has_lidar: torch.Tensor, config: LossConfig, model_has_lidar: bool) -> torch.Tensor | None:
    """`(B,)` loss weight of each sample: `config.lidar_dropped_weight` for a sample without lidar in
    a model with a lidar branch (modality dropout), 1 otherwise; None when all would be 1."""
    if not model_has_lidar or config.lidar_dropped_weight == 1.0 or bool(has_lidar.all()):
        return None
    return torch.where(has_lidar, 1.0, config.lidar_dropped_weight).to(torch.float32)
