"""Pinhole cameras: intrinsics, projection to pixels, back-projection, and the six-camera rig.

Frames: camera x right, y down, z forward (OpenCV, as nuScenes). Pixel coordinates `(u, v)` are
continuous with the centre of pixel (column i, row j) at `(i, j)`, so the image covers
`[-0.5, width - 0.5) x [-0.5, height - 0.5)`. nuScenes images are already undistorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avfusion.calibration.se3 import SE3

# Points closer to the image plane than this (metres) have no finite projection.
MIN_DEPTH_M = 1e-6


@dataclass(frozen=True, slots=True, eq=False)
class Projection:
    """Camera-frame points projected to pixels.

    Attributes:
        uv: `(N, 2)` float64 pixel coordinates; NaN where `depth <= MIN_DEPTH_M`.
        depth: `(N,)` float64 metres along the optical axis (camera z); negative = behind.
        in_image: `(N,)` bool, in front of the camera and inside the image bounds.
    """

    uv: np.ndarray
    depth: np.ndarray
    in_image: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class CameraIntrinsics:
    """A pinhole intrinsic matrix and the size of the image it belongs to.

    Attributes:
        matrix: `(3, 3)` float64 `K`, last row `(0, 0, 1)`.
        width, height: image size in pixels.
    """

    matrix: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        matrix = np.array(self.matrix, dtype=np.float64)
        if matrix.shape != (3, 3):
            raise ValueError(f"CameraIntrinsics.matrix must have shape (3, 3), got {matrix.shape}")
        if not np.all(np.isfinite(matrix)) or not np.allclose(matrix[2], (0.0, 0.0, 1.0)):
            raise ValueError(f"CameraIntrinsics.matrix last row must be (0, 0, 1), got {matrix[2].tolist()}")
        if matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
            raise ValueError(f"CameraIntrinsics focal lengths must be > 0, got fx={matrix[0, 0]}, fy={matrix[1, 1]}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"CameraIntrinsics image size must be > 0, got {self.width}x{self.height}")
        matrix.flags.writeable = False
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def fx(self) -> float:
        return float(self.matrix[0, 0])

    @property
    def fy(self) -> float:
        return float(self.matrix[1, 1])

    @property
    def cx(self) -> float:
        return float(self.matrix[0, 2])

    @property
    def cy(self) -> float:
        return float(self.matrix[1, 2])

    def scaled(self, scale_x: float, scale_y: float, new_width: int, new_height: int) -> CameraIntrinsics:
        """Intrinsics of the image resampled by `scale_x`, `scale_y` (new pixels per old pixel).

        The image's outer edges stay fixed, so a pixel centre moves as `u' = (u + 0.5) s - 0.5`;
        this is what both `cv2.resize` and JPEG DCT-domain downscaling do. `new_width`/`new_height`
        are given separately because decoders round partial blocks up (900 px / 8 -> 113 rows).
        """
        resample = np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]])
        return CameraIntrinsics(resample @ self.matrix, new_width, new_height)

    def resized(self, new_width: int, new_height: int) -> CameraIntrinsics:
        """Intrinsics of this image resized (stretched) to `new_width x new_height` pixels."""
        return self.scaled(new_width / self.width, new_height / self.height, new_width, new_height)

    def project(self, points_cam: object) -> Projection:
        """Project `(N, 3)` camera-frame points (metres) to pixels; see `Projection`."""
        p = np.asarray(points_cam, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"project needs points_cam of shape (N, 3), got {p.shape}")
        return _project(self.matrix, p, self.width, self.height)

    def backproject(self, uv: object, depth: object) -> np.ndarray:
        """Camera-frame points `(N, 3)` at `depth` (camera z, metres) along the rays of pixels `uv` `(N, 2)`."""
        pixels = np.asarray(uv, dtype=np.float64)
        z = np.asarray(depth, dtype=np.float64)
        if pixels.ndim != 2 or pixels.shape[1] != 2:
            raise ValueError(f"backproject needs uv of shape (N, 2), got {pixels.shape}")
        if z.shape != (pixels.shape[0],):
            raise ValueError(f"backproject needs depth of shape ({pixels.shape[0]},), got {z.shape}")
        homogeneous = np.concatenate([pixels, np.ones((pixels.shape[0], 1))], axis=1)
        rays = np.linalg.solve(self.matrix, homogeneous.T).T  # (N, 3) with z == 1
        return rays * z[:, None]


def _project(image_from_cam: np.ndarray, points_cam: np.ndarray, width: int, height: int) -> Projection:
    """Shared by `CameraIntrinsics.project` and `CameraRig.project_ego`: `(3, 3)` matrix, `(N, 3)` points."""
    homogeneous = points_cam @ image_from_cam.T  # (N, 3): (u z, v z, z)
    depth = points_cam[:, 2].copy()
    in_front = depth > MIN_DEPTH_M
    uv = np.full((points_cam.shape[0], 2), np.nan)
    # A masked divide, not a gather / scatter through `in_front`: the same values, about twice as fast.
    np.divide(homogeneous[:, :2], depth[:, None], out=uv, where=in_front[:, None])
    with np.errstate(invalid="ignore"):
        in_image = (
            in_front & (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5)
        )
    return Projection(uv=uv, depth=depth, in_image=in_image)


@dataclass(frozen=True, slots=True, eq=False)
class CameraRig:
    """The independent calibration of K cameras; everything else is derived so it cannot drift.

    Attributes:
        names: `(K,)` camera channel names, e.g. "CAM_FRONT".
        intrinsics: `(K, 3, 3)` float64 `K` of each image as read from disk (after any decode resize).
        ego_from_camera: `(K, 4, 4)` float64 camera -> ego frame. For a synchronized frame the ego
            frame is the one at the lidar timestamp, with ego motion to each camera's time included.
        image_aug: `(K, 3, 3)` float64 pixel-space transform applied after projection
            (augmentation resize / crop / flip); identity when there is none.
        image_size_hw: `(height, width)` of the images after `image_aug`, pixels.
    """

    names: tuple[str, ...]
    intrinsics: np.ndarray
    ego_from_camera: np.ndarray
    image_aug: np.ndarray
    image_size_hw: tuple[int, int]

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        k = len(names)
        intrinsics = np.array(self.intrinsics, dtype=np.float64)
        ego_from_camera = np.array(self.ego_from_camera, dtype=np.float64)
        image_aug = np.array(self.image_aug, dtype=np.float64)
        if intrinsics.shape != (k, 3, 3):
            raise ValueError(f"CameraRig.intrinsics must have shape ({k}, 3, 3), got {intrinsics.shape}")
        if ego_from_camera.shape != (k, 4, 4):
            raise ValueError(f"CameraRig.ego_from_camera must have shape ({k}, 4, 4), got {ego_from_camera.shape}")
        if image_aug.shape != (k, 3, 3):
            raise ValueError(f"CameraRig.image_aug must have shape ({k}, 3, 3), got {image_aug.shape}")
        size = tuple(int(s) for s in self.image_size_hw)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"CameraRig.image_size_hw must be (height, width) > 0, got {self.image_size_hw}")
        for array in (intrinsics, ego_from_camera, image_aug):
            array.flags.writeable = False
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "intrinsics", intrinsics)
        object.__setattr__(self, "ego_from_camera", ego_from_camera)
        object.__setattr__(self, "image_aug", image_aug)
        object.__setattr__(self, "image_size_hw", size)

    @staticmethod
    def from_cameras(
        names: Sequence[str],
        intrinsics: Sequence[CameraIntrinsics],
        ego_from_camera: Sequence[SE3],
        image_size_hw: tuple[int, int] | None = None,
    ) -> CameraRig:
        """A rig without augmentation; all images must have the same size (`image_size_hw` when
        given, which an empty rig needs)."""
        sizes = {(c.height, c.width) for c in intrinsics}
        if image_size_hw:
            height, width = image_size_hw
            sizes.add((height, width))
        if len(sizes) != 1:
            raise ValueError(f"CameraRig.from_cameras needs one image size for all cameras, got {sorted(sizes)}")
        k = len(names)
        return CameraRig(
            names=tuple(names),
            intrinsics=np.stack([c.matrix for c in intrinsics]) if k else np.zeros((0, 3, 3)),
            ego_from_camera=np.stack([t.matrix for t in ego_from_camera]) if k else np.zeros((0, 4, 4)),
            image_aug=np.broadcast_to(np.eye(3), (k, 3, 3)),
            image_size_hw=sizes.pop(),
        )

    def with_image_aug(self, image_aug: object, image_size_hw: tuple[int, int]) -> CameraRig:
        """The same rig with `image_aug` `(K, 3, 3)` (or `(3, 3)` for all) applied after the current one."""
        aug = np.broadcast_to(np.asarray(image_aug, dtype=np.float64), (len(self.names), 3, 3))
        return CameraRig(self.names, self.intrinsics, self.ego_from_camera, aug @ self.image_aug, image_size_hw)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def camera_from_ego(self) -> np.ndarray:
        """`(K, 4, 4)` ego -> camera (the rigid inverse of `ego_from_camera`)."""
        rotation_t = np.swapaxes(self.ego_from_camera[:, :3, :3], 1, 2)
        result = np.zeros_like(self.ego_from_camera)
        result[:, :3, :3] = rotation_t
        result[:, :3, 3] = -np.einsum("kij,kj->ki", rotation_t, self.ego_from_camera[:, :3, 3])
        result[:, 3, 3] = 1.0
        return result

    @property
    def image_from_camera(self) -> np.ndarray:
        """`(K, 3, 3)` camera frame -> augmented pixels (homogeneous): `image_aug @ intrinsics`."""
        return self.image_aug @ self.intrinsics

    @property
    def image_from_ego(self) -> np.ndarray:
        """`(K, 3, 4)` ego-frame homogeneous points -> augmented homogeneous pixels `(u z, v z, z)`."""
        return self.image_from_camera @ self.camera_from_ego[:, :3, :]

    @property
    def camera_from_image(self) -> np.ndarray:
        """`(K, 3, 3)` inverse of `image_from_camera` (augmented pixel -> camera ray with z = 1)."""
        return np.linalg.inv(self.image_from_camera)

    def project_ego(self, points_ego: object) -> Projection:
        """Project `(N, 3)` ego-frame points into every camera: `uv` `(K, N, 2)`, `depth`/`in_image` `(K, N)`."""
        p = np.asarray(points_ego, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"project_ego needs points_ego of shape (N, 3), got {p.shape}")
        height, width = self.image_size_hw
        camera_from_ego = self.camera_from_ego
        image_from_camera = self.image_from_camera
        results = [
            _project(image_from_camera[k], p @ camera_from_ego[k, :3, :3].T + camera_from_ego[k, :3, 3], width, height)
            for k in range(len(self.names))
        ]
        n = p.shape[0]
        if not results:
            return Projection(np.zeros((0, n, 2)), np.zeros((0, n)), np.zeros((0, n), dtype=bool))
        return Projection(
            uv=np.stack([r.uv for r in results]),
            depth=np.stack([r.depth for r in results]),
            in_image=np.stack([r.in_image for r in results]),
        )
