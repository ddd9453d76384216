"""Reader for avfusion's GNSS stream files: `<dataroot>/gnss/<scene-name>.json`.

Format: `{"scene_token", "scene_name", "location", "rate_hz", "fixes": [{"timestamp": us,
"latitude": deg, "longitude": deg, "altitude": m, "heading": deg clockwise from north,
"speed": m/s}, ...]}`; dropouts are simply absent fixes. Timestamps must strictly increase.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avfusion.errors import FileFormatError
from avfusion.sensors.errors import MissingSensorFile
from avfusion.sensors.sync import check_increasing
from avfusion.sensors.types import GnssFix

_FIX_FIELDS = ("timestamp", "latitude", "longitude", "altitude", "heading", "speed")


@dataclass(frozen=True, slots=True, eq=False)
class GnssLog:
    """One scene's GNSS fixes, in time order, with their timestamps as an `(M,)` int64 array."""

    scene_token: str
    scene_name: str
    location: str
    rate_hz: float
    fixes: tuple[GnssFix, ...]
    timestamps_us: np.ndarray

    def __len__(self) -> int:
        return len(self.fixes)


def gnss_path(dataroot: str | os.PathLike[str], scene_name: str) -> Path:
    return Path(dataroot) / "gnss" / f"{scene_name}.json"


def read_gnss_json(path: str | os.PathLike[str]) -> GnssLog:
    """Read and validate a GNSS file; `MissingSensorFile` if absent, `FileFormatError` if malformed."""
    file_path = Path(path)
    try:
        text = file_path.read_text()
    except FileNotFoundError as error:
        raise MissingSensorFile(file_path, "GNSS file") from error
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise FileFormatError(file_path, f"not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise FileFormatError(file_path, f"expected a JSON object, found {type(payload).__name__}")
    for key in ("scene_name", "location", "fixes"):
        if key not in payload:
            raise FileFormatError(file_path, f"missing key {key!r}")
    if not isinstance(payload["fixes"], list):
        raise FileFormatError(file_path, "'fixes' must be a list")
    fixes = []
    for index, record in enumerate(payload["fixes"]):
        if not isinstance(record, dict) or any(k not in record for k in _FIX_FIELDS):
            raise FileFormatError(file_path, f"fix {index} must have the fields {list(_FIX_FIELDS)}, got {record!r}")
        try:
            fixes.append(
                GnssFix(
                    timestamp_us=int(record["timestamp"]),
                    latitude_deg=record["latitude"],
                    longitude_deg=record["longitude"],
                    altitude_m=record["altitude"],
                    heading_deg=record["heading"],
                    speed_m_s=record["speed"],
                )
            )
        except (TypeError, ValueError) as error:
            raise FileFormatError(file_path, f"fix {index}: {error}") from error
    timestamps = np.array([f.timestamp_us for f in fixes], dtype=np.int64)
    check_increasing(timestamps, f"{file_path}: GNSS fixes")
    return GnssLog(
        scene_token=str(payload.get("scene_token", "")),
        scene_name=str(payload["scene_name"]),
        location=str(payload["location"]),
        rate_hz=float(payload.get("rate_hz", 0.0)),
        fixes=tuple(fixes),
        timestamps_us=timestamps,
    )
