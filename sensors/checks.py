"""Online sensor checks over a scene's keyframes: frozen sensors and the camera-lidar calibration.

`SensorChecks.check(frame)` is called on every keyframe of a scene in time order (its state starts
afresh when the scene changes) and returns the frame as the detector should see it plus what was
found:

- **Frozen sensor.** A lidar keyframe sweep (its time-lag-0 points) or a camera image identical,
  byte for byte, to one of that sensor's last `FROZEN_HISTORY` keyframes, or whose timestamp did
  not advance, is frozen. A frozen camera is dropped for the frame (listed in `missing`); a frozen
  lidar gives way to the newest fresh cloud: the last keyframe's cloud that was not frozen, moved
  into this keyframe's lidar frame through the ego poses, its time lags grown by the time since.
- **Calibration** (Levinson and Thrun, "Automatic online calibration of cameras and lasers", RSS
  2013). Depth discontinuities along each lidar ring should project onto image edges. Per camera
  and frame the agreement `J(R) = sum_p X_p D(project(R p))` (X_p an edge point's weight: its
  depth jump to a neighbour along its ring or in the next ring to the power `jump_power`; D the
  image's binary edge map spread by an inverse distance transform) is evaluated for small
  rotations R of the stored extrinsic on a 3-D grid of rotation vectors (pitch about camera x,
  yaw about y, roll about z; +-3 degrees in 1-degree steps). The scores are summed over the scene's frames; their maximum, refined per axis by a
  parabola, is the running estimate of the extrinsic's error, `offset_deg`. A camera is
  `suspect` when that estimate is at least `suspect_offset_deg`, the agreement there beats the
  stored extrinsic's by `min_gain` and at least `min_frames` frames are summed;
  `undetermined` on a frame with too few lidar edges in its view or a blank (e.g. black) image,
  whatever its history; else `ok`. A suspect camera is dropped for the frame.

Projection goes through `CameraIntrinsics.project`; transforms follow `target_from_source`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3
from avfusion.sensors.types import LIDAR_NAME, CameraFrame, LidarSweep, SyncedFrame

FROZEN_HISTORY = 4
STATUS_OK = "ok"
STATUS_SUSPECT = "suspect"
STATUS_UNDETERMINED = "undetermined"


# ---------------------------------------------------------------------------------------------
# Frozen sensors


def content_digest(array: np.ndarray) -> bytes:
    """A 16-byte digest of an array's bytes (identical data <=> identical digest, in practice)."""
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()


def keyframe_points(sweep: LidarSweep) -> np.ndarray:
    """The rows of the keyframe sweep itself (time lag 0) of an accumulated cloud."""
    return sweep.points[sweep.points[:, 4] == 0.0]


class FrozenSensorCheck:
    """Per sensor, the digests of its last `history` keyframes and its last timestamp."""

    def __init__(self, history: int = FROZEN_HISTORY) -> None:
        self.history = history
        self._digests: dict[str, deque[bytes]] = {}
        self._last_us: dict[str, int] = {}

    def observe(self, sensor: str, digest: bytes, timestamp_us: int) -> str | None:
        """Record one keyframe of `sensor`; the reason it is frozen, or None when it is fresh."""
        recent = self._digests.setdefault(sensor, deque(maxlen=self.history))
        last_us = self._last_us.get(sensor)
        reason = None
        if digest in recent:
            back = len(recent) - max(i for i, d in enumerate(recent) if d == digest)
            reason = f"frozen: data identical to its keyframe {back} before"
        elif last_us is not None and timestamp_us <= last_us:
            reason = f"frozen: timestamp {timestamp_us} did not advance past {last_us}"
        recent.append(digest)
        self._last_us[sensor] = max(timestamp_us, last_us) if last_us is not None else timestamp_us
        return reason


def advance_cloud(fresh: LidarSweep, now: LidarSweep) -> LidarSweep:
    """`fresh` (an earlier cloud) moved into `now`'s lidar frame through both ego poses, its time
    lags grown by the time between them; timestamp, token and poses are `now`'s."""
    lidar_now_from_lidar_fresh = (now.global_from_ego @ now.ego_from_lidar).inverse() @ (
        fresh.global_from_ego @ fresh.ego_from_lidar
    )
    points = fresh.points.copy()
    points[:, :3] = lidar_now_from_lidar_fresh.apply(fresh.points[:, :3]).astype(np.float32)
    points[:, 4] += np.float32((now.timestamp_us - fresh.timestamp_us) * 1e-6)
    return dataclasses.replace(now, points=points, ring=fresh.ring, num_sweeps=fresh.num_sweeps)


