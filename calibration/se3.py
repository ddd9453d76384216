"""Rigid transforms SE(3) and unit quaternions.

Conventions (DESIGN.md section 3): quaternions are `(w, x, y, z)` as in nuScenes, Hamilton product,
active rotations (`R @ p` rotates the point `p`). Points are row-major `(N, 3)`. A transform is named
`target_from_source`, so `cam_from_lidar = cam_from_ego @ ego_from_lidar` reads left to right.
Yaw is the rotation about +z, counter-clockwise seen from above, in radians.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from avfusion.errors import InputError

# A calibration quaternion whose norm is further than this from 1 is a data error, not rounding:
# nuScenes stores them with ~16 significant digits.
UNIT_QUATERNION_TOLERANCE = 1e-3
# Orthonormality tolerance for rotation matrices given directly (float32 sources round to ~1e-7).
_ROTATION_TOLERANCE = 1e-5


def libm_elementwise(function: Callable[..., float], *arrays: object) -> np.ndarray:
    """`function` (from `math`, e.g. `math.atan2`) applied elementwise through the C library's
    scalar routine: float64 of the inputs' broadcast shape.

    For box angles, where the same input must give the same bits in every run: NumPy's vectorised
    loops for transcendental functions (SVML on AVX-512 CPUs) may round the last bit differently
    for the same value depending on the memory layout of the arrays (a strided view of a matrix
    column or a contiguous copy), and `np.arctan2` on strided views is what made plain replay runs
    differ. The scalar routine depends on the value alone. Meant for per-box arrays (hundreds of
    elements), not for clouds.
    """
    broadcast = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
    shape = broadcast[0].shape
    columns = [a.ravel().tolist() for a in broadcast]
    return np.fromiter(map(function, *columns), dtype=np.float64, count=math.prod(shape)).reshape(shape)


def _as_quaternion_array(wxyz: object) -> np.ndarray:
    q = np.asarray(wxyz, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternion must have shape (..., 4) as (w, x, y, z), got {q.shape}")
    return q


def quaternion_to_matrix(wxyz: object) -> np.ndarray:
    """Rotation matrix of unit quaternion(s).

    Args:
        wxyz: `(..., 4)` quaternions `(w, x, y, z)`; normalized here (callers validate the norm).
    Returns:
        `(..., 3, 3)` float64 rotation matrices.
    """
    q = _as_quaternion_array(wxyz)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm == 0) or not np.all(np.isfinite(q)):
        raise ValueError(f"quaternion must be finite and non-zero, got {q.tolist()}")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    matrix = np.empty((*q.shape[:-1], 3, 3), dtype=np.float64)
    matrix[..., 0, 0] = 1 - 2 * (y * y + z * z)
    matrix[..., 0, 1] = 2 * (x * y - w * z)
    matrix[..., 0, 2] = 2 * (x * z + w * y)
    matrix[..., 1, 0] = 2 * (x * y + w * z)
    matrix[..., 1, 1] = 1 - 2 * (x * x + z * z)
    matrix[..., 1, 2] = 2 * (y * z - w * x)
    matrix[..., 2, 0] = 2 * (x * z - w * y)
    matrix[..., 2, 1] = 2 * (y * z + w * x)
    matrix[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return matrix


def matrix_to_quaternion(rotation: object) -> np.ndarray:
    """Unit quaternion(s) `(w, x, y, z)` of rotation matrices, with `w >= 0`.

    Args:
        rotation: `(..., 3, 3)` rotation matrices.
    Returns:
        `(..., 4)` float64 quaternions; of the two signs the one with non-negative `w` is returned.
    """
    m = np.asarray(rotation, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape (..., 3, 3), got {m.shape}")
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four algebraically equal formulas; each is well conditioned when its pivot is the largest,
    # so pick per matrix the one with the largest of (trace, m00, m11, m22) (Shepperd's method).
    candidates = np.stack(
        [
            np.stack(
                [1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
            ),
            np.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    1 + 2 * m[..., 0, 0] - trace,
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            np.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    1 + 2 * m[..., 1, 1] - trace,
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            np.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    1 + 2 * m[..., 2, 2] - trace,
                ],
                -1,
            ),
        ],
        axis=-2,
    )  # (..., 4 candidates, 4)
    pivots = np.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    best = np.argmax(pivots, axis=-1)
    q = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(q0: object, q1: object) -> np.ndarray:
    """Hamilton product `q0 * q1` of `(..., 4)` quaternions (the rotation q1 first, then q0)."""
    a = _as_quaternion_array(q0)
    b = _as_quaternion_array(q1)
    w0, x0, y0, z0 = np.moveaxis(a, -1, 0)
    w1, x1, y1, z1 = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            w0 * w1 - x0 * x1 - y0 * y1 - z0 * z1,
            w0 * x1 + x0 * w1 + y0 * z1 - z0 * y1,
            w0 * y1 - x0 * z1 + y0 * w1 + z0 * x1,
            w0 * z1 + x0 * y1 - y0 * x1 + z0 * w1,
        ],
        axis=-1,
    )


def quaternion_slerp(q0: object, q1: object, alpha: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions along the shorter arc.

    Args:
        q0, q1: `(4,)` quaternions `(w, x, y, z)` (normalized here).
        alpha: 0 gives `q0`, 1 gives `q1` (or `-q1`, the same rotation); values outside extrapolate.
    Returns:
        `(4,)` float64 unit quaternion.
    """
    a = _as_quaternion_array(q0)
    b = _as_quaternion_array(q1)
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    dot = float(np.dot(a, b))
    if dot < 0.0:  # q and -q are the same rotation; going to -b is the shorter way round
        b, dot = -b, -dot
    if dot > 0.9995:  # nearly parallel: sin(theta) ~ 0, linear interpolation is exact to ~1e-7
        q = a + alpha * (b - a)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    q = (np.sin((1.0 - alpha) * theta) * a + np.sin(alpha * theta) * b) / np.sin(theta)
    return q / np.linalg.norm(q)


