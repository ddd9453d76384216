"""Boxes3D: hand-worked corners, devkit Box agreement, transforms, points on edges, indexing."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import SE3, quaternion_from_yaw


def one_box(yaw: float = 0.0, center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Boxes3D:
    return Boxes3D(center=[center], size_wlh=[[2.0, 4.0, 1.0]], yaw_rad=[yaw], velocity_xy=[[1.0, 0.0]], label=[0])


def test_corners_hand_worked() -> None:
    corners = one_box().corners()[0]
    # length 4 along x, width 2 along y, height 1; devkit order: front four, then rear four
    expected = [
        [2, 1, 0.5],
        [2, -1, 0.5],
        [2, -1, -0.5],
        [2, 1, -0.5],
        [-2, 1, 0.5],
        [-2, -1, 0.5],
        [-2, -1, -0.5],
        [-2, 1, -0.5],
    ]
    np.testing.assert_allclose(corners, expected, atol=1e-15)
    turned = one_box(yaw=np.pi / 2, center=(10.0, 0.0, 0.0)).bev_corners()[0]
    # heading +y: front-right is (+1, +2) from the centre, counter-clockwise order
    np.testing.assert_allclose(turned, [[11, 2], [9, 2], [9, -2], [11, -2]], atol=1e-12)


def test_corners_match_devkit_box() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=20, size=(10, 3))
    sizes = rng.uniform(0.5, 5.0, size=(10, 3))
    yaws = rng.uniform(-np.pi, np.pi, size=10)
    boxes = Boxes3D(center=centers, size_wlh=sizes, yaw_rad=yaws, label=np.zeros(10, np.int64))
    for n in range(10):
        devkit = Box(centers[n], sizes[n], Quaternion(quaternion_from_yaw(yaws[n])))
        np.testing.assert_allclose(boxes.corners()[n], devkit.corners().T, atol=1e-12)


def test_transform_matches_devkit_rotate_translate_with_roll_and_pitch() -> None:
    rng = np.random.default_rng(1)
    pose_q = Quaternion(axis=[0.05, 0.02, 1.0], angle=0.7)  # an ego pose with small roll/pitch
    pose = SE3.from_quaternion(pose_q.elements, [400.0, 1100.0, 0.0])
    boxes = Boxes3D(
        center=rng.normal(size=(5, 3)) * 10,
        size_wlh=np.ones((5, 3)),
        yaw_rad=rng.uniform(-3, 3, 5),
        velocity_xy=rng.normal(size=(5, 2)),
        label=np.zeros(5, np.int64),
    )
    moved = boxes.transform(pose)
    for n in range(5):
        devkit = Box(
            boxes.center[n],
            [1, 1, 1],
            Quaternion(quaternion_from_yaw(boxes.yaw_rad[n])),
            velocity=(*boxes.velocity_xy[n], 0.0),
        )
        devkit.rotate(pose_q)
        devkit.translate(np.array([400.0, 1100.0, 0.0]))
        np.testing.assert_allclose(moved.center[n], devkit.center, atol=1e-9)
        yaw = np.arctan2(*(devkit.orientation.rotation_matrix @ [1, 0, 0])[[1, 0]])
        assert moved.yaw_rad[n] == pytest.approx(yaw, abs=1e-12)
        np.testing.assert_allclose(moved.velocity_xy[n], devkit.velocity[:2], atol=1e-12)
    back = moved.transform(pose.inverse())
    np.testing.assert_allclose(back.center, boxes.center, atol=1e-9)


def test_points_in_boxes_edges() -> None:
    boxes = Boxes3D.concat([one_box(), one_box(yaw=np.pi / 2, center=(10.0, 0.0, 0.0))])
    points = np.array(
        [
            [2.0, 1.0, 0.5],  # on a corner of box 0: inside (surface counts)
            [2.0001, 0.0, 0.0],  # just past the front face of box 0
            [0.0, 0.0, 0.5001],  # just above box 0
            [11.0, 2.0, 0.0],  # corner of the turned box 1
            [12.0, 0.0, 0.0],  # 2 m to the side of box 1: its half width is 1
            [10.0, 1.9, 0.0],  # along box 1's length
        ]
    )
    inside = boxes.points_in_boxes(points)
    assert inside.shape == (6, 2)
    assert inside.tolist() == [
        [True, False],
        [False, False],
        [False, False],
        [False, True],
        [False, False],
        [False, True],
    ]


def test_defaults_indexing_and_concat() -> None:
    boxes = Boxes3D(
        center=np.zeros((3, 3)),
        size_wlh=np.ones((3, 3)),
        yaw_rad=[0.0, 1.0, 2.0],
        label=[0, 5, 9],
        instance_token=("a", "b", "c"),
    )
    assert np.isnan(boxes.velocity_xy).all() and (boxes.score == 1.0).all()
    assert (boxes.attribute == -1).all() and (boxes.num_lidar_pts == -1).all()
    picked = boxes[np.array([False, True, True])]
    assert len(picked) == 2 and picked.instance_token == ("b", "c") and picked.label.tolist() == [5, 9]
    assert boxes[[2, 0]].yaw_rad.tolist() == [2.0, 0.0]
    assert boxes.class_names == ("car", "pedestrian", "barrier")
    merged = Boxes3D.concat([boxes, one_box()])
    assert len(merged) == 4 and merged.instance_token == ()  # one part had no tokens
    assert len(Boxes3D.empty()) == 0 and Boxes3D.empty().corners().shape == (0, 8, 3)


def test_validation_names_shape() -> None:
    with pytest.raises(ValueError, match=r"size_wlh must have shape \(2, 3\), got \(2, 2\)"):
        Boxes3D(center=np.zeros((2, 3)), size_wlh=np.ones((2, 2)), yaw_rad=[0, 0], label=[0, 0])
    with pytest.raises(ValueError, match="label must be in"):
        Boxes3D(center=np.zeros((1, 3)), size_wlh=np.ones((1, 3)), yaw_rad=[0], label=[10])
    with pytest.raises(ValueError, match="> 0"):
        Boxes3D(center=np.zeros((1, 3)), size_wlh=np.zeros((1, 3)), yaw_rad=[0], label=[0])
