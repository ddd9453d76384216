"""GPS latitude/longitude/altitude <-> the nuScenes map (global) frame of each location.

The map frame: x east, y north, z up, metres, origin at the south-west corner of the location's
map, whose geodetic position is `MAP_ORIGINS`. nuscenes-devkit's `scripts/export_poses.py` turns a
map position into latitude/longitude as the great-circle destination from the origin, with bearing
`atan2(x, y)` (clockwise from north), distance `hypot(x, y)`, on a sphere of radius 6,378,137 m.
That is exactly an azimuthal equidistant projection of that sphere centred on the origin, which
pyproj provides in both directions; we use it, so our GPS agrees with the devkit's conversion and
round-trips exactly. Altitude is the map z (nuScenes' map frame has its zero at road level).

Heading conventions: GNSS heading is degrees clockwise from north in [0, 360); map yaw is radians
counter-clockwise from east (+x) in (-pi, pi].
"""

from __future__ import annotations

import functools
import warnings
from types import MappingProxyType

import numpy as np
import pyproj

from avfusion.errors import InputError

# Sphere radius used by nuscenes-devkit's export_poses.py (the WGS84 equatorial radius).
EARTH_RADIUS_M = 6_378_137.0

# South-west corner of each nuScenes map, (latitude_deg, longitude_deg) (DESIGN.md section 4).
MAP_ORIGINS = MappingProxyType(
    {
        "boston-seaport": (42.336849169438615, -71.05785369873047),
        "singapore-onenorth": (1.2882100868743724, 103.78475189208984),
        "singapore-hollandvillage": (1.2993652317780957, 103.78217697143555),
        "singapore-queenstown": (1.2782562240223188, 103.76741409301758),
    }
)


@functools.cache
def _transformers(location: str) -> tuple[pyproj.Transformer, pyproj.Transformer]:
    """(map_from_geodetic, geodetic_from_map) transformers for `location`."""
    if location not in MAP_ORIGINS:
        raise InputError(f"unknown map location {location!r}; expected one of {sorted(MAP_ORIGINS)}")
    lat0, lon0 = MAP_ORIGINS[location]
    sphere = f"+R={EARTH_RADIUS_M!r} +no_defs"
    geographic = pyproj.CRS.from_proj4(f"+proj=longlat {sphere}")
    local = pyproj.CRS.from_proj4(f"+proj=aeqd +lat_0={lat0!r} +lon_0={lon0!r} +x_0=0 +y_0=0 {sphere}")
    map_from_geodetic = pyproj.Transformer.from_crs(geographic, local, always_xy=True)
    geodetic_from_map = pyproj.Transformer.from_crs(local, geographic, always_xy=True)
    return map_from_geodetic, geodetic_from_map


def _transform(transformer: pyproj.Transformer, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # pyproj first tries a scalar fast path, which calls float() on size-1 arrays and so raises
    # NumPy's "ndim > 0 to scalar" DeprecationWarning; the result is right either way.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out_a, out_b = transformer.transform(a, b)
    return np.atleast_1d(np.asarray(out_a, dtype=np.float64)), np.atleast_1d(np.asarray(out_b, dtype=np.float64))


def _as_n3(name: str, values: object) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {array.shape}")
    return array


def geodetic_from_map(location: str, points_map: object) -> np.ndarray:
    """Map-frame points `(N, 3)` metres -> `(N, 3)` latitude_deg, longitude_deg, altitude_m."""
    points = _as_n3("points_map", points_map)
    _, geodetic_from_map_transformer = _transformers(location)
    lon, lat = _transform(geodetic_from_map_transformer, points[:, 0], points[:, 1])
    return np.stack([lat, lon, points[:, 2]], axis=1)


def map_from_geodetic(location: str, lla: object) -> np.ndarray:
    """`(N, 3)` latitude_deg, longitude_deg, altitude_m -> map-frame points `(N, 3)` metres."""
    values = _as_n3("lla", lla)
    map_from_geodetic_transformer, _ = _transformers(location)
    x, y = _transform(map_from_geodetic_transformer, values[:, 1], values[:, 0])
    return np.stack([x, y, values[:, 2]], axis=1)


def heading_deg_from_yaw(yaw_rad: object) -> np.ndarray | float:
    """Map yaw (rad, counter-clockwise from east) -> GNSS heading (deg, clockwise from north, [0, 360))."""
    heading = np.mod(90.0 - np.degrees(np.asarray(yaw_rad, dtype=np.float64)), 360.0)
    # mod can return 360.0 for tiny negative inputs after rounding
    heading = np.where(heading >= 360.0, 0.0, heading)
    return float(heading) if np.ndim(heading) == 0 else heading


def yaw_from_heading_deg(heading_deg: object) -> np.ndarray | float:
    """GNSS heading (deg, clockwise from north) -> map yaw (rad, counter-clockwise from east, (-pi, pi])."""
    yaw = np.radians(90.0 - np.asarray(heading_deg, dtype=np.float64))
    wrapped = np.pi - np.mod(np.pi - yaw, 2.0 * np.pi)
    return float(wrapped) if np.ndim(wrapped) == 0 else wrapped
