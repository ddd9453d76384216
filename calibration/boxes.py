"""`Boxes3D`: upright 3D boxes as a struct of arrays, in whatever frame the holder names.

A box is its centre, its size `(w, l, h)` (nuScenes order: width across, length along the heading,
height), and its yaw about +z (radians, counter-clockwise; 0 = heading along +x). The box frame has
x along the length (forward), y along the width (left), z up, origin at the box centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avfusion.calibration.se3 import SE3, libm_elementwise
from avfusion.labels import ATTRIBUTES, DETECTION_CLASSES

# Corner signs in the box frame (x along l, y along w, z along h), in nuscenes-devkit's
# `Box.corners()` order: the first four face forward (+x), the last four backward; within each
# four: left-top, right-top, right-bottom, left-bottom.
_CORNER_SIGNS = np.array(
    [
        [1, 1, 1],
        [1, -1, 1],
        [1, -1, -1],
        [1, 1, -1],
        [-1, 1, 1],
        [-1, -1, 1],
        [-1, -1, -1],
        [-1, 1, -1],
    ],
    dtype=np.float64,
)
# Bird's-eye footprint counter-clockwise seen from above: front-right, front-left, rear-left, rear-right.
_BEV_SIGNS = np.array([[1, -1], [1, 1], [-1, 1], [-1, -1]], dtype=np.float64)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True, eq=False)
class Boxes3D:
    """N upright boxes (struct of arrays). Arrays are copied and made read-only on construction.

    Attributes:
        center: `(N, 3)` float64 box centre, metres.
        size_wlh: `(N, 3)` float64 width, length, height in metres, all > 0.
        yaw_rad: `(N,)` float64 heading about +z.
        velocity_xy: `(N, 2)` float64 m/s in the same frame; NaN = unknown. Default NaN.
        label: `(N,)` int64 index into `DETECTION_CLASSES`.
        score: `(N,)` float64 confidence; 1.0 for ground truth (the default).
        attribute: `(N,)` int64 index into `ATTRIBUTES`, -1 = none (the default).
        num_lidar_pts: `(N,)` int64 lidar points inside the box, -1 = unknown (the default).
        instance_token, token: N strings each, or empty tuples when not known.
    """

    center: np.ndarray
    size_wlh: np.ndarray
    yaw_rad: np.ndarray
    # None (the default) asks for the default values above; `__post_init__` replaces it by an array,
    # so after construction every field is an array, which is the type the attributes declare.
    velocity_xy: np.ndarray = None  # type: ignore[assignment]
    label: np.ndarray = None  # type: ignore[assignment]
    score: np.ndarray = None  # type: ignore[assignment]
    attribute: np.ndarray = None  # type: ignore[assignment]
    num_lidar_pts: np.ndarray = None  # type: ignore[assignment]
    instance_token: tuple[str, ...] = ()
    token: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        center = np.array(self.center, dtype=np.float64)
        if center.size == 0:
            center = center.reshape(0, 3)
        if center.ndim != 2 or center.shape[1] != 3:
            raise ValueError(f"Boxes3D.center must have shape (N, 3), got {center.shape}")
        n = center.shape[0]

        def field(name: str, value: object, shape: tuple[int, ...], dtype: type, default: float | int) -> np.ndarray:
            if value is None:
                return np.full(shape, default, dtype=dtype)
            array: np.ndarray = np.array(value, dtype=dtype)
            if array.size == 0 and n == 0:
                array = array.reshape(shape)
            if array.shape != shape:
                raise ValueError(f"Boxes3D.{name} must have shape {shape}, got {array.shape}")
            return array

        size = field("size_wlh", self.size_wlh, (n, 3), np.float64, np.nan)
        yaw = field("yaw_rad", self.yaw_rad, (n,), np.float64, np.nan)
        velocity = field("velocity_xy", self.velocity_xy, (n, 2), np.float64, np.nan)
        if self.label is None:
            raise ValueError("Boxes3D.label is required (indices into DETECTION_CLASSES)")
        label_array = np.asarray(self.label)
        if label_array.size and not np.issubdtype(label_array.dtype, np.integer):
            raise ValueError(f"Boxes3D.label must be integers, got dtype {label_array.dtype}")
        label = field("label", self.label, (n,), np.int64, 0)
        score = field("score", self.score, (n,), np.float64, 1.0)
        attribute = field("attribute", self.attribute, (n,), np.int64, -1)
        num_lidar_pts = field("num_lidar_pts", self.num_lidar_pts, (n,), np.int64, -1)

        if not (np.all(np.isfinite(center)) and np.all(np.isfinite(yaw))):
            raise ValueError("Boxes3D.center and yaw_rad must be finite")
        if not np.all(size > 0):
            raise ValueError(f"Boxes3D.size_wlh must be > 0, got min {size.min() if n else None}")
        if n and (label.min() < 0 or label.max() >= len(DETECTION_CLASSES)):
            raise ValueError(f"Boxes3D.label must be in [0, {len(DETECTION_CLASSES)}), got {np.unique(label).tolist()}")
        if n and (attribute.min() < -1 or attribute.max() >= len(ATTRIBUTES)):
            raise ValueError(
                f"Boxes3D.attribute must be in [-1, {len(ATTRIBUTES)}), got {np.unique(attribute).tolist()}"
            )
        for name in ("instance_token", "token"):
            tokens = tuple(getattr(self, name))
            if tokens and len(tokens) != n:
                raise ValueError(f"Boxes3D.{name} must be empty or have {n} entries, got {len(tokens)}")
            object.__setattr__(self, name, tokens)

        for name, array in (
            ("center", center),
            ("size_wlh", size),
            ("yaw_rad", yaw),
            ("velocity_xy", velocity),
            ("label", label),
            ("score", score),
            ("attribute", attribute),
            ("num_lidar_pts", num_lidar_pts),
        ):
            object.__setattr__(self, name, _frozen(array))

    @staticmethod
    def empty() -> Boxes3D:
        return Boxes3D(
            center=np.zeros((0, 3)), size_wlh=np.zeros((0, 3)), yaw_rad=np.zeros(0), label=np.zeros(0, np.int64)
        )

    @staticmethod
    def concat(parts: Sequence[Boxes3D]) -> Boxes3D:
        """All boxes of `parts` in order; tokens are kept only when every part has them."""
        parts = list(parts)
        if not parts:
            return Boxes3D.empty()

        def tokens(name: str) -> tuple[str, ...]:
            if all(len(getattr(p, name)) == len(p) for p in parts):
                return tuple(t for p in parts for t in getattr(p, name))
            return ()

        return Boxes3D(
            center=np.concatenate([p.center for p in parts]),
            size_wlh=np.concatenate([p.size_wlh for p in parts]),
            yaw_rad=np.concatenate([p.yaw_rad for p in parts]),
            velocity_xy=np.concatenate([p.velocity_xy for p in parts]),
            label=np.concatenate([p.label for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            attribute=np.concatenate([p.attribute for p in parts]),
            num_lidar_pts=np.concatenate([p.num_lidar_pts for p in parts]),
            instance_token=tokens("instance_token"),
            token=tokens("token"),
        )

    def __len__(self) -> int:
        return int(self.center.shape[0])

    def __getitem__(self, index: object) -> Boxes3D:
        """Select boxes by a bool mask `(N,)`, an integer index array, a slice, or one integer."""
        if isinstance(index, (int, np.integer)):
            index = np.array([index])
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (len(self),):
                raise IndexError(f"Boxes3D mask must have shape ({len(self)},), got {index.shape}")
        positions = np.arange(len(self))[index]

        def pick(tokens: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(tokens[i] for i in positions) if tokens else ()

        return Boxes3D(
            center=self.center[index],
            size_wlh=self.size_wlh[index],
            yaw_rad=self.yaw_rad[index],
            velocity_xy=self.velocity_xy[index],
            label=self.label[index],
            score=self.score[index],
            attribute=self.attribute[index],
            num_lidar_pts=self.num_lidar_pts[index],
            instance_token=pick(self.instance_token),
            token=pick(self.token),
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(DETECTION_CLASSES[i] for i in self.label)

    def _rotations(self) -> np.ndarray:
        """`(N, 3, 3)` box -> frame rotations about z."""
        c, s = np.cos(self.yaw_rad), np.sin(self.yaw_rad)
        rotation = np.zeros((len(self), 3, 3))
        rotation[:, 0, 0], rotation[:, 0, 1] = c, -s
        rotation[:, 1, 0], rotation[:, 1, 1] = s, c
        rotation[:, 2, 2] = 1.0
        return rotation

    def corners(self) -> np.ndarray:
        """`(N, 8, 3)` corners in the boxes' frame, in the devkit's `Box.corners()` order (see `_CORNER_SIGNS`)."""
        half_lwh = 0.5 * self.size_wlh[:, [1, 0, 2]]  # (N, 3) half extents along box x, y, z
        local = _CORNER_SIGNS[None] * half_lwh[:, None, :]  # (N, 8, 3)
        return np.einsum("nij,nkj->nki", self._rotations(), local) + self.center[:, None, :]

    def bev_corners(self) -> np.ndarray:
        """`(N, 4, 2)` footprint xy, counter-clockwise: front-right, front-left, rear-left, rear-right."""
        half_lw = 0.5 * self.size_wlh[:, [1, 0]]  # (N, 2) half length (box x), half width (box y)
        local = _BEV_SIGNS[None] * half_lw[:, None, :]  # (N, 4, 2)
        c, s = np.cos(self.yaw_rad)[:, None], np.sin(self.yaw_rad)[:, None]
        x = c * local[..., 0] - s * local[..., 1] + self.center[:, None, 0]
        y = s * local[..., 0] + c * local[..., 1] + self.center[:, None, 1]
        return np.stack([x, y], axis=-1)

    def transform(self, target_from_frame: SE3) -> Boxes3D:
        """The boxes in another frame: centres moved, heading and velocity rotated.

        The new yaw is that of the rotated heading vector projected on the target xy plane (what
        the devkit's `quaternion_yaw` gives after `Box.rotate`), so a transform with small roll or
        pitch, like a real ego pose, agrees with the devkit. Velocity is treated as `(vx, vy, 0)`.
        """
        rotation = target_from_frame.rotation
        # Angles through the scalar C routines: the same box gives the same bits in every run
        # (`libm_elementwise`), whatever the memory layout of these arrays.
        heading = np.stack(
            [libm_elementwise(math.cos, self.yaw_rad), libm_elementwise(math.sin, self.yaw_rad), np.zeros(len(self))],
            axis=1,
        )
        heading_target = heading @ rotation.T
        velocity3 = np.concatenate([self.velocity_xy, np.zeros((len(self), 1))], axis=1)
        return Boxes3D(
            center=target_from_frame.apply(self.center),
            size_wlh=self.size_wlh,
            yaw_rad=libm_elementwise(math.atan2, heading_target[:, 1], heading_target[:, 0]),
            velocity_xy=(velocity3 @ rotation.T)[:, :2],
            label=self.label,
            score=self.score,
            attribute=self.attribute,
            num_lidar_pts=self.num_lidar_pts,
            instance_token=self.instance_token,
            token=self.token,
        )

    def points_in_boxes(self, points: object) -> np.ndarray:
        """`(M, N)` bool: point m lies inside or on the surface of box n. `points` `(M, 3)`, same frame."""
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] < 3:
            raise ValueError(f"points_in_boxes needs points of shape (M, 3), got {p.shape}")
        p = p[:, :3]
        inside = np.zeros((p.shape[0], len(self)), dtype=bool)
        c, s = np.cos(self.yaw_rad), np.sin(self.yaw_rad)
        half = 0.5 * self.size_wlh
        for n in range(len(self)):
            offset = p - self.center[n]  # (M, 3)
            along_length = offset[:, 0] * c[n] + offset[:, 1] * s[n]
            along_width = -offset[:, 0] * s[n] + offset[:, 1] * c[n]
            inside[:, n] = (
                (np.abs(along_length) <= half[n, 1])
                & (np.abs(along_width) <= half[n, 0])
                & (np.abs(offset[:, 2]) <= half[n, 2])
            )
        return inside