# ---------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True, slots=True)
class CalibrationCheckConfig:
    """Parameters of the calibration check (angles in degrees, image sizes for 1600-px images).

    Attributes:
        grid_half_width_deg, grid_step_deg: the rotation grid per axis, around the stored extrinsic.
        depth_jump_m: a lidar point is an edge when a ring neighbour is at least this much farther.
        jump_power: an edge's weight is its depth jump (m) to this power. Levinson and Thrun use
            0.5; 0 weighs every edge the same.
        max_neighbour_gap_deg: ring neighbours farther apart in azimuth are not neighbours.
        min_edge_points: fewer lidar edges in a camera's view make its frame undetermined.
        min_image_contrast: an image whose grey levels' standard deviation is below this is blank.
        edge_contrast, edge_noise_factor: an image pixel is an edge (1, else 0) where its grey
            level differs from a neighbour's by at least `edge_contrast` (0-1) and by at least
            `edge_noise_factor` times the median such difference over the image (noise and fine
            texture: 1-2 grey levels on the synthetic images, 10-28 on the real keyframe's).
            Levinson and Thrun use the difference itself; then strong edges without a depth step
            (kerbs, lane paint, rows of windows) outvote faint true ones (a tree canopy against a
            dark facade, a hedge against a wall): on the tuning logs a canopy or a row of hedges
            near a correctly calibrated camera pulled its estimate to a corner of the grid. With
            binary edges and equal weights (`jump_power` 0) clean frames were flagged 21% -> 3.9%
            and 7.6% -> 2.8% of the time on the two tuning logs (docs/results.md).
        edge_spread_px, edge_decay: the inverse distance transform (Levinson and Thrun's gamma
            0.98 per pixel at 1600 px), scaled to the image's width.
        suspect_offset_deg, min_gain: the decision (see the module docstring).
        min_frames: no camera is suspect before this many of its frames are summed.
        sweep_duration_s: one revolution of the lidar (nuScenes' 20 Hz).
        max_time_offset_s: lidar edges fired further than this from the camera's exposure are
            left out (a moving object was elsewhere when the camera saw it; it matters for the
            camera the revolution's seam crosses, half of whose view is a revolution old).
    """

    grid_half_width_deg: float = 3.0
    grid_step_deg: float = 1.0
    depth_jump_m: float = 1.0
    jump_power: float = 0.0
    max_neighbour_gap_deg: float = 1.0
    min_edge_points: int = 40
    max_edge_points: int = 1000
    min_image_contrast: float = 4.0
    edge_spread_px: float = 48.0
    edge_decay: float = 0.98
    edge_alpha: float = 1.0 / 3.0
    edge_contrast: float = 0.02
    edge_noise_factor: float = 3.0
    across_ring_weight: float = 1.0
    suspect_offset_deg: float = 1.2
    min_frames: int = 5
    sweep_duration_s: float = 0.05
    max_time_offset_s: float = 0.015
    min_gain: float = 0.03

    @property
    def grid_deg(self) -> np.ndarray:
        count = round(self.grid_half_width_deg / self.grid_step_deg)
        return np.arange(-count, count + 1) * self.grid_step_deg


