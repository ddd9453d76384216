"""Replay nuScenes logs through the whole pipeline: load -> sync -> fusion -> decode -> submission.

`run_replay(request)` streams every keyframe of the chosen scenes through `NuScenesLog.frame` and
`Detector.detect` and writes, under the run folder:

    replay.json          what was asked (dataroot, version, scenes, checkpoint, drop): --resume checks it
    progress.jsonl       one line per finished frame (its submission records, stage timings and
                         sensor health): the per-frame checkpoint an interrupted run resumes from
    submission.json      the nuScenes detection submission, every planned sample in plan order
    latency.csv          per-frame milliseconds by stage, file reading and voxelization included
    sensor_health.jsonl  per frame: missing sensors (and why), time skews, lidar points, cameras
    summary.json         frames, frames/s, stage statistics, sensor-health counts, metrics
    metrics_summary.json avfusion's nuScenes detection metrics, when the split has annotations
    bev/<token>.npz      with `save_bev`: the fused BEV heatmap (max over classes) for the viewer

The submission, latency table and health log are built from `progress.jsonl` in plan order, never
in completion order, so a resumed run and a Ray run give byte-identical submissions to a plain one.
This module sits in `tools` because it joins datasets, fusion and eval, which may not import each
other.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.calibration.errors import FileFormatError, InputError
from avfusion.calibration.fileio import atomic_open, write_bytes_atomic, write_json_atomic
from avfusion.sensors.types import CAMERA_NAMES

PROGRESS_NAME = "progress.jsonl"
REQUEST_NAME = "replay.json"
SUBMISSION_NAME = "submission.json"
LATENCY_NAME = "latency.csv"
HEALTH_NAME = "sensor_health.jsonl"
SUMMARY_NAME = "summary.json"
METRICS_NAME = "metrics_summary.json"
BEV_DIR_NAME = "bev"

# Stages of one frame, in order; together (plus bookkeeping) they make up `total`.
STAGES: tuple[str, ...] = ("read", "voxelize", "collate", "network", "decode", "write")


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay and where the run goes.

    Attributes:
        dataroot, version: the nuScenes-format log.
        split: a split name (its scenes, and evaluation), or None.
        scenes: scene names (with `split`: the intersection), or () for all of split / log.
        out_dir: the run folder.
        checkpoint: fusion weights, or None for the shipped default.
        drop: sensors to treat as missing ("lidar", "camera", a camera name, "map", "gnss").
        device: torch device for the network.
        resume: continue the run in `out_dir` instead of refusing to touch it.
        save_bev: keep each frame's BEV heatmap for the viewer.
        evaluate: score the run when the split has annotations.
        ray_address: None = in this process; "local" = a local Ray cluster; else a cluster address.
        ray_workers: workers for Ray (None = one per CPU of the cluster).
        torch_threads: CPU threads of every network pass (None = torch's default here). Float
            reductions in the network depend on it, so a run fixes it when it starts and a resumed
            run or a Ray worker uses the same: that is what makes their submissions byte-identical.
    """

    dataroot: Path
    version: str
    out_dir: Path
    split: str | None = None
    scenes: tuple[str, ...] = ()
    checkpoint: Path | None = None
    drop: frozenset[str] = frozenset()
    device: str = "cpu"
    resume: bool = False
    save_bev: bool = False
    evaluate: bool = True
    ray_address: str | None = None
    ray_workers: int | None = None
    torch_threads: int | None = None

    def identity(self) -> dict[str, Any]:
        """The fields that decide the output; a resumed run must match them."""
        return {
            "dataroot": str(Path(self.dataroot).resolve()),
            "version": self.version,
            "split": self.split,
            "scenes": list(self.scenes),
            "checkpoint": str(Path(self.checkpoint).resolve()) if self.checkpoint is not None else None,
            "drop": sorted(self.drop),
        }


