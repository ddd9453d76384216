"""Time synchronization: match sensor streams to the lidar time, and ego poses at any time.

Matching is nearest-in-time within a tolerance; a stream without a sample close enough is reported
missing with the reason, never paired with a far-off sample. Skew is `sensor time - lidar time`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from avfusion.calibration.se3 import SE3, quaternion_slerp, quaternion_to_matrix
from avfusion.errors import InputError
from avfusion.sensors.types import GNSS_NAME


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Largest |skew| accepted per sensor kind, microseconds.

    nuScenes cameras fire when the lidar sweeps their field of view, up to ~50 ms from the lidar
    timestamp; the GNSS stream is 10 Hz, so a regular fix is always within 50 ms.
    """

    camera_tolerance_us: int = 75_000
    gnss_tolerance_us: int = 100_000

    def tolerance_us(self, sensor: str) -> int:
        return self.gnss_tolerance_us if sensor == GNSS_NAME else self.camera_tolerance_us


@dataclass(frozen=True, slots=True)
class StreamMatch:
    """The result of matching one stream: `index` into its timestamps (None if missing), the skew
    (None if the stream is empty), and a reason when missing."""

    index: int | None
    skew_us: int | None
    reason: str = ""


def check_increasing(timestamps_us: np.ndarray, what: str, labels: Sequence[str] | None = None) -> None:
    """Raise `InputError` naming `what` and the offending entries unless timestamps strictly increase."""
    t = np.asarray(timestamps_us, dtype=np.int64)
    bad = np.flatnonzero(np.diff(t) <= 0)
    if bad.size:
        i = int(bad[0])
        names = f" ({labels[i]} then {labels[i + 1]})" if labels is not None else ""
        raise InputError(
            f"{what}: timestamps out of order at entries {i} and {i + 1}{names}: {int(t[i])} then {int(t[i + 1])} us"
        )


def match_nearest(target_us: int, timestamps_us: np.ndarray, tolerance_us: int) -> StreamMatch:
    """The sample of a sorted stream nearest to `target_us`, if within `tolerance_us`.

    A tie between an earlier and a later sample goes to the earlier one (it was already available
    when the lidar fired).
    """
    t = np.asarray(timestamps_us, dtype=np.int64)
    if t.size == 0:
        return StreamMatch(None, None, "no samples in the stream")
    right = int(np.searchsorted(t, target_us, side="left"))
    candidates = [i for i in (right - 1, right) if 0 <= i < t.size]
    best = min(candidates, key=lambda i: (abs(int(t[i]) - target_us), t[i]))
    skew = int(t[best]) - int(target_us)
    if abs(skew) > tolerance_us:
        return StreamMatch(
            None,
            skew,
            f"skew too large: nearest sample is {skew / 1000:+.1f} ms away (tolerance {tolerance_us / 1000:.1f} ms)",
        )
    return StreamMatch(best, skew)


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Per stream name: the matched index, the skew, or why it is missing."""

    indices: Mapping[str, int] = field(default_factory=dict)
    skew_us: Mapping[str, int] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)


def synchronize(
    lidar_timestamp_us: int, streams: Mapping[str, np.ndarray], config: SyncConfig = SyncConfig()
) -> SyncResult:
    """Match every stream (name -> sorted timestamps) to the lidar time with its tolerance."""
    indices: dict[str, int] = {}
    skews: dict[str, int] = {}
    missing: dict[str, str] = {}
    for name, timestamps in streams.items():
        match = match_nearest(lidar_timestamp_us, timestamps, config.tolerance_us(name))
        if match.index is None:
            missing[name] = match.reason
        else:
            assert match.skew_us is not None, "a matched stream always has a skew"
            indices[name] = match.index
            skews[name] = int(match.skew_us)
    return SyncResult(MappingProxyType(indices), MappingProxyType(skews), MappingProxyType(missing))


@dataclass(frozen=True, slots=True, eq=False)
class PoseTrack:
    """Ego poses over time, interpolated in between (linear translation, SLERP rotation).

    Attributes:
        timestamps_us: `(M,)` int64, strictly increasing.
        translations: `(M, 3)` float64 global positions, metres.
        quaternions: `(M, 4)` float64 `(w, x, y, z)` global_from_ego rotations.
    """

    timestamps_us: np.ndarray
    translations: np.ndarray
    quaternions: np.ndarray

    def __post_init__(self) -> None:
        t = np.array(self.timestamps_us, dtype=np.int64)
        translations = np.array(self.translations, dtype=np.float64)
        quaternions = np.array(self.quaternions, dtype=np.float64)
        m = t.shape[0]
        if t.ndim != 1 or m == 0:
            raise ValueError(f"PoseTrack.timestamps_us must have shape (M,) with M > 0, got {t.shape}")
        if translations.shape != (m, 3) or quaternions.shape != (m, 4):
            raise ValueError(
                f"PoseTrack needs translations ({m}, 3) and quaternions ({m}, 4), got {translations.shape}, {quaternions.shape}"
            )
        check_increasing(t, "ego pose track")
        for name, array in (("timestamps_us", t), ("translations", translations), ("quaternions", quaternions)):
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @staticmethod
    def from_poses(timestamps_us: Sequence[int], poses: Sequence[SE3]) -> PoseTrack:
        return PoseTrack(
            np.asarray(timestamps_us, dtype=np.int64),
            np.stack([p.translation for p in poses]),
            np.stack([p.quaternion for p in poses]),
        )

    def __len__(self) -> int:
        return int(self.timestamps_us.shape[0])

    def pose_at(self, timestamp_us: int, max_extrapolation_us: int = 0) -> SE3:
        """`global_from_ego` at `timestamp_us`.

        Inside the track the two neighbouring poses are interpolated; up to `max_extrapolation_us`
        outside it the end pose is held. Further out raises `InputError`.
        """
        t = self.timestamps_us
        if timestamp_us < t[0] - max_extrapolation_us or timestamp_us > t[-1] + max_extrapolation_us:
            raise InputError(f"no ego pose at {timestamp_us} us: the pose track covers {int(t[0])}..{int(t[-1])} us")
        right = int(np.searchsorted(t, timestamp_us, side="left"))
        if right < len(t) and t[right] == timestamp_us:
            return SE3(quaternion_to_matrix(self.quaternions[right]), self.translations[right])
        if right == 0 or right == len(t):
            end = 0 if right == 0 else len(t) - 1
            return SE3(quaternion_to_matrix(self.quaternions[end]), self.translations[end])
        left = right - 1
        alpha = (timestamp_us - int(t[left])) / float(int(t[right]) - int(t[left]))
        translation = (1.0 - alpha) * self.translations[left] + alpha * self.translations[right]
        rotation = quaternion_to_matrix(quaternion_slerp(self.quaternions[left], self.quaternions[right], alpha))
        return SE3(rotation, translation)
