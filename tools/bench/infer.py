"""`avfusion bench infer`: frames per second of the full detection loop, with a per-stage breakdown.

The loop per frame: read the files and synchronize (`NuScenesLog.frame`: lidar keyframe + sweeps,
six JPEGs decoded at the config's scale, GNSS, map, poses), voxelize, prepare the rest of the batch
(images, rig, map patch), run the network, decode. Every stage is timed on every frame; frames/s is
1000 / the median full-loop time. The peer is the same loop with spconv's `PointToVoxel` as the
voxelizer, run back to back with ours on every frame (`ratio_vs_full_loop_spconv_voxelizer`; the
voxelize stages alone are compared in `voxelize_ratio_vs_spconv`).

    avfusion bench infer --dataroot D --version v1.0-mini [--checkpoint W] [--frames 20] [--json out.json]
    avfusion bench infer --device cuda     (on a GPU: the CUDA voxelizers and the network on the GPU)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from avfusion.datasets.frames import open_frames
from avfusion.datasets.nuscenes_log import FrameOptions
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.fusion.batch import pillar_voxel_config
from avfusion.fusion.inference import Detector
from avfusion.tools.bench.common import BenchReport, HostCpuTimes, Timing, host_state_facts, set_threads
from avfusion.tools.bench.voxelize import spconv_voxelizer

STAGES = ("read_sync", "voxelize", "prepare", "network", "decode")


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    if args.threads:
        set_threads(args.threads)
    detector = Detector.load(args.checkpoint, device=args.device)
    config = detector.config
    dataroot = args.dataroot
    if dataroot is None:
        dataroot = str(
            make_synthetic_log(
                tempfile.mkdtemp(prefix="avfusion-bench-infer-"),
                num_scenes=1,
                seconds=max(2, args.frames // 2 + 1),
                seed=12345,
                progress=True,
            )
        )
    options = FrameOptions(num_sweeps=config.lidar.num_sweeps, image_scale=config.camera.decode_scale, load_boxes=False)
    frames = open_frames(dataroot, args.version, args.split, None, options)
    count = min(args.frames, len(frames))
    methods = {"ours": detector}
    skipped = {}
    # The peer: the same loop with spconv's PointToVoxel on the same device as ours.
    on_gpu = args.device.startswith("cuda")
    generator, why = spconv_voxelizer(pillar_voxel_config(config), 5, device="cuda" if on_gpu else "cpu")
    if generator is None:
        skipped["full_loop_spconv_voxelizer"] = why
    else:
        methods["spconv_voxelizer"] = detector.with_voxel_backend("spconv_cuda" if on_gpu else "spconv")
    host_before = HostCpuTimes.read()
    stages: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STAGES} for name in methods}
    totals: dict[str, list[float]] = {name: [] for name in methods}
    boxes = []
    # Frame 0 runs once untimed first (Numba compilation, allocator warm-up); then per frame each
    # method runs the whole loop, reading the files itself, back to back so both see the same load.
    for warmup, index in [(True, 0)] + [(False, i) for i in range(count)]:
        for name, method in methods.items():
            start = time.perf_counter()
            frame = frames[index]
            read_ms = (time.perf_counter() - start) * 1e3
            detections = method.detect(frame)
            total_ms = (time.perf_counter() - start) * 1e3
            if warmup:
                continue
            stages_ms = detections.timings_ms
            voxelize_ms = stages_ms.get("voxelize", 0.0)
            for stage, value in (
                ("read_sync", read_ms),
                ("voxelize", voxelize_ms),
                ("prepare", stages_ms["prepare"] - voxelize_ms),
                ("network", stages_ms["network"]),
                ("decode", stages_ms["decode"]),
            ):
                stages[name][stage].append(value)
            totals[name].append(total_ms)
            if name == "ours":
                boxes.append(len(detections.boxes_ego))

    title = (
        f"bench infer: full loop (read+sync, voxelize, prepare, network, decode) over {count} frames of "
        f"{dataroot} ({args.device}, {torch.get_num_threads()} torch threads)"
    )
    report = BenchReport(title, skipped=skipped)
    report.ours.append(Timing("full_loop", tuple(totals["ours"])))
    if "spconv_voxelizer" in methods:
        report.peers.append(Timing("full_loop_spconv_voxelizer", tuple(totals["spconv_voxelizer"])))
    for stage in STAGES:
        report.ours.append(Timing(stage, tuple(stages["ours"][stage])))
    if "spconv_voxelizer" in methods:
        report.facts["voxelize_spconv_median_ms"] = round(statistics.median(stages["spconv_voxelizer"]["voxelize"]), 3)
        report.facts["voxelize_ratio_vs_spconv"] = round(
            statistics.median(stages["spconv_voxelizer"]["voxelize"]) / statistics.median(stages["ours"]["voxelize"]), 3
        )
    frames_per_s = 1e3 / statistics.median(totals["ours"])
    report.facts["frames_per_s"] = round(frames_per_s, 3)
    report.facts["stage_median_ms"] = {s: round(statistics.median(v), 2) for s, v in stages["ours"].items()}
    report.facts["boxes_per_frame_median"] = statistics.median(boxes)
    report.facts["grid_hw"] = list(config.grid.shape_hw)
    report.facts["camera_input_hw"] = list(config.camera.input_hw)
    report.facts["num_sweeps"] = config.lidar.num_sweeps
    report.facts.update(host_state_facts(host_before))
    report.emit(args.json)
    print(f"frames/s: {frames_per_s:.2f}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("infer", help="frames/s of the full detection loop, per-stage breakdown")
    parser.add_argument("--dataroot", default=None, help="a nuScenes-format log (default: a fresh synthetic one)")
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--split", default=None)
    parser.add_argument("--checkpoint", default=None, help="weights (default: the shipped default weights)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.set_defaults(func=run)
