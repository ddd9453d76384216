"""A simulated GNSS receiver: 10 Hz fixes from the true ego path through the location's geodetic origin.

Position error is a slowly wandering bias (a random walk, as multipath and atmosphere make it) plus
white noise; heading degrades at low speed (it is derived from motion); some fixes drop out singly
and sometimes the receiver loses the sky for a few seconds (an outage: consecutive fixes missing).

File format (`<dataroot>/gnss/<scene-name>.json`): `{"scene_token", "scene_name", "location",
"rate_hz": 10, "fixes": [{"timestamp" (us), "latitude" (deg), "longitude" (deg), "altitude" (m),
"heading" (deg clockwise from north), "speed" (m/s)}, ...]}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avfusion.calibration.geodesy import geodetic_from_map, heading_deg_from_yaw
from avfusion.errors import InputError

GNSS_RATE_HZ = 10


@dataclass(frozen=True, slots=True)
class GnssNoise:
    """Error model of the simulated receiver.

    Attributes:
        position_sigma_m: white horizontal noise per axis (m).
        bias_step_m: per-fix step of the wandering horizontal bias per axis (m).
        altitude_sigma_m: white vertical noise (m).
        heading_sigma_deg: heading noise at speed (deg); it grows as the car slows.
        speed_sigma_m_s: speed noise (m/s).
        dropout_probability: chance that any single fix is missing.
        outage_probability: chance per scene of one outage of 1-3 s.
    """

    position_sigma_m: float = 0.6
    bias_step_m: float = 0.05
    altitude_sigma_m: float = 1.2
    heading_sigma_deg: float = 1.0
    speed_sigma_m_s: float = 0.08
    dropout_probability: float = 0.02
    outage_probability: float = 0.3

    def __post_init__(self) -> None:
        for name in ("position_sigma_m", "bias_step_m", "altitude_sigma_m", "heading_sigma_deg", "speed_sigma_m_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"GNSS noise {name} must be a finite number >= 0, got {value}")
        for name in ("dropout_probability", "outage_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"GNSS {name} must lie in [0, 1], got {value}")


def simulate_fixes(
    location: str,
    ego_poses_at,
    ego_speed_at,
    start_us: int,
    duration_s: float,
    noise: GnssNoise,
    rng: np.random.Generator,
) -> list[dict]:
    """Fixes from `start_us` over `duration_s` at 10 Hz (minus dropouts), in the file format.

    Args:
        ego_poses_at: `times_s (K,) -> (xy_map (K, 2), yaw_rad (K,))` of the ego (scene-relative seconds).
        ego_speed_at: `times_s (K,) -> speed_m_s (K,)`.
    """
    times_s = np.arange(0.0, duration_s + 1e-9, 1.0 / GNSS_RATE_HZ)
    n = times_s.size
    xy, yaw = ego_poses_at(times_s)
    speed = ego_speed_at(times_s)
    bias = np.cumsum(rng.normal(0.0, noise.bias_step_m, (n, 2)), axis=0) + rng.normal(0.0, noise.position_sigma_m, 2)
    measured_xy = xy + bias + rng.normal(0.0, noise.position_sigma_m, (n, 2))
    altitude = rng.normal(0.0, noise.altitude_sigma_m, n)
    lla = geodetic_from_map(location, np.concatenate([measured_xy, altitude[:, None]], axis=1))
    heading_sigma = noise.heading_sigma_deg * (1.0 + 6.0 / (1.0 + 4.0 * speed))
    heading = np.mod(heading_deg_from_yaw(yaw) + rng.normal(0.0, 1.0, n) * heading_sigma, 360.0)
    measured_speed = np.maximum(speed + rng.normal(0.0, noise.speed_sigma_m_s, n), 0.0)

    keep = rng.random(n) >= noise.dropout_probability
    if rng.random() < noise.outage_probability and n > 10:
        length = int(rng.integers(10, 31))
        start = int(rng.integers(0, max(1, n - length)))
        keep[start : start + length] = False
    fixes = []
    for i in np.flatnonzero(keep):
        fixes.append(
            {
                "timestamp": int(start_us + round(times_s[i] * 1e6)),
                "latitude": float(lla[i, 0]),
                "longitude": float(lla[i, 1]),
                "altitude": float(lla[i, 2]),
                "heading": float(heading[i]),
                "speed": float(measured_speed[i]),
            }
        )
    return fixes
