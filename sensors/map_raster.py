"""`MapRaster`: a location's drivable-area raster, and crops of it on an ego-frame BEV grid.

Raster convention (nuScenes semantic prior): 8-bit single channel, 255 = drivable, 0 = not;
`resolution_m` metres per pixel; pixel row 0 is the map's northern edge and the map frame's origin
(0, 0) is the bottom-left (south-west) corner. Pixel (row r, column c) covers map
`x in [c res, (c + 1) res)`, `y in [(H - 1 - r) res, (H - r) res)`.

Lyft Level 5 logs (nuScenes schema) ship their semantic prior as an RGB(A) picture with the same
geometry (0.1 m/pixel, origin at the bottom-left): the drivable surface and sidewalks drawn on a
white background. `drivable_from_lyft_rgb` turns it into the convention above.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avfusion.calibration.se3 import SE3


@dataclass(frozen=True, slots=True, eq=False)
class BevGrid:
    """A regular ego-frame bird's-eye grid: `x_range_m`, `y_range_m` = (min, max) metres, cell size.

    Cell (row i, column j) is centred at ego `x = x_min + (j + 0.5) res`, `y = y_min + (i + 0.5) res`:
    rows run along ego y (row 0 = the right-most, y_min), columns along ego x (column 0 = rear-most).
    """

    x_range_m: tuple[float, float]
    y_range_m: tuple[float, float]
    resolution_m: float

    def __post_init__(self) -> None:
        x0, x1 = (float(v) for v in self.x_range_m)
        y0, y1 = (float(v) for v in self.y_range_m)
        if not (x1 > x0 and y1 > y0 and self.resolution_m > 0):
            raise ValueError(
                f"BevGrid needs increasing ranges and resolution > 0, got x {self.x_range_m}, "
                f"y {self.y_range_m}, resolution {self.resolution_m}"
            )
        object.__setattr__(self, "x_range_m", (x0, x1))
        object.__setattr__(self, "y_range_m", (y0, y1))
        object.__setattr__(self, "resolution_m", float(self.resolution_m))

    @property
    def shape_hw(self) -> tuple[int, int]:
        """(rows along y, columns along x), rounded to the nearest whole cell."""
        rows = round((self.y_range_m[1] - self.y_range_m[0]) / self.resolution_m)
        cols = round((self.x_range_m[1] - self.x_range_m[0]) / self.resolution_m)
        return rows, cols

    def cell_centers_ego(self) -> tuple[np.ndarray, np.ndarray]:
        """`(H', W')` ego x and y of every cell centre, metres."""
        rows, cols = self.shape_hw
        x = self.x_range_m[0] + (np.arange(cols) + 0.5) * self.resolution_m
        y = self.y_range_m[0] + (np.arange(rows) + 0.5) * self.resolution_m
        x_cells, y_cells = np.meshgrid(x, y)  # each (rows, cols): x varies along columns, y along rows
        return x_cells, y_cells


def drivable_from_lyft_rgb(pixels: np.ndarray) -> np.ndarray:
    """`(H, W)` uint8 drivable mask (255 / 0) of a Lyft semantic-prior picture.

    pixels: `(H, W, 3)` RGB or `(H, W, 4)` RGBA uint8. A pixel is on the prior when none of its R, G,
    B values is 255, the rule of the Lyft SDK's `MapMask.is_on_mask` (every channel differs from the
    white background); a fully transparent pixel (alpha 0) is off it.
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        raise ValueError(f"a Lyft raster must be (H, W, 3|4) uint8, got shape {pixels.shape} {pixels.dtype}")
    on = np.all(pixels[:, :, :3] != 255, axis=2)
    if pixels.shape[2] == 4:
        on &= pixels[:, :, 3] != 0
    return np.where(on, np.uint8(255), np.uint8(0))


