"""Training losses, each a pure function of head outputs and targets.

- `heatmap_focal_loss`: CenterNet's penalty-reduced focal loss on the class heatmaps.
- `regression_l1_loss`: L1 on the box regression at object centres (unknown velocity ignored).
- `attribute_loss`: cross-entropy on attributes at object centres that have one.
- `depth_loss`: cross-entropy of the camera depth distribution against lidar depth bins.
`total_loss` weighs them with `LossConfig` and returns the parts for logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avfusion.fusion.config import LossConfig
from avfusion.fusion.head import HeadOutputs
from avfusion.fusion.targets import HeadTargets


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """Sum over cells of the focal loss, divided by the number of centres (cells with target 1).

    Positive cells: `-(1 - p)^alpha log p`; others: `-(1 - t)^beta p^alpha log(1 - p)`.
    """
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = log_p.exp()
    positive = target.eq(1.0).to(logits.dtype)
    positive_loss = -((1 - p) ** alpha) * log_p * positive
    negative_loss = -((1 - target) ** beta) * (p**alpha) * log_not_p * (1 - positive)
    num_positive = positive.sum().clamp(min=1.0)
    return (positive_loss.sum() + negative_loss.sum()) / num_positive


def gather_at_centres(dense: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`(B, C, H, W)` sampled at flat cells `index` `(B, M)` -> `(B, M, C)`."""
    batch, channels = dense.shape[:2]
    flat = dense.reshape(batch, channels, -1)
    return flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1)).transpose(1, 2)


def regression_l1_loss(
    outputs: HeadOutputs, targets: HeadTargets, channel_weights: tuple[float, ...]
) -> torch.Tensor:
    """Weighted L1 over the 10 regression channels at object centres, per object."""
    predicted = gather_at_centres(outputs.regression(), targets.index)  # (B, M, 10)
    target = targets.regression
    known = targets.mask.unsqueeze(-1) & ~torch.isnan(target)  # (B, M, 10)
    error = (predicted - torch.nan_to_num(target)).abs() * known
    weights = torch.tensor(channel_weights, dtype=error.dtype, device=error.device)
    return (error * weights).sum() / targets.mask.sum().clamp(min=1)


def attribute_loss(outputs: HeadOutputs, targets: HeadTargets) -> torch.Tensor:
    logits = gather_at_centres(outputs.attribute_logits, targets.index)  # (B, M, A)
    has = targets.mask & (targets.attribute >= 0)
    if not bool(has.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[has], targets.attribute[has])


def depth_loss(outputs: HeadOutputs, depth_target_bin: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each camera feature pixel's depth distribution where lidar gives a bin.

    Args:
        depth_target_bin: `(B, K, h', w')` int64, -1 = no lidar return in that pixel.
    """
    logits = outputs.depth_logits  # (N, D, h', w')
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    target = depth_target_bin.reshape(-1, *depth_target_bin.shape[2:])[outputs.depth_camera_index]  # (N, h', w')
    valid = target >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    per_pixel = logits.permute(0, 2, 3, 1)[valid]  # (P, D)
    return F.cross_entropy(per_pixel, target[valid])


def total_loss(
    outputs: HeadOutputs, targets: HeadTargets, depth_target_bin: torch.Tensor | None, config: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum and its parts (as floats, for the loss log)."""
    parts = {
        "heatmap": heatmap_focal_loss(outputs.heatmap_logits, targets.heatmap) * config.heatmap_weight,
        "regression": regression_l1_loss(outputs, targets, config.regression_channel_weights) * config.regression_weight,
        "attribute": attribute_loss(outputs, targets) * config.attribute_weight,
    }
    if depth_target_bin is not None:
        parts["depth"] = depth_loss(outputs, depth_target_bin) * config.depth_weight
    total = sum(parts.values())
    return total, {name: float(value.detach()) for name, value in parts.items()}
