"""`avfusion bench realdata`: the detector on the real nuScenes keyframe, through the user's path.

The fixture in `../shared/realdata` (see its MANIFEST.md and `avfusion.datasets.real_fixture`)
holds one v1.0-mini keyframe of scene-0061 with 68 boxes of the detection classes (65 with lidar
points). This writes it as a nuScenes-format dataroot (13 tables, split `realdata`, GT as global
`sample_annotation` records), then runs what a user runs: `avfusion replay` on it (no map: the
fixture has no map raster; no GNSS) and `avfusion eval` on the submission. It prints, per class
and in total: ground truth matched by a same-class prediction within 2 m (xy, greedy by score,
each ground truth once) at score >= 0.3 and at any score, the precision at 0.3 (matched / kept
predictions), and the devkit mAP and NDS, for three modes: fused (lidar + cameras),
lidar-only (cameras dropped) and camera-only (lidar dropped). A mode uses the shipped weights (or
`--checkpoint`) unless `--lidar-checkpoint` / `--camera-checkpoint` give its own.

One keyframe is a smoke test of transfer, not a benchmark: 68 boxes, most of them pedestrians and
barriers, one street. It is a test set: nothing may be tuned on it.

    avfusion bench realdata [--checkpoint W] [--lidar-checkpoint W] [--camera-checkpoint W]
                            [--realdata DIR] [--out DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraIntrinsics
from avfusion.datasets.real_fixture import (
    LOCATION,
    REAL_SPLIT,
    SCENE_NAME,
    find_realdata,
    read_fixture,
    write_fixture_dataroot,
)
from avfusion.eval.report import evaluate_and_report
from avfusion.fileio import write_json_atomic
from avfusion.labels import CLASS_INDEX, DETECTION_CLASSES
from avfusion.sensors.images import read_camera_image
from avfusion.sensors.pcd import read_pcd_bin
from avfusion.sensors.types import CameraFrame, LidarSweep, SyncedFrame
from avfusion.tools.bench.common import BenchReport
from avfusion.tools.replay.engine import run_replay
from avfusion.tools.replay.types import ReplayRequest

MATCH_DISTANCES_M = (0.5, 1.0, 2.0, 4.0)
MATCH_DISTANCE_M = 2.0
SCORE_THRESHOLD = 0.3
MODES = (
    ("fused", frozenset({"map", "gnss"})),
    ("lidar-only", frozenset({"map", "gnss", "camera"})),
    ("camera-only", frozenset({"map", "gnss", "lidar"})),
)


def real_keyframe(realdata_root: str | Path, decode_scale: float = 0.125):
    """The fixture keyframe as a `SyncedFrame` (ego frame at the lidar time, boxes included; one
    lidar sweep, no map raster, no GNSS)."""

    keyframe = read_fixture(realdata_root)
    points = read_pcd_bin(keyframe.lidar_path).copy()
    points[:, 4] = 0.0  # the fifth column is the ring index on disk; ours is the time lag (one sweep: 0)
    lidar = LidarSweep(
        points, keyframe.timestamp_us, keyframe.ego_from_lidar, keyframe.global_from_ego, token=keyframe.sample_token
    )
    cameras = {}
    for name, camera in keyframe.cameras.items():
        image, intrinsics = read_camera_image(camera.path, CameraIntrinsics(camera.intrinsics, 1600, 900), decode_scale)
        cameras[name] = CameraFrame(
            name=name,
            image=image,
            intrinsics=intrinsics,
            ego_from_camera=camera.ego_from_camera,
            global_from_ego=camera.global_from_camera_ego,
            timestamp_us=camera.timestamp_us,
            token=camera.token,
        )
    return SyncedFrame(
        sample_token=keyframe.sample_token,
        scene_name=SCENE_NAME,
        location=LOCATION,
        timestamp_us=keyframe.timestamp_us,
        global_from_ego=keyframe.global_from_ego,
        lidar=lidar,
        cameras=cameras,
        gnss=None,
        skew_us={n: c.timestamp_us - keyframe.timestamp_us for n, c in cameras.items()},
        missing={"map": "not in the fixture", "GNSS": "not in the fixture"},
        gt_boxes=keyframe.boxes_ego,
    )


def match_counts(predicted, ground_truth, distances_m=MATCH_DISTANCES_M) -> dict[float, int]:
    """Ground-truth boxes matched by a same-class prediction within each centre distance (xy),
    greedily in descending score, each ground truth matched at most once."""
    return {threshold: int(matched_ground_truth(predicted, ground_truth, threshold).sum()) for threshold in distances_m}


def matched_ground_truth(predicted, ground_truth, distance_m: float) -> np.ndarray:
    """`(G,)` bool: the ground truth matched at `distance_m` (see `match_counts`)."""
    taken = np.zeros(len(ground_truth), dtype=bool)
    for i in np.argsort(-predicted.score, kind="stable"):
        same = (ground_truth.label == predicted.label[i]) & ~taken
        if not same.any():
            continue
        distance = np.linalg.norm(ground_truth.center[:, :2] - predicted.center[i, :2], axis=1)
        distance[~same] = np.inf
        best = int(np.argmin(distance))
        if distance[best] < distance_m:
            taken[best] = True
    return taken


def submission_boxes(path: Path, sample_token: str):
    """The predictions of one sample of a results file as `Boxes3D` (global frame; centre, label, score)."""

    records = json.loads(Path(path).read_text())["results"].get(sample_token, [])
    n = len(records)
    return Boxes3D(
        center=np.array([r["translation"] for r in records], dtype=np.float64).reshape(n, 3),
        size_wlh=np.array([r["size"] for r in records], dtype=np.float64).reshape(n, 3),
        yaw_rad=np.zeros(n),
        label=np.array([CLASS_INDEX[r["detection_name"]] for r in records], dtype=np.int64),
        score=np.array([r["detection_score"] for r in records], dtype=np.float64),
    )


def mode_figures(predicted, ground_truth, metrics) -> dict[str, Any]:
    """Per class and in total: GT (with lidar points) matched at >= 0.3 and at any score, the
    predictions kept at 0.3 and the precision there; plus the devkit's mAP, NDS and per-class AP."""

    confident = predicted[predicted.score >= SCORE_THRESHOLD]
    with_points = ground_truth.num_lidar_pts > 0
    matched_confident = matched_ground_truth(confident, ground_truth, MATCH_DISTANCE_M) & with_points
    matched_any = matched_ground_truth(predicted, ground_truth, MATCH_DISTANCE_M) & with_points
    # A match pairs one prediction with one GT: matched predictions = matched GT (all GT, points or not).
    matched_predictions = matched_ground_truth(confident, ground_truth, MATCH_DISTANCE_M)
    rows: dict[str, dict[str, Any]] = {}
    labels = sorted(set(ground_truth.label.tolist()) | set(confident.label.tolist()))
    for label in [*labels, None]:
        gt_mask = with_points if label is None else with_points & (ground_truth.label == label)
        kept = len(confident) if label is None else int((confident.label == label).sum())
        hits = int(
            matched_predictions.sum() if label is None else matched_predictions[ground_truth.label == label].sum()
        )
        name = "total" if label is None else DETECTION_CLASSES[label]
        rows[name] = {
            "gt_with_points": int(gt_mask.sum()),
            "matched_at_0.3": int((matched_confident & gt_mask).sum()),
            "matched_any_score": int((matched_any & gt_mask).sum()),
            "predictions_at_0.3": kept,
            "precision_at_0.3": round(hits / kept, 3) if kept else None,
            "ap": None if label is None else round(metrics.mean_dist_aps[DETECTION_CLASSES[label]], 4),
        }
    return {
        "classes": rows,
        "mAP": round(metrics.mean_ap, 4),
        "NDS": round(metrics.nd_score, 4),
        "max_score": round(float(predicted.score.max()), 3) if len(predicted) else None,
    }


