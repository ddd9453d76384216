"""Replay nuScenes logs through the whole pipeline: load -> sync -> fusion -> decode -> submission.

`run_replay(request)` streams every keyframe of the chosen scenes through `NuScenesLog.frame` and
`Detector.detect` and writes, under the run folder:

    replay.json          what was asked (dataroot, version, scenes, checkpoint, drop, corruption and its
                         seed, whether the sensor checks run): --resume checks it
    progress.jsonl       one line per finished frame (its submission records, stage timings and
                         sensor health): the per-frame checkpoint an interrupted run resumes from
    submission.json      the nuScenes detection submission, every planned sample in plan order
    latency.csv          per-frame milliseconds by stage, file reading and voxelization included
    sensor_health.jsonl  per frame: missing sensors (and why), time skews, lidar points, cameras; with
                         the online checks (`avfusion.sensors.checks`) frozen sensors, the cameras
                         whose calibration is suspect (`calibration_suspect`) and each camera's verdict
    summary.json         frames, frames/s, stage statistics, sensor-health counts, tracking, metrics
    metrics_summary.json avfusion's nuScenes detection metrics, when the split has annotations
    tracking_submission.json  with tracking on: the nuScenes tracking submission
    tracking_metrics/    with tracking on: the devkit's tracking metrics, when the split has annotations

With tracking on (`--track online|offline`, see `avfusion.fusion.tracking`), the detection
submission carries the tracker's velocities, headings and scores; tracking runs on the finished
frames in plan order, scene by scene.
    bev/<token>.npz      with `save_bev`: the fused BEV heatmap (max over classes) for the viewer and,
                         for a gated model, its gate map (which branch the network trusts where)

The submission, latency table and health log are built from `progress.jsonl` in plan order, never
in completion order, so a resumed run and a Ray run give byte-identical submissions to a plain one.
This module sits in `tools` because it joins datasets, fusion and eval, which may not import each
other.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from avfusion.errors import FileFormatError, InputError
from avfusion.eval.data import NoGroundTruth
from avfusion.eval.detection import evaluate_results_file
from avfusion.eval.submission import submission_meta, write_results
from avfusion.eval.tracking import evaluate_tracking, write_tracking_results
from avfusion.fileio import atomic_open, remove_stale_temporaries, write_json_atomic
from avfusion.sensors.types import CAMERA_NAMES
from avfusion.tools.replay.frames import FrameProcessor, load_detector, open_log, plan_replay
from avfusion.tools.replay.tracking import TrackedRun, track_results
from avfusion.tools.replay.types import (
    BEV_DIR_NAME,
    HEALTH_NAME,
    LATENCY_NAME,
    METRICS_NAME,
    PROGRESS_NAME,
    REQUEST_NAME,
    STAGES,
    SUBMISSION_NAME,
    SUMMARY_NAME,
    TRACKING_METRICS_DIR_NAME,
    TRACKING_SUBMISSION_NAME,
    FrameResult,
    ReplayOutcome,
    ReplayPlan,
    ReplayRequest,
)

# ---------------------------------------------------------------------------------------------
# Progress (per-frame checkpoints)


class ProgressLog:
    """`progress.jsonl`: one `FrameResult` a line, appended and flushed to disk frame by frame.

    The last line, when a crash cut it short (no newline, or not a whole record), is dropped when
    the file is read back (and cut off the file), so a resumed run redoes exactly the frames whose
    results were not completely written. Any other line that is not a record is an error: lines
    after it were written completely, so it was damaged some other way and nothing after it can be
    trusted to be dropped silently.
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
        lines = data.splitlines(keepends=True)
        for number, raw in enumerate(lines, start=1):
            last = number == len(lines)
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("no newline at its end")
                result = FrameResult.from_json(raw.decode())
            except (ValueError, TypeError) as error:
                if last:
                    break  # the torn last line of an interrupted write
                raise FileFormatError(
                    self.path,
                    f"line {number} of {len(lines)} is not a frame record ({type(error).__name__}: {str(error)[:80]}); "
                    f"only the last line can be torn by an interrupted run: remove the damaged line (its frame is "
                    f"then replayed again) or start a new --out",
                ) from None
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
        with _writing_into(self.path.parent), open(self.path, "a") as handle:
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
                from avfusion.tools.replay.ray_runner import replay_on_ray

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
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file, not a run folder")
    with _writing_into(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        # Only this run writes here: what a killed run was writing is incomplete.
        remove_stale_temporaries(out_dir)
        if (out_dir / BEV_DIR_NAME).is_dir():
            remove_stale_temporaries(out_dir / BEV_DIR_NAME)
    if request_path.is_file() or progress_path.is_file():
        if not request.resume:
            raise InputError(
                f"--out {out_dir} already holds a replay; pass --resume to continue it, or choose another --out"
            )
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
    with _writing_into(out_dir):
        write_json_atomic(request_path, {**identity, "torch_threads": threads})
    return ProgressLog(progress_path), threads


@contextlib.contextmanager
def _writing_into(out_dir: Path) -> Iterator[None]:
    """Turn an `OSError` while writing the run folder (read-only, full, a file in the way) into a
    one-line `InputError` naming --out; finished frames stay in progress.jsonl for --resume."""
    try:
        yield
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise InputError(
            f"--out {out_dir}: cannot write the run folder{where}: {error.strerror or error}; "
            f"fix it and continue with --resume"
        ) from None


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
    tracked = _track(request, ordered, log)
    records = [r.records for r in ordered] if tracked is None else list(tracked.detection_records)
    tracking_path = out_dir / TRACKING_SUBMISSION_NAME
    cut_at = {} if tracked is None else {cut.sample_token: cut.reason for cut in tracked.cuts}
    latency_path = out_dir / LATENCY_NAME
    health_path = out_dir / HEALTH_NAME
    with _writing_into(out_dir):
        write_results(
            submission_path,
            {r.sample_token: rec for r, rec in zip(ordered, records, strict=False)},
            meta,
            plan.sample_tokens,
        )
        if tracked is not None:
            tracking_records = {r.sample_token: rec for r, rec in zip(ordered, tracked.tracking_records, strict=False)}
            write_tracking_results(tracking_path, tracking_records, meta, plan.sample_tokens)
        elif tracking_path.exists():
            tracking_path.unlink()  # from an earlier run of this folder with tracking on
        write_latency_csv(latency_path, ordered)
        with atomic_open(health_path, "w") as handle:
            for result in ordered:
                line = {"sample_token": result.sample_token, "scene": result.scene_name, **result.health}
                if result.sample_token in cut_at:
                    line["track_cut"] = cut_at[result.sample_token]
                handle.write(json.dumps(line) + "\n")

    summary: dict[str, Any] = {
        "frames": len(ordered),
        "frames_replayed_this_run": replayed_now,
        "wall_s_this_run": wall_s,
        "frames_per_s_this_run": replayed_now / wall_s if wall_s > 0 and replayed_now else None,
        "stages_ms": stage_statistics(ordered),
        "sensor_health": health_counts(ordered),
        "drop": sorted(request.drop),
        "corrupt": request.corrupt,
        "checks_ms": check_statistics(ordered) if request.checks else None,
        "detections": sum(len(r.records) for r in ordered),
        "tracking": _tracking_summary(request.track, tracked, len(ordered)),
    }
    metrics_path = None
    if request.evaluate:
        summary["evaluation"], metrics_path = _evaluate(request, submission_path, out_dir, log)
        if tracked is not None and "skipped" not in summary["evaluation"]:
            summary["evaluation"].update(_evaluate_tracking(request, tracking_path, out_dir))
    summary_path = out_dir / SUMMARY_NAME
    with _writing_into(out_dir):
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


def _track(request: ReplayRequest, ordered: Sequence[FrameResult], log: Any) -> TrackedRun | None:
    """Track the finished frames (None with `--track off`)."""
    if request.track == "off":
        return None
    timestamps_us = [log.sample_timestamp_us(result.sample_token) for result in ordered]
    return track_results(ordered, timestamps_us, request.track)


def _tracking_summary(mode: str, tracked: TrackedRun | None, num_frames: int) -> dict[str, Any]:
    if tracked is None:
        return {"mode": mode}
    return {
        "mode": mode,
        "tracks": tracked.num_tracks,
        "tracker_ms_per_frame": tracked.tracker_ms / max(num_frames, 1),
        "cuts": [{"sample_token": cut.sample_token, "reason": cut.reason} for cut in tracked.cuts],
    }


def _evaluate_tracking(request: ReplayRequest, tracking_path: Path, out_dir: Path) -> dict[str, Any]:
    """The devkit's tracking metrics of the run (the caller checked the split is scorable)."""
    if not any(json.loads(tracking_path.read_bytes())["results"].values()):
        return {"tracking_skipped": "no tracked boxes (the devkit's tracking metric needs at least one)"}
    report = evaluate_tracking(
        tracking_path, request.dataroot, request.version, str(request.split), out_dir / TRACKING_METRICS_DIR_NAME
    )
    return {"AMOTA": report.amota, "AMOTP": report.amotp, "IDS": report.ids}


def _evaluate(
    request: ReplayRequest, submission_path: Path, out_dir: Path, log: Any
) -> tuple[dict[str, Any], Path | None]:
    """Score the run with avfusion's metric when it covers a whole split with annotations."""
    if request.split is None:
        return {"skipped": "no --split: the metric is defined over a split"}, None
    if request.scenes:
        return {"skipped": "--scenes replays part of the split; the metric needs all of it"}, None
    if not log.index.has_annotations:
        return {"skipped": f"{request.version} has no annotations (a test split)"}, None
    try:
        result = evaluate_results_file(submission_path, request.dataroot, request.version, request.split)
    except NoGroundTruth as error:
        return {"skipped": str(error)}, None
    metrics = result.evaluation.metrics
    summary_json = metrics.summary_json(meta={"split": request.split, "version": request.version})
    metrics_path = out_dir / METRICS_NAME
    with _writing_into(out_dir):
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
        for name, column in columns.items():
            column.append(float(result.timings_ms.get(name, 0.0)))
    stats = {}
    for name, values in columns.items():
        if not values:
            continue
        ordered = sorted(values)
        stats[name] = {
            "mean_ms": statistics.fmean(values),
            "median_ms": statistics.median(values),
            "p90_ms": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
            "max_ms": ordered[-1],
        }
    return stats


def check_statistics(results: Sequence[FrameResult]) -> dict[str, float] | None:
    """Mean and median milliseconds of the online sensor checks per frame."""
    values = [float(r.timings_ms["checks"]) for r in results if "checks" in r.timings_ms]
    if not values:
        return None
    return {"mean_ms": statistics.fmean(values), "median_ms": statistics.median(values)}


def calibration_findings(results: Iterable[FrameResult]) -> dict[str, Any]:
    """Per scene and suspect camera: the frames it was suspect on and its last estimated offset
    (degrees: rotation vector pitch, yaw, roll in the camera frame, and its norm)."""
    findings: dict[str, dict[str, Any]] = {}
    for result in results:
        for camera in result.health.get("calibration_suspect", ()):
            verdict = result.health["calibration"][camera]
            entry = findings.setdefault(f"{result.scene_name} {camera}", {"frames": 0})
            entry["frames"] += 1
            entry["offset_deg"] = verdict["offset_deg"]
            entry["offset_norm_deg"] = verdict["offset_norm_deg"]
    return findings


def health_counts(results: Iterable[FrameResult]) -> dict[str, Any]:
    """Frames with a sensor missing, by sensor and kind of reason; the largest |skew| per sensor;
    frames that could not be read at all; frames with each sensor frozen; calibration suspects."""
    results = list(results)
    frozen: Counter[str] = Counter()
    for result in results:
        frozen.update(result.health.get("frozen", {}).keys())
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
            # Count by kind ("file missing", "unreadable (truncated JPEG)", "bad ego pose", ...); the
            # full reason, with the file, is in the health log.
            missing[f"{sensor}: {reason.split(':')[0].strip()}"] += 1
        for sensor, skew in health.get("skew_us", {}).items():
            max_skew[sensor] = max(max_skew.get(sensor, 0), abs(int(skew)))
    return {
        "frames_with_missing_sensors": frames_with_missing,
        "frames_unreadable": errors,
        "missing": dict(sorted(missing.items())),
        "max_abs_skew_us": dict(sorted(max_skew.items())),
        "frozen_frames": dict(sorted(frozen.items())),
        "calibration_suspect": calibration_findings(results),
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
    tracking = summary.get("tracking", {})
    if "tracks" in tracking:
        lines.append(
            f"tracking ({tracking['mode']}): {tracking['tracks']} tracks, {tracking['tracker_ms_per_frame']:.2f} ms per frame"
            + (f", tracks cut at {len(tracking['cuts'])} keyframes (see the health log)" if tracking["cuts"] else "")
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
    for sensor, count in health.get("frozen_frames", {}).items():
        lines.append(f"  {sensor} frozen on {count} frames")
    for where, finding in health.get("calibration_suspect", {}).items():
        pitch, yaw, roll = finding["offset_deg"]
        lines.append(
            f"  calibration suspect: {where} on {finding['frames']} frames, estimated offset "
            f"{finding['offset_norm_deg']:.2f} deg (pitch {pitch:+.2f}, yaw {yaw:+.2f}, roll {roll:+.2f})"
        )
    if summary.get("checks_ms"):
        lines.append(f"sensor checks: {summary['checks_ms']['median_ms']:.1f} ms per frame (median)")
    if summary.get("corrupt"):
        lines.append(f"corruption: {summary['corrupt']}")
    evaluation = summary.get("evaluation")
    if evaluation is not None:
        if "skipped" in evaluation:
            lines.append(f"evaluation skipped: {evaluation['skipped']}")
        else:
            lines.append(f"evaluation: mAP {evaluation['mAP']:.4f}  NDS {evaluation['NDS']:.4f}")
            if "AMOTA" in evaluation:
                lines.append(
                    f"tracking:   AMOTA {evaluation['AMOTA']:.4f}  AMOTP {evaluation['AMOTP']:.4f}  IDS {evaluation['IDS']}"
                )
    return "\n".join(lines)
