"""`EvalBoxSet`: the boxes of many samples (ground truth or predictions) as one struct of arrays.

This is the array form of the devkit's `EvalBoxes`: every box is a row, grouped by sample in the
order of `sample_tokens`, and within a sample in file order. That global row order is the order the
devkit's `EvalBoxes.all` walks, which decides how equal scores are ranked, so it is kept everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avfusion.labels import ATTRIBUTES, DETECTION_CLASSES


@dataclass(frozen=True, slots=True)
class EvalBoxSet:
    """Boxes in the global frame (x east, y north, z up, metres), one row each.

    sample_tokens: the samples, in evaluation order.
    sample_index: (N,) int64 index into `sample_tokens`, non-decreasing (rows grouped by sample).
    translation: (N, 3) float64 box centre. size_wlh: (N, 3) float64 width, length, height.
    rotation_wxyz: (N, 4) float64 quaternion as given (the metric normalizes it like pyquaternion).
    velocity_xy: (N, 2) float64 m/s in the global frame; NaN = unknown (ground truth only).
    label: (N,) int64 index into `DETECTION_CLASSES`. score: (N,) float64 (-1.0 for ground truth).
    attribute: (N,) int64 index into `ATTRIBUTES`, -1 for none.
    num_pts: (N,) int64 lidar + radar points in the box; -1 = unknown (predictions).
    """

    sample_tokens: tuple[str, ...]
    sample_index: np.ndarray
    translation: np.ndarray
    size_wlh: np.ndarray
    rotation_wxyz: np.ndarray
    velocity_xy: np.ndarray
    label: np.ndarray
    score: np.ndarray
    attribute: np.ndarray
    num_pts: np.ndarray

    def __post_init__(self) -> None:
        n = self.sample_index.shape[0] if self.sample_index.ndim == 1 else -1
        expected = {
            "sample_index": ((n,), np.int64),
            "translation": ((n, 3), np.float64),
            "size_wlh": ((n, 3), np.float64),
            "rotation_wxyz": ((n, 4), np.float64),
            "velocity_xy": ((n, 2), np.float64),
            "label": ((n,), np.int64),
            "score": ((n,), np.float64),
            "attribute": ((n,), np.int64),
            "num_pts": ((n,), np.int64),
        }
        for name, (shape, dtype) in expected.items():
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
                found = (array.shape, array.dtype) if isinstance(array, np.ndarray) else type(array).__name__
                raise ValueError(f"EvalBoxSet.{name} must be {dtype.__name__} of shape {shape}, got {found}")
        if n and (self.sample_index.min() < 0 or self.sample_index.max() >= len(self.sample_tokens)):
            raise ValueError(f"EvalBoxSet.sample_index must index {len(self.sample_tokens)} sample tokens")
        if n > 1 and np.any(np.diff(self.sample_index) < 0):
            raise ValueError("EvalBoxSet rows must be grouped by sample (sample_index non-decreasing)")
        if n and (self.label.min() < 0 or self.label.max() >= len(DETECTION_CLASSES)):
            raise ValueError(
                f"EvalBoxSet.label must index DETECTION_CLASSES, got range {self.label.min()}..{self.label.max()}"
            )
        if n and (self.attribute.min() < -1 or self.attribute.max() >= len(ATTRIBUTES)):
            raise ValueError("EvalBoxSet.attribute must be -1 or an index into ATTRIBUTES")

    def __len__(self) -> int:
        return int(self.sample_index.shape[0])

    @classmethod
    def empty(cls, sample_tokens: Sequence[str] = ()) -> EvalBoxSet:
        return cls(
            sample_tokens=tuple(sample_tokens),
            sample_index=np.zeros(0, np.int64),
            translation=np.zeros((0, 3)),
            size_wlh=np.zeros((0, 3)),
            rotation_wxyz=np.zeros((0, 4)),
            velocity_xy=np.zeros((0, 2)),
            label=np.zeros(0, np.int64),
            score=np.zeros(0),
            attribute=np.zeros(0, np.int64),
            num_pts=np.zeros(0, np.int64),
        )

    def select(self, rows: np.ndarray) -> EvalBoxSet:
        """The rows picked by a bool mask or an increasing index array (row order is kept)."""
        rows = np.asarray(rows)
        if rows.dtype == np.bool_:
            if rows.shape != (len(self),):
                raise IndexError(f"a mask of {len(self)} boxes must have shape ({len(self)},), got {rows.shape}")
            rows = np.flatnonzero(rows)
        elif rows.size == 0:
            rows = rows.astype(np.int64)  # an empty list picks nothing

        # np.take with row numbers: several times faster than indexing (N, k) arrays with a mask.
        def take(array: np.ndarray) -> np.ndarray:
            return np.take(array, rows, axis=0)

        return EvalBoxSet(
            sample_tokens=self.sample_tokens,
            sample_index=take(self.sample_index),
            translation=take(self.translation),
            size_wlh=take(self.size_wlh),
            rotation_wxyz=take(self.rotation_wxyz),
            velocity_xy=take(self.velocity_xy),
            label=take(self.label),
            score=take(self.score),
            attribute=take(self.attribute),
            num_pts=take(self.num_pts),
        )

    def rows_of_sample(self, sample_position: int) -> slice:
        """The row range of the sample at `sample_tokens[sample_position]`."""
        start, stop = np.searchsorted(self.sample_index, [sample_position, sample_position + 1])
        return slice(int(start), int(stop))

    def counts_per_sample(self) -> np.ndarray:
        """(S,) int64 number of boxes of each sample."""
        return np.bincount(self.sample_index, minlength=len(self.sample_tokens)).astype(np.int64)