def yaw_from_quaternion(wxyz: object) -> np.ndarray | float:
    """Yaw (radians, about +z, in (-pi, pi]) of the heading `R @ (1, 0, 0)` projected on the xy plane.

    This is the devkit's `quaternion_yaw`, vectorized over `(..., 4)`; a `(4,)` input gives a float.
    """
    rotation = quaternion_to_matrix(wxyz)
    yaw = libm_elementwise(math.atan2, rotation[..., 1, 0], rotation[..., 0, 0])
    return float(yaw) if np.ndim(yaw) == 0 else yaw


def quaternion_from_yaw(yaw_rad: object) -> np.ndarray:
    """Quaternion(s) `(w, x, y, z)` of a rotation by `yaw_rad` about +z: shape `yaw.shape + (4,)`."""
    half = 0.5 * np.asarray(yaw_rad, dtype=np.float64)
    zeros = np.zeros_like(half)
    return np.stack([libm_elementwise(math.cos, half), zeros, zeros, libm_elementwise(math.sin, half)], axis=-1)


def validated_unit_quaternion(wxyz: object, what: str) -> np.ndarray:
    """A `(4,)` quaternion from input data, normalized; `InputError` naming `what` if it is not unit.

    `what` names the source (file, table and token) so that the message says where the bad value is.
    """
    try:
        q = np.asarray(wxyz, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what}: rotation must be 4 numbers (w, x, y, z), got {wxyz!r}") from error
    if q.shape != (4,) or not np.all(np.isfinite(q)):
        raise InputError(f"{what}: rotation must be 4 finite numbers (w, x, y, z), got {wxyz!r}")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > UNIT_QUATERNION_TOLERANCE:
        raise InputError(f"{what}: rotation {q.tolist()} is not a unit quaternion (norm {norm:.6f})")
    return q / norm


