"""`avfusion bench ablation`: fused vs single-modality models, and the fused model with sensors lost.

On a validation split (scenes from seeds not used for training) it scores, with the nuScenes
detection metric (`avfusion.eval`), each row of:

    fused                     the fused model, every sensor
    lidar_only / camera_only  models with only that branch (+ map), trained with the same recipe
    fused -camera             the fused model, all six cameras dropped (a model with a camera-free
                              trunk runs these samples through it: `TrainConfig.camera_free_trunk`)
    fused -lidar              the fused model, lidar dropped (a model with a lidar-free trunk runs
                              these samples through it: `TrainConfig.lidar_free_trunk`)
    fused -CAM_FRONT          one camera dropped
    fused -map                the map dropped
    fused gnss_noise          the map placed from GNSS fixes with noise (sigma 1.5 m, 2 deg) instead
                              of the localisation pose

Models come from `--fused/--lidar-only/--camera-only` checkpoints, or are trained here into
`--out` with the same recipe (`--epochs`, `--max-steps`). With `--staged`, training here is in two
stages, as BEVFusion trains: first a lidar(+map) and a camera(+map) model; then each of the three
models is trained again with the same schedule from a warm start (`fusion.warmstart`): the fused
one from both stage-one models, each single-modality one from its own. Every frame is read once and every row
run on it; the per-frame network time of each model is timed in the same run (fused = ours,
the single-modality models as peers). `--json` writes the table and the timings.

    avfusion bench ablation --dataroot D --version v1.0-mini --out runs/ablation --json ablation.json
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from avfusion.datasets.frames import open_frames
from avfusion.datasets.nuscenes_log import FrameOptions
from avfusion.datasets.splits import resolve_split
from avfusion.errors import InputError
from avfusion.eval.detection import evaluate_results_file
from avfusion.eval.submission import detection_records, submission_meta, write_results
from avfusion.fusion.config import MapConfig, configure
from avfusion.fusion.inference import Detector
from avfusion.fusion.train import train
from avfusion.sensors.corruptions import noisy_gnss_fix
from avfusion.tools.bench.common import BenchReport, HostCpuTimes, Timing, host_state_facts, set_threads

TP_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}
GNSS_NOISE_POSITION_M = 1.5
GNSS_NOISE_HEADING_DEG = 2.0


def noisy_gnss(frame, rng: np.random.Generator):
    """`frame` with its GNSS fix moved by Gaussian noise (position in metres, heading in degrees)."""
    if frame.gnss is None:
        return frame
    noisy = noisy_gnss_fix(frame.gnss, frame.location, GNSS_NOISE_POSITION_M, GNSS_NOISE_HEADING_DEG, rng)
    return dataclasses.replace(frame, gnss=noisy)


def _train_variant(args, name: str, modalities: str, init_from: tuple[Path, ...] = ()) -> Path:
    config = configure("cpu", args.config, modalities, epochs=args.epochs, seed=args.seed)
    options = FrameOptions(num_sweeps=config.lidar.num_sweeps, image_scale=config.camera.decode_scale)
    frames = open_frames(args.dataroot, args.version, args.train_split, None, options, keep_in_memory=True)
    result = train(config, frames, Path(args.out) / name, resume=True, max_steps=args.max_steps, init_from=init_from)
    return result.weights_path


def _evaluate(results: dict, dataroot: str, version: str, split: str, meta: dict, tokens: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.json"
        write_results(path, results, meta, split_sample_tokens=tokens)
        metrics = evaluate_results_file(path, dataroot, version, split).evaluation.metrics
    return {
        "NDS": metrics.nd_score,
        "mAP": metrics.mean_ap,
        **{TP_NAMES[k]: v for k, v in metrics.tp_errors.items()},
        "AP_per_class": metrics.mean_dist_aps,
    }


def run(args: argparse.Namespace) -> int:
    checkpoints = {"fused": args.fused, "lidar_only": args.lidar_only, "camera_only": args.camera_only}
    modalities = {"fused": "lidar,camera,map", "lidar_only": "lidar,map", "camera_only": "camera,map"}
    init_from: dict[str, tuple[Path, ...]] = dict.fromkeys(checkpoints, ())
    if args.staged and not args.no_train and None in checkpoints.values():
        lidar = _train_variant(args, "lidar_only_stage1", modalities["lidar_only"])
        camera = _train_variant(args, "camera_only_stage1", modalities["camera_only"])
        init_from = {"fused": (lidar, camera), "lidar_only": (lidar,), "camera_only": (camera,)}
    for name, path in checkpoints.items():
        if path is None and not args.no_train:
            checkpoints[name] = _train_variant(args, name, modalities[name], init_from[name])
    checkpoints = {name: path for name, path in checkpoints.items() if path is not None}
    if "fused" not in checkpoints:
        raise InputError("bench ablation needs the fused model: pass --fused CHECKPOINT or let it train")
    if args.threads:
        set_threads(args.threads)
    detectors = {name: Detector.load(path) for name, path in checkpoints.items()}
    fused = detectors["fused"]
    gnss_config = fused.config.replace(map=MapConfig(channels=fused.config.map.channels, pose_source="gnss"))
    fused_gnss = Detector(fused.model, gnss_config)
    # row name -> (detector, sensors dropped, GNSS noise on)
    rows: dict[str, tuple[Detector, frozenset[str], bool]] = {"fused": (fused, frozenset(), False)}
    for name in ("lidar_only", "camera_only"):
        if name in detectors:
            rows[name] = (detectors[name], frozenset(), False)
    rows.update(
        {
            "fused -camera": (fused, frozenset({"camera"}), False),
            "fused -lidar": (fused, frozenset({"lidar"}), False),
            "fused -CAM_FRONT": (fused, frozenset({"CAM_FRONT"}), False),
            "fused -map": (fused, frozenset({"map"}), False),
            "fused gnss_noise": (fused_gnss, frozenset(), True),
        }
    )
    split = resolve_split(args.dataroot, args.version, args.val_split).name
    options = FrameOptions(
        num_sweeps=fused.config.lidar.num_sweeps, image_scale=fused.config.camera.decode_scale, load_boxes=False
    )
    frames = open_frames(args.dataroot, args.version, split, None, options)
    count = len(frames) if args.frames is None else min(args.frames, len(frames))
    results: dict[str, dict[str, list]] = {name: {} for name in rows}
    network_ms: dict[str, list[float]] = {name: [] for name in checkpoints}
    rng = np.random.default_rng(args.seed)
    from tqdm import tqdm

    host_before = HostCpuTimes.read()
    for index in tqdm(range(count), desc="ablation", unit="frame"):
        frame = frames[index]
        for name, (detector, drop, gnss_noise) in rows.items():
            start = time.perf_counter()
            detections = detector.detect(noisy_gnss(frame, rng) if gnss_noise else frame, drop=drop)
            if name in network_ms:
                network_ms[name].append((time.perf_counter() - start) * 1e3)
            results[name][frame.sample_token] = detection_records(frame.sample_token, detections.boxes_global)
    host = host_state_facts(host_before)  # over the timed detections, before the scoring
    tokens = list(frames.tokens[:count])
    if count < len(frames):
        print(f"note: scoring the first {count} of {len(frames)} samples against the whole split's ground truth")
        tokens = list(frames.tokens)
        for name in rows:
            for token in tokens[count:]:
                results[name][token] = []
    table = {}
    for name in rows:
        meta = submission_meta(use_camera=True, use_lidar=True, use_map=True)
        table[name] = _evaluate(results[name], args.dataroot, args.version, split, meta, tokens)

    report = BenchReport(f"bench ablation: {count} samples of {args.dataroot} split {split}")
    report.ours.append(Timing("fused_detect_per_frame", tuple(network_ms["fused"])))
    for name in ("lidar_only", "camera_only"):
        if name in network_ms:
            report.peers.append(Timing(name, tuple(network_ms[name])))
        else:
            report.skipped[name] = "no checkpoint given (--no-train)"
    report.facts["table"] = {name: {k: v for k, v in row.items() if k != "AP_per_class"} for name, row in table.items()}
    report.facts["ap_per_class"] = {name: row["AP_per_class"] for name, row in table.items()}
    report.facts["checkpoints"] = {name: str(path) for name, path in checkpoints.items()}
    report.facts.update(host)
    print(markdown_table(table))
    report.emit(args.json)
    return 0


def markdown_table(table: dict[str, dict]) -> str:
    columns = ["NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE"]
    lines = [
        "| model / sensors | " + " | ".join(columns) + " | classes with AP > 0 |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for name, row in table.items():
        nonzero = sum(1 for ap in row["AP_per_class"].values() if ap > 0)
        values = " | ".join(f"{row[c]:.3f}" for c in columns)
        lines.append(f"| {name} | {values} | {nonzero}/10 |")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablation", help="fused vs single-modality models and sensor-loss rows, nuScenes metrics"
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--out", default="runs/ablation", help="where models trained here go")
    parser.add_argument("--fused", default=None, help="checkpoint of the fused model (else trained here)")
    parser.add_argument("--lidar-only", default=None, help="checkpoint of the lidar(+map) model")
    parser.add_argument("--camera-only", default=None, help="checkpoint of the camera(+map) model")
    parser.add_argument("--config", default=None, help="FusionConfig JSON for models trained here")
    parser.add_argument(
        "--no-train", action="store_true", help="skip the rows of models not given instead of training them"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch and Numba threads (0 = default)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument(
        "--staged",
        action="store_true",
        help="train here in two stages: single-modality models, then all three from warm starts",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="detect on the first N val samples only (scored against the whole split's ground truth: a quick look)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.set_defaults(func=run)
