"""Reader for nuScenes lidar files (`.pcd.bin`: float32 x, y, z, intensity, ring index per point)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from avfusion.sensors.errors import MissingSensorFile, UnreadableSensorFile

PCD_BIN_COLUMNS = 5
_BYTES_PER_POINT = PCD_BIN_COLUMNS * 4


def read_pcd_bin(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a `.pcd.bin` lidar sweep.

    Returns:
        `(N, 5)` float32, N >= 1: x, y, z (metres, LIDAR_TOP sensor frame), intensity, ring index.
    Raises:
        MissingSensorFile: the file does not exist.
        UnreadableSensorFile (a `FileFormatError`): the file is empty (a spinning lidar always
            returns points, so a zero-byte file is a failed write, not an empty scene), its size is
            not a multiple of 20 bytes (truncated or not this format), it cannot be read, or a value
            is NaN or infinite.
    """
    file_path = Path(path)
    try:
        size_bytes = file_path.stat().st_size
    except FileNotFoundError as error:
        raise MissingSensorFile(file_path, "lidar file") from error
    if size_bytes == 0:
        raise UnreadableSensorFile(file_path, "empty lidar file", "0 bytes")
    if size_bytes % _BYTES_PER_POINT != 0:
        raise UnreadableSensorFile(
            file_path,
            "truncated lidar file",
            f"size {size_bytes} bytes is not a multiple of {_BYTES_PER_POINT} (5 float32 per point): "
            f"truncated or not a .pcd.bin file",
        )
    try:
        raw = np.fromfile(file_path, dtype="<f4")
    except OSError as error:
        raise UnreadableSensorFile(file_path, "unreadable lidar file", error.strerror or str(error)) from error
    if raw.size * 4 != size_bytes:
        raise UnreadableSensorFile(file_path, "truncated lidar file", f"read {raw.size * 4} of {size_bytes} bytes")
    points = raw.reshape(-1, PCD_BIN_COLUMNS)
    finite = np.isfinite(points)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise UnreadableSensorFile(
            file_path,
            "non-finite lidar points",
            f"{bad_rows.size} of {points.shape[0]} points have NaN or infinite values (first at point {bad_rows[0]})",
        )
    return points.astype(np.float32, copy=False)
