"""BEV pooling: sum per-point features into the cells of a bird's-eye-view grid.

The lift-splat camera branch places `B*K*D*h*w` frustum points in the ego frame, each with a feature
vector; `bev_pool` adds every point's feature into the BEV cell it falls in. Two implementations:

- `bev_pool`: the fast path, one `index_add_` over a flattened `(B*H*W, C)` buffer (vectorised on the
  CPU, atomic adds on a GPU) inside a custom autograd function whose backward is a single gather;
  nothing is allocated per point.
- `bev_pool_reference`: the obviously-correct twin, a Python loop over points. Tests compare the
  two on random inputs and check both gradients with `torch.autograd.gradcheck`.

Grid convention (as `fusion.config.GridConfig`): row index = y cell, column index = x cell; the flat
cell index of (batch b, row i, column j) is `(b * H + i) * W + j`; -1 marks a point outside the grid.
"""

from __future__ import annotations

import torch


def bev_cell_index(
    points: torch.Tensor,
    x_range_m: tuple[float, float],
    y_range_m: tuple[float, float],
    z_range_m: tuple[float, float],
    cell_m: float,
    batch_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flat BEV cell index of each point, or -1 when it lies outside the grid's x/y/z ranges.

    Args:
        points: `(G, M, 3)` x, y, z in the grid's frame (metres), G groups of M points.
        batch_index: `(G,)` int64 sample each group belongs to; None = group g is sample g.
    Returns:
        `(G * M,)` int64 flat index `(b * H + row) * W + column`, -1 outside.
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"bev_cell_index needs points of shape (B, M, 3), got {tuple(points.shape)}")
    batch, _, _ = points.shape
    height = round((y_range_m[1] - y_range_m[0]) / cell_m)
    width = round((x_range_m[1] - x_range_m[0]) / cell_m)
    column = torch.floor((points[..., 0] - x_range_m[0]) / cell_m).long()
    row = torch.floor((points[..., 1] - y_range_m[0]) / cell_m).long()
    inside = (
        (column >= 0)
        & (column < width)
        & (row >= 0)
        & (row < height)
        & (points[..., 2] >= z_range_m[0])
        & (points[..., 2] < z_range_m[1])
    )
    if batch_index is None:
        batch_index = torch.arange(batch, device=points.device)
    elif tuple(batch_index.shape) != (batch,):
        raise ValueError(f"bev_cell_index needs batch_index of shape ({batch},), got {tuple(batch_index.shape)}")
    flat = (batch_index.view(batch, 1) * height + row) * width + column
    return torch.where(inside, flat, torch.full_like(flat, -1)).reshape(-1)


def _check(features: torch.Tensor, cell_index: torch.Tensor, batch_size: int, shape_hw: tuple[int, int]) -> None:
    if features.ndim != 2:
        raise ValueError(f"bev_pool needs features of shape (N, C), got {tuple(features.shape)}")
    if cell_index.shape != (features.shape[0],) or cell_index.dtype != torch.int64:
        raise ValueError(
            f"bev_pool needs cell_index int64 of shape ({features.shape[0]},), "
            f"got {cell_index.dtype} {tuple(cell_index.shape)}"
        )
    if batch_size < 0 or min(shape_hw) <= 0:
        raise ValueError(f"bev_pool needs batch_size >= 0 and a positive grid, got {batch_size}, {shape_hw}")


class _BEVPoolSum(torch.autograd.Function):
    """Sum of `(N, C)` features into `(B*H*W, C)` cells; every index must be valid (>= 0)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, cell_index: torch.Tensor, num_cells: int) -> torch.Tensor:
        ctx.save_for_backward(cell_index)
        pooled = features.new_zeros((num_cells, features.shape[1]))
        pooled.index_add_(0, cell_index, features)
        return pooled

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor):
        (cell_index,) = ctx.saved_tensors
        grad_features = grad_pooled.index_select(0, cell_index) if ctx.needs_input_grad[0] else None
        return grad_features, None, None


def bev_pool(
    features: torch.Tensor, cell_index: torch.Tensor, batch_size: int, shape_hw: tuple[int, int]
) -> torch.Tensor:
    """Sum point features into BEV cells (fast path).

    Args:
        features: `(N, C)` float, one row per point.
        cell_index: `(N,)` int64 flat cell index (see `bev_cell_index`); -1 = outside, ignored.
        batch_size: B.
        shape_hw: (H, W) of the grid.
    Returns:
        `(B, C, H, W)` sums; cells no point falls in are 0.
    """
    _check(features, cell_index, batch_size, shape_hw)
    height, width = shape_hw
    keep = cell_index >= 0
    if not bool(keep.all()):
        features, cell_index = features[keep], cell_index[keep]
    pooled = _BEVPoolSum.apply(features, cell_index, batch_size * height * width)  # (B*H*W, C)
    return pooled.view(batch_size, height, width, -1).permute(0, 3, 1, 2).contiguous()


def bev_pool_reference(
    features: torch.Tensor, cell_index: torch.Tensor, batch_size: int, shape_hw: tuple[int, int]
) -> torch.Tensor:
    """The slow twin of `bev_pool`: one Python step per point; same contract, same result."""
    _check(features, cell_index, batch_size, shape_hw)
    height, width = shape_hw
    cells = [features.new_zeros(features.shape[1]) for _ in range(batch_size * height * width)]
    for point, index in enumerate(cell_index.tolist()):
        if index >= 0:
            cells[index] = cells[index] + features[point]
    if not cells:
        return features.new_zeros((0, features.shape[1], height, width))
    stacked = torch.stack(cells).view(batch_size, height, width, -1)
    return stacked.permute(0, 3, 1, 2).contiguous()
