"""`avfusion dataset info`: scenes, samples, sensors, time span and camera sync of a dataroot."""

from __future__ import annotations

import argparse

from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.datasets.summary import summarize_log
from avfusion.fileio import write_json_atomic
from avfusion.sensors.sync import SyncConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="summarize a nuScenes-format dataroot")
    parser.add_argument("--dataroot", required=True, help="folder holding <version>/, samples/, sweeps/, maps/")
    parser.add_argument("--version", default="v1.0-mini", help="table folder name (default v1.0-mini)")
    parser.add_argument("--split", default=None, help="only the scenes of this split (splits.json or devkit names)")
    parser.add_argument("--camera-tolerance-ms", type=float, default=75.0, help="largest accepted camera skew")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log = NuScenesLog.open(args.dataroot, args.version, split=args.split)
    summary = summarize_log(log, SyncConfig(camera_tolerance_us=int(args.camera_tolerance_ms * 1000)))
    print(summary.format())
    if args.json:
        write_json_atomic(args.json, summary.to_json())
    return 0
