"""Point painting (early fusion): each lidar point takes what a camera sees where it projects.

A point's paint is the colour of the network-input image pixel it falls on (nearest pixel, the
three channels normalised as the camera branch normalises them) and a flag that a camera saw it;
a point no camera sees gets zeros. Where two cameras overlap the first in `CAMERA_NAMES` order
wins. The projection is the rig's (`calibration.camera.CameraRig.project_ego`), with the same
intrinsics, ego-motion-compensated extrinsics and image resize/crop the camera branch uses.

With painted scores (`FuserConfig.paint_scores`) the batch also carries, per point, which camera
painted it and the exact pixel: the model's camera network reads its per-class scores there
(`fusion.painter.PaintScorer`), and training labels each painted point with the class of the box
it lies in (`point_labels`).
"""

from __future__ import annotations

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraRig
from avfusion.fusion.config import PAINT_CHANNELS, PAINT_LOOKUP_CHANNELS


def paint_points(
    points_ego: np.ndarray, rig: CameraRig, images: np.ndarray, camera_slots: np.ndarray | None = None
) -> np.ndarray:
    """`(N, PAINT_CHANNELS)` float32 paint: colour (3) and seen flag; with `camera_slots`,
    `PAINT_LOOKUP_CHANNELS` more: the painting camera's slot (-1: none) and its pixel (u, v).

    Args:
        points_ego: `(N, 3)` lidar points in the ego frame at the lidar time.
        rig: the K present cameras, `image_aug` mapping read pixels to network-input pixels and
            `image_size_hw` the network input's size.
        images: `(K, 3, h, w)` float32 network-input images, in `rig.names` order.
        camera_slots: `(K,)` int, each present camera's index on the batch's camera axis.
    """
    lookup = camera_slots is not None
    paint = np.zeros((len(points_ego), PAINT_CHANNELS + (PAINT_LOOKUP_CHANNELS if lookup else 0)), dtype=np.float32)
    if lookup:
        paint[:, PAINT_CHANNELS] = -1.0
    if len(points_ego) == 0 or len(rig.names) == 0:
        return paint
    height, width = rig.image_size_hw
    projection = rig.project_ego(points_ego)
    unpainted = np.ones(len(points_ego), dtype=bool)
    for k in range(len(rig.names)):
        hit = projection.in_image[k] & unpainted
        if not hit.any():
            continue
        uv = projection.uv[k, hit]
        column = np.clip(np.rint(uv[:, 0]).astype(np.int64), 0, width - 1)
        row = np.clip(np.rint(uv[:, 1]).astype(np.int64), 0, height - 1)
        paint[hit, :3] = images[k][:, row, column].T
        paint[hit, 3] = 1.0
        if camera_slots is not None:
            paint[hit, PAINT_CHANNELS] = float(camera_slots[k])
            paint[hit, PAINT_CHANNELS + 1 :] = uv
        unpainted &= ~hit
    return paint


def point_labels(points_ego: np.ndarray, boxes: Boxes3D, seen: np.ndarray, num_classes: int) -> np.ndarray:
    """`(N,)` training label of each point for the painted scores: the class of the (first) box it
    lies in, `num_classes` for none (background), -1 for a point no camera saw (no loss there).
    `boxes` in the same frame as `points_ego`."""
    labels = np.full(len(points_ego), -1, dtype=np.int64)
    index = np.flatnonzero(seen)
    labels[index] = num_classes
    if len(index) and len(boxes):
        inside = boxes.points_in_boxes(points_ego[index])  # (M, boxes)
        found = inside.any(axis=1)
        labels[index[found]] = boxes.label[np.argmax(inside[found], axis=1)]
    return labels
