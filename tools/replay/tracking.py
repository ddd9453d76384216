"""Tracking in a replay: the finished frames' detections, scene by scene, through
`fusion.tracking.track_scene`, back into detection records and a nuScenes tracking submission.

It runs in `finish_run`, on the records of `progress.jsonl` in plan order, so a resumed or a Ray
run tracks exactly the same detections and writes the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import yaw_from_quaternion
from avfusion.eval.submission import MAX_BOXES_PER_SAMPLE, detection_records
from avfusion.eval.tracking import tracking_records
from avfusion.fusion.tracking import FrameDetections, TrackCut, TrackerConfig, track_scene
from avfusion.labels import ATTRIBUTE_INDEX, CLASS_INDEX
from avfusion.tools.replay.types import FrameResult

TRACK_CHOICES: tuple[str, ...] = ("off", "online", "offline")


@dataclass(frozen=True, slots=True)
class TrackedRun:
    """Tracking of a whole replay: per frame (plan order) the detection and tracking records, where
    tracks were cut, the number of tracks and the tracker's milliseconds (all frames together)."""

    detection_records: tuple[list[dict[str, Any]], ...]
    tracking_records: tuple[list[dict[str, Any]], ...]
    cuts: tuple[TrackCut, ...]
    num_tracks: int
    tracker_ms: float


def frame_detections(sample_token: str, timestamp_us: int, records: Sequence[dict[str, Any]]) -> FrameDetections:
    """A frame's detection submission records (global frame) as `FrameDetections`."""
    n = len(records)
    rotation = np.array([r["rotation"] for r in records], np.float64).reshape(n, 4)
    return FrameDetections(
        sample_token=sample_token,
        timestamp_us=timestamp_us,
        center=np.array([r["translation"] for r in records], np.float64).reshape(n, 3),
        size_wlh=np.array([r["size"] for r in records], np.float64).reshape(n, 3),
        yaw_rad=np.asarray(yaw_from_quaternion(rotation), np.float64).reshape(n),
        velocity_xy=np.array([r["velocity"] for r in records], np.float64).reshape(n, 2),
        score=np.array([r["detection_score"] for r in records], np.float64),
        label=np.array([CLASS_INDEX[r["detection_name"]] for r in records], np.int64),
        attribute=np.array([ATTRIBUTE_INDEX.get(r["attribute_name"], -1) for r in records], np.int64),
    )


def boxes_of(frame: FrameDetections) -> Boxes3D:
    """The tracked frame's boxes as `Boxes3D` (global frame)."""
    return Boxes3D(
        center=frame.center,
        size_wlh=frame.size_wlh,
        yaw_rad=frame.yaw_rad,
        velocity_xy=frame.velocity_xy,
        label=frame.label,
        score=frame.score,
        attribute=frame.attribute,
    )


def _most_confident(frame: FrameDetections, limit: int) -> FrameDetections:
    """The frame with at most `limit` boxes: bridging boxes may push a full frame over the
    submission's limit, and then the least confident go (ties: the later box)."""
    if len(frame) <= limit:
        return frame
    keep = np.sort(np.argsort(-frame.score, kind="stable")[:limit])
    # FrameDetections.__post_init__ fills both (all -1 / all False when not given).
    assert frame.track_id is not None and frame.interpolated is not None
    return FrameDetections(
        sample_token=frame.sample_token,
        timestamp_us=frame.timestamp_us,
        center=frame.center[keep],
        size_wlh=frame.size_wlh[keep],
        yaw_rad=frame.yaw_rad[keep],
        velocity_xy=frame.velocity_xy[keep],
        score=frame.score[keep],
        label=frame.label[keep],
        attribute=frame.attribute[keep],
        track_id=frame.track_id[keep],
        interpolated=frame.interpolated[keep],
    )


def track_results(
    results: Sequence[FrameResult],
    timestamps_us: Sequence[int],
    mode: str,
    config: TrackerConfig | None = None,
) -> TrackedRun:
    """Track the replayed frames (`results` in plan order, `timestamps_us` their keyframe times),
    scene by scene in that order; `mode` "online" or "offline"; `config` None: `TrackerConfig()`."""
    config = TrackerConfig() if config is None else config
    detections: list[list[dict[str, Any]]] = []
    tracks: list[list[dict[str, Any]]] = []
    cuts: list[TrackCut] = []
    num_tracks = 0
    tracker_s = 0.0
    start = 0
    while start < len(results):
        end = start
        while end < len(results) and results[end].scene_name == results[start].scene_name:
            end += 1
        frames = [
            frame_detections(r.sample_token, t, r.records)
            for r, t in zip(results[start:end], timestamps_us[start:end], strict=False)
        ]
        began = time.perf_counter()
        scene = track_scene(frames, mode=mode, config=config)  # type: ignore[arg-type]
        tracker_s += time.perf_counter() - began
        scene_name = results[start].scene_name
        for full_frame in scene.frames:
            frame = _most_confident(full_frame, MAX_BOXES_PER_SAMPLE)  # boxes and their track ids alike
            boxes = boxes_of(frame)
            detections.append(detection_records(frame.sample_token, boxes))
            assert frame.track_id is not None  # FrameDetections.__post_init__ fills it
            tracked = frame.track_id >= 0
            tracks.append(
                tracking_records(
                    frame.sample_token,
                    boxes[tracked],
                    [f"{scene_name}-{i}" for i in frame.track_id[tracked].tolist()],
                )
            )
        cuts += scene.cuts
        num_tracks += scene.num_tracks
        start = end
    return TrackedRun(tuple(detections), tuple(tracks), tuple(cuts), num_tracks, tracker_s * 1e3)