@dataclass(frozen=True, slots=True)
class PlannedFrame:
    """One keyframe to replay: its position in the plan, scene and sample token."""

    position: int
    scene_name: str
    sample_token: str


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """Every keyframe of the chosen scenes, scenes in log order, keyframes in time order."""

    scenes: tuple[str, ...]
    frames: tuple[PlannedFrame, ...]

    @property
    def sample_tokens(self) -> tuple[str, ...]:
        return tuple(frame.sample_token for frame in self.frames)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What replaying one keyframe gave: submission records (global frame), milliseconds by stage
    (`STAGES` and `total`), and the frame's sensor health."""

    position: int
    scene_name: str
    sample_token: str
    records: list[dict[str, Any]]
    timings_ms: dict[str, float]
    health: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> FrameResult:
        payload = json.loads(line)
        return FrameResult(**payload)


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What `run_replay` did and wrote."""

    out_dir: Path
    num_frames: int
    frames_replayed_now: int
    wall_s: float
    submission_path: Path
    latency_path: Path
    health_path: Path
    summary_path: Path
    metrics_path: Path | None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        return self.frames_replayed_now / self.wall_s if self.wall_s > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# Planning


def parse_drop(text: str | None) -> frozenset[str]:
    """`--drop` value ("camera", "lidar,map", "CAM_FRONT,CAM_BACK", ...) -> the set of sensor names."""
    from avfusion.fusion.batch import DROPPABLE

    if not text:
        return frozenset()
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - DROPPABLE)
    if unknown:
        raise InputError(f"--drop: unknown sensor(s) {unknown}; choose from {sorted(DROPPABLE)}")
    return names


def open_log(request: ReplayRequest):  # -> NuScenesLog
    """The log of `request`, with a message naming what is wrong when it is not a nuScenes dataroot."""
    from avfusion.datasets.nuscenes_log import NuScenesLog

    dataroot = Path(request.dataroot)
    if not dataroot.is_dir():
        raise InputError(f"--dataroot {dataroot}: no such directory")
    if not (dataroot / request.version).is_dir():
        versions = sorted(p.name for p in dataroot.iterdir() if p.is_dir() and (p / "sample.json").is_file())
        hint = f"it has {versions}" if versions else "it holds no <version>/sample.json: not a nuScenes-format dataroot"
        raise InputError(f"--version {request.version!r}: {dataroot / request.version} does not exist ({hint})")
    return NuScenesLog.open(dataroot, request.version, split=request.split, scenes=request.scenes or None)


def plan_replay(log: Any) -> ReplayPlan:
    """Every keyframe of the log's chosen scenes, in order."""
    frames = []
    for scene_name in log.scene_names:
        for token in log.sample_tokens(scene_name):
            frames.append(PlannedFrame(len(frames), scene_name, token))
    if not frames:
        raise InputError(f"{log.dataroot / log.version}: the chosen scenes have no keyframes")
    return ReplayPlan(tuple(log.scene_names), tuple(frames))


# ---------------------------------------------------------------------------------------------
# One frame


