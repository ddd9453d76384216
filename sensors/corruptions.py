"""Sensor corruptions for the robustness benchmark: MultiCorrupt's ten types at severities 1-3,
GNSS noise and map removal, as pure seeded functions.

The definitions and per-severity parameters are those of `shared/reference/robustness.md`
(MultiCorrupt, Beemelmanns et al. 2024). Three layers:

- point-cloud functions over `(N, C)` float32 arrays whose first four columns are x, y, z
  (metres, LIDAR_TOP frame, sensor at the origin) and intensity (0-255); any further columns
  (ring index of a `.pcd.bin`, time lag of an accumulated cloud) are carried along unchanged.
  Functions that remove or replace points return `(points, kept)`, `kept` the `(M,)` indices of
  the input rows the output rows come from, so per-point side arrays follow with `side[kept]`;
- image functions over `(H, W, 3)` uint8 RGB images, returning a new image of the same shape and
  dtype. Pixel-sized parameters are given for nuScenes' 1600-pixel-wide images and scale with
  the image's width (replay decodes images at 1/8 scale);
- `corrupt_frame(frame, corruption, seed, previous)`: a `SyncedFrame` -> the `SyncedFrame` the
  corrupted sensors would have delivered. Every random draw comes from `sensor_rng(seed, type,
  sample_token, sensor)`, so a frame's corruption depends on nothing but its identity (not on
  the order frames are replayed in, nor on the severity: a frame hit by a probabilistic
  corruption at severity 1 is hit at severities 2 and 3 too). Temporal misalignment needs the
  previous keyframe of the scene (`previous`, uncorrupted); the first keyframe keeps its data.

No input array is modified.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from avfusion.calibration.geodesy import geodetic_from_map, map_from_geodetic
from avfusion.errors import InputError
from avfusion.sensors.types import (
    GNSS_NAME,
    LIDAR_NAME,
    MAP_NAME,
    CameraFrame,
    GnssFix,
    LidarSweep,
    SyncedFrame,
)

SEVERITIES: tuple[int, ...] = (1, 2, 3)
# The ten MultiCorrupt types, in the order of their table, with the modalities each touches.
MULTICORRUPT_TYPES: dict[str, str] = {
    "beams_reducing": "lidar",
    "points_reducing": "lidar",
    "spatial_misalignment": "lidar",
    "temporal_misalignment": "lidar+camera",
    "motion_blur": "lidar+camera",
    "fog": "lidar+camera",
    "snow": "lidar+camera",
    "brightness": "camera",
    "darkness": "camera",
    "missing_camera": "camera",
}
# avfusion's own: the map placed from noisy GNSS fixes, and the map raster lost.
EXTRA_TYPES: dict[str, str] = {"gnss_noise": "gnss", "map_removal": "map"}
CORRUPTION_TYPES: dict[str, str] = {**MULTICORRUPT_TYPES, **EXTRA_TYPES}

# Per severity 1 / 2 / 3 (robustness.md).
BEAM_STEP = (2, 4, 8)  # keep rings whose index is a multiple of this: 16 / 8 / 4 of 32
POINT_DROP_FRACTION = (0.2, 0.4, 0.6)
FRAME_PROBABILITY = (0.2, 0.4, 0.6)  # spatial / temporal misalignment, missing camera
MISALIGN_ROTATION_DEG = (1.0, 2.0, 3.0)  # about each of x, y, z
MISALIGN_SHIFT_M = 2.0  # along the lidar's x axis, as MultiCorrupt's code does
MOTION_SIGMA = (0.06, 0.10, 0.13)  # lidar: metres; images: x 100 px of the Gaussian kernel weights
MOTION_JITTER_FRACTION = 0.2  # per-point jitter sigma as a fraction of MOTION_SIGMA, clipped at 3 of it
MOTION_KERNEL_PX = 31
MOTION_MAX_ANGLE_DEG = 45.0
FOG_ALPHA_PER_M = (0.02, 0.03, 0.06)
FOG_BETA = (0.0005, 0.001, 0.002)
BRIGHTNESS_DELTA = (0.1, 0.3, 0.5)
DARK_CONTRAST = (0.6, 0.4, 0.3)
DARK_GAMMA = 2.0
DARK_PHOTONS = (250.0, 120.0, 50.0)
DARK_READ_NOISE = (0.008, 0.018, 0.026)
GNSS_SIGMA_M = (0.75, 1.5, 3.0)  # severity 2 is the ablation's `gnss_noise` row
GNSS_SIGMA_HEADING_DEG = (1.0, 2.0, 4.0)
MAP_REMOVAL_PROBABILITY = (1.0 / 3.0, 2.0 / 3.0, 1.0)

# Fog model: a return is detected while its intensity, attenuated on the way out and back
# (x exp(-2 alpha r)), stays at or above the noise floor; a lost return is replaced, with this
# probability, by a weak return from the fog itself at a range drawn from the backscatter profile
# (exponential with rate 2 alpha), at least FOG_MIN_RANGE_M and short of the lost return.
FOG_NOISE_FLOOR = 1.0
FOG_BACKSCATTER_PROBABILITY = 0.5
FOG_MIN_RANGE_M = 1.5
FOG_BACKSCATTER_INTENSITY = 4.0
# Snow model: within SNOW_VISIBLE_RANGE_M (where a flake reflects enough to be seen) a beam meets a
# flake with rate SNOW_HIT_RATE_PER_M and returns from it (weak, near the sensor); beyond, the
# scattering loses returns with rate SNOW_LOSS_RATE_PER_M. Images: flakes over a dimmed image.
SNOW_HIT_RATE_PER_M = (0.005, 0.01, 0.02)
SNOW_LOSS_RATE_PER_M = (0.0025, 0.005, 0.01)
SNOW_VISIBLE_RANGE_M = 20.0
SNOW_FLAKE_INTENSITY = 8.0
SNOW_IMAGE_DIM = 0.9
SNOW_FLAKE_DENSITY = (0.004, 0.008, 0.016)  # flakes per pixel of a 1600-px-wide image
SNOW_FLAKE_AREA_PX = 9  # pixels a flake streak covers in a 1600-px-wide image
NUSCENES_IMAGE_WIDTH_PX = 1600


@dataclass(frozen=True, slots=True)
class Corruption:
    """One corruption type at one severity (1-3); `Corruption.parse("fog:2")`."""

    type: str
    severity: int

    def __post_init__(self) -> None:
        if self.type not in CORRUPTION_TYPES:
            raise InputError(f"unknown corruption type {self.type!r}; known: {', '.join(CORRUPTION_TYPES)}")
        if (
            isinstance(self.severity, bool)
            or not isinstance(self.severity, (int, np.integer))
            or self.severity not in SEVERITIES
        ):
            raise InputError(f"corruption {self.type}: severity {self.severity!r} is not one of {list(SEVERITIES)}")
        object.__setattr__(self, "severity", int(self.severity))

    @staticmethod
    def parse(text: str) -> Corruption:
        """ "TYPE:SEVERITY" -> `Corruption`; InputError naming what was given and what is known."""
        type_name, sep, severity_text = str(text).strip().partition(":")
        if not sep:
            raise InputError(
                f"corruption {text!r} must be TYPE:SEVERITY, e.g. fog:2; types: {', '.join(CORRUPTION_TYPES)}"
            )
        if type_name not in CORRUPTION_TYPES:
            raise InputError(f"unknown corruption type {type_name!r} in {text!r}; known: {', '.join(CORRUPTION_TYPES)}")
        try:
            severity = int(severity_text)
        except ValueError:
            raise InputError(
                f"corruption {text!r}: severity {severity_text!r} is not one of {list(SEVERITIES)}"
            ) from None
        return Corruption(type_name, severity)

    def __str__(self) -> str:
        return f"{self.type}:{self.severity}"

    @property
    def index(self) -> int:
        """Severity as an index into the per-severity parameter tuples."""
        return self.severity - 1

    @property
    def touches_lidar(self) -> bool:
        return "lidar" in CORRUPTION_TYPES[self.type]

    @property
    def touches_cameras(self) -> bool:
        return "camera" in CORRUPTION_TYPES[self.type]


def sensor_rng(seed: int, corruption_type: str, sample_token: str, sensor: str) -> np.random.Generator:
    """The random stream of one corruption type on one sensor of one keyframe (or one file)."""
    digest = hashlib.blake2b(f"{int(seed)}/{corruption_type}/{sample_token}/{sensor}".encode(), digest_size=16).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32).tolist())


# ---------------------------------------------------------------------------------------------
# Point clouds


def _all_rows(points: np.ndarray) -> np.ndarray:
    return np.arange(points.shape[0], dtype=np.int64)


def beams_kept(ring: np.ndarray, severity: int) -> np.ndarray:
    """`(N,)` bool: the points of the rings kept at `severity` (ring index a multiple of 2 / 4 / 8)."""
    return np.asarray(ring).astype(np.int64) % BEAM_STEP[severity - 1] == 0


def reduce_points(points: np.ndarray, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Drop `round(fraction * N)` returns chosen uniformly at random (fraction 0.2 / 0.4 / 0.6);
    the kept rows stay in their order."""
    n = points.shape[0]
    keep_count = n - round(POINT_DROP_FRACTION[severity - 1] * n)
    kept = np.sort(rng.permutation(n)[:keep_count])
    return points[kept], kept


