"""`avfusion bench synthetic`: how long the synthetic log generator takes, per scene-second and per stage.

Generates a log (default: the demo's 2 scenes x 10 s at full 1600x900 resolution) into a temporary
folder and reports seconds per scene-second overall and for each stage (world building, lidar
ray-casting, annotation counting/visibility, camera rendering, file writing), the sizes of the
files written, and the same log generated annotations-only. There is no peer generator to compare
with; the ratio reported is full vs annotations-only. Stage seconds are the summed durations of each
stage's work: shading, JPEG encoding and file writes run in background threads beside the main
thread's ray casting, so the stages can add up to more than the wall time (`generate_full`).
The machine's load average is recorded beside the figures (timings on a shared machine vary with it).

    avfusion bench synthetic [--scenes 2] [--seconds 10] [--image-scale 1] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from avfusion.datasets.synthetic import generate_log
from avfusion.tools.bench.common import BenchReport, time_call


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synthetic", help="synthetic log generation: seconds per scene-second by stage")
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-scale", type=float, default=1.0)
    parser.add_argument("--render-scale", type=float, default=None, help="camera ray-casting scale (default 0.25)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scene_seconds = args.scenes * args.seconds
    workdir = Path(tempfile.mkdtemp(prefix="avfusion-bench-synthetic-"))
    reports = {}
    extra = {} if args.render_scale is None else {"render_scale": args.render_scale}

    def generate(annotations_only: bool) -> None:
        reports[annotations_only] = generate_log(
            workdir / ("annotations" if annotations_only else "full"),
            num_scenes=args.scenes,
            seconds=args.seconds,
            seed=args.seed,
            image_scale=args.image_scale,
            annotations_only=annotations_only,
            progress=False,
            **extra,
        )

    load_before = os.getloadavg()[0]
    try:
        full = time_call("generate_full", lambda: generate(False), repeats=args.repeats, warmup=0)
        annotations = time_call("generate_annotations_only", lambda: generate(True), repeats=args.repeats, warmup=0)
        report = BenchReport(
            f"synthetic log: {args.scenes} scenes x {args.seconds:g} s, images at {args.image_scale:g} x 1600x900",
            ours=[full, annotations],
        )
        # Both rows are modes of our generator; no other nuScenes-format generator runs here to compare.
        report.facts["peer"] = "none (no other nuScenes-format log generator runs on this machine)"
        full_report = reports[False]
        report.facts["seconds_per_scene_second"] = round(full.median_ms / 1e3 / scene_seconds, 3)
        report.facts["seconds_per_scene_second_annotations_only"] = round(
            annotations.median_ms / 1e3 / scene_seconds, 3
        )
        for stage, seconds in full_report.stage_seconds.items():
            report.facts[f"stage_{stage}_s_per_scene_second"] = round(seconds / scene_seconds, 3)
        root = full_report.path
        sweeps = list(root.glob("s*/LIDAR_TOP/*.pcd.bin"))
        images = list(root.glob("samples/CAM_*/*.jpg"))
        report.facts["lidar_files"] = len(sweeps)
        report.facts["image_files"] = len(images)
        if sweeps:
            sizes = [p.stat().st_size for p in sweeps]
            report.facts["lidar_points_per_sweep_mean"] = round(float(np.mean(sizes)) / 20.0, 1)
            report.facts["lidar_file_bytes_mean"] = int(np.mean(sizes))
        if images:
            report.facts["jpeg_bytes_mean"] = int(np.mean([p.stat().st_size for p in images]))
        report.facts["log_bytes_total"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        report.facts["load_average_1min_before"] = round(load_before, 2)
        report.facts["load_average_1min_after"] = round(os.getloadavg()[0], 2)
        report.facts["samples"] = full_report.num_samples
        report.facts["annotations"] = full_report.num_annotations
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.emit(args.json)
    return 0
