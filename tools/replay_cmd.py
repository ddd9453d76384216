"""`avfusion replay`: stream a nuScenes log through the pipeline, write the submission, latency by
stage and a sensor-health log, and score the run (see `avfusion.tools.replay.engine`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avfusion.errors import InputError
from avfusion.fusion.checkpoint import weights_for_strategy
from avfusion.fusion.config import FUSION_STRATEGIES
from avfusion.sensors.corruptions import Corruption
from avfusion.tools.replay.engine import run_replay, summary_table
from avfusion.tools.replay.frames import parse_drop
from avfusion.tools.replay.types import ReplayRequest

# The choices of --track (`avfusion.tools.replay.tracking.TRACK_CHOICES`, spelled here so that
# `avfusion --help` does not import the replay engine).
TRACK_CHOICES: tuple[str, ...] = ("off", "online", "offline")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="replay a log through load -> sync -> fusion -> decode; write the submission and latency",
        description=(
            "Replay every keyframe of a nuScenes-format log through the fusion pipeline. Writes "
            "RUN/submission.json, RUN/latency.csv, RUN/sensor_health.jsonl, RUN/summary.json and, when "
            "the split has annotations, RUN/metrics_summary.json."
        ),
    )
    parser.add_argument("--dataroot", type=Path, required=True, help="the nuScenes-format dataroot")
    parser.add_argument("--version", default="v1.0-mini", help="table folder, e.g. v1.0-mini (default)")
    chosen = parser.add_argument_group("which scenes (default: every scene of the log)")
    chosen.add_argument("--split", help="split name (devkit's or <version>/splits.json's); enables evaluation")
    chosen.add_argument("--scenes", nargs="+", default=(), metavar="NAME", help="scene names")
    parser.add_argument("--checkpoint", type=Path, help="fusion weights (default: the shipped weights)")
    parser.add_argument(
        "--fusion",
        choices=FUSION_STRATEGIES,
        help="fusion strategy: runs its shipped weights, or checks that --checkpoint was trained for it",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="RUN", help="the run folder")
    parser.add_argument("--device", default="cpu", help="torch device for the network (cpu, cuda, cuda:1)")
    parser.add_argument(
        "--drop",
        metavar="SENSORS",
        help="replay as if these sensors were missing: camera | lidar | map | gnss | CAM_FRONT,CAM_BACK,...",
    )
    parser.add_argument(
        "--corrupt",
        metavar="TYPE:SEVERITY",
        help="corrupt every frame as it is read, e.g. fog:2 (types: avfusion.sensors.corruptions; severities 1-3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --corrupt draws (default 0)")
    parser.add_argument(
        "--checks",
        action="store_true",
        help="run the online sensor checks (frozen sensors, camera calibration; about 0.1 s a frame)",
    )
    parser.add_argument(
        "--track",
        choices=TRACK_CHOICES,
        default="offline",
        help="track the detections over each scene: offline (default: whole tracks smoothed, velocities and "
        "headings from the future too), online (causal) or off; writes RUN/tracking_submission.json",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN")
    parser.add_argument(
        "--save-bev",
        action="store_true",
        help="keep each frame's BEV heatmap (and a gated model's gate map) for `avfusion viz`",
    )
    parser.add_argument("--no-eval", action="store_true", help="do not score the run")
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="shard scenes across a Ray cluster: 'local' starts one on this machine, else a cluster address",
    )
    parser.add_argument("--workers", type=int, help="Ray workers (default: one per cluster CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    corruption = Corruption.parse(args.corrupt) if args.corrupt is not None else None
    request = ReplayRequest(
        dataroot=args.dataroot,
        version=args.version,
        out_dir=args.out,
        split=args.split,
        scenes=tuple(args.scenes),
        checkpoint=(weights_for_strategy(args.fusion, args.checkpoint) if args.fusion is not None else args.checkpoint),
        drop=parse_drop(args.drop),
        device=args.device,
        resume=args.resume,
        save_bev=args.save_bev,
        evaluate=not args.no_eval,
        ray_address=args.ray,
        ray_workers=args.workers,
        corrupt=str(corruption) if corruption is not None else None,
        corrupt_seed=args.seed,
        checks=args.checks,
        track=args.track,
    )
    try:
        outcome = run_replay(request, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"replay interrupted; finished frames are kept in {args.out}: continue with --resume")
        raise
    print(summary_table(outcome))
    print(f"submission: {outcome.submission_path}")
    tracking_path = outcome.out_dir / "tracking_submission.json"
    if args.track != "off":
        print(f"tracks:     {tracking_path}")
    print(f"latency:    {outcome.latency_path}")
    print(f"health:     {outcome.health_path}")
    if outcome.metrics_path is not None:
        print(f"metrics:    {outcome.metrics_path}")
    return 0
