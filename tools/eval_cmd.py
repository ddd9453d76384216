"""`avfusion eval`: score a nuScenes detection results file and write the report."""

from __future__ import annotations

import argparse

from avfusion.eval.config import load_config
from avfusion.eval.report import evaluate_and_report


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
    parser.add_argument("--results", required=True, help="results JSON ({'meta': ..., 'results': {sample_token: [...]}})")
    parser.add_argument("--dataroot", required=True, help="nuScenes dataroot (holds <version>/*.json)")
    parser.add_argument("--version", default="v1.0-mini", help="table version folder (default: v1.0-mini)")
    parser.add_argument("--split", required=True, help="split: a devkit name (val, mini_val, ...) or one in <version>/splits.json")
    parser.add_argument("--out", required=True, help="output folder for the report")
    parser.add_argument("--config", default=None, help="evaluation config JSON in the devkit's format (default: detection_cvpr_2019)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
