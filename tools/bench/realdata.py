"""`avfusion bench realdata`: the detector on the real nuScenes keyframe in ../shared/realdata.

The fixture (see its MANIFEST.md) holds one v1.0-mini keyframe of scene-0061: the LIDAR_TOP sweep,
six 1600x900 images, and an mmdetection3d info file (`*.pkl.json`) with the calibration, the ego
pose and 69 ground-truth boxes in the LIDAR_TOP frame. This builds a `SyncedFrame` from it (one
lidar sweep, no map raster and no GNSS: the fixture has neither), runs the detector, and matches
its boxes to the ground truth by class and centre distance (greedy by score, the metric's rule) at
0.5, 1, 2 and 4 m. The full detect call is timed (ours); there is no peer for this check.

    avfusion bench realdata [--checkpoint W] [--realdata ../shared/realdata] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3
from avfusion.errors import InputError
from avfusion.fusion.inference import Detector
from avfusion.labels import CLASS_INDEX, DETECTION_CLASSES
from avfusion.sensors.images import read_camera_image
from avfusion.sensors.pcd import read_pcd_bin
from avfusion.sensors.types import CameraFrame, LidarSweep, SyncedFrame
from avfusion.tools.bench.common import BenchReport, time_call

FIXTURE = Path("nuscenes_fixture/mmdetection3d/demo/data/nuscenes")
INFO_NAME = "n015-2018-07-24-11-22-45+0800.pkl.json"
LOCATION = "singapore-onenorth"
MATCH_DISTANCES_M = (0.5, 1.0, 2.0, 4.0)


def _ndarray(value) -> np.ndarray:
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value.get("dtype", "float64")).reshape(value["shape"])
    return np.asarray(value, dtype=np.float64)


def real_keyframe(realdata_root: str | Path, decode_scale: float = 0.125):
    """The fixture keyframe as a `SyncedFrame` (ego frame at the lidar time, boxes included)."""
    folder = Path(realdata_root) / FIXTURE
    info_path = folder / INFO_NAME
    if not info_path.is_file():
        raise InputError(f"real nuScenes fixture not found: {info_path}")
    info = json.loads(info_path.read_text())
    categories = {index: name for name, index in info["metainfo"]["categories"].items()}
    sample = info["data_list"][0]
    global_from_ego = SE3.from_matrix(_ndarray(sample["ego2global"]))
    ego_from_lidar = SE3.from_matrix(_ndarray(sample["lidar_points"]["lidar2ego"]))
    timestamp_us = int(round(float(sample["timestamp"]) * 1e6))
    points = read_pcd_bin(folder / Path(sample["lidar_points"]["lidar_path"]).name).copy()
    points[:, 4] = 0.0  # the fifth column is the ring index on disk; ours is the time lag (one sweep: 0)
    lidar = LidarSweep(points, timestamp_us, ego_from_lidar, global_from_ego, token=sample["token"])
    cameras = {}
    for name, record in sample["images"].items():
        full = CameraIntrinsics(_ndarray(record["cam2img"])[:3, :3], 1600, 900)
        image, intrinsics = read_camera_image(folder / Path(record["img_path"]).name, full, decode_scale)
        ego_from_camera = _ndarray(record["cam2ego"])
        # lidar2cam includes the ego motion between the two exposures, so the camera's own ego pose
        # is global_from_ego(lidar) @ ego_from_lidar @ lidar_from_camera @ camera_from_ego(camera).
        global_from_camera_ego = (global_from_ego.matrix @ ego_from_lidar.matrix
                                  @ np.linalg.inv(_ndarray(record["lidar2cam"])) @ np.linalg.inv(ego_from_camera))
        cameras[name] = CameraFrame(
            name=name, image=image, intrinsics=intrinsics, ego_from_camera=SE3.from_matrix(ego_from_camera),
            global_from_ego=SE3.from_matrix(global_from_camera_ego),
            timestamp_us=int(round(float(record["timestamp"]) * 1e6)), token=record["sample_data_token"],
        )
    kept = [b for b in sample["instances"] if b["bbox_label_3d"] >= 0]
    boxes_lidar = np.array([b["bbox_3d"] for b in kept], dtype=np.float64).reshape(-1, 7)
    velocity_lidar = np.array([b["velocity"] for b in kept], dtype=np.float64).reshape(-1, 2)
    labels = np.array([CLASS_INDEX[categories[b["bbox_label_3d"]]] for b in kept], dtype=np.int64)
    in_lidar = Boxes3D(
        center=boxes_lidar[:, :3], size_wlh=boxes_lidar[:, [4, 3, 5]], yaw_rad=boxes_lidar[:, 6],
        velocity_xy=velocity_lidar, label=labels,
        num_lidar_pts=np.array([b["num_lidar_pts"] for b in kept], dtype=np.int64),
    )
    return SyncedFrame(
        sample_token=sample["token"], scene_name="scene-0061", location=LOCATION, timestamp_us=timestamp_us,
        global_from_ego=global_from_ego, lidar=lidar, cameras=cameras, gnss=None,
        skew_us={n: c.timestamp_us - timestamp_us for n, c in cameras.items()},
        missing={"map": "not in the fixture", "GNSS": "not in the fixture"},
        gt_boxes=in_lidar.transform(ego_from_lidar),
    )


def frame_instance_count(realdata_root: str | Path) -> int:
    """All instances of the info file, the one with label -1 (ignored by mmdetection3d) included."""
    info = json.loads((Path(realdata_root) / FIXTURE / INFO_NAME).read_text())
    return len(info["data_list"][0]["instances"])


def match_counts(predicted, ground_truth, distances_m=MATCH_DISTANCES_M) -> dict[float, int]:
    """Ground-truth boxes matched by a same-class prediction within each centre distance (xy),
    greedily in descending score, each ground truth matched at most once."""
    counts = {}
    order = np.argsort(-predicted.score, kind="stable")
    for threshold in distances_m:
        taken = np.zeros(len(ground_truth), dtype=bool)
        for i in order:
            same = (ground_truth.label == predicted.label[i]) & ~taken
            if not same.any():
                continue
            distance = np.linalg.norm(ground_truth.center[:, :2] - predicted.center[i, :2], axis=1)
            distance[~same] = np.inf
            best = int(np.argmin(distance))
            if distance[best] < threshold:
                taken[best] = True
        counts[threshold] = int(taken.sum())
    return counts


def run(args: argparse.Namespace) -> int:
    detector = Detector.load(args.checkpoint, device=args.device)
    frame = real_keyframe(args.realdata, detector.config.camera.decode_scale)
    report = BenchReport(f"bench realdata: real nuScenes keyframe {frame.sample_token} ({len(frame.gt_boxes)} GT boxes)")
    detections = detector.detect(frame)
    report.ours.append(time_call("detect", lambda: detector.detect(frame), repeats=args.repeats))
    gt = frame.gt_boxes
    for threshold_name, boxes in (("all", detections.boxes_ego), ("score>=0.3", detections.boxes_ego[detections.boxes_ego.score >= 0.3])):
        matched = match_counts(boxes, gt)
        report.facts[f"detections_{threshold_name}"] = len(boxes)
        report.facts[f"gt_matched_{threshold_name}"] = {f"{d} m": n for d, n in matched.items()}
    report.facts["gt_per_class"] = {DETECTION_CLASSES[c]: int((gt.label == c).sum()) for c in np.unique(gt.label)}
    confident = detections.boxes_ego[detections.boxes_ego.score >= 0.3]
    report.facts["detections_per_class_score>=0.3"] = {
        DETECTION_CLASSES[c]: int((confident.label == c).sum()) for c in np.unique(confident.label)
    }
    report.facts["gt_with_lidar_points"] = int((gt.num_lidar_pts > 0).sum())
    report.facts["gt_instances_in_file"] = frame_instance_count(args.realdata)
    report.emit(args.json)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("realdata", help="the detector on the real nuScenes keyframe vs its 69 GT boxes")
    default_root = os.environ.get("AVFUSION_REALDATA", str(Path(__file__).resolve().parents[3] / "shared" / "realdata"))
    parser.add_argument("--realdata", default=default_root, help="folder holding nuscenes_fixture/")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.set_defaults(func=run)
