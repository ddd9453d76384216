"""Multi-sweep lidar accumulation: a keyframe and its past sweeps in the keyframe's lidar frame.

Each past sweep is moved through its own ego pose:
`lidar_key_from_lidar_i = lidar_from_ego_key @ ego_key_from_global @ global_from_ego_i @ ego_i_from_lidar_i`,
and gets a time-lag channel `t_key - t_i` in seconds, as nuscenes-devkit's
`LidarPointCloud.from_file_multisweep` does (its results are reproduced to float32 precision).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avfusion.calibration.se3 import SE3
from avfusion.sensors.errors import MissingSensorFile, UnreadableSensorFile
from avfusion.sensors.pcd import read_pcd_bin
from avfusion.sensors.types import LidarSweep


@dataclass(frozen=True, slots=True, eq=False)
class SweepSource:
    """Where one lidar sweep is and how it was taken.

    Attributes:
        path: the `.pcd.bin` file.
        timestamp_us: the sweep's timestamp.
        ego_from_lidar: the lidar calibration for this sweep.
        global_from_ego: the ego pose at `timestamp_us`.
        token: its sample_data token ("" if none).
    """

    path: Path
    timestamp_us: int
    ego_from_lidar: SE3
    global_from_ego: SE3
    token: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class AccumulatedSweeps:
    """The accumulated cloud and the past sweeps left out because their files are missing or
    unreadable: `skipped_paths[i]` was left out for `skipped_reasons[i]` (a frame `missing` reason)."""

    sweep: LidarSweep
    skipped_paths: tuple[str, ...]
    skipped_reasons: tuple[str, ...] = ()


def remove_close_points(points: np.ndarray, min_distance_m: float) -> np.ndarray:
    """Drop points with both |x| and |y| below `min_distance_m` (a square around the sensor, as the
    devkit's `remove_close`: these are returns from the vehicle's own roof)."""
    if min_distance_m <= 0:
        return points
    close = (np.abs(points[:, 0]) < min_distance_m) & (np.abs(points[:, 1]) < min_distance_m)
    return points[~close]


def accumulate_sweeps(sources: Sequence[SweepSource], min_distance_m: float = 1.0) -> AccumulatedSweeps:
    """Read and merge `sources[0]` (the keyframe) and the past sweeps after it, newest first.

    Args:
        sources: keyframe first, then past sweeps in any order; each is read from disk.
        min_distance_m: see `remove_close_points`, applied to every sweep in its own frame.
    Returns:
        `AccumulatedSweeps` whose `sweep.points` are `(N, 5)` float32: x, y, z in the keyframe's
        LIDAR_TOP frame, intensity, time lag in seconds (>= 0 for past sweeps), and `sweep.ring`
        the files' ring indices; past sweeps whose files are missing or unreadable are skipped and
        listed with the reason.
    Raises:
        MissingSensorFile: the keyframe file is missing.
        UnreadableSensorFile: the keyframe file is empty, truncated or malformed.
    """
    if not sources:
        raise ValueError("accumulate_sweeps needs at least the keyframe source")
    key = sources[0]
    lidar_key_from_global = (key.global_from_ego @ key.ego_from_lidar).inverse()
    parts: list[np.ndarray] = []
    rings: list[np.ndarray] = []
    skipped: list[str] = []
    reasons: list[str] = []
    for index, source in enumerate(sources):
        try:
            raw = read_pcd_bin(source.path)
        except (MissingSensorFile, UnreadableSensorFile) as error:
            if index == 0:
                raise
            skipped.append(str(source.path))
            reasons.append(error.reason)
            continue
        raw = remove_close_points(raw, min_distance_m)
        cloud = np.empty((raw.shape[0], 5), dtype=np.float32)
        if index == 0:
            cloud[:, :3] = raw[:, :3]
        else:
            lidar_key_from_lidar = lidar_key_from_global @ source.global_from_ego @ source.ego_from_lidar
            cloud[:, :3] = lidar_key_from_lidar.apply(raw[:, :3])
        cloud[:, 3] = raw[:, 3]
        cloud[:, 4] = (key.timestamp_us - source.timestamp_us) * 1e-6
        parts.append(cloud)
        rings.append(raw[:, 4].astype(np.int16))
    points = np.concatenate(parts, axis=0)
    sweep = LidarSweep(
        points=points,
        timestamp_us=key.timestamp_us,
        ego_from_lidar=key.ego_from_lidar,
        global_from_ego=key.global_from_ego,
        token=key.token,
        num_sweeps=len(parts),
        ring=np.concatenate(rings),
    )
    return AccumulatedSweeps(sweep=sweep, skipped_paths=tuple(skipped), skipped_reasons=tuple(reasons))


def read_single_sweep(
    path: str | os.PathLike[str],
    timestamp_us: int,
    ego_from_lidar: SE3,
    global_from_ego: SE3,
    token: str = "",
    min_distance_m: float = 0.0,
) -> LidarSweep:
    """One sweep as a `LidarSweep` (time lag 0), optionally without the points near the sensor."""
    source = SweepSource(Path(path), timestamp_us, ego_from_lidar, global_from_ego, token)
    return accumulate_sweeps([source], min_distance_m=min_distance_m).sweep
