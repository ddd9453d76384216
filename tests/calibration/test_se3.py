"""SE3 and quaternion properties, hand-worked cases, and agreement with pyquaternion (the devkit's)."""

from __future__ import annotations

import numpy as np
import pytest
from pyquaternion import Quaternion

from avfusion.calibration.se3 import (
    SE3,
    matrix_to_quaternion,
    quaternion_from_yaw,
    quaternion_slerp,
    quaternion_to_matrix,
    validated_unit_quaternion,
    yaw_from_quaternion,
)
from avfusion.errors import InputError


def random_quaternions(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, :1] < 0, -q, q)


def random_se3(rng: np.random.Generator) -> SE3:
    return SE3.from_quaternion(random_quaternions(rng, 1)[0], rng.normal(scale=10.0, size=3))


def test_compose_with_inverse_is_identity() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        transform = random_se3(rng)
        assert (transform @ transform.inverse()).allclose(SE3.identity(), atol=1e-12)
        assert (transform.inverse() @ transform).allclose(SE3.identity(), atol=1e-12)


def test_composition_applies_right_transform_first() -> None:
    rng = np.random.default_rng(1)
    a, b = random_se3(rng), random_se3(rng)
    points = rng.normal(size=(7, 3))
    np.testing.assert_allclose((a @ b).apply(points), a.apply(b.apply(points)), atol=1e-12)
    np.testing.assert_allclose((a @ b).matrix, a.matrix @ b.matrix, atol=1e-12)


def test_hand_worked_yaw_transform() -> None:
    # 90 degrees about z then +1 in x: (1, 0, 0) -> (0, 1, 0) -> (1, 1, 0)
    transform = SE3.from_yaw(np.pi / 2, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(transform.apply([[1.0, 0.0, 0.0]]), [[1.0, 1.0, 0.0]], atol=1e-15)
    np.testing.assert_allclose(transform.apply_vectors([[1.0, 0.0, 0.0]]), [[0.0, 1.0, 0.0]], atol=1e-15)
    assert transform.yaw_rad == pytest.approx(np.pi / 2)
    np.testing.assert_allclose(transform.quaternion, [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-15)


def test_quaternion_round_trip_and_pyquaternion_agreement() -> None:
    rng = np.random.default_rng(2)
    quaternions = random_quaternions(rng, 200)
    matrices = quaternion_to_matrix(quaternions)
    for q, m in zip(quaternions, matrices, strict=True):
        np.testing.assert_allclose(m, Quaternion(q).rotation_matrix, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quaternion(matrices), quaternions, atol=1e-12)
    # single matrices too, including the w ~ 0 branch (180 degree turns)
    for axis in np.eye(3):
        q = np.concatenate([[0.0], axis])
        np.testing.assert_allclose(np.abs(matrix_to_quaternion(quaternion_to_matrix(q))), q, atol=1e-12)


def test_matrix_round_trip() -> None:
    rng = np.random.default_rng(3)
    transform = random_se3(rng)
    assert SE3.from_matrix(transform.matrix).allclose(transform, atol=1e-15)
    assert SE3.from_quaternion(transform.quaternion, transform.translation).allclose(transform, atol=1e-12)


def test_yaw_quaternion_functions_match_devkit_definition() -> None:
    rng = np.random.default_rng(4)
    for yaw in rng.uniform(-np.pi, np.pi, 20):
        q = quaternion_from_yaw(yaw)
        assert yaw_from_quaternion(q) == pytest.approx(yaw, abs=1e-12)
        devkit_yaw = np.arctan2(*(Quaternion(q).rotation_matrix @ [1, 0, 0])[[1, 0]])
        assert yaw_from_quaternion(q) == pytest.approx(devkit_yaw, abs=1e-12)
    np.testing.assert_allclose(yaw_from_quaternion(quaternion_from_yaw([0.1, -2.0])), [0.1, -2.0], atol=1e-12)


def test_slerp_matches_pyquaternion_and_endpoints() -> None:
    rng = np.random.default_rng(5)
    q0, q1 = random_quaternions(rng, 2)
    for alpha in (0.0, 0.25, 0.5, 1.0):
        ours = quaternion_slerp(q0, q1, alpha)
        reference = Quaternion.slerp(Quaternion(q0), Quaternion(q1), alpha).elements
        # same rotation (q and -q are equal rotations)
        np.testing.assert_allclose(quaternion_to_matrix(ours), quaternion_to_matrix(reference), atol=1e-9)
    # halfway between yaw 0 and yaw 1 rad is yaw 0.5 rad
    half = quaternion_slerp(quaternion_from_yaw(0.0), quaternion_from_yaw(1.0), 0.5)
    assert yaw_from_quaternion(half) == pytest.approx(0.5, abs=1e-12)


def test_interpolate_pose() -> None:
    a = SE3.from_yaw(0.0, [0.0, 0.0, 0.0])
    b = SE3.from_yaw(0.4, [10.0, -2.0, 0.0])
    middle = SE3.interpolate(a, b, 0.25)
    np.testing.assert_allclose(middle.translation, [2.5, -0.5, 0.0], atol=1e-12)
    assert middle.yaw_rad == pytest.approx(0.1, abs=1e-12)
    assert SE3.interpolate(a, b, 1.0).allclose(b, atol=1e-12)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        SE3(np.eye(4), np.zeros(3))
    with pytest.raises(ValueError, match="proper rotation"):
        SE3(np.diag([1.0, 1.0, -1.0]), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        SE3(np.eye(3), np.zeros(4))
    with pytest.raises(InputError, match=r"calibrated_sensor abc.*not a unit quaternion"):
        validated_unit_quaternion([1.0, 0.0, 0.0, 1.0], "calibrated_sensor abc")
    with pytest.raises(InputError, match="4 finite numbers"):
        validated_unit_quaternion([1.0, 0.0, 0.0], "x")


def test_se3_is_immutable() -> None:
    transform = SE3.identity()
    with pytest.raises(ValueError):
        transform.rotation[0, 0] = 2.0
    with pytest.raises(AttributeError):
        transform.rotation = np.eye(3)  # type: ignore[misc]
