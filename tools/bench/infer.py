"""`avfusion bench infer`: frames per second of the full detection loop, with a per-stage breakdown.

The loop per frame: read the files and synchronize (`NuScenesLog.frame`: lidar keyframe + sweeps,
six JPEGs decoded at the config's scale, GNSS, map, poses), voxelize, prepare the rest of the batch
(images, rig, map patch), run the network, decode. Every stage is timed on every frame; frames/s is
1000 / the median full-loop time. In the same run the voxelize stage is timed against spconv's
`PointToVoxel` on the same clouds (the peer), as `ratio_vs_spconv_voxelize`.

    avfusion bench infer --dataroot D --version v1.0-mini [--checkpoint W] [--frames 20] [--json out.json]
    avfusion bench infer --device cuda     (on a GPU: the CUDA voxelizer and the network on the GPU)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from avfusion.tools.bench.common import BenchReport, Timing, time_call


def _spconv_voxelizer(config):
    try:
        from spconv.pytorch.utils import PointToVoxel
    except ImportError as error:
        return None, f"spconv not importable ({error})"
    grid = config.grid
    generator = PointToVoxel(
        vsize_xyz=[grid.cell_m, grid.cell_m, grid.z_range_m[1] - grid.z_range_m[0]],
        coors_range_xyz=list(grid.point_range_m),
        num_point_features=5,
        max_num_voxels=config.lidar.max_pillars,
        max_num_points_per_voxel=config.lidar.max_points_per_pillar,
    )
    return generator, ""


def run(args: argparse.Namespace) -> int:
    from avfusion.fusion.augment import SampleAugmentation
    from avfusion.fusion.batch import lidar_points_bev, pillarize
    from avfusion.fusion.inference import Detector
    from avfusion.tools.train_cmd import open_frames

    torch.manual_seed(0)
    detector = Detector.load(args.checkpoint, device=args.device)
    config = detector.config
    dataroot = args.dataroot
    if dataroot is None:
        from avfusion.datasets.synthetic import make_synthetic_log

        dataroot = str(make_synthetic_log(tempfile.mkdtemp(prefix="avfusion-bench-infer-"), num_scenes=1,
                                          seconds=max(2, args.frames // 2 + 1), seed=12345, progress=True))  # fmt: skip
    frames = open_frames(dataroot, args.version, args.split, None, config, load_boxes=False)
    count = min(args.frames, len(frames))
    backend = "cuda" if args.device.startswith("cuda") else "numba"
    stages: dict[str, list[float]] = {name: [] for name in ("read_sync", "voxelize", "prepare", "network", "decode")}
    totals, boxes = [], []
    # Frame 0 runs once untimed first: Numba compilation and allocator warm-up are not the loop.
    for warmup, index in [(True, 0)] + [(False, i) for i in range(count)]:
        start = time.perf_counter()
        frame = frames[index]
        read_ms = (time.perf_counter() - start) * 1e3
        detections = detector.detect(frame) if backend == "numba" else _detect_cuda(detector, frame)
        total_ms = (time.perf_counter() - start) * 1e3
        if warmup:
            continue
        stages_ms = detections.timings_ms
        stages["read_sync"].append(read_ms)
        stages["voxelize"].append(stages_ms.get("voxelize", 0.0))
        stages["prepare"].append(stages_ms["prepare"] - stages_ms.get("voxelize", 0.0))
        stages["network"].append(stages_ms["network"])
        stages["decode"].append(stages_ms["decode"])
        totals.append(total_ms)
        boxes.append(len(detections.boxes_ego))

    report = BenchReport(f"bench infer: full loop over {count} frames of {dataroot} ({args.device}, {torch.get_num_threads()} threads)")
    report.ours.append(Timing("full_loop", tuple(totals)))
    for name, values in stages.items():
        report.ours.append(Timing(name, tuple(values)))
    frames_per_s = 1e3 / statistics.median(totals)
    report.facts["frames_per_s"] = round(frames_per_s, 3)
    report.facts["stage_share_of_median"] = {
        name: round(statistics.median(v) / statistics.median(totals), 3) for name, v in stages.items()
    }
    report.facts["boxes_per_frame_median"] = statistics.median(boxes)
    report.facts["grid_hw"] = list(config.grid.shape_hw)
    report.facts["camera_input_hw"] = list(config.camera.input_hw)
    report.facts["num_sweeps"] = config.lidar.num_sweeps

    # Peer: spconv's voxelizer on the same clouds as ours, timed back to back in this run.
    generator, reason = _spconv_voxelizer(config)
    clouds = [lidar_points_bev(frames[i], SampleAugmentation()) for i in range(min(count, 5))]
    clouds = [c for c in clouds if c is not None]
    if generator is None or not clouds:
        report.skipped["spconv_voxelize"] = reason or "no lidar in the frames"
    else:
        ours = time_call("voxelize_ours", lambda: [pillarize(c, config) for c in clouds], repeats=args.repeats)
        peer = time_call("spconv_voxelize", lambda: [generator(torch.from_numpy(c)) for c in clouds], repeats=args.repeats)
        report.peers.append(peer)
        report.facts["voxelize_ours_ms_per_cloud"] = round(ours.median_ms / len(clouds), 3)
        report.facts["spconv_voxelize_ms_per_cloud"] = round(peer.median_ms / len(clouds), 3)
        report.facts["ratio_vs_spconv_voxelize"] = round(peer.median_ms / ours.median_ms, 3)
    report.emit(args.json)
    print(f"frames/s: {frames_per_s:.2f}")
    return 0


def _detect_cuda(detector, frame):
    """`Detector.detect` with the CUDA voxelizer: the same loop, the batch built with backend "cuda"."""
    from avfusion.fusion.batch import collate
    from avfusion.fusion.decode import Detections, decode_sample

    timings: dict[str, float] = {}
    start = time.perf_counter()
    batch = collate([frame], detector.config, timings_ms=timings, voxel_backend="cuda").to(detector.device)
    timings["prepare"] = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = detector.model(batch)
    torch.cuda.synchronize()
    timings["network"] = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    boxes_ego = decode_sample(outputs, 0, detector.config.grid, detector.config.decode)
    timings["decode"] = (time.perf_counter() - start) * 1e3
    return Detections(frame.sample_token, boxes_ego, boxes_ego.transform(frame.global_from_ego), timings)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("infer", help="frames/s of the full detection loop, per-stage breakdown")
    parser.add_argument("--dataroot", default=None, help="a nuScenes-format log (default: a fresh synthetic one)")
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--split", default=None)
    parser.add_argument("--checkpoint", default=None, help="weights (default: the shipped default weights)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the voxelize peer comparison")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.set_defaults(func=run)
