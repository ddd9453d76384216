"""`avfusion bench checks`: how well the online sensor checks find what they look for, and their cost.

On every keyframe of the chosen scenes (in order, one `SensorChecks` state per stream) it runs:

    clean        the frames as read: every camera judged suspect here is a false alarm, every
                 frozen sensor too
    miscalibrated  each camera's stored extrinsic rotated by `--error-deg` about an axis drawn at
                 random per scene and camera (seeded): after a scene's first `--warmup` keyframes a
                 camera not judged suspect is a miss; the estimated offset is compared with the
                 applied rotation (rotation vector, degrees)
    stale        `temporal_misalignment:3` applied frame by frame (`sensors.corruptions`): a sensor
                 that delivers what it delivered at one of its last `FROZEN_HISTORY` keyframes is a
                 repeat, and must be found frozen; nothing else may be

and prints / writes (`--json`) the rates, offset errors and the checks' milliseconds per frame
(wall clock and this process's CPU time, beside the load averages: on a shared machine the wall
time says more about the neighbours than about the checks).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from scipy.spatial.transform import Rotation

from avfusion.calibration.se3 import SE3
from avfusion.datasets.frames import open_frames
from avfusion.datasets.nuscenes_log import FrameOptions
from avfusion.datasets.splits import resolve_split
from avfusion.errors import InputError
from avfusion.sensors.checks import (
    FROZEN_HISTORY,
    STATUS_SUSPECT,
    SensorChecks,
    content_digest,
    keyframe_points,
)
from avfusion.sensors.corruptions import Corruption, corrupt_frame, sensor_rng
from avfusion.sensors.types import LIDAR_NAME, SyncedFrame
from avfusion.tools.bench.common import (
    BenchReport,
    HostCpuTimes,
    Timing,
    host_state_facts,
)


def miscalibrated(frame: SyncedFrame, errors_deg: dict[str, np.ndarray]) -> SyncedFrame:
    """`frame` with each camera's stored extrinsic rotated by its error (rotation vector, camera
    frame, degrees): `ego_from_camera_stored = ego_from_camera @ R(error)`."""
    cameras = {
        name: dataclasses.replace(
            camera,
            ego_from_camera=camera.ego_from_camera
            @ SE3(Rotation.from_rotvec(np.deg2rad(errors_deg[name])).as_matrix(), np.zeros(3)),
        )
        for name, camera in frame.cameras.items()
    }
    return dataclasses.replace(frame, cameras=cameras)


def _digests(frame: SyncedFrame) -> dict[str, bytes]:
    out = {name: content_digest(camera.image) for name, camera in frame.cameras.items()}
    if frame.lidar is not None:
        out[LIDAR_NAME] = content_digest(keyframe_points(frame.lidar))
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.warmup < 0:
        raise InputError(f"--warmup must be >= 0, got {args.warmup}")
    split = resolve_split(args.dataroot, args.version, args.split).name if args.split else None
    options = FrameOptions(num_sweeps=args.num_sweeps, image_scale=args.image_scale, load_boxes=False)
    frames = open_frames(args.dataroot, args.version, split, args.scenes or None, options)
    stale_corruption = Corruption("temporal_misalignment", 3)

    streams = {"clean": SensorChecks(), "miscalibrated": SensorChecks(), "stale": SensorChecks(calibration=None)}
    counts = {
        "clean_camera_frames": 0,
        "clean_suspect": 0,
        "clean_frozen": 0,
        "miscalibrated_camera_frames": 0,
        "miscalibrated_suspect": 0,
        "repeats": 0,
        "repeats_found": 0,
        "stale_sensor_frames": 0,
        "stale_false_frozen": 0,
    }
    offset_errors: list[float] = []
    wall_ms: list[float] = []
    cpu_ms: list[float] = []
    host_before = HostCpuTimes.read()
    errors: dict[str, np.ndarray] = {}  # camera name -> its calibration error (deg, rotation vector)
    recent: list[dict[str, bytes]] = []  # the last frames' sensor digests
    scene, index, previous = None, 0, None
    for position in tqdm(range(len(frames)), desc="checks", unit="frame"):
        frame = frames[position]
        if frame.scene_name != scene:
            scene, index, previous, recent = frame.scene_name, 0, None, []
            errors = {}
            for name in frame.cameras:
                axis = sensor_rng(args.seed, "calibration_error", scene, name).normal(size=3)
                errors[name] = args.error_deg * axis / np.linalg.norm(axis)
        wall, cpu = time.perf_counter(), time.process_time()
        clean = streams["clean"].check(frame)
        wall_ms.append((time.perf_counter() - wall) * 1e3)
        cpu_ms.append((time.process_time() - cpu) * 1e3)
        counts["clean_frozen"] += len(clean.frozen)
        bad = streams["miscalibrated"].check(miscalibrated(frame, errors))
        if index >= args.warmup:
            for verdict in clean.calibration.values():
                counts["clean_camera_frames"] += 1
                counts["clean_suspect"] += verdict.status == STATUS_SUSPECT
            for name, verdict in bad.calibration.items():
                counts["miscalibrated_camera_frames"] += 1
                counts["miscalibrated_suspect"] += verdict.status == STATUS_SUSPECT
                offset_errors.append(float(np.linalg.norm(np.array(verdict.offset_deg) - errors[name])))
        delivered = corrupt_frame(frame, stale_corruption, args.seed, previous)
        digests = _digests(delivered)
        found = streams["stale"].check(delivered).frozen
        for sensor, digest in digests.items():
            repeat = any(digest == old.get(sensor) for old in recent)
            counts["stale_sensor_frames"] += 1
            counts["repeats"] += repeat
            counts["repeats_found"] += repeat and sensor in found
            counts["stale_false_frozen"] += (not repeat) and sensor in found
        recent = [*recent, digests][-FROZEN_HISTORY:]
        previous, index = frame, index + 1
    host = host_state_facts(host_before)

    def share(numerator: str, denominator: str) -> float | None:
        return counts[numerator] / counts[denominator] if counts[denominator] else None

    errors_array = np.array(offset_errors)
    results = {
        "miscalibrated_flagged_share": share("miscalibrated_suspect", "miscalibrated_camera_frames"),
        "clean_flagged_share": share("clean_suspect", "clean_camera_frames"),
        "offset_error_deg_median": float(np.median(errors_array)) if errors_array.size else None,
        "offset_error_deg_p90": float(np.percentile(errors_array, 90)) if errors_array.size else None,
        "offset_within_0_5_deg_share": float(np.mean(errors_array <= 0.5)) if errors_array.size else None,
        "repeats_found_share": share("repeats_found", "repeats"),
        "frozen_on_clean_frames": counts["clean_frozen"],
        "frozen_false_alarms_on_fresh_data": counts["stale_false_frozen"],
        "counts": counts,
        "error_deg": args.error_deg,
        "warmup_keyframes": args.warmup,
    }
    report = BenchReport(f"bench checks: {len(frames)} keyframes of {args.dataroot}, {args.error_deg} deg errors")
    report.ours.append(Timing("checks_per_frame_wall", tuple(wall_ms)))
    report.ours.append(Timing("checks_per_frame_cpu", tuple(cpu_ms)))
    report.facts.update(results)
    report.facts.update(host)
    report.emit(args.json)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "checks", help="online sensor checks: miscalibration and frozen-sensor detection rates, ms"
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--split", default=None, help="split (default: every scene)")
    parser.add_argument("--scenes", nargs="+", default=None, metavar="NAME")
    parser.add_argument("--error-deg", type=float, default=2.0, help="extrinsic rotation error applied (degrees)")
    parser.add_argument("--warmup", type=int, default=5, help="keyframes of each scene not counted for calibration")
    parser.add_argument("--num-sweeps", type=int, default=5, help="lidar sweeps per frame (the default model's 5)")
    parser.add_argument("--image-scale", type=float, default=0.125, help="image decode scale (the default model's 1/8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.set_defaults(func=run)