def _edge_jumps(
    ranges: np.ndarray, before: np.ndarray, after: np.ndarray, config: CalibrationCheckConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per point, the depth jump to a farther neighbour on one side when the surface continues
    smoothly on the other (a step of at most a third of the jump there), else 0, and that
    neighbour's index (-1 none; `before` / `after` use -1 for no neighbour). Continuous surfaces
    seen at a grazing angle (the ground between rings) have large steps on both sides: no edge."""
    jump = np.zeros(ranges.size)
    partner = np.full(ranges.size, -1)
    for far, near in ((before, after), (after, before)):
        has = (far >= 0) & (near >= 0)
        step_far = np.where(has, ranges[np.maximum(far, 0)] - ranges, 0.0)
        step_near = np.where(has, np.abs(ranges[np.maximum(near, 0)] - ranges), np.inf)
        edge = has & (step_far >= config.depth_jump_m) & (step_far >= 3.0 * step_near) & (step_far > jump)
        jump = np.where(edge, step_far, jump)
        partner = np.where(edge, far, partner)
    return jump, partner


def lidar_edges(sweep: LidarSweep, config: CalibrationCheckConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth discontinuities of the keyframe sweep: `(K, 3)` points (lidar frame, metres), `(K,)`
    depth jumps (metres) and `(K,)` firing times (seconds relative to the sweep's
    timestamp, which ends the revolution), for the near side of each edge along a ring (vertical
    edges) or between adjacent rings at the same azimuth (horizontal edges; see `_edge_jumps`).
    Empty without ring indices."""
    if sweep.ring is None:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    key = sweep.points[:, 4] == 0.0
    xyz = sweep.points[key, :3].astype(np.float64)
    ring = sweep.ring[key].astype(np.int64)
    # Azimuth measured from the sweep's seam: a file lists its returns in firing order, so its
    # first return is where the revolution began. The returns on either side of the seam were
    # taken a whole revolution apart (the scene moved meanwhile): they are not neighbours.
    raw = np.arctan2(xyz[:, 1], xyz[:, 0])
    azimuth = np.mod(raw - raw[0], 2.0 * np.pi) if raw.size else raw
    # The fraction of the revolution at each return's firing, whichever way the head spins.
    early = azimuth[: max(1, raw.size // 8)]
    spins_counterclockwise = float(np.median(early)) < np.pi
    turned = azimuth if spins_counterclockwise else np.mod(raw[0] - raw, 2.0 * np.pi) if raw.size else raw
    firing_s = (turned / (2.0 * np.pi) - 1.0) * config.sweep_duration_s
    order = np.lexsort((azimuth, ring))
    xyz, ring, azimuth, firing_s = xyz[order], ring[order], azimuth[order], firing_s[order]
    ranges = np.linalg.norm(xyz, axis=1)
    n = ranges.size
    gap = np.deg2rad(config.max_neighbour_gap_deg)
    index = np.arange(n)
    # Along the ring: the previous / next point in azimuth.
    linked = (ring[1:] == ring[:-1]) & (np.abs(np.diff(azimuth)) <= gap)
    prev_in_ring = np.full(n, -1)
    next_in_ring = np.full(n, -1)
    prev_in_ring[1:] = np.where(linked, index[:-1], -1)
    next_in_ring[:-1] = np.where(linked, index[1:], -1)
    # Across rings: the nearest point in azimuth of the ring below / above.
    ring_below = np.full(n, -1)
    ring_above = np.full(n, -1)
    starts = np.searchsorted(ring, np.arange(ring.max() + 2)) if n else np.zeros(1, np.int64)
    for r in range(len(starts) - 2):
        lo, mid, hi = starts[r], starts[r + 1], starts[r + 2]
        if mid in (lo, hi):
            continue
        upper_az = azimuth[mid:hi]
        slot = (
            np.clip(np.searchsorted(upper_az, azimuth[lo:mid]), 1, hi - mid - 1)
            if hi - mid > 1
            else np.zeros(mid - lo, np.int64)
        )
        nearest = (
            np.where(
                np.abs(upper_az[slot - 1] - azimuth[lo:mid]) < np.abs(upper_az[slot] - azimuth[lo:mid]), slot - 1, slot
            )
            if hi - mid > 1
            else slot
        )
        close = np.abs(upper_az[nearest] - azimuth[lo:mid]) <= gap
        ring_above[lo:mid] = np.where(close, mid + nearest, -1)
        lower_az = azimuth[lo:mid]
        slot = (
            np.clip(np.searchsorted(lower_az, upper_az), 1, mid - lo - 1)
            if mid - lo > 1
            else np.zeros(hi - mid, np.int64)
        )
        nearest = (
            np.where(np.abs(lower_az[slot - 1] - upper_az) < np.abs(lower_az[slot] - upper_az), slot - 1, slot)
            if mid - lo > 1
            else slot
        )
        close = np.abs(lower_az[nearest] - upper_az) <= gap
        ring_below[mid:hi] = np.where(close, lo + nearest, -1)
    along, along_partner = _edge_jumps(ranges, prev_in_ring, next_in_ring, config)
    across, across_partner = _edge_jumps(ranges, ring_below, ring_above, config)
    across = across * config.across_ring_weight**2
    use_across = across > along
    jump = np.where(use_across, across, along)
    partner = np.where(use_across, across_partner, along_partner)
    edge = np.flatnonzero(jump > 0)
    # The true edge lies somewhere between the near return and its far neighbour's ray: put it
    # halfway (at the near range), which removes the bias of half a ring spacing (~0.7 degrees
    # on a 32-beam lidar) that the near return alone has across rings.
    near_dir = xyz[edge] / ranges[edge, None]
    far_dir = xyz[partner[edge]] / ranges[partner[edge], None]
    middle = near_dir + far_dir
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    return middle * ranges[edge, None], jump[edge], firing_s[edge]


def edge_map(image: np.ndarray, config: CalibrationCheckConfig) -> np.ndarray | None:
    """`(H, W)` float32 image edges (1 where the largest grey difference to the 8 neighbours is at
    least `edge_contrast` and `edge_noise_factor` times its median over the image, else 0),
    spread by Levinson and Thrun's inverse distance transform; None for a blank image."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if float(grey.std()) < config.min_image_contrast:
        return None
    kernel = np.ones((3, 3), np.uint8)
    gradient = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, kernel).astype(np.float32) / 255.0
    # The image's typical difference (its noise and fine texture, on most pixels) raises the bar.
    threshold = max(config.edge_contrast, config.edge_noise_factor * float(np.median(gradient)))
    edges = (gradient >= threshold).astype(np.float32)
    scale = image.shape[1] / 1600.0
    steps = max(1, round(config.edge_spread_px * scale))
    decay = np.float32(config.edge_decay ** (1.0 / scale))
    spread = edges
    for _ in range(steps):
        spread = np.maximum(edges, decay * cv2.dilate(spread, kernel))
    return (config.edge_alpha * edges + (1.0 - config.edge_alpha) * spread).astype(np.float32)


def alignment_scores(
    points_cam: np.ndarray, weights: np.ndarray, edges: np.ndarray, intrinsics: CameraIntrinsics, rotations: np.ndarray
) -> np.ndarray:
    """`(G,)` agreement of edge points `(K, 3)` (camera frame) rotated by each of `rotations`
    `(G, 3, 3)` with the spread edge map: sum of weight x edge value at the projection (bilinear;
    0 outside the image or behind the camera)."""
    g, k = rotations.shape[0], points_cam.shape[0]
    rotated = np.matmul(rotations, points_cam.T).transpose(0, 2, 1).reshape(-1, 3)  # (G * K, 3)
    projection = intrinsics.project(rotated)
    # cv2.remap samples maps of fewer than 32767 columns: lay the points out in rows of 4096.
    total = g * k
    padded = np.full((-(-total // _REMAP_COLUMNS) * _REMAP_COLUMNS, 2), -10.0, dtype=np.float32)
    padded[:total] = np.where(projection.in_image[:, None], projection.uv, -10.0)
    grid = padded.reshape(-1, _REMAP_COLUMNS, 2)
    sampled = cv2.remap(
        edges, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0,)
    )
    return (sampled.reshape(-1)[:total].reshape(g, k) * weights[None, :]).sum(axis=1)


_REMAP_COLUMNS = 4096


def _rotations(rotvecs_deg: np.ndarray) -> np.ndarray:
    return Rotation.from_rotvec(np.deg2rad(rotvecs_deg)).as_matrix()


def _peak(values: np.ndarray, grid: np.ndarray) -> float:
    """Grid position of the maximum of a 1-D profile, refined by a parabola through its neighbours."""
    i = int(np.argmax(values))
    if 0 < i < len(values) - 1:
        left, centre, right = values[i - 1], values[i], values[i + 1]
        curvature = left - 2 * centre + right
        if curvature < 0:
            return float(grid[i] + 0.5 * (left - right) / curvature * (grid[1] - grid[0]))
    return float(grid[i])


@dataclass(slots=True)
class CameraCalibrationState:
    """One camera's running sum over a scene of the agreement on the rotation grid, `(n, n, n)`
    indexed (pitch, yaw, roll), and the frames summed."""

    scores: np.ndarray
    frames: int = 0


@dataclass(frozen=True, slots=True)
class CameraCalibrationVerdict:
    """One camera on one frame: status, the running estimate of its extrinsic's error (rotation
    vector in the camera frame: pitch about x, yaw about y, roll about z, degrees), and the frames
    summed so far."""

    status: str
    offset_deg: tuple[float, float, float]
    frames: int
    gain: float

    @property
    def offset_norm_deg(self) -> float:
        return float(np.linalg.norm(self.offset_deg))

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "offset_deg": [round(v, 3) for v in self.offset_deg],
            "offset_norm_deg": round(self.offset_norm_deg, 3),
            "frames": self.frames,
            "gain": round(self.gain, 4),
        }


class CalibrationCheck:
    """Levinson-Thrun calibration check of every camera against the lidar over one scene."""

    def __init__(self, config: CalibrationCheckConfig = CalibrationCheckConfig()) -> None:
        self.config = config
        self.grid = config.grid_deg
        n = self.grid.size
        self._centre = n // 2
        axes = np.meshgrid(self.grid, self.grid, self.grid, indexing="ij")
        self._rotations = _rotations(np.stack([a.ravel() for a in axes], axis=1))  # (n^3, 3, 3)
        self._states: dict[str, CameraCalibrationState] = {}

    def reset(self) -> None:
        self._states.clear()

    def check_camera(
        self,
        camera: CameraFrame,
        points_lidar: np.ndarray,
        jumps_m: np.ndarray,
        camera_from_lidar: SE3,
        firing_offset_s: np.ndarray | None = None,
    ) -> CameraCalibrationVerdict:
        """Add one frame of one camera to its sums and judge it (see the module docstring).
        `points_lidar`, `jumps_m`: the lidar edges and their depth jumps (`lidar_edges`).
        `firing_offset_s`: each edge's firing time minus the camera's exposure (None: all in time)."""
        weights = jumps_m
        if firing_offset_s is not None:
            in_time = np.abs(firing_offset_s) <= self.config.max_time_offset_s
            points_lidar, weights = points_lidar[in_time], weights[in_time]
        n = self.grid.size
        state = self._states.get(camera.name)
        if state is None:
            state = self._states[camera.name] = CameraCalibrationState(np.zeros((n, n, n)))
        edges = edge_map(camera.image, self.config)
        points_cam = camera_from_lidar.apply(points_lidar) if len(points_lidar) else np.zeros((0, 3))
        visible = camera.intrinsics.project(points_cam).in_image if len(points_cam) else np.zeros(0, bool)
        if edges is None or np.count_nonzero(visible) < self.config.min_edge_points:
            return self._verdict(state, STATUS_UNDETERMINED)
        # Points just outside the view can rotate into it: keep those within the grid's reach.
        uv = camera.intrinsics.project(points_cam).uv
        margin = camera.intrinsics.fx * np.tan(np.deg2rad(self.config.grid_half_width_deg * 1.5))
        with np.errstate(invalid="ignore"):
            near_view = (
                (points_cam[:, 2] > 1.0)
                & (uv[:, 0] > -margin)
                & (uv[:, 0] < camera.intrinsics.width + margin)
                & (uv[:, 1] > -margin)
                & (uv[:, 1] < camera.intrinsics.height + margin)
            )
        points_cam, weights = points_cam[near_view], weights[near_view]
        if len(weights) > self.config.max_edge_points:
            strongest = np.sort(np.argsort(-weights, kind="stable")[: self.config.max_edge_points])
            points_cam, weights = points_cam[strongest], weights[strongest]
        weights = weights**self.config.jump_power
        state.scores += alignment_scores(points_cam, weights, edges, camera.intrinsics, self._rotations).reshape(
            n, n, n
        )
        state.frames += 1
        return self._verdict(state, None)

    def _estimate(self, state: CameraCalibrationState) -> np.ndarray:
        """The maximum of the summed scores: the best grid node, each axis refined by a parabola
        through its neighbours along that axis. (A full quadratic with cross terms fitted to the
        3 x 3 x 3 block around the node was less accurate on the seed-2000 log: its peaks are
        not quadratic over a whole grid step.)"""
        i, j, k = np.unravel_index(int(np.argmax(state.scores)), state.scores.shape)
        return np.array(
            [
                _peak(state.scores[:, j, k], self.grid),
                _peak(state.scores[i, :, k], self.grid),
                _peak(state.scores[i, j, :], self.grid),
            ]
        )

    def _verdict(self, state: CameraCalibrationState, status: str | None) -> CameraCalibrationVerdict:
        best = float(state.scores.max())
        c = self._centre
        gain = (best - float(state.scores[c, c, c])) / best if best > 0 else 0.0
        estimate = self._estimate(state) if state.frames else np.zeros(3)
        if status is None:
            far = float(np.linalg.norm(estimate)) >= self.config.suspect_offset_deg
            enough = state.frames >= self.config.min_frames
            status = STATUS_SUSPECT if far and enough and gain >= self.config.min_gain else STATUS_OK
        offset = tuple(float(v) for v in estimate)
        return CameraCalibrationVerdict(status, offset, state.frames, gain)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# All checks on one frame


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What the checks found on one frame and the frame as the detector should see it.

    Attributes:
        frame: frozen cameras and suspect cameras removed (listed in `missing`), a frozen lidar
            replaced by the newest fresh cloud.
        frozen: sensor -> reason, for each frozen sensor.
        calibration: camera -> verdict, for each camera checked.
        elapsed_ms: time the checks took.
    """

    frame: SyncedFrame
    frozen: dict[str, str]
    calibration: dict[str, CameraCalibrationVerdict]
    elapsed_ms: float

    @property
    def calibration_suspect(self) -> list[str]:
        return [name for name, verdict in self.calibration.items() if verdict.status == STATUS_SUSPECT]

    def health(self) -> dict[str, object]:
        """The health-record fields: `frozen`, `calibration_suspect`, `calibration` per camera
        (the same for the same frames: timings are left out)."""
        return {
            "frozen": dict(self.frozen),
            "calibration_suspect": self.calibration_suspect,
            "calibration": {name: verdict.as_json() for name, verdict in self.calibration.items()},
        }


class SensorChecks:
    """The frozen-sensor and calibration checks over the keyframes of one scene at a time."""

    def __init__(
        self, calibration: CalibrationCheckConfig | None = CalibrationCheckConfig(), history: int = FROZEN_HISTORY
    ) -> None:
        self._history = history
        self.calibration = CalibrationCheck(calibration) if calibration is not None else None
        self._scene: str | None = None
        self._frozen = FrozenSensorCheck(history)
        self._fresh_lidar: LidarSweep | None = None

    def check(self, frame: SyncedFrame) -> CheckResult:
        """Check one keyframe (the scene's keyframes must come in time order)."""
        start = time.perf_counter()
        scene = frame.scene_token or frame.scene_name
        if scene != self._scene:
            self._scene = scene
            self._frozen = FrozenSensorCheck(self._history)
            self._fresh_lidar = None
            if self.calibration is not None:
                self.calibration.reset()
        frozen: dict[str, str] = {}
        lidar = frame.lidar
        if lidar is not None:
            reason = self._frozen.observe(LIDAR_NAME, content_digest(keyframe_points(lidar)), lidar.timestamp_us)
            if reason is None:
                self._fresh_lidar = lidar
            else:
                frozen[LIDAR_NAME] = reason
                lidar = advance_cloud(self._fresh_lidar, lidar) if self._fresh_lidar is not None else None
        cameras = dict(frame.cameras)
        missing = dict(frame.missing)
        for name, camera in frame.cameras.items():
            reason = self._frozen.observe(name, content_digest(camera.image), camera.timestamp_us)
            if reason is not None:
                frozen[name] = reason
                missing[name] = reason
                del cameras[name]
        if LIDAR_NAME in frozen and lidar is None:
            missing[LIDAR_NAME] = frozen[LIDAR_NAME] + " (no fresh cloud before it in this scene)"

        verdicts: dict[str, CameraCalibrationVerdict] = {}
        if self.calibration is not None and lidar is not None and LIDAR_NAME not in frozen:
            points, jumps_m, firing_s = lidar_edges(lidar, self.calibration.config)
            for name in list(cameras):
                camera_from_lidar = frame.ego_from_camera_at_lidar_time(name).inverse() @ lidar.ego_from_lidar
                exposure_s = (cameras[name].timestamp_us - lidar.timestamp_us) * 1e-6
                verdict = self.calibration.check_camera(
                    cameras[name], points, jumps_m, camera_from_lidar, firing_s - exposure_s
                )
                verdicts[name] = verdict
                if verdict.status == STATUS_SUSPECT:
                    missing[name] = f"calibration suspect: extrinsic off by about {verdict.offset_norm_deg:.1f} deg"
                    del cameras[name]
        handled = dataclasses.replace(frame, lidar=lidar, cameras=cameras, missing=missing)
        return CheckResult(handled, frozen, verdicts, (time.perf_counter() - start) * 1e3)