def run_mode(
    dataroot: Path, version: str, split: str, run_dir: Path, checkpoint: Path | None, drop: frozenset[str], device: str
):
    """`avfusion replay` then `avfusion eval` (their library calls) on the dataroot; returns
    (the results file, the devkit metrics, the replay's sensor-health summary)."""

    request = ReplayRequest(
        dataroot=dataroot,
        version=version,
        out_dir=run_dir / "replay",
        split=split,
        checkpoint=checkpoint,
        drop=drop,
        device=device,
        evaluate=False,
    )
    outcome = run_replay(request, progress=False)
    report = evaluate_and_report(outcome.submission_path, dataroot, version, split, run_dir / "eval", plots=False)
    return outcome.submission_path, report.evaluation.metrics, outcome.summary["sensor_health"]


def table(figures: dict[str, dict[str, Any]]) -> str:
    lines = []
    for mode, result in figures.items():
        lines.append(
            f"{mode}: devkit mAP {result['mAP']:.3f}  NDS {result['NDS']:.3f}  (highest score {result['max_score']})"
        )
        lines.append(
            f"  {'class':<22}{'GT w/ pts':>10}{'@0.3 2m':>9}{'any 2m':>8}{'pred@0.3':>10}{'prec@0.3':>10}{'AP':>8}"
        )
        for name, row in result["classes"].items():
            precision = "-" if row["precision_at_0.3"] is None else f"{row['precision_at_0.3']:.2f}"
            ap = "" if row["ap"] is None else f"{row['ap']:.3f}"
            lines.append(
                f"  {name:<22}{row['gt_with_points']:>10}{row['matched_at_0.3']:>9}{row['matched_any_score']:>8}"
                f"{row['predictions_at_0.3']:>10}{precision:>10}{ap:>8}"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:

    realdata = find_realdata(args.realdata)
    keep = args.out is not None
    work = Path(args.out) if keep else Path(tempfile.mkdtemp(prefix="avfusion-bench-realdata-"))
    try:
        dataroot = write_fixture_dataroot(realdata, work / "dataroot")
        keyframe = read_fixture(realdata)
        ground_truth = keyframe.boxes_global
        checkpoints = {
            "fused": args.checkpoint,
            "lidar-only": args.lidar_checkpoint or args.checkpoint,
            "camera-only": args.camera_checkpoint or args.checkpoint,
        }
        figures: dict[str, dict[str, Any]] = {}
        for mode, drop in MODES:
            checkpoint = None if checkpoints[mode] is None else Path(checkpoints[mode])
            submission, metrics, health = run_mode(
                dataroot, "v1.0-mini", REAL_SPLIT, work / mode, checkpoint, drop, args.device
            )
            figures[mode] = mode_figures(submission_boxes(submission, keyframe.sample_token), ground_truth, metrics)
            figures[mode]["checkpoint"] = "shipped default" if checkpoint is None else str(checkpoint)
            figures[mode]["dropped"] = sorted(drop)
            figures[mode]["sensor_health"] = health
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    report = BenchReport(
        f"bench realdata: real nuScenes keyframe {keyframe.sample_token} ({len(ground_truth)} GT "
        f"boxes, {int((ground_truth.num_lidar_pts > 0).sum())} with lidar points), replay + eval, no map"
    )
    report.facts["peer"] = "none (a quality check through replay and eval, not a timing)"
    report.facts["modes"] = figures
    print(report.title)
    print(table(figures))
    print(
        f"matched: same class, centre within {MATCH_DISTANCE_M:g} m (xy), greedy by score; precision = matched / "
        f"predictions at score >= {SCORE_THRESHOLD}"
    )
    if keep:
        print(f"dataroot and runs kept in {work}")
    if args.json is not None:
        write_json_atomic(args.json, report.as_dict())
        print(f"wrote {args.json}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("realdata", help="replay + eval on the real nuScenes keyframe: matches, mAP, NDS")
    parser.add_argument(
        "--realdata",
        default=None,
        help="folder holding nuscenes_fixture/ (default: $AVFUSION_REALDATA, else shared/realdata "
        "beside the working directory or a parent, or beside the source)",
    )
    parser.add_argument("--checkpoint", default=None, help="weights for every mode (default: the shipped weights)")
    parser.add_argument("--lidar-checkpoint", default=None, help="weights for the lidar-only row")
    parser.add_argument("--camera-checkpoint", default=None, help="weights for the camera-only row")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="keep the dataroot and the runs here (default: a temporary folder)")
    parser.add_argument("--json", default=None)
    parser.set_defaults(func=run)
