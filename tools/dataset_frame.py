"""`avfusion dataset frame`: load one synchronized frame and print what it holds."""

from __future__ import annotations

import argparse

from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.datasets.summary import describe_frame
from avfusion.sensors.sync import SyncConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("frame", help="print the synchronized frame of one sample")
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--sample", required=True, metavar="TOKEN", help="sample (keyframe) token")
    parser.add_argument("--sweeps", type=int, default=10, help="lidar sweeps to accumulate, keyframe included")
    parser.add_argument(
        "--image-scale", type=float, default=1.0, help="decode images at this scale (1, 0.5, 0.25, 0.125 fastest)"
    )
    parser.add_argument("--camera-tolerance-ms", type=float, default=75.0)
    parser.add_argument("--gnss-tolerance-ms", type=float, default=100.0)
    parser.add_argument("--no-map", action="store_true", help="do not load the map raster (large for real logs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log = NuScenesLog.open(args.dataroot, args.version)
    options = FrameOptions(
        num_sweeps=args.sweeps,
        image_scale=args.image_scale,
        load_map=not args.no_map,
        sync=SyncConfig(int(args.camera_tolerance_ms * 1000), int(args.gnss_tolerance_ms * 1000)),
    )
    print(describe_frame(log.frame(args.sample, options)))
    return 0
