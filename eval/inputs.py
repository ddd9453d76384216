"""What the detection metric reads, as arrays: the types both loaders give, and the devkit facts they share.

`data` reads these through `json` and plain Python (the reference path) or through `fastload`
(msgspec); both give the same `GroundTruth` and `PredictionSet`, which is why the types and the
velocity rule live here, apart from either loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from avfusion.eval.boxset import EvalBoxSet

BIKE_RACK_CATEGORY = "static_object.bicycle_rack"
LIDAR_CHANNEL = "LIDAR_TOP"
MAX_VELOCITY_TIME_DIFF_S = 1.5  # the devkit's `box_velocity` default


@dataclass(frozen=True, slots=True)
class BikeRacks:
    """The `static_object.bicycle_rack` annotations of the split, global frame.

    sample_index (R,) int64 into the ground truth's `sample_tokens`; translation (R, 3) centre;
    size_wlh (R, 3); rotation_wxyz (R, 4).
    """

    sample_index: np.ndarray
    translation: np.ndarray
    size_wlh: np.ndarray
    rotation_wxyz: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.sample_index)
        for name, shape in (("translation", (n, 3)), ("size_wlh", (n, 3)), ("rotation_wxyz", (n, 4))):
            if getattr(self, name).shape != shape:
                raise ValueError(f"BikeRacks.{name} must have shape {shape}, got {getattr(self, name).shape}")


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Everything the metric needs from a dataroot for one split.

    boxes: every annotation of a detection class in the split's samples (not yet filtered), with
    `score` -1 and `num_pts` = lidar + radar points; `boxes.sample_tokens` is the split's samples.
    ego_translation: (S, 3) float64 global position of the ego vehicle at each sample's key-frame
    lidar sweep. bike_racks: the racks of those samples. predefined_split: whether `split` is one of
    the devkit's built-in names.
    """

    dataroot: str
    version: str
    split: str
    predefined_split: bool
    boxes: EvalBoxSet
    ego_translation: np.ndarray
    bike_racks: BikeRacks

    def __post_init__(self) -> None:
        expected = (len(self.boxes.sample_tokens), 3)
        if self.ego_translation.shape != expected:
            raise ValueError(
                f"GroundTruth.ego_translation must have shape {expected}, got {self.ego_translation.shape}"
            )

    @property
    def sample_tokens(self) -> tuple[str, ...]:
        return self.boxes.sample_tokens


@dataclass(frozen=True, slots=True)
class PredictionSet:
    """A checked results file: the boxes (in the devkit's evaluation order) and its `meta` object."""

    boxes: EvalBoxSet
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SplitSamples:
    """The `sample` table as the metric needs it: the split's tokens in table order, the position of
    each, the timestamp (us, as stored) of every sample of the log, and whether the split is a
    devkit built-in one."""

    split_tokens: list[str]
    position_of_sample: dict[str, int]
    timestamp_of_sample: dict[str, int]
    predefined: bool


def velocity_from_track(
    first_pos: np.ndarray,
    last_pos: np.ndarray,
    first_s: np.ndarray,
    last_s: np.ndarray,
    has_prev: np.ndarray,
    has_next: np.ndarray,
) -> np.ndarray:
    """(N, 2) the devkit's `box_velocity`: xy displacement (N, 3 positions) over the time between
    the previous and next annotations (seconds); NaN without neighbours or over too long a span."""
    time_diff = last_s - first_s
    max_time_diff = np.where(has_prev & has_next, 2 * MAX_VELOCITY_TIME_DIFF_S, MAX_VELOCITY_TIME_DIFF_S)
    unknown = (~has_prev & ~has_next) | (time_diff > max_time_diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        velocity = (last_pos - first_pos)[:, :2] / time_diff[:, None]
    velocity[unknown] = np.nan
    return velocity