@dataclass(frozen=True, slots=True, eq=False)
class MapRaster:
    """A location's drivable-area raster (see the module docstring for the pixel convention).

    Attributes:
        location: nuScenes location name, e.g. "singapore-onenorth".
        drivable: `(H, W)` uint8, 255 = drivable, 0 = not (not copied: rasters are large).
        resolution_m: metres per pixel (nuScenes: 0.1).
    """

    location: str
    drivable: np.ndarray
    resolution_m: float = 0.1

    def __post_init__(self) -> None:
        drivable = self.drivable
        if not isinstance(drivable, np.ndarray) or drivable.ndim != 2 or drivable.dtype != np.uint8:
            shape = getattr(drivable, "shape", None)
            dtype = getattr(drivable, "dtype", type(drivable).__name__)
            raise ValueError(f"MapRaster.drivable must be an (H, W) uint8 array, got shape {shape} dtype {dtype}")
        if not self.resolution_m > 0:
            raise ValueError(f"MapRaster.resolution_m must be > 0, got {self.resolution_m}")

    @property
    def size_m(self) -> tuple[float, float]:
        """(east-west extent, north-south extent) of the raster in metres."""
        height, width = self.drivable.shape
        return width * self.resolution_m, height * self.resolution_m

    def pixel_from_map(self, points_map_xy: object) -> np.ndarray:
        """Map-frame `(N, 2)` x, y metres -> continuous `(N, 2)` (column, row), pixel centres at integers."""
        xy = np.asarray(points_map_xy, dtype=np.float64)
        height = self.drivable.shape[0]
        column = xy[..., 0] / self.resolution_m - 0.5
        row = height - xy[..., 1] / self.resolution_m - 0.5
        return np.stack([column, row], axis=-1)

    def is_drivable(self, points_map_xy: object) -> np.ndarray:
        """`(N,)` bool: the pixel holding each map-frame point is drivable (outside the raster: False)."""
        pixels = np.floor(self.pixel_from_map(points_map_xy) + 0.5).astype(np.int64)
        height, width = self.drivable.shape
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
        result = np.zeros(pixels.shape[0], dtype=bool)
        result[inside] = self.drivable[pixels[inside, 1], pixels[inside, 0]] > 127
        return result

    def crop_bev(
        self,
        global_from_ego: SE3,
        x_range_m: tuple[float, float],
        y_range_m: tuple[float, float],
        resolution_m: float,
    ) -> np.ndarray:
        """The drivable area around a pose, sampled on an ego-frame BEV grid.

        Args:
            global_from_ego: the ego pose in this location's map frame (only x, y and yaw are used:
                the raster is 2D).
            x_range_m, y_range_m: (min, max) extent of the grid in the ego frame, metres.
            resolution_m: grid cell size, metres.
        Returns:
            `(H', W')` float32 in [0, 1] (bilinear in the raster; 0 off the map), laid out as
            `BevGrid`: row i along ego y (row 0 = y_min, the right side), column j along ego x.
        """
        grid = BevGrid((x_range_m[0], x_range_m[1]), (y_range_m[0], y_range_m[1]), resolution_m)
        x_ego, y_ego = grid.cell_centers_ego()  # (H', W') each
        yaw = global_from_ego.yaw_rad
        c, s = np.cos(yaw), np.sin(yaw)
        tx, ty = global_from_ego.translation[:2]
        x_map = c * x_ego - s * y_ego + tx
        y_map = s * x_ego + c * y_ego + ty
        height, width = self.drivable.shape
        column = x_map / self.resolution_m - 0.5
        row = height - y_map / self.resolution_m - 0.5
        # Remap only a window around the samples: cv2.remap is limited to rasters below 32767
        # pixels a side (queenstown is larger) and a window keeps the work proportional to the crop.
        c0 = int(np.clip(np.floor(column.min()) - 1, 0, width))
        c1 = int(np.clip(np.ceil(column.max()) + 2, 0, width))
        r0 = int(np.clip(np.floor(row.min()) - 1, 0, height))
        r1 = int(np.clip(np.ceil(row.max()) + 2, 0, height))
        if c1 <= c0 or r1 <= r0:
            return np.zeros(grid.shape_hw, dtype=np.float32)
        window = np.ascontiguousarray(self.drivable[r0:r1, c0:c1], dtype=np.float32) * (1.0 / 255.0)
        sampled = cv2.remap(
            window,
            (column - c0).astype(np.float32),
            (row - r0).astype(np.float32),
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0.0,),
        )
        return np.clip(sampled, 0.0, 1.0).astype(np.float32, copy=False)
