"""`avfusion bench tracking`: detection only vs online vs offline tracking on one replay.

The detector runs once over the split (a replay with `--track off` into `--out`, resumable); its
detections are then tracked in both modes (`fusion.tracking.track_scene`, the code the replay
runs). Each row is scored with the nuScenes detection metric (avfusion's, identical to the
devkit's) and, for the tracking rows, nuscenes-devkit's tracking metric:

    detection_only   the detector's boxes as they are
    online           causal tracking: velocities from the filter, headings and scores from it
    offline          whole-track smoothing: velocities, headings, scores, bridged gaps

Columns: NDS, mAP, mAVE, mAOE (and the other TP errors), AMOTA, AMOTP, IDS, and the tracker's
milliseconds per frame: the median over `--repeats` runs (after one untimed) of the tracker's
own time over the whole split, divided by its frames (offline: the smoothing amortised over the
frames). `--json` writes the rows, the
timings and the host's load.

    avfusion bench tracking --dataroot /work/data/val_seed2000 --split synth_all --out runs/bench_tracking
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.eval.detection import evaluate_results_file
from avfusion.eval.submission import submission_meta, write_results
from avfusion.eval.tracking import evaluate_tracking, write_tracking_results
from avfusion.tools.bench.common import BenchReport, HostCpuTimes, Timing, host_state_facts
from avfusion.tools.replay.engine import run_replay
from avfusion.tools.replay.tracking import track_results
from avfusion.tools.replay.types import PROGRESS_NAME, FrameResult, ReplayRequest

TP_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}
COLUMNS = ("NDS", "mAP", "mATE", "mAOE", "mAVE", "mAAE", "AMOTA", "AMOTP", "IDS", "tracker_ms_per_frame")


def _detection_row(path: Path, dataroot: str, version: str, split: str) -> dict[str, Any]:

    metrics = evaluate_results_file(path, dataroot, version, split).evaluation.metrics
    return {"NDS": metrics.nd_score, "mAP": metrics.mean_ap, **{TP_NAMES[k]: v for k, v in metrics.tp_errors.items()}}


def run(args: argparse.Namespace) -> int:

    out = Path(args.out)
    replay_dir = out / "replay"
    request = ReplayRequest(
        dataroot=Path(args.dataroot),
        version=args.version,
        out_dir=replay_dir,
        split=args.split,
        checkpoint=args.checkpoint,
        resume=True,
        evaluate=False,
        track="off",
    )
    run_replay(request, progress=not args.no_progress)
    by_position = {}
    for line in (replay_dir / PROGRESS_NAME).read_text().splitlines():
        result = FrameResult.from_json(line)
        by_position[result.position] = result
    results = [by_position[p] for p in sorted(by_position)]
    log = NuScenesLog.open(Path(args.dataroot), args.version, split=args.split)
    timestamps_us = [log.sample_timestamp_us(r.sample_token) for r in results]
    tokens = [r.sample_token for r in results]
    meta = submission_meta(use_camera=True, use_lidar=True, use_map=True)

    table: dict[str, dict[str, Any]] = {}
    detection_path = out / "detection_only" / "submission.json"
    write_results(detection_path, {r.sample_token: r.records for r in results}, meta, tokens)
    table["detection_only"] = _detection_row(detection_path, args.dataroot, args.version, args.split)
    report = BenchReport(f"bench tracking: {len(results)} frames of {args.dataroot} split {args.split}")
    host_before = HostCpuTimes.read()
    for mode in ("online", "offline"):
        # The tracker's own time (`TrackedRun.tracker_ms`: `track_scene` over every scene), not
        # the conversion of submission records around it.
        runs = [track_results(results, timestamps_us, mode) for _ in range(args.repeats + 1)]
        tracked = runs[0]
        per_frame = Timing(f"{mode}_tracker_per_frame", tuple(run.tracker_ms / len(results) for run in runs[1:]))
        report.ours.append(per_frame)
        folder = out / mode
        write_results(
            folder / "submission.json", dict(zip(tokens, tracked.detection_records, strict=False)), meta, tokens
        )
        write_tracking_results(
            folder / "tracking_submission.json", dict(zip(tokens, tracked.tracking_records, strict=False)), meta, tokens
        )
        row = _detection_row(folder / "submission.json", args.dataroot, args.version, args.split)
        tracking = evaluate_tracking(
            folder / "tracking_submission.json",
            args.dataroot,
            args.version,
            args.split,
            folder / "tracking_metrics",
            plots=False,
        )
        row.update(
            {
                "AMOTA": tracking.amota,
                "AMOTP": tracking.amotp,
                "IDS": tracking.ids,
                "tracker_ms_per_frame": per_frame.median_ms,
                "tracks": tracked.num_tracks,
            }
        )
        table[mode] = row
    report.facts["table"] = table
    report.facts.update(host_state_facts(host_before))
    print(markdown_table(table))
    report.emit(args.json)
    return 0


def markdown_table(table: dict[str, dict[str, Any]]) -> str:
    lines = ["| row | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, row in table.items():
        cells = []
        for column in COLUMNS:
            value = row.get(column)
            cells.append("-" if value is None else (f"{value:.0f}" if column == "IDS" else f"{value:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tracking",
        help="detection only / online / offline tracking: NDS, mAP, mAVE, mAOE, AMOTA, AMOTP, IDS, ms per frame",
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--split", required=True, help="a split with annotations (e.g. synth_all)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="fusion weights (default: the shipped weights)")
    parser.add_argument("--out", required=True, help="run folder: the replay (resumable) and each row's submissions")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the tracker over the whole split")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", default=None)
    parser.set_defaults(func=run)