class FrameProcessor:
    """Loads frames and runs the detector on them; one per process (Ray workers each own one).

    Args:
        request: the replay (log, checkpoint, drop, device).
        bev_dir: where to keep BEV heatmaps (None = do not keep them).
    """

    def __init__(self, request: ReplayRequest, bev_dir: Path | None = None) -> None:
        import torch

        from avfusion.datasets.nuscenes_log import FrameOptions

        if request.torch_threads is not None:
            torch.set_num_threads(request.torch_threads)
        self.request = request
        self.log = open_log(request)
        self.detector = load_detector(request.checkpoint, request.device)
        config = self.detector.config
        dropped_cameras = CAMERA_NAMES if "camera" in request.drop else tuple(n for n in CAMERA_NAMES if n in request.drop)
        self.frame_options = FrameOptions(
            # The reader options the network was trained with travel in its config.
            num_sweeps=config.lidar.num_sweeps,
            image_scale=reader_image_scale(self.log, config.camera.decode_scale * NUSCENES_IMAGE_WIDTH_PX),
            # Sensors dropped on request are not read at all (the detector treats them as missing).
            cameras=tuple(n for n in CAMERA_NAMES if n not in dropped_cameras),
            load_lidar="lidar" not in request.drop,
            load_images=len(dropped_cameras) < len(CAMERA_NAMES),
            load_gnss="gnss" not in request.drop,
            load_map="map" not in request.drop,
        )
        self.bev_dir = bev_dir
        self._heatmaps: list[Any] = []
        if bev_dir is not None:
            self.detector.model.head.register_forward_hook(lambda _m, _i, outputs: self._heatmaps.append(outputs))

    def process(self, planned: PlannedFrame) -> FrameResult:
        """Replay one keyframe; a frame whose files cannot be read at all gives no boxes and says why."""
        from avfusion.eval.submission import detection_records

        start = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            frame = self.log.frame(planned.sample_token, self.frame_options)
        except InputError as error:
            timings["read"] = (time.perf_counter() - start) * 1e3
            health = {"error": str(error), "missing": {}, "skew_us": {}, "lidar_points": 0, "cameras": 0}
            return FrameResult(planned.position, planned.scene_name, planned.sample_token, [], _complete(timings, start), health)
        timings["read"] = (time.perf_counter() - start) * 1e3
        self._heatmaps.clear()
        detections = self.detector.detect(frame, drop=self.request.drop)
        stage = detections.timings_ms
        timings["voxelize"] = stage.get("voxelize", 0.0)
        timings["collate"] = stage.get("prepare", 0.0) - timings["voxelize"]
        timings["network"] = stage.get("network", 0.0)
        timings["decode"] = stage.get("decode", 0.0)
        write_start = time.perf_counter()
        records = detection_records(planned.sample_token, detections.boxes_global)
        if self.bev_dir is not None and self._heatmaps:
            save_bev_heatmap(self.bev_dir, planned.sample_token, self._heatmaps[-1], self.detector.config.grid)
        timings["write"] = (time.perf_counter() - write_start) * 1e3
        health = {
            "missing": dict(frame.missing),
            "skew_us": dict(frame.skew_us),
            "lidar_points": len(frame.lidar) if frame.lidar is not None else 0,
            "cameras": len(frame.cameras),
        }
        return FrameResult(planned.position, planned.scene_name, planned.sample_token, records, _complete(timings, start), health)


# `CameraConfig.decode_scale` is relative to nuScenes' 1600-pixel-wide images.
NUSCENES_IMAGE_WIDTH_PX = 1600


def reader_image_scale(log: Any, width_px: float) -> float:
    """The reader scale that reads the log's camera images about `width_px` wide (at most full
    size), whatever size the log stores them at (synthetic logs may be written below 1600 px)."""
    from avfusion.datasets.index import CHANNELS
    from avfusion.sensors.types import LIDAR_NAME

    index = log.index
    camera_widths = index.sd_width[index.sd_channel != CHANNELS.index(LIDAR_NAME)]
    widest = int(camera_widths.max()) if len(camera_widths) else NUSCENES_IMAGE_WIDTH_PX
    return min(1.0, width_px / max(widest, 1))


def _complete(timings: dict[str, float], start: float) -> dict[str, float]:
    full = {name: float(timings.get(name, 0.0)) for name in STAGES}
    full["total"] = (time.perf_counter() - start) * 1e3
    return full


def load_detector(checkpoint: Path | None, device: str):  # -> Detector
    """`Detector.load`, with weights that do not fit their config reported as a bad checkpoint."""
    from avfusion.fusion.inference import Detector

    try:
        return Detector.load(checkpoint, device=device)
    except RuntimeError as error:  # load_state_dict: missing / unexpected keys, shape mismatches
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileFormatError(
            checkpoint if checkpoint is not None else "default weights",
            f"its weights do not fit the network its config describes ({first_line})",
        ) from error


