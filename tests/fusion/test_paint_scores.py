"""Early fusion's painted per-class scores: where a point reads them, what they are trained on, and
that training reaches the camera network through them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from avfusion.calibration.boxes import Boxes3D
from avfusion.fusion.batch import collate
from avfusion.fusion.config import CAMERA_NAMES, PAINT_CHANNELS, tiny_for_tests, with_strategy
from avfusion.fusion.losses import total_loss
from avfusion.fusion.model import BEVFusion
from avfusion.fusion.paint import paint_points, point_labels
from avfusion.fusion.painter import PaintScorer


def test_the_lookup_names_the_painting_camera_and_its_pixel_on_the_real_keyframe(painted_keyframe) -> None:
    k = painted_keyframe
    slots = np.array([CAMERA_NAMES.index(name) for name in k.names])
    painted = paint_points(k.points_ego, k.rig, k.images, slots)
    assert painted.shape == (len(k.points_ego), PAINT_CHANNELS + 3)
    np.testing.assert_array_equal(painted[:, :PAINT_CHANNELS], paint_points(k.points_ego, k.rig, k.images))
    seen = painted[:, 3] == 1.0
    assert np.all(painted[~seen, 4] == -1.0) and np.all(painted[seen, 4] >= 0)

    # The front camera's points (first in order): its slot and the pixel worked out by hand.
    u, v, inside = k.front_camera_pixels()
    assert inside.sum() > 1000
    assert np.all(painted[inside, 4] == CAMERA_NAMES.index("CAM_FRONT"))
    np.testing.assert_allclose(painted[inside, 5], u[inside], atol=1e-3)
    np.testing.assert_allclose(painted[inside, 6], v[inside], atol=1e-3)


class _GivenMap(nn.Module):
    """An encoder that answers each image (filled with its flat index b * K + k) with its logits."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[images[:, 0, 0, 0].long()]


def test_the_scorer_reads_the_logits_bilinearly_at_the_point_and_zeroes_unseen_points() -> None:
    camera = tiny_for_tests().camera
    scorer = PaintScorer(camera, num_classes=2)
    stride = scorer.stride
    # Two samples x six cameras, 3 logits on a 2 x 3 feature grid, every value distinct.
    logits = torch.arange(2 * 6 * 3 * 2 * 3, dtype=torch.float32).reshape(12, 3, 2, 3) / 10.0
    scorer.encoder, scorer.classifier = _GivenMap(logits), nn.Identity()
    images = torch.arange(12, dtype=torch.float32).view(2, 6, 1, 1, 1).expand(2, 6, 3, 2 * stride, 3 * stride)

    def point(camera_slot: float, u: float, v: float) -> list[float]:
        return [0.0] * (5 + PAINT_CHANNELS) + [camera_slot, u, v]

    centre = lambda j: (j + 0.5) * stride - 0.5  # noqa: E731  (feature pixel j's centre in input pixels)
    features = torch.tensor(
        [
            [point(4, centre(2), centre(1)), point(-1, 0.0, 0.0)],  # sample 1, camera 4, cell (1, 2); unseen
            [point(0, (centre(0) + centre(1)) / 2, centre(0)), point(5, centre(0), centre(1))],
        ]
    )
    coords = torch.tensor([[1, 0, 0], [0, 3, 3]])
    out, read = scorer(features, coords, images, torch.ones(2, 6, dtype=torch.bool))
    torch.testing.assert_close(read[0, 0], logits[1 * 6 + 4, :, 1, 2])
    torch.testing.assert_close(read[1, 0], (logits[0, :, 0, 0] + logits[0, :, 0, 1]) / 2)
    torch.testing.assert_close(read[1, 1], logits[5, :, 1, 0])
    assert out.shape == (2, 2, 5 + PAINT_CHANNELS + 2)
    torch.testing.assert_close(out[0, 0, -2:], torch.softmax(logits[10, :, 1, 2], dim=0)[:2])
    assert float(out[0, 1, -2:].abs().sum()) == 0.0
    # Cameras no point names need not be there: only the present ones are encoded.
    present = torch.zeros(2, 6, dtype=torch.bool)
    present[0, 0] = present[0, 5] = present[1, 4] = True
    fewer, read_fewer = scorer(features, coords, images, present)
    torch.testing.assert_close(read_fewer[features[..., 9] >= 0], read[features[..., 9] >= 0])
    torch.testing.assert_close(fewer, out)
    # No camera at all: no scores.
    dark, _ = scorer(features, coords, images, torch.zeros(2, 6, dtype=torch.bool))
    assert float(dark[..., -2:].abs().sum()) == 0.0


def test_a_point_is_labelled_with_the_class_of_its_box_background_or_nothing() -> None:
    boxes = Boxes3D(
        center=np.array([[10.0, 0.0, 1.0], [0.0, 10.0, 1.0]]),
        size_wlh=np.array([[2.0, 4.0, 2.0], [1.0, 1.0, 2.0]]),
        yaw_rad=np.zeros(2),
        label=np.array([3, 7]),
    )
    points = np.array([[10.5, 0.5, 1.0], [0.2, 10.1, 0.5], [30.0, 0.0, 1.0], [10.0, 0.0, 1.0], [0.0, 10.0, 1.0]])
    seen = np.array([True, True, True, False, True])
    labels = point_labels(points, boxes, seen, num_classes=10)
    assert labels.tolist() == [3, 7, 10, -1, 7]
    assert point_labels(points, Boxes3D.empty(), seen, 10).tolist() == [10, 10, 10, -1, 10]


def test_training_early_fusion_supervises_the_painted_scores(frame_factory) -> None:
    config = with_strategy(tiny_for_tests(), "early")
    assert config.paints_scores
    torch.manual_seed(0)
    model = BEVFusion.from_config(config).train()
    frames = [frame_factory(0), frame_factory(1)]
    batch = collate(frames, config, with_targets=True)
    labels = batch.pillar_point_labels
    assert labels is not None and labels.shape == batch.pillar_features.shape[:2]
    valid = torch.arange(labels.shape[1])[None, :] < batch.pillar_num_points[:, None]
    assert bool((labels[~valid] == -1).all())
    # Seen points on the boxes carry their classes, seen ground points the background.
    classes = set(labels[valid & (labels >= 0)].tolist())
    assert config.head.num_classes in classes and len(classes - {config.head.num_classes}) >= 3
    outputs = model(batch)
    assert outputs.paint_logits is not None
    loss, parts = total_loss(
        outputs, batch.targets, batch.depth_target_bin, config.loss, point_labels=batch.pillar_point_labels
    )
    assert parts["paint"] > 0.0
    loss.backward()
    assert model.painter is not None and float(model.painter.classifier.weight.grad.abs().sum()) > 0.0
    # Inference batches carry no labels; the scores are painted all the same.
    plain = collate(frames, config)
    assert plain.pillar_point_labels is None and plain.pillar_features.shape[2] == 5 + PAINT_CHANNELS + 3