@dataclass(frozen=True, slots=True, eq=False)
class SE3:
    """A rigid transform `p_target = rotation @ p_source + translation`.

    Attributes:
        rotation: `(3, 3)` float64, orthonormal with determinant +1.
        translation: `(3,)` float64, metres.
    """

    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        rotation = np.array(self.rotation, dtype=np.float64)
        translation = np.array(self.translation, dtype=np.float64)
        if rotation.shape != (3, 3):
            raise ValueError(f"SE3.rotation must have shape (3, 3), got {rotation.shape}")
        if translation.shape != (3,):
            raise ValueError(f"SE3.translation must have shape (3,), got {translation.shape}")
        if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))):
            raise ValueError("SE3 must be finite")
        orthogonality = np.abs(rotation @ rotation.T - np.eye(3)).max()
        if orthogonality > _ROTATION_TOLERANCE or np.linalg.det(rotation) < 0:
            raise ValueError(
                f"SE3.rotation must be a proper rotation, got |R R^T - I| = {orthogonality:.3g}, "
                f"det = {np.linalg.det(rotation):.6f}"
            )
        rotation.flags.writeable = False
        translation.flags.writeable = False
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "translation", translation)

    @staticmethod
    def identity() -> SE3:
        return SE3(np.eye(3), np.zeros(3))

    @staticmethod
    def from_matrix(matrix: object) -> SE3:
        """From a `(4, 4)` homogeneous matrix whose last row is `(0, 0, 0, 1)`."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"SE3.from_matrix needs shape (4, 4), got {m.shape}")
        if not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0), atol=1e-9):
            raise ValueError(f"SE3.from_matrix: last row must be (0, 0, 0, 1), got {m[3].tolist()}")
        return SE3(m[:3, :3], m[:3, 3])

    @staticmethod
    def from_quaternion(wxyz: object, translation: object) -> SE3:
        """From a `(w, x, y, z)` quaternion (normalized here) and a `(3,)` translation in metres."""
        return SE3(quaternion_to_matrix(wxyz), np.asarray(translation, dtype=np.float64))

    @staticmethod
    def from_yaw(yaw_rad: float, translation: object) -> SE3:
        """A rotation by `yaw_rad` about +z followed by `translation`."""
        c, s = np.cos(yaw_rad), np.sin(yaw_rad)
        return SE3(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.asarray(translation, dtype=np.float64))

    @property
    def matrix(self) -> np.ndarray:
        """`(4, 4)` float64 homogeneous matrix (a new array)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    @property
    def quaternion(self) -> np.ndarray:
        """`(4,)` unit quaternion `(w, x, y, z)` with `w >= 0`."""
        return matrix_to_quaternion(self.rotation)

    @property
    def yaw_rad(self) -> float:
        """Yaw of the rotated x axis on the xy plane, radians in (-pi, pi]."""
        return math.atan2(float(self.rotation[1, 0]), float(self.rotation[0, 0]))

    def __matmul__(self, other: SE3) -> SE3:
        """Composition: `(a @ b).apply(p) == a.apply(b.apply(p))`."""
        if not isinstance(other, SE3):
            return NotImplemented
        return SE3(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def inverse(self) -> SE3:
        rotation_t = self.rotation.T
        return SE3(rotation_t, -rotation_t @ self.translation)

    def apply(self, points: object) -> np.ndarray:
        """Transform points: `(..., 3)` in the source frame -> `(..., 3)` float64 in the target frame."""
        p = np.asarray(points)
        if p.shape[-1:] != (3,):
            raise ValueError(f"SE3.apply needs points of shape (..., 3), got {p.shape}")
        return p @ self.rotation.T + self.translation

    def apply_vectors(self, vectors: object) -> np.ndarray:
        """Rotate direction vectors `(..., 3)` (no translation), e.g. velocities; float64."""
        v = np.asarray(vectors)
        if v.shape[-1:] != (3,):
            raise ValueError(f"SE3.apply_vectors needs vectors of shape (..., 3), got {v.shape}")
        return v @ self.rotation.T

    @staticmethod
    def interpolate(a: SE3, b: SE3, alpha: float) -> SE3:
        """Pose between `a` (alpha 0) and `b` (alpha 1): linear translation, SLERP rotation."""
        q = quaternion_slerp(a.quaternion, b.quaternion, alpha)
        translation = (1.0 - alpha) * a.translation + alpha * b.translation
        return SE3.from_quaternion(q, translation)

    def allclose(self, other: SE3, atol: float = 1e-9) -> bool:
        """Whether both rotation and translation agree elementwise within `atol`."""
        return bool(
            np.allclose(self.rotation, other.rotation, atol=atol, rtol=0)
            and np.allclose(self.translation, other.translation, atol=atol, rtol=0)
        )

    def __repr__(self) -> str:
        t = ", ".join(f"{v:.4f}" for v in self.translation)
        q = ", ".join(f"{v:.5f}" for v in self.quaternion)
        return f"SE3(t=[{t}], q_wxyz=[{q}])"