def heatmap_of(outputs: Any) -> np.ndarray:
    """The fused BEV heatmap of the first sample of `HeadOutputs`: sigmoid, max over classes,
    (H, W) float32 (row = ego y ascending, column = ego x ascending, as the network's grid)."""
    return outputs.heatmap_logits[0].detach().float().sigmoid().amax(dim=0).cpu().numpy()


def save_bev_heatmap(bev_dir: Path, sample_token: str, outputs: Any, grid: Any) -> None:
    """Keep the fused BEV heatmap of one frame: `<token>.npz` with `heatmap` (H, W) float16,
    `x_range_m`, `y_range_m` (read back by `eval.viewer.read_bev_heatmap`)."""
    heat = heatmap_of(outputs)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        heatmap=heat.astype(np.float16),
        x_range_m=np.asarray(grid.x_range_m, dtype=np.float64),
        y_range_m=np.asarray(grid.y_range_m, dtype=np.float64),
    )
    write_bytes_atomic(bev_dir / f"{sample_token}.npz", buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Progress (per-frame checkpoints)


class ProgressLog:
    """`progress.jsonl`: one `FrameResult` a line, appended and flushed to disk frame by frame.

    A line cut short by a crash is dropped when the file is read back (and cut off the file), so a
    resumed run redoes exactly the frames whose results were not completely written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, plan: ReplayPlan) -> dict[int, FrameResult]:
        """The finished frames by plan position; checks each against the plan."""
        if not self.path.is_file():
            return {}
        data = self.path.read_bytes()
        results: dict[int, FrameResult] = {}
        good_bytes = 0
        for raw in data.splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break  # the torn last line of an interrupted write
            try:
                result = FrameResult.from_json(raw.decode())
            except (ValueError, TypeError):
                break
            planned = plan.frames[result.position] if 0 <= result.position < len(plan.frames) else None
            if planned is None or planned.sample_token != result.sample_token:
                raise FileFormatError(
                    self.path, f"frame {result.sample_token} at position {result.position} is not in this replay's plan"
                )
            results[result.position] = result
            good_bytes += len(raw)
        if good_bytes < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good_bytes)
        return results

    def append(self, result: FrameResult) -> None:
        with open(self.path, "a") as handle:
            handle.write(result.to_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------
# The run


def run_replay(
    request: ReplayRequest,
    progress: bool = True,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> ReplayOutcome:
    """Replay `request` (see the module docstring). `on_frame` is called after each frame is saved."""
    out_dir = Path(request.out_dir)
    log = open_log(request)
    plan = plan_replay(log)
    progress_log, torch_threads = _prepare_run_dir(out_dir, request)
    request = replace(request, torch_threads=torch_threads)
    done = progress_log.read(plan)
    pending = [planned for planned in plan.frames if planned.position not in done]
    bev_dir = out_dir / BEV_DIR_NAME if request.save_bev else None

    bar = _progress_bar(len(plan.frames), len(done), progress)
    start = time.perf_counter()

    def record(result: FrameResult) -> None:
        progress_log.append(result)
        done[result.position] = result
        bar.update(1)
        if on_frame is not None:
            on_frame(result)

    try:
        if pending:
            if request.ray_address is None:
                processor = FrameProcessor(request, bev_dir)
                for planned in pending:
                    record(processor.process(planned))
            else:
                from avfusion.tools.replay_ray import replay_on_ray

                load_detector(request.checkpoint, request.device)  # a bad checkpoint fails here, not in a worker
                replay_on_ray(request, pending, bev_dir, record)
    finally:
        bar.close()
    wall_s = time.perf_counter() - start
    return finish_run(request, plan, done, len(pending), wall_s, log)


def _prepare_run_dir(out_dir: Path, request: ReplayRequest) -> tuple[ProgressLog, int]:
    """Create the run folder, or check that a resumed one belongs to the same replay; returns its
    progress log and the run's torch thread count (fixed when the run started)."""
    import torch

    request_path = out_dir / REQUEST_NAME
    progress_path = out_dir / PROGRESS_NAME
    identity = request.identity()
    if request_path.is_file() or progress_path.is_file():
        if not request.resume:
            raise InputError(f"--out {out_dir} already holds a replay; pass --resume to continue it, or choose another --out")
        try:
            previous = json.loads(request_path.read_text())
            threads = int(previous["torch_threads"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise FileFormatError(request_path, f"cannot read the replay it describes ({error})") from None
        changed = sorted(key for key in identity if previous.get(key) != identity[key])
        if changed:
            raise InputError(
                f"--resume: {out_dir} was a replay with different {', '.join(changed)}: "
                f"{[previous.get(key) for key in changed]}"
            )
        return ProgressLog(progress_path), threads
    threads = request.torch_threads or torch.get_num_threads()
    write_json_atomic(request_path, {**identity, "torch_threads": threads})
    return ProgressLog(progress_path), threads


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="frame", desc="replay", disable=not enabled, smoothing=0.1)


def finish_run(
    request: ReplayRequest,
    plan: ReplayPlan,
    done: dict[int, FrameResult],
    replayed_now: int,
    wall_s: float,
    log: Any,
) -> ReplayOutcome:
    """Write the submission, latency table, health log, summary and metrics from the finished frames."""
    from avfusion.eval.submission import submission_meta, write_results

    out_dir = Path(request.out_dir)
    missing_positions = [planned.position for planned in plan.frames if planned.position not in done]
    if missing_positions:
        raise RuntimeError(f"replay finished with {len(missing_positions)} frames unprocessed")
    ordered = [done[planned.position] for planned in plan.frames]

    cameras_used = len(set(CAMERA_NAMES) - request.drop) > 0 and "camera" not in request.drop
    meta = submission_meta(
        use_camera=cameras_used, use_lidar="lidar" not in request.drop, use_map="map" not in request.drop
    )
    submission_path = out_dir / SUBMISSION_NAME
    write_results(submission_path, {r.sample_token: r.records for r in ordered}, meta, plan.sample_tokens)

    latency_path = out_dir / LATENCY_NAME
    write_latency_csv(latency_path, ordered)
    health_path = out_dir / HEALTH_NAME
    with atomic_open(health_path, "w") as handle:
        for result in ordered:
            handle.write(json.dumps({"sample_token": result.sample_token, "scene": result.scene_name, **result.health}) + "\n")

    summary: dict[str, Any] = {
        "frames": len(ordered),
        "frames_replayed_this_run": replayed_now,
        "wall_s_this_run": wall_s,
        "frames_per_s_this_run": replayed_now / wall_s if wall_s > 0 and replayed_now else None,
        "stages_ms": stage_statistics(ordered),
        "sensor_health": health_counts(ordered),
        "drop": sorted(request.drop),
        "detections": sum(len(r.records) for r in ordered),
    }
    metrics_path = None
    if request.evaluate:
        summary["evaluation"], metrics_path = _evaluate(request, submission_path, out_dir, log)
    summary_path = out_dir / SUMMARY_NAME
    write_json_atomic(summary_path, summary)
    return ReplayOutcome(
        out_dir=out_dir,
        num_frames=len(ordered),
        frames_replayed_now=replayed_now,
        wall_s=wall_s,
        submission_path=submission_path,
        latency_path=latency_path,
        health_path=health_path,
        summary_path=summary_path,
        metrics_path=metrics_path,
        summary=summary,
    )


def _evaluate(request: ReplayRequest, submission_path: Path, out_dir: Path, log: Any) -> tuple[dict[str, Any], Path | None]:
    """Score the run with avfusion's metric when it covers a whole split with annotations."""
    from avfusion.eval.detection import evaluate_results_file

    if request.split is None:
        return {"skipped": "no --split: the metric is defined over a split"}, None
    if request.scenes:
        return {"skipped": "--scenes replays part of the split; the metric needs all of it"}, None
    if not log.index.has_annotations:
        return {"skipped": f"{request.version} has no annotations (a test split)"}, None
    result = evaluate_results_file(submission_path, request.dataroot, request.version, request.split)
    metrics = result.evaluation.metrics
    summary_json = metrics.summary_json(meta={"split": request.split, "version": request.version})
    metrics_path = out_dir / METRICS_NAME
    write_json_atomic(metrics_path, summary_json)
    return {"mAP": metrics.mean_ap, "NDS": metrics.nd_score, "metrics_summary": str(metrics_path)}, metrics_path


# ---------------------------------------------------------------------------------------------
# Reports


def write_latency_csv(path: Path, results: Sequence[FrameResult]) -> None:
    """One row per frame: position, scene, sample token, then milliseconds for `STAGES` and total."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["position", "scene", "sample_token", *(f"{s}_ms" for s in STAGES), "total_ms"])
    for result in results:
        writer.writerow(
            [result.position, result.scene_name, result.sample_token]
            + [f"{result.timings_ms.get(s, 0.0):.3f}" for s in (*STAGES, "total")]
        )
    with atomic_open(path, "w") as handle:
        handle.write(buffer.getvalue())


def stage_statistics(results: Iterable[FrameResult]) -> dict[str, dict[str, float]]:
    """Per stage (and total): mean, median, 90th percentile and max milliseconds over frames."""
    columns: dict[str, list[float]] = {name: [] for name in (*STAGES, "total")}
    for result in results:
        for name in columns:
            columns[name].append(float(result.timings_ms.get(name, 0.0)))
    stats = {}
    for name, values in columns.items():
        if not values:
            continue
        ordered = sorted(values)
        stats[name] = {
            "mean_ms": statistics.fmean(values),
            "median_ms": statistics.median(values),
            "p90_ms": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
            "max_ms": ordered[-1],
        }
    return stats


def health_counts(results: Iterable[FrameResult]) -> dict[str, Any]:
    """Frames with a sensor missing, by sensor and kind of reason; the largest |skew| per sensor;
    frames that could not be read at all."""
    missing: Counter[str] = Counter()
    max_skew: dict[str, int] = {}
    frames_with_missing = errors = 0
    for result in results:
        health = result.health
        if health.get("error"):
            errors += 1
        if health.get("missing"):
            frames_with_missing += 1
        for sensor, reason in health.get("missing", {}).items():
            # Count by kind ("file missing", "dropout", ...); the full reason is in the health log.
            missing[f"{sensor}: {reason.split(':')[0].strip()}"] += 1
        for sensor, skew in health.get("skew_us", {}).items():
            max_skew[sensor] = max(max_skew.get(sensor, 0), abs(int(skew)))
    return {
        "frames_with_missing_sensors": frames_with_missing,
        "frames_unreadable": errors,
        "missing": dict(sorted(missing.items())),
        "max_abs_skew_us": dict(sorted(max_skew.items())),
    }


def summary_table(outcome: ReplayOutcome) -> str:
    """The human summary printed after a replay: stage latencies, throughput, health, metrics."""
    summary = outcome.summary
    lines = [f"replayed {summary['frames']} frames ({summary['frames_replayed_this_run']} in this run)"]
    if summary.get("frames_per_s_this_run"):
        lines[0] += f", {summary['frames_per_s_this_run']:.2f} frames/s end to end"
    lines.append(f"{'stage':<10}{'mean ms':>10}{'median':>10}{'p90':>10}{'max':>10}")
    for name, stats in summary["stages_ms"].items():
        lines.append(
            f"{name:<10}{stats['mean_ms']:>10.1f}{stats['median_ms']:>10.1f}{stats['p90_ms']:>10.1f}{stats['max_ms']:>10.1f}"
        )
    health = summary["sensor_health"]
    lines.append(
        f"sensor health: {health['frames_with_missing_sensors']} frames with missing sensors, "
        f"{health['frames_unreadable']} unreadable"
    )
    for what, count in health["missing"].items():
        lines.append(f"  {what}: {count} frames")
    if health["max_abs_skew_us"]:
        skews = ", ".join(f"{s} {v / 1000:.0f} ms" for s, v in health["max_abs_skew_us"].items())
        lines.append(f"  largest skew to the lidar: {skews}")
    evaluation = summary.get("evaluation")
    if evaluation is not None:
        if "skipped" in evaluation:
            lines.append(f"evaluation skipped: {evaluation['skipped']}")
        else:
            lines.append(f"evaluation: mAP {evaluation['mAP']:.4f}  NDS {evaluation['NDS']:.4f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Frames for the viewer


class DetectorPredictions:
    """Predictions made on the spot: the detector's boxes (ego frame) and fused BEV heatmap."""

    def __init__(self, detector: Any, drop: frozenset[str] = frozenset()) -> None:
        self.detector = detector
        self.drop = drop
        self._outputs: list[Any] = []
        detector.model.head.register_forward_hook(lambda _m, _i, outputs: self._outputs.append(outputs))

    def __call__(self, frame: Any) -> tuple[Any, Any]:
        from avfusion.eval.render import BevRaster

        self._outputs.clear()
        detections = self.detector.detect(frame, drop=self.drop)
        grid = self.detector.config.grid
        heatmap = BevRaster(heatmap_of(self._outputs[-1]), grid.x_range_m, grid.y_range_m)
        return detections.boxes_ego, heatmap


# The viewer shows camera tiles 400 px wide: images are read at about that width.
VIEWER_IMAGE_WIDTH_PX = 400


def scene_frames_for_viewing(
    dataroot: Path,
    version: str,
    scene: str | None,
    run_dir: Path | None,
    checkpoint: Path | None = None,
    device: str = "cpu",
    with_predictions: bool = True,
    num_sweeps: int = 1,
):  # -> tuple[eval.viewer.SceneFrames, str]
    """The frames of one scene for the viewer, and the scene's name.

    With `run_dir`, predictions are the run's (its submission and kept heatmaps) and the scene
    defaults to the run's first; otherwise, with `with_predictions`, the detector runs on each frame
    (reading frames as the network was trained to: its sweeps and image scale), and the scene
    defaults to the log's first.
    """
    from avfusion.datasets.nuscenes_log import FrameOptions
    from avfusion.eval.viewer import RunPredictions, SceneFrames

    probe = ReplayRequest(dataroot=Path(dataroot), version=version, out_dir=Path("."))
    log = open_log(probe)
    predictions = None
    options = FrameOptions(num_sweeps=num_sweeps, image_scale=reader_image_scale(log, VIEWER_IMAGE_WIDTH_PX))
    if run_dir is not None:
        run_predictions = RunPredictions(run_dir)
        predictions = run_predictions
        predicted = set(run_predictions.sample_tokens)
        if scene is None:
            scene = next((name for name in log.scene_names if predicted & set(log.sample_tokens(name))), None)
            if scene is None:
                raise InputError(f"--run {run_dir}: none of its samples is in {Path(dataroot) / version}")
        elif not set(log.sample_tokens(scene)) & predicted:
            raise InputError(f"--run {run_dir} has no predictions for scene {scene!r}")
    elif with_predictions:
        detector = load_detector(checkpoint, device)
        predictions = DetectorPredictions(detector)
        config = detector.config
        options = FrameOptions(
            num_sweeps=config.lidar.num_sweeps,
            image_scale=reader_image_scale(log, config.camera.decode_scale * NUSCENES_IMAGE_WIDTH_PX),
        )
    if scene is None:
        scene = log.scene_names[0]
    tokens = log.sample_tokens(scene)
    if not tokens:
        raise InputError(f"scene {scene!r} has no keyframes")
    return SceneFrames(lambda token: log.frame(token, options), tokens, predictions), scene
