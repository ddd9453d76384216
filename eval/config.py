"""The detection evaluation configuration, in nuscenes-devkit's JSON format.

The default is the devkit's `detection_cvpr_2019` (shipped as `configs/detection_cvpr_2019.json`);
any file in the same format loads with `load_config(path)`. Values keep the JSON types they were
read with, so `to_json()` writes back exactly what the devkit's `DetectionConfig.serialize` would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avfusion.errors import FileFormatError, InputError
from avfusion.labels import DETECTION_CLASSES

DEFAULT_CONFIG_NAME = "detection_cvpr_2019"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# The only matching criterion the devkit ships; the name stays a config value for file compatibility.
CENTER_DISTANCE = "center_distance"

_KEYS = (
    "class_range",
    "dist_fcn",
    "dist_ths",
    "dist_th_tp",
    "min_recall",
    "min_precision",
    "max_boxes_per_sample",
    "mean_ap_weight",
)


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Settings of the nuScenes detection metric.

    `class_range_m` maps each of the 10 detection classes (in the file's order, which is the order
    of every per-class table) to the maximum xy distance from the ego vehicle, in metres, at which a
    box is evaluated. `dist_ths_m` are the centre-distance match thresholds the AP is averaged over;
    `dist_th_tp_m` (one of them) is where the TP errors are measured.
    """

    class_range_m: tuple[tuple[str, float], ...]
    dist_fcn: str
    dist_ths_m: tuple[float, ...]
    dist_th_tp_m: float
    min_recall: float
    min_precision: float
    max_boxes_per_sample: int
    mean_ap_weight: float

    def __post_init__(self) -> None:
        names = [name for name, _ in self.class_range_m]
        if sorted(names) != sorted(DETECTION_CLASSES):
            raise ValueError(f"class_range must name exactly the 10 classes {DETECTION_CLASSES}, got {names}")
        for name, value in self.class_range_m:
            if not _is_number(value) or not value > 0:
                raise ValueError(f"class_range[{name!r}] must be a positive number of metres, got {value!r}")
        if self.dist_fcn != CENTER_DISTANCE:
            raise ValueError(f"dist_fcn must be {CENTER_DISTANCE!r} (the devkit's only one), got {self.dist_fcn!r}")
        if not self.dist_ths_m or not all(_is_number(t) and t > 0 for t in self.dist_ths_m):
            raise ValueError(f"dist_ths must be a non-empty list of positive numbers, got {list(self.dist_ths_m)}")
        if len(set(self.dist_ths_m)) != len(self.dist_ths_m):
            raise ValueError(f"dist_ths must not repeat a threshold, got {list(self.dist_ths_m)}")
        if self.dist_th_tp_m not in self.dist_ths_m:
            raise ValueError(f"dist_th_tp ({self.dist_th_tp_m}) must be one of dist_ths {list(self.dist_ths_m)}")
        if not (_is_number(self.min_recall) and 0 <= self.min_recall <= 1):
            raise ValueError(f"min_recall must be in [0, 1], got {self.min_recall!r}")
        if not (_is_number(self.min_precision) and 0 <= self.min_precision < 1):
            raise ValueError(f"min_precision must be in [0, 1), got {self.min_precision!r}")
        if not isinstance(self.max_boxes_per_sample, int) or self.max_boxes_per_sample < 1:
            raise ValueError(f"max_boxes_per_sample must be a positive integer, got {self.max_boxes_per_sample!r}")
        if not (_is_number(self.mean_ap_weight) and self.mean_ap_weight >= 0):
            raise ValueError(f"mean_ap_weight must be a non-negative number, got {self.mean_ap_weight!r}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The detection classes in the configuration's order (the order of every per-class table)."""
        return tuple(name for name, _ in self.class_range_m)

    @property
    def class_range_by_name(self) -> Mapping[str, float]:
        return dict(self.class_range_m)

    def to_json(self) -> dict[str, Any]:
        """The devkit's `DetectionConfig.serialize()` layout."""
        return {
            "class_range": dict(self.class_range_m),
            "dist_fcn": self.dist_fcn,
            "dist_ths": list(self.dist_ths_m),
            "dist_th_tp": self.dist_th_tp_m,
            "min_recall": self.min_recall,
            "min_precision": self.min_precision,
            "max_boxes_per_sample": self.max_boxes_per_sample,
            "mean_ap_weight": self.mean_ap_weight,
        }

    @classmethod
    def from_json(cls, payload: Any, source: str = "config") -> DetectionConfig:
        """Build from the devkit's JSON layout; `source` names the file in error messages."""
        if not isinstance(payload, dict):
            raise FileFormatError(source, f"expected a JSON object, found {type(payload).__name__}")
        missing = [key for key in _KEYS if key not in payload]
        if missing:
            raise FileFormatError(source, f"missing keys {missing} (expected {list(_KEYS)})")
        unknown = sorted(set(payload) - set(_KEYS))
        if unknown:
            raise FileFormatError(source, f"unknown keys {unknown} (expected {list(_KEYS)})")
        class_range = payload["class_range"]
        if not isinstance(class_range, dict):
            raise FileFormatError(source, f"class_range must be an object, found {type(class_range).__name__}")
        dist_ths = payload["dist_ths"]
        if not isinstance(dist_ths, list):
            raise FileFormatError(source, f"dist_ths must be a list, found {type(dist_ths).__name__}")
        try:
            return cls(
                class_range_m=tuple(class_range.items()),
                dist_fcn=payload["dist_fcn"],
                dist_ths_m=tuple(dist_ths),
                dist_th_tp_m=payload["dist_th_tp"],
                min_recall=payload["min_recall"],
                min_precision=payload["min_precision"],
                max_boxes_per_sample=payload["max_boxes_per_sample"],
                mean_ap_weight=payload["mean_ap_weight"],
            )
        except ValueError as error:
            raise FileFormatError(source, str(error)) from None


def load_config(path: str | Path | None = None) -> DetectionConfig:
    """Read a configuration file in the devkit's format; None gives `detection_cvpr_2019`."""
    config_path = CONFIG_DIR / f"{DEFAULT_CONFIG_NAME}.json" if path is None else Path(path)
    try:
        text = config_path.read_text()
    except OSError as error:
        raise InputError(f"{config_path}: cannot read the evaluation config ({error.strerror})") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise FileFormatError(config_path, f"not valid JSON ({error})") from None
    return DetectionConfig.from_json(payload, source=str(config_path))


def default_config() -> DetectionConfig:
    """The devkit's `detection_cvpr_2019` configuration."""
    return load_config(None)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