def misalignment_transform(severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The `(3, 3)` rotation and `(3,)` shift (metres) of spatial misalignment: `severity` degrees
    about each of x, y, z (each with a random sign), then 2 m along x."""
    angle = np.deg2rad(MISALIGN_ROTATION_DEG[severity - 1]) * rng.choice((-1.0, 1.0), size=3)
    cx, cy, cz = np.cos(angle)
    sx, sy, sz = np.sin(angle)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x, np.array([MISALIGN_SHIFT_M, 0.0, 0.0])


def transform_points(points: np.ndarray, rotation: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """`points` with x, y, z moved to `rotation @ p + shift`; other columns unchanged."""
    out = points.copy()
    out[:, :3] = (points[:, :3].astype(np.float64) @ rotation.T + shift).astype(np.float32)
    return out


def motion_blur_points(points: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One random translation of the whole cloud (sigma 0.06 / 0.10 / 0.13 m per axis) plus
    per-point jitter (sigma a fifth of that, clipped at three of its sigmas)."""
    sigma = MOTION_SIGMA[severity - 1]
    jitter_sigma = MOTION_JITTER_FRACTION * sigma
    shift = rng.normal(0.0, sigma, 3)
    jitter = np.clip(rng.normal(0.0, jitter_sigma, (points.shape[0], 3)), -3 * jitter_sigma, 3 * jitter_sigma)
    out = points.copy()
    out[:, :3] = (points[:, :3] + shift + jitter).astype(np.float32)
    return out


def _ranges(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, :3].astype(np.float64), axis=1)


