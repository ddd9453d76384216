"""Summaries of a log and of one frame, for `avfusion dataset info` / `dataset frame`."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from avfusion.datasets.index import CHANNELS
from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.labels import DETECTION_CLASSES
from avfusion.sensors.gnss import gnss_path
from avfusion.sensors.sync import SyncConfig
from avfusion.sensors.types import CAMERA_NAMES, LIDAR_NAME, SyncedFrame


@dataclass(frozen=True, slots=True)
class CameraSyncStats:
    """Keyframe image timing against the lidar keyframe, over the chosen scenes."""

    camera: str
    keyframes: int
    without_keyframe_image: int
    median_abs_skew_ms: float
    max_abs_skew_ms: float
    over_tolerance: int


@dataclass(frozen=True, slots=True)
class LogSummary:
    dataroot: str
    version: str
    scenes: int
    samples: int
    annotations: int
    locations: tuple[str, ...]
    sample_data_per_channel: dict[str, int]
    first_timestamp_us: int
    last_timestamp_us: int
    total_scene_duration_s: float
    scenes_with_gnss: int
    camera_sync: tuple[CameraSyncStats, ...]
    camera_tolerance_ms: float
    from_cache: bool

    def to_json(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"dataroot   {self.dataroot}",
            f"version    {self.version}   (index {'from cache' if self.from_cache else 'built'})",
            f"scenes     {self.scenes}   samples {self.samples}   annotations {self.annotations}",
            f"locations  {', '.join(self.locations)}",
            f"time       {self.first_timestamp_us} .. {self.last_timestamp_us} us, "
            f"{self.total_scene_duration_s:.1f} s of scenes",
            f"GNSS files {self.scenes_with_gnss} of {self.scenes} scenes",
            "sensors    " + ", ".join(f"{k} {v}" for k, v in self.sample_data_per_channel.items()),
            f"camera sync against {LIDAR_NAME} keyframes (tolerance {self.camera_tolerance_ms:.0f} ms):",
            f"  {'camera':<16}{'keyframes':>10}{'no image':>10}{'median|ms|':>12}{'max|ms|':>10}{'over tol':>10}",
        ]
        for stats in self.camera_sync:
            lines.append(
                f"  {stats.camera:<16}{stats.keyframes:>10}{stats.without_keyframe_image:>10}"
                f"{stats.median_abs_skew_ms:>12.1f}{stats.max_abs_skew_ms:>10.1f}{stats.over_tolerance:>10}"
            )
        return "\n".join(lines)


def summarize_log(log: NuScenesLog, sync: SyncConfig | None = None) -> LogSummary:
    """Counts, time span and keyframe camera timing of the chosen scenes, from the index alone.

    `sync` sets the camera tolerance reported; None means the default `SyncConfig()`.
    """
    sync = SyncConfig() if sync is None else sync
    index = log.index
    scenes = [i for i, name in enumerate(index.scene_name) if str(name) in set(log.scene_names)]
    samples = (
        np.concatenate(
            [
                np.arange(index.scene_sample_start[i], index.scene_sample_start[i] + index.scene_sample_count[i])
                for i in scenes
            ]
        )
        if scenes
        else np.zeros(0, np.int64)
    )
    in_scenes = np.isin(index.sd_scene, scenes)
    channel_counts = Counter(int(c) for c in index.sd_channel[in_scenes])
    durations = [
        (
            index.sample_timestamp_us[index.scene_sample_start[i] + index.scene_sample_count[i] - 1]
            - index.sample_timestamp_us[index.scene_sample_start[i]]
        )
        * 1e-6
        for i in scenes
        if index.scene_sample_count[i] > 0
    ]
    lidar_sd = index.sample_keyframe[samples, CHANNELS.index(LIDAR_NAME)]
    camera_stats = []
    for name in CAMERA_NAMES:
        camera_sd = index.sample_keyframe[samples, CHANNELS.index(name)]
        both = (camera_sd >= 0) & (lidar_sd >= 0)
        skew_ms = np.abs(index.sd_timestamp_us[camera_sd[both]] - index.sd_timestamp_us[lidar_sd[both]]) / 1000.0
        camera_stats.append(
            CameraSyncStats(
                camera=name,
                keyframes=int(both.sum()),
                without_keyframe_image=int((camera_sd < 0).sum()),
                median_abs_skew_ms=float(np.median(skew_ms)) if skew_ms.size else float("nan"),
                max_abs_skew_ms=float(skew_ms.max()) if skew_ms.size else float("nan"),
                over_tolerance=int((skew_ms * 1000.0 > sync.camera_tolerance_us).sum()),
            )
        )
    stamps = index.sample_timestamp_us[samples]
    annotations = int(index.sample_ann_count[samples].sum()) if samples.size else 0
    return LogSummary(
        dataroot=str(log.dataroot),
        version=log.version,
        scenes=len(scenes),
        samples=int(samples.size),
        annotations=annotations,
        locations=tuple(sorted({str(index.scene_location[i]) for i in scenes})),
        sample_data_per_channel={CHANNELS[c]: channel_counts.get(c, 0) for c in range(len(CHANNELS))},
        first_timestamp_us=int(stamps.min()) if stamps.size else 0,
        last_timestamp_us=int(stamps.max()) if stamps.size else 0,
        total_scene_duration_s=float(sum(durations)),
        scenes_with_gnss=sum(gnss_path(log.dataroot, str(index.scene_name[i])).is_file() for i in scenes),
        camera_sync=tuple(camera_stats),
        camera_tolerance_ms=sync.camera_tolerance_us / 1000.0,
        from_cache=log.from_cache,
    )


def describe_frame(frame: SyncedFrame) -> str:
    """A human-readable summary of a synchronized frame."""
    t = frame.global_from_ego.translation
    lines = [
        f"sample     {frame.sample_token}   scene {frame.scene_name} ({frame.location})",
        f"time       {frame.timestamp_us} us   ego at ({t[0]:.2f}, {t[1]:.2f}, {t[2]:.2f}) m, "
        f"yaw {np.degrees(frame.global_from_ego.yaw_rad):.1f} deg",
    ]
    if frame.lidar is not None:
        lag = frame.lidar.points[:, 4]
        lines.append(
            f"{LIDAR_NAME:<16}{len(frame.lidar)} points from {frame.lidar.num_sweeps} sweep(s), "
            f"time lag {lag.min() if lag.size else 0:.3f}..{lag.max() if lag.size else 0:.3f} s"
        )
    for name, camera in frame.cameras.items():
        lines.append(
            f"{name:<16}{camera.image.shape[1]}x{camera.image.shape[0]}  skew {frame.skew_us[name] / 1000:+.1f} ms  "
            f"fx {camera.intrinsics.fx:.1f}"
        )
    if frame.gnss is not None:
        g = frame.gnss
        lines.append(
            f"{'GNSS':<16}{g.latitude_deg:.7f}, {g.longitude_deg:.7f}, {g.altitude_m:.1f} m  heading {g.heading_deg:.1f} deg  "
            f"{g.speed_m_s:.1f} m/s  skew {frame.skew_us['GNSS'] / 1000:+.1f} ms"
        )
    if frame.map is not None:
        lines.append(
            f"{'MAP':<16}{frame.map.drivable.shape[1]}x{frame.map.drivable.shape[0]} px at {frame.map.resolution_m} m"
        )
    for name, reason in frame.missing.items():
        lines.append(f"{name:<16}MISSING: {reason}")
    if frame.gt_boxes is not None:
        counts = Counter(DETECTION_CLASSES[i] for i in frame.gt_boxes.label)
        lines.append(
            f"{'GT boxes':<16}{len(frame.gt_boxes)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
    return "\n".join(lines)
