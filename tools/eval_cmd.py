"""`avfusion eval`: score a nuScenes detection (or, with `--task tracking`, tracking) results file
and write the report."""

from __future__ import annotations

import argparse

from avfusion.errors import InputError
from avfusion.eval.config import load_config
from avfusion.eval.report import evaluate_and_report
from avfusion.eval.tracking import evaluate_tracking, summary_table


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="nuScenes detection metrics (mAP, TP errors, NDS) of a results file, identical to nuscenes-devkit",
        description=(
            "Evaluate a nuScenes detection results JSON against the ground truth of a split. Prints a "
            "summary; writes metrics_summary.json and metrics_details.json (devkit format), a distance-band "
            "breakdown and PNG plots into --out."
        ),
    )
    parser.add_argument(
        "--task",
        choices=("detection", "tracking"),
        default="detection",
        help="detection (default: avfusion's metric, identical to the devkit's) or tracking "
        "(AMOTA, AMOTP, MOTA, IDS, ...: nuscenes-devkit's TrackingEval on a tracking submission)",
    )
    parser.add_argument(
        "--results", required=True, help="results JSON ({'meta': ..., 'results': {sample_token: [...]}})"
    )
    parser.add_argument("--dataroot", required=True, help="nuScenes dataroot (holds <version>/*.json)")
    parser.add_argument("--version", default="v1.0-mini", help="table version folder (default: v1.0-mini)")
    parser.add_argument(
        "--split", required=True, help="split: a devkit name (val, mini_val, ...) or one in <version>/splits.json"
    )
    parser.add_argument("--out", required=True, help="output folder for the report")
    parser.add_argument(
        "--config", default=None, help="evaluation config JSON in the devkit's format (default: detection_cvpr_2019)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.task == "tracking":
        return run_tracking(args)
    report = evaluate_and_report(
        args.results,
        args.dataroot,
        args.version,
        args.split,
        args.out,
        config=load_config(args.config),
        plots=not args.no_plots,
    )
    print(report.table)
    print(f"\nwrote {len(report.written)} files into {args.out}")
    return 0


def run_tracking(args: argparse.Namespace) -> int:

    if args.config is not None:
        raise InputError(
            "--config: the tracking metric uses the devkit's tracking_nips_2019 configuration; drop --config"
        )
    report = evaluate_tracking(args.results, args.dataroot, args.version, args.split, args.out, plots=not args.no_plots)
    print(summary_table(report.summary))
    print(f"\nwrote {len(report.written)} files into {args.out}")
    return 0