def _move_along_ray(
    points: np.ndarray, rows: np.ndarray, ranges: np.ndarray, new_range: np.ndarray, intensity: np.ndarray
) -> None:
    """In place on a private copy: rows `rows` moved to `new_range` along their own ray, new intensity."""
    scale = new_range / np.maximum(ranges[rows], 1e-6)
    points[rows, :3] = (points[rows, :3] * scale[:, None]).astype(np.float32)
    points[rows, 3] = intensity.astype(np.float32)


def _truncated_exponential(rng: np.random.Generator, rate: float, low: float, high: np.ndarray) -> np.ndarray:
    """Samples of an exponential with `rate` (per metre) restricted to [low, high] (high >= low)."""
    u = rng.random(high.shape[0])
    span = 1.0 - np.exp(-rate * (high - low))
    return low - np.log1p(-u * span) / rate


def fog_points(points: np.ndarray, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fog (attenuation alpha 0.02 / 0.03 / 0.06 per m): intensities x exp(-2 alpha r); returns
    that fall below the noise floor are lost, or (half of them) replaced by backscatter from the
    fog along the same ray (see the FOG_ constants)."""
    alpha = FOG_ALPHA_PER_M[severity - 1]
    out = points.copy()
    ranges = _ranges(points)
    attenuated = points[:, 3].astype(np.float64) * np.exp(-2.0 * alpha * ranges)
    out[:, 3] = attenuated.astype(np.float32)
    lost = np.flatnonzero(attenuated < FOG_NOISE_FLOOR)
    scatter = lost[(rng.random(lost.size) < FOG_BACKSCATTER_PROBABILITY) & (ranges[lost] > FOG_MIN_RANGE_M)]
    scatter_range = _truncated_exponential(rng, 2.0 * alpha, FOG_MIN_RANGE_M, ranges[scatter])
    _move_along_ray(out, scatter, ranges, scatter_range, rng.uniform(0.0, FOG_BACKSCATTER_INTENSITY, scatter.size))
    keep = np.ones(points.shape[0], dtype=bool)
    keep[lost] = False
    keep[scatter] = True
    kept = np.flatnonzero(keep)
    return out[kept], kept


def snow_points(points: np.ndarray, severity: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Snow: beams that meet a flake within 20 m return from it (weak, near the sensor); beyond,
    returns are lost to scattering (see the SNOW_ constants)."""
    index = severity - 1
    out = points.copy()
    ranges = _ranges(points)
    visible = np.minimum(ranges, SNOW_VISIBLE_RANGE_M)
    hit = rng.random(points.shape[0]) < 1.0 - np.exp(-SNOW_HIT_RATE_PER_M[index] * visible)
    hit &= ranges > FOG_MIN_RANGE_M
    hit_rows = np.flatnonzero(hit)
    flake_range = _truncated_exponential(rng, SNOW_HIT_RATE_PER_M[index], FOG_MIN_RANGE_M, visible[hit_rows])
    _move_along_ray(out, hit_rows, ranges, flake_range, rng.uniform(0.0, SNOW_FLAKE_INTENSITY, hit_rows.size))
    beyond = np.maximum(ranges - SNOW_VISIBLE_RANGE_M, 0.0)
    lost = ~hit & (rng.random(points.shape[0]) < 1.0 - np.exp(-SNOW_LOSS_RATE_PER_M[index] * beyond))
    kept = np.flatnonzero(~lost)
    return out[kept], kept


def corrupt_cloud(
    points: np.ndarray, ring: np.ndarray | None, corruption: Corruption, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The point-level part of a lidar corruption on one cloud: `(points', kept)` (see the module
    docstring). Frame-level draws (whether spatial misalignment hits this frame, temporal
    misalignment) are `corrupt_frame`'s; here spatial misalignment always applies.

    Raises:
        InputError: beam reduction on a cloud without ring indices.
    """
    severity = corruption.severity
    match corruption.type:
        case "beams_reducing":
            if ring is None:
                raise InputError("beams_reducing needs the ring index of every point (column 5 of .pcd.bin)")
            kept = np.flatnonzero(beams_kept(ring, severity))
            return points[kept], kept
        case "points_reducing":
            return reduce_points(points, severity, rng)
        case "spatial_misalignment":
            rotation, shift = misalignment_transform(severity, rng)
            return transform_points(points, rotation, shift), _all_rows(points)
        case "motion_blur":
            return motion_blur_points(points, severity, rng), _all_rows(points)
        case "fog":
            return fog_points(points, severity, rng)
        case "snow":
            return snow_points(points, severity, rng)
    return points, _all_rows(points)


# ---------------------------------------------------------------------------------------------
# Images


def _width_scale(image: np.ndarray) -> float:
    return image.shape[1] / NUSCENES_IMAGE_WIDTH_PX


def motion_blur_kernel(size_px: int, angle_deg: float, sigma_px: float) -> np.ndarray:
    """`(size, size)` float32 line kernel through the centre at `angle_deg` from the horizontal,
    Gaussian weights along the line (sigma in pixels), summing to 1. `size_px` is odd."""
    half = size_px // 2
    kernel = np.zeros((size_px, size_px), dtype=np.float64)
    steps = np.linspace(-half, half, 4 * size_px + 1)
    weights = np.exp(-0.5 * (steps / max(sigma_px, 1e-3)) ** 2)
    angle = np.deg2rad(angle_deg)
    cols = np.clip(np.rint(half + steps * np.cos(angle)).astype(int), 0, size_px - 1)
    rows = np.clip(np.rint(half - steps * np.sin(angle)).astype(int), 0, size_px - 1)
    np.add.at(kernel, (rows, cols), weights)
    return (kernel / kernel.sum()).astype(np.float32)


def motion_blur_image(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Linear motion blur: 31-px kernel at a random angle within +-45 degrees, Gaussian weights of
    sigma 6 / 10 / 13 px (both at 1600 px width, scaled to the image)."""
    scale = _width_scale(image)
    size = max(3, round(MOTION_KERNEL_PX * scale) | 1)
    sigma = MOTION_SIGMA[severity - 1] * 100.0 * scale
    kernel = motion_blur_kernel(size, float(rng.uniform(-MOTION_MAX_ANGLE_DEG, MOTION_MAX_ANGLE_DEG)), sigma)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _to_uint8(image01: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image01 * 255.0), 0, 255).astype(np.uint8)


def brightness_image(image: np.ndarray, severity: int) -> np.ndarray:
    """HSV value channel + 0.1 / 0.3 / 0.5 (on a 0-1 scale), clipped."""
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 2] = np.clip(hsv[..., 2] + BRIGHTNESS_DELTA[severity - 1], 0.0, 1.0)
    return _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


