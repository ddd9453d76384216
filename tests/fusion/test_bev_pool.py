"""bev_pool: the fast path equals its reference twin, hand-worked cells, gradients by gradcheck."""

from __future__ import annotations

import pytest
import torch

from avfusion.fusion.config import GridConfig
from avfusion.fusion.lidar import PillarEncoder
from avfusion.fusion.ops.bev_pool import bev_cell_index, bev_pool, bev_pool_reference


def test_hand_worked_cells() -> None:
    # Grid x, y in [0, 2) m with 1 m cells: 2 x 2 cells; z in [0, 1).
    points = torch.tensor(
        [
            [
                [0.5, 0.5, 0.5],
                [1.5, 0.5, 0.5],
                [0.5, 1.5, 0.5],
                [1.99, 1.0, 0.0],
                [2.0, 0.5, 0.5],
                [0.5, -0.01, 0.5],
                [0.5, 0.5, 1.0],
            ]
        ]
    )
    index = bev_cell_index(points, (0.0, 2.0), (0.0, 2.0), (0.0, 1.0), 1.0)
    # (row = y cell) * 2 + (column = x cell); outside x, outside y, z at the open upper bound -> -1.
    assert index.tolist() == [0, 1, 2, 3, -1, -1, -1]
    features = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0], [100.0], [100.0]])
    pooled = bev_pool(features, index, 1, (2, 2))
    assert pooled.shape == (1, 1, 2, 2)
    assert pooled[0, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_batch_index_places_groups_in_their_sample() -> None:
    points = torch.tensor([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]], [[1.5, 1.5, 0.0]]])
    index = bev_cell_index(points, (0.0, 2.0), (0.0, 2.0), (-1.0, 1.0), 1.0, torch.tensor([1, 1, 0]))
    assert index.tolist() == [4, 4, 3]
    pooled = bev_pool(torch.ones(3, 2), index, 2, (2, 2))
    assert pooled[1, :, 0, 0].tolist() == [2.0, 2.0]
    assert pooled[0, :, 1, 1].tolist() == [1.0, 1.0]
    assert float(pooled.sum()) == 6.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_equals_reference_on_random_inputs(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch, height, width, channels, count = 2, 5, 7, 4, 300
    features = torch.randn(count, channels, generator=generator, dtype=torch.float64)
    index = torch.randint(-1, batch * height * width, (count,), generator=generator)
    fast = bev_pool(features, index, batch, (height, width))
    reference = bev_pool_reference(features, index, batch, (height, width))
    torch.testing.assert_close(fast, reference)


def test_gradients_match_gradcheck_and_twin() -> None:
    generator = torch.Generator().manual_seed(3)
    batch, height, width, channels, count = 2, 3, 4, 3, 40
    features = torch.randn(count, channels, generator=generator, dtype=torch.float64, requires_grad=True)
    index = torch.randint(-1, batch * height * width, (count,), generator=generator)
    assert torch.autograd.gradcheck(lambda f: bev_pool(f, index, batch, (height, width)), (features,))
    assert torch.autograd.gradcheck(lambda f: bev_pool_reference(f, index, batch, (height, width)), (features,))
    weights = torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64)
    (fast_grad,) = torch.autograd.grad((bev_pool(features, index, batch, (height, width)) * weights).sum(), features)
    (ref_grad,) = torch.autograd.grad(
        (bev_pool_reference(features, index, batch, (height, width)) * weights).sum(), features
    )
    torch.testing.assert_close(fast_grad, ref_grad)
    # A point outside the grid receives no gradient.
    assert bool((fast_grad[index < 0] == 0).all())


def test_bad_shapes_are_rejected_with_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\(5,\)"):
        bev_pool(torch.zeros(5, 2), torch.zeros(4, dtype=torch.int64), 1, (2, 2))
    with pytest.raises(ValueError, match="got"):
        bev_cell_index(torch.zeros(4, 3), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0), 1.0)


def test_pillar_encoder_folded_forward_equals_the_decorated_pointnet() -> None:
    """The fast forward (weights folded onto raw points, real points only) equals the textbook
    PointPillars encoder: decorate, linear, batch norm over real points, ReLU, max per pillar."""
    torch.manual_seed(0)
    grid = GridConfig(x_range_m=(-4.0, 4.0), y_range_m=(-4.0, 4.0), cell_m=1.0)
    encoder = PillarEncoder(6, grid).double().eval()
    encoder.norm.running_mean.uniform_(-1, 1)
    encoder.norm.running_var.uniform_(0.5, 2)
    pillars, per_pillar = 5, 4
    num_points = torch.tensor([1, 4, 2, 3, 4])
    features = torch.randn(pillars, per_pillar, 5, dtype=torch.float64) * 2
    features[..., 3] = features[..., 3].abs() * 100
    features[torch.arange(per_pillar)[None, :] >= num_points[:, None]] = 0.0
    coords = torch.tensor([[0, 0, 0], [0, 3, 4], [1, 7, 7], [1, 2, 5], [0, 5, 1]])
    bev = encoder(features, num_points, coords, 2)
    decorated = encoder.decorate(features, num_points, coords)
    expected_pillars = []
    for v in range(pillars):
        rows = decorated[v, : num_points[v]]
        expected_pillars.append(torch.relu(encoder.norm(encoder.linear(rows))).max(dim=0).values)
    for v in range(pillars):
        b, i, j = coords[v].tolist()
        torch.testing.assert_close(bev[b, :, i, j], expected_pillars[v])
    assert float(bev.detach().abs().sum()) == pytest.approx(float(torch.stack(expected_pillars).detach().abs().sum()))
