"""Two logs for the dataset tests.

`tiny_log`: a tiny hand-built nuScenes-schema log (1 scene, 3 keyframes, lidar sweeps, 6 small
cameras, annotations, map, GNSS), written record by record so that every value is known to the
tests. The ego drives east at 10 m/s while turning at 0.2 rad/s, with a little roll and pitch so
that transforms that ignore them would show; cameras fire up to 40 ms before or after the lidar.

`synthetic_log`: a small log from avfusion's own generator (`make_synthetic_log`), with every
sensor, made once per test session; the devkit comparisons run on both.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

from avfusion.calibration.geodesy import geodetic_from_map, heading_deg_from_yaw
from avfusion.calibration.se3 import SE3, quaternion_from_yaw, quaternion_multiply
from avfusion.datasets.synthetic import make_synthetic_log

if TYPE_CHECKING:  # the `log_tables` fixture hands it over at run time
    from tests.conftest import LogTables

VERSION = "v1.0-tiny"
SCENE = "scene-tiny-0001"
LOCATION = "singapore-onenorth"
T0_US = 1_600_000_000_000_000
KEYFRAME_PERIOD_US = 500_000
SWEEP_PERIOD_US = 50_000
NUM_SAMPLES = 3
IMAGE_W, IMAGE_H = 160, 90
CAMERA_OFFSETS_US = {
    "CAM_FRONT": -35_000,
    "CAM_FRONT_RIGHT": -27_000,
    "CAM_FRONT_LEFT": -43_000,
    "CAM_BACK": -10_000,
    "CAM_BACK_LEFT": 0,
    "CAM_BACK_RIGHT": -20_000,
}
# yaw of each camera's optical axis in the ego frame
CAMERA_YAWS = {
    "CAM_FRONT": 0.0,
    "CAM_FRONT_RIGHT": -0.96,
    "CAM_FRONT_LEFT": 0.96,
    "CAM_BACK": np.pi,
    "CAM_BACK_LEFT": 1.9,
    "CAM_BACK_RIGHT": -1.9,
}
LIDAR_ROTATION = [0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817]
LIDAR_TRANSLATION = [0.943713, 0.0, 1.84023]
MAP_TOKEN = "53992ee3023e5494b90c316c183be829"


def token(kind: str, *parts: object) -> str:
    """Deterministic 32-character tokens that say what they are (readable in failures)."""
    text = "_".join([kind, *map(str, parts)])
    return (text + "-" + "x" * 32)[:32] if len(text) < 32 else text


def ego_pose_at(timestamp_us: int) -> SE3:
    t = (timestamp_us - T0_US) * 1e-6
    yaw = 0.3 + 0.2 * t
    tilt = quaternion_multiply([np.cos(0.01), np.sin(0.01), 0.0, 0.0], [np.cos(0.005), 0.0, np.sin(0.005), 0.0])
    q = quaternion_multiply(quaternion_from_yaw(yaw), tilt)
    return SE3.from_quaternion(q, [500.0 + 10.0 * t, 800.0 + 2.0 * t, 0.0])


def camera_ego_from_camera(name: str) -> SE3:
    # camera (x right, y down, z forward) -> a sensor looking along ego +x, then yawed
    optical = SE3.from_matrix(np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]]))
    yaw = CAMERA_YAWS[name]
    return SE3.from_yaw(yaw, [1.0 * np.cos(yaw) + 0.5, 1.0 * np.sin(yaw), 1.5]) @ optical


def camera_matrix(name: str) -> list[list[float]]:
    focal = 81.0 if name == "CAM_BACK" else 126.6
    return [[focal, 0.0, 81.6], [0.0, focal, 49.1], [0.0, 0.0, 1.0]]


def write_log(root: Path, tables: LogTables) -> Path:
    """Write the tiny log under `root` through an empty `LogTables` (tests/conftest.py) and return `root`."""
    rng = np.random.default_rng(1234)
    rows = tables.rows
    for name in ("vehicle.car", "human.pedestrian.adult", "static_object.bicycle_rack"):
        rows["category"].append({"token": token("cat", name.replace(".", "")), "name": name, "description": ""})
    for name in (
        "vehicle.moving",
        "vehicle.parked",
        "vehicle.stopped",
        "pedestrian.moving",
        "pedestrian.standing",
        "pedestrian.sitting_lying_down",
        "cycle.with_rider",
        "cycle.without_rider",
    ):
        rows["attribute"].append({"token": token("attr", name.replace(".", "")), "name": name, "description": ""})
    for level in range(1, 5):
        rows["visibility"].append({"token": str(level), "level": f"v{level}", "description": ""})

    for channel in ["LIDAR_TOP", *CAMERA_OFFSETS_US]:
        if channel == "LIDAR_TOP":
            translation, rotation, intrinsic = LIDAR_TRANSLATION, LIDAR_ROTATION, []
        else:
            calibration = camera_ego_from_camera(channel)
            translation, rotation, intrinsic = (
                calibration.translation.tolist(),
                calibration.quaternion.tolist(),
                camera_matrix(channel),
            )
        tables.add_sensor(token("sensor", channel), token("calib", channel), channel, translation, rotation, intrinsic)
    log_token = token("log")
    drivable = np.zeros((120, 100), np.uint8)  # 10 m x 12 m: not where the ego is, only format matters here
    drivable[:60] = 255
    tables.add_log_with_map(root, log_token, MAP_TOKEN, LOCATION, "n000-tiny", drivable)

    sample_times = [T0_US + k * KEYFRAME_PERIOD_US for k in range(NUM_SAMPLES)]
    sample_tokens = [token("sample", k) for k in range(NUM_SAMPLES)]
    tables.add_scene(token("scene"), SCENE, log_token, sample_tokens, sample_times)

    def next_sample_token(stamp: int) -> str:
        for sample_token, sample_time in zip(sample_tokens, sample_times, strict=True):
            if sample_time >= stamp:
                return sample_token
        return sample_tokens[-1]

    def add_sample_data(channel: str, stamps: list[int], keyframes: set[int]) -> None:
        tokens = [token("sd", channel.lower().replace("_", ""), i) for i in range(len(stamps))]
        for i, stamp in enumerate(stamps):
            is_key = stamp in keyframes
            folder = "samples" if is_key else "sweeps"
            extension = "pcd.bin" if channel == "LIDAR_TOP" else "jpg"
            filename = f"{folder}/{channel}/n000-tiny__{channel}__{stamp}.{extension}"
            pose = ego_pose_at(stamp)
            rows["ego_pose"].append(
                {
                    "token": tokens[i],
                    "timestamp": stamp,
                    "translation": pose.translation.tolist(),
                    "rotation": pose.quaternion.tolist(),
                }
            )
            rows["sample_data"].append(
                {
                    "token": tokens[i],
                    "sample_token": next_sample_token(stamp),
                    "ego_pose_token": tokens[i],
                    "calibrated_sensor_token": token("calib", channel),
                    "timestamp": stamp,
                    "fileformat": extension[:3],
                    "is_key_frame": is_key,
                    "height": 0 if channel == "LIDAR_TOP" else IMAGE_H,
                    "width": 0 if channel == "LIDAR_TOP" else IMAGE_W,
                    "filename": filename,
                    "prev": tokens[i - 1] if i else "",
                    "next": tokens[i + 1] if i + 1 < len(stamps) else "",
                }
            )
            path = root / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            if channel == "LIDAR_TOP":
                points = np.column_stack(
                    [
                        rng.uniform(-30, 30, (300, 2)),
                        rng.uniform(-2, 2, 300),
                        rng.uniform(0, 255, 300),
                        rng.integers(0, 32, 300),
                    ]
                ).astype(np.float32)
                points[:20, :2] = rng.uniform(-0.9, 0.9, (20, 2))  # roof returns, removed by min_distance
                points.tofile(path)
            else:
                image = np.full((IMAGE_H, IMAGE_W, 3), 40 * (CAMERA_NAMES_ORDER.index(channel) + 1), np.uint8)
                image[:, : IMAGE_W // 2, 2] = 200  # left half red in RGB (BGR channel 2)
                cv2.imwrite(str(path), image)

    lidar_stamps = list(range(T0_US - 6 * SWEEP_PERIOD_US, sample_times[-1] + 1, SWEEP_PERIOD_US))
    add_sample_data("LIDAR_TOP", lidar_stamps, set(sample_times))
    for channel, offset in CAMERA_OFFSETS_US.items():
        stamps = [t + offset for t in sample_times]
        keyframes = set(stamps)
        if channel == "CAM_BACK_LEFT":
            # sample 1 has no keyframe image of this camera: only an image 30 ms after the lidar
            stamps[1] += 30_000
            keyframes.discard(stamps[1])
        add_sample_data(channel, stamps, keyframes)

    # annotations: a car driving north at 5 m/s, a standing pedestrian (1 sample only), a bicycle rack
    instances = []
    for name, category, first in (
        ("car", "vehicle.car", 0),
        ("ped", "human.pedestrian.adult", 1),
        ("rack", "static_object.bicycle_rack", 0),
    ):
        count = NUM_SAMPLES if name == "car" else 1
        ann_tokens = [token("ann", name, k) for k in range(first, first + count)]
        instances.append(
            {
                "token": token("inst", name),
                "category_token": token("cat", category.replace(".", "")),
                "nbr_annotations": count,
                "first_annotation_token": ann_tokens[0],
                "last_annotation_token": ann_tokens[-1],
            }
        )
        for j, k in enumerate(range(first, first + count)):
            t = (sample_times[k] - T0_US) * 1e-6
            if name == "car":
                center, size, yaw, attribute = (
                    [510.0, 805.0 + 5.0 * t, 0.9],
                    [1.9, 4.6, 1.7],
                    np.pi / 2,
                    "vehicle.moving",
                )
            elif name == "ped":
                center, size, yaw, attribute = [497.0, 801.0, 0.8], [0.7, 0.7, 1.8], -0.4, "pedestrian.standing"
            else:
                center, size, yaw, attribute = [490.0, 790.0, 0.6], [2.6, 10.0, 1.4], 0.1, None
            rows["sample_annotation"].append(
                {
                    "token": ann_tokens[j],
                    "sample_token": sample_tokens[k],
                    "instance_token": token("inst", name),
                    "visibility_token": "4",
                    "attribute_tokens": [token("attr", attribute.replace(".", ""))] if attribute else [],
                    "translation": center,
                    "size": size,
                    "rotation": quaternion_from_yaw(yaw).tolist(),
                    "prev": ann_tokens[j - 1] if j else "",
                    "next": ann_tokens[j + 1] if j + 1 < count else "",
                    "num_lidar_pts": 12 + k,
                    "num_radar_pts": 0,
                }
            )
    rows["instance"] = instances
    tables.write(root, VERSION, {"synth_val": [SCENE], "synth_train": []})

    # GNSS at 10 Hz with a dropout around the second keyframe

    fixes = []
    for stamp in range(T0_US - 200_000, sample_times[-1] + 200_001, 100_000):
        if abs(stamp - sample_times[1]) <= 150_000:
            continue
        pose = ego_pose_at(stamp)
        lat, lon, alt = geodetic_from_map(LOCATION, pose.translation[None])[0]
        fixes.append(
            {
                "timestamp": stamp + 3_000,
                "latitude": lat,
                "longitude": lon,
                "altitude": alt,
                "heading": heading_deg_from_yaw(pose.yaw_rad),
                "speed": 10.2,
            }
        )
    (root / "gnss").mkdir()
    (root / "gnss" / f"{SCENE}.json").write_text(
        json.dumps(
            {"scene_token": token("scene"), "scene_name": SCENE, "location": LOCATION, "rate_hz": 10, "fixes": fixes}
        )
    )
    return root


CAMERA_NAMES_ORDER = list(CAMERA_OFFSETS_US)


@pytest.fixture(scope="session")
def tiny_log(tmp_path_factory: pytest.TempPathFactory, log_tables: type[LogTables]) -> Path:
    """The tiny log; tests must not modify it (use `tiny_log_copy`)."""
    return write_log(tmp_path_factory.mktemp("tiny-log"), log_tables())


# 1 scene of 2 s: 4 keyframes, 31 lidar sweeps (the last keyframes have 9 earlier sweeps, so
# 10-sweep clouds are complete), 24 images at 400 x 225; about 4 s of CPU.
SYNTHETIC_VERSION = "v1.0-mini"
SYNTHETIC_OPTIONS = {"num_scenes": 1, "seconds": 2.0, "seed": 11, "image_scale": 0.25}


@pytest.fixture(scope="session")
def synthetic_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated log with lidar, cameras, GNSS, map and annotations; tests must not modify it."""
    return make_synthetic_log(
        tmp_path_factory.mktemp("synthetic-session") / "log",
        version=SYNTHETIC_VERSION,
        progress=False,
        **SYNTHETIC_OPTIONS,
    )


@pytest.fixture
def tiny_log_copy(tiny_log: Path, tmp_path: Path) -> Callable[[], Path]:
    """A private copy of the tiny log a test may damage."""

    def make() -> Path:
        target = tmp_path / "log"
        shutil.copytree(tiny_log, target)
        return target

    return make
