"""Pinhole projection: hand-worked pixels, round trips, edges, resize, and the rig's derived matrices."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.calibration.camera import CameraIntrinsics, CameraRig
from avfusion.calibration.se3 import SE3

K = np.array([[1000.0, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 1.0]])


def test_hand_worked_projection() -> None:
    camera = CameraIntrinsics(K, 1600, 900)
    projection = camera.project([[1.0, -0.5, 10.0], [0.0, 0.0, -5.0], [100.0, 0.0, 10.0]])
    np.testing.assert_allclose(projection.uv[0], [900.0, 400.0])
    np.testing.assert_allclose(projection.depth, [10.0, -5.0, 10.0])
    assert np.isnan(projection.uv[1]).all()  # behind the camera: no pixel
    assert projection.in_image.tolist() == [True, False, False]  # third lands at u = 10800


def test_image_bounds_are_half_open_pixel_edges() -> None:
    camera = CameraIntrinsics(K, 1600, 900)
    # the image spans u in [-0.5, 1599.5), v in [-0.5, 899.5): pixel centres are integers
    uv = np.array([[-0.49, 0.0], [-0.51, 0.0], [1599.49, 899.49], [1599.51, 0.0], [0.0, 899.51]])
    points = camera.backproject(uv, np.ones(5))
    assert camera.project(points).in_image.tolist() == [True, False, True, False, False]


def test_backproject_round_trip() -> None:
    rng = np.random.default_rng(0)
    camera = CameraIntrinsics(np.array([[1266.4, 0.3, 816.3], [0.0, 1266.4, 491.5], [0, 0, 1]]), 1600, 900)
    uv = rng.uniform([0, 0], [1600, 900], size=(50, 2))
    depth = rng.uniform(0.5, 80.0, size=50)
    points = camera.backproject(uv, depth)
    np.testing.assert_allclose(points[:, 2], depth, atol=1e-9)
    projection = camera.project(points)
    np.testing.assert_allclose(projection.uv, uv, atol=1e-8)
    assert projection.in_image.all()


def test_resize_keeps_image_edges_fixed() -> None:
    camera = CameraIntrinsics(K, 1600, 900)
    quarter = camera.resized(400, 225)
    assert (quarter.width, quarter.height) == (400, 225)
    assert quarter.fx == pytest.approx(250.0)
    # pixel centre 800 in the full image lies at (800 + 0.5) / 4 - 0.5 in the quarter image
    assert quarter.cx == pytest.approx(199.625)
    point = np.array([[2.0, 1.0, 7.0]])
    full_uv = camera.project(point).uv[0]
    np.testing.assert_allclose(quarter.project(point).uv[0], (full_uv + 0.5) / 4 - 0.5, atol=1e-12)


def test_intrinsics_validation() -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        CameraIntrinsics(np.eye(4), 10, 10)
    with pytest.raises(ValueError, match="size"):
        CameraIntrinsics(K, 0, 10)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        CameraIntrinsics(K, 1600, 900).project(np.zeros((3, 2)))


def test_rig_derived_matrices_and_projection() -> None:
    rng = np.random.default_rng(1)
    ego_from_cams = [
        SE3.from_yaw(yaw, rng.normal(size=3))
        @ SE3.from_matrix(np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]]))
        for yaw in (0.0, np.pi)
    ]
    intrinsics = [CameraIntrinsics(K, 1600, 900)] * 2
    rig = CameraRig.from_cameras(["CAM_FRONT", "CAM_BACK"], intrinsics, ego_from_cams)
    for k, transform in enumerate(ego_from_cams):
        np.testing.assert_allclose(rig.camera_from_ego[k], transform.inverse().matrix, atol=1e-12)
    points_ego = np.array([[10.0, 1.0, 0.5], [-10.0, 1.0, 0.5]])
    projection = rig.project_ego(points_ego)
    assert projection.uv.shape == (2, 2, 2)
    assert projection.in_image.tolist() == [[True, False], [False, True]]
    homogeneous = np.concatenate([points_ego, np.ones((2, 1))], axis=1) @ rig.image_from_ego[0].T
    np.testing.assert_allclose(homogeneous[0, :2] / homogeneous[0, 2], projection.uv[0, 0], atol=1e-9)
    # a horizontal flip applied after projection: u -> W - 1 - u
    flip = np.array([[-1.0, 0.0, 1599.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    flipped = rig.with_image_aug(flip, (900, 1600)).project_ego(points_ego)
    np.testing.assert_allclose(flipped.uv[0, 0, 0], 1599.0 - projection.uv[0, 0, 0], atol=1e-9)
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        CameraRig(("A", "B"), np.zeros((3, 3, 3)), np.zeros((2, 4, 4)), np.zeros((2, 3, 3)), (9, 16))
