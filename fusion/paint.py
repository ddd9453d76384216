"""Point painting (early fusion): each lidar point takes what a camera sees where it projects.

A point's paint is the colour of the network-input image pixel it falls on (nearest pixel, the
three channels normalised as the camera branch normalises them) and a flag that a camera saw it;
a point no camera sees gets zeros. Where two cameras overlap the first in `CAMERA_NAMES` order
wins. The projection is the rig's (`calibration.camera.CameraRig.project_ego`), with the same
intrinsics, ego-motion-compensated extrinsics and image resize/crop the camera branch uses.
"""

from __future__ import annotations

import numpy as np

from avfusion.calibration.camera import CameraRig
from avfusion.fusion.config import PAINT_CHANNELS


def paint_points(points_ego: np.ndarray, rig: CameraRig, images: np.ndarray) -> np.ndarray:
    """`(N, PAINT_CHANNELS)` float32 paint: colour (3) and seen flag.

    Args:
        points_ego: `(N, 3)` lidar points in the ego frame at the lidar time.
        rig: the K present cameras, `image_aug` mapping read pixels to network-input pixels and
            `image_size_hw` the network input's size.
        images: `(K, 3, h, w)` float32 network-input images, in `rig.names` order.
    """
    paint = np.zeros((len(points_ego), PAINT_CHANNELS), dtype=np.float32)
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
        unpainted &= ~hit
    return paint