def darkness_image(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Low light: x -> contrast * x ** 2 (contrast 0.6 / 0.4 / 0.3), then photon (Poisson, 250 /
    120 / 50 photons at full scale) and read (Gaussian, sigma 0.008 / 0.018 / 0.026) noise."""
    index = severity - 1
    dark = DARK_CONTRAST[index] * (image.astype(np.float64) / 255.0) ** DARK_GAMMA
    photons = DARK_PHOTONS[index]
    noisy = rng.poisson(dark * photons) / photons + rng.normal(0.0, DARK_READ_NOISE[index], image.shape)
    return _to_uint8(noisy)


def _fractal_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 5) -> np.ndarray:
    """`(H, W)` smooth random field in [0, 1]: octaves of upsampled uniform noise, each half as strong."""
    field = np.zeros((height, width), dtype=np.float64)
    total = 0.0
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        coarse = rng.random((cells, cells))
        field += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) / 2**octave
        total += 1.0 / 2**octave
    field /= total
    return (field - field.min()) / max(field.max() - field.min(), 1e-9)


def _depth_like(height: int, width: int) -> np.ndarray:
    """`(H, W)` pseudo-depth of a road scene: 1000 above the horizon (the middle row), falling
    linearly to 0 at the bottom row."""
    rows = np.arange(height, dtype=np.float64)
    horizon = 0.5 * (height - 1)
    depth = np.where(rows <= horizon, 1000.0, 1000.0 * (height - 1 - rows) / max(height - 1 - horizon, 1e-9))
    return np.broadcast_to(depth[:, None], (height, width))


def fog_image(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Haze: `I t + A (1 - t)` with transmission `t = exp(-beta d)` (beta 0.0005 / 0.001 / 0.002)
    over a depth-like map `d`, and an airlight `A` varied by fractal noise (0.75-0.95)."""
    height, width = image.shape[:2]
    transmission = np.exp(-FOG_BETA[severity - 1] * _depth_like(height, width))[..., None]
    airlight = (0.75 + 0.2 * _fractal_noise(rng, height, width))[..., None]
    foggy = image.astype(np.float64) / 255.0 * transmission + airlight * (1.0 - transmission)
    return _to_uint8(foggy)


def snow_image(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Falling snow: the image dimmed to 0.9 under a layer of bright flakes (0.004 / 0.008 / 0.016
    flakes per pixel of a 1600-px-wide image, each a streak of SNOW_FLAKE_AREA_PX pixels along a
    common fall direction). At a lower resolution each pixel gets the flakes of the area it covers
    and their coverage, so the image looks like the full-size one downscaled."""
    height, width = image.shape[:2]
    scale = _width_scale(image)
    flakes = rng.poisson(SNOW_FLAKE_DENSITY[severity - 1] / scale**2, (height, width)) * rng.uniform(
        0.6, 1.0, (height, width)
    )
    size = max(3, round(SNOW_FLAKE_AREA_PX * scale) | 1)
    kernel = motion_blur_kernel(size, float(rng.uniform(60.0, 120.0)), size / 3.0)
    layer = cv2.filter2D(flakes.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    layer = np.clip(layer * SNOW_FLAKE_AREA_PX * scale**2, 0.0, 1.0)[..., None]
    snowy = SNOW_IMAGE_DIM * image.astype(np.float64) / 255.0 * (1.0 - layer) + layer
    return _to_uint8(snowy)


def corrupt_image(image: np.ndarray, corruption: Corruption, rng: np.random.Generator) -> np.ndarray:
    """The pixel-level part of a camera corruption on one image (the missing-camera and temporal
    draws are `corrupt_frame`'s; here missing_camera always blacks the image out)."""
    severity = corruption.severity
    match corruption.type:
        case "motion_blur":
            return motion_blur_image(image, severity, rng)
        case "fog":
            return fog_image(image, severity, rng)
        case "snow":
            return snow_image(image, severity, rng)
        case "brightness":
            return brightness_image(image, severity)
        case "darkness":
            return darkness_image(image, severity, rng)
        case "missing_camera":
            return np.zeros_like(image)
    return image


# ---------------------------------------------------------------------------------------------
# GNSS


def noisy_gnss_fix(
    fix: GnssFix, location: str, sigma_m: float, sigma_heading_deg: float, rng: np.random.Generator
) -> GnssFix:
    """`fix` moved by Gaussian noise: horizontal position (sigma metres per axis, in the
    location's map frame) and heading (sigma degrees)."""
    xyz = map_from_geodetic(location, np.array([[fix.latitude_deg, fix.longitude_deg, fix.altitude_m]]))
    xyz[0, :2] += rng.normal(0.0, sigma_m, 2)
    lat, lon, alt = geodetic_from_map(location, xyz)[0]
    heading = (fix.heading_deg + rng.normal(0.0, sigma_heading_deg)) % 360.0
    return GnssFix(fix.timestamp_us, float(lat), float(lon), float(alt), float(heading), fix.speed_m_s)


# ---------------------------------------------------------------------------------------------
# Frames


def _lidar_with(sweep: LidarSweep, points: np.ndarray, kept: np.ndarray) -> LidarSweep:
    ring = sweep.ring[kept] if sweep.ring is not None else None
    return dataclasses.replace(sweep, points=np.ascontiguousarray(points, dtype=np.float32), ring=ring)


def stale_lidar(current: LidarSweep, previous: LidarSweep) -> LidarSweep:
    """The previous keyframe's whole cloud (as it was, in its own lidar frame) delivered under the
    current keyframe's timestamp, token and poses."""
    return dataclasses.replace(current, points=previous.points, ring=previous.ring, num_sweeps=previous.num_sweeps)


def stale_camera(current: CameraFrame, previous: CameraFrame) -> CameraFrame:
    """The previous keyframe's image of this camera delivered under the current timestamp and poses."""
    return dataclasses.replace(current, image=previous.image, intrinsics=previous.intrinsics)


def corrupt_frame(
    frame: SyncedFrame, corruption: Corruption, seed: int = 0, previous: SyncedFrame | None = None
) -> SyncedFrame:
    """`frame` as the corrupted sensors deliver it (see the module docstring).

    Args:
        frame: the clean keyframe; sensors it lacks stay absent.
        corruption: type and severity.
        seed: the benchmark's seed; with the sample token and the sensor it fixes every draw.
        previous: the scene's previous keyframe, clean (temporal misalignment), or None.
    """
    kind = corruption.type
    index = corruption.index
    token = frame.sample_token

    def rng(sensor: str) -> np.random.Generator:
        return sensor_rng(seed, kind, token, sensor)

    lidar = frame.lidar
    cameras = dict(frame.cameras)
    # SyncedFrame field -> its new value (the fields differ in type; dataclasses.replace checks the names).
    changes: dict[str, Any] = {}
    if kind == "temporal_misalignment":
        if previous is not None:
            if lidar is not None and previous.lidar is not None and rng(LIDAR_NAME).random() < FRAME_PROBABILITY[index]:
                changes["lidar"] = stale_lidar(lidar, previous.lidar)
            for name, camera in frame.cameras.items():
                old = previous.cameras.get(name)
                if (
                    old is not None
                    and old.image.shape == camera.image.shape
                    and rng(name).random() < FRAME_PROBABILITY[index]
                ):
                    cameras[name] = stale_camera(camera, old)
            changes["cameras"] = cameras
    elif kind == "gnss_noise":
        if frame.gnss is not None:
            changes["gnss"] = noisy_gnss_fix(
                frame.gnss, frame.location, GNSS_SIGMA_M[index], GNSS_SIGMA_HEADING_DEG[index], rng(GNSS_NAME)
            )
    elif kind == "map_removal":
        if frame.map is not None and rng(MAP_NAME).random() < MAP_REMOVAL_PROBABILITY[index]:
            changes["map"] = None
            changes["missing"] = {**frame.missing, MAP_NAME: f"removed by corruption {corruption}"}
    else:
        if corruption.touches_lidar and lidar is not None:
            lidar_rng = rng(LIDAR_NAME)
            hit = kind != "spatial_misalignment" or lidar_rng.random() < FRAME_PROBABILITY[index]
            if hit:
                points, kept = corrupt_cloud(lidar.points, lidar.ring, corruption, lidar_rng)
                changes["lidar"] = _lidar_with(lidar, points, kept)
        if corruption.touches_cameras:
            for name, camera in frame.cameras.items():
                camera_rng = rng(name)
                if kind == "missing_camera" and camera_rng.random() >= FRAME_PROBABILITY[index]:
                    continue
                cameras[name] = dataclasses.replace(camera, image=corrupt_image(camera.image, corruption, camera_rng))
            changes["cameras"] = cameras
    return dataclasses.replace(frame, **changes) if changes else frame
