"""Fixtures of the eval tests: a small nuScenes-format database written here, and prediction sets.

The database is written by this file (not by the synthetic world generator) so that it holds, on
purpose, every case the metric's filters and loaders treat specially: all 10 classes, bike racks
with bicycles in and out of them, boxes without lidar points, boxes beyond the class ranges,
annotations with 0 or 1 attribute, single-annotation instances (no velocity), instances with a
time gap above the velocity limit, non-key-frame lidar sweeps and ego poses that move.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from avfusion.eval.data import load_ground_truth
from avfusion.labels import ATTRIBUTES, DETECTION_CLASSES

if TYPE_CHECKING:  # the `log_tables` fixture hands it over at run time
    from tests.conftest import LogTables

VERSION = "v1.0-mini"
SPLIT = "synth_val"

CATEGORIES = (
    "vehicle.car",
    "vehicle.truck",
    "vehicle.bus.rigid",
    "vehicle.bus.bendy",
    "vehicle.trailer",
    "vehicle.construction",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "vehicle.motorcycle",
    "vehicle.bicycle",
    "movable_object.trafficcone",
    "movable_object.barrier",
    "static_object.bicycle_rack",
    "animal",
)
ATTRIBUTES_OF = {
    "vehicle": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
    "human": ("pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down"),
    "cycle": ("cycle.with_rider", "cycle.without_rider"),
}
SIZES = {
    "vehicle.car": (1.9, 4.6, 1.7),
    "vehicle.truck": (2.4, 6.5, 2.6),
    "vehicle.bus.rigid": (2.9, 11.0, 3.8),
    "vehicle.bus.bendy": (2.8, 9.2, 3.3),
    "vehicle.trailer": (2.3, 10.0, 3.7),
    "vehicle.construction": (2.6, 5.6, 2.4),
    "human.pedestrian.adult": (0.7, 0.7, 1.8),
    "human.pedestrian.child": (0.5, 0.5, 1.2),
    "vehicle.motorcycle": (0.7, 2.0, 1.5),
    "vehicle.bicycle": (0.6, 1.8, 1.4),
    "movable_object.trafficcone": (0.5, 0.4, 0.8),
    "movable_object.barrier": (2.3, 0.6, 1.1),
    "static_object.bicycle_rack": (2.7, 10.0, 1.4),
    "animal": (0.4, 0.8, 0.5),
}


def _token(rng: np.random.Generator) -> str:
    return uuid.UUID(bytes=rng.bytes(16)).hex


def _quaternion(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _attribute_group(category: str) -> str | None:
    if category.startswith("human"):
        return "human"
    if category in ("vehicle.motorcycle", "vehicle.bicycle"):
        return "cycle"
    if category.startswith("vehicle"):
        return "vehicle"
    return None


def write_minimal_log(root: Path, tables: LogTables, *, seed: int, scenes: int = 3, samples_per_scene: int = 8) -> Path:
    """Write a nuScenes-format database under `root` (see the module docstring) through an empty
    `LogTables` (tests/conftest.py); returns `root`."""
    rng = np.random.default_rng(seed)
    rows = tables.rows
    category_token = {}
    for name in CATEGORIES:
        category_token[name] = _token(rng)
        rows["category"].append({"token": category_token[name], "name": name, "description": name})
    attribute_token = {}
    for names in ATTRIBUTES_OF.values():
        for name in names:
            attribute_token[name] = _token(rng)
            rows["attribute"].append({"token": attribute_token[name], "name": name, "description": name})
    for level, name in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), start=1):
        rows["visibility"].append({"token": str(level), "level": name, "description": name})
    calibration = {}
    for channel in ("LIDAR_TOP", "CAM_FRONT"):
        sensor = _token(rng)
        calibration[channel] = _token(rng)
        tables.add_sensor(sensor, calibration[channel], channel, [0.94, 0.0, 1.84], _quaternion(-math.pi / 2))
    log_token = _token(rng)
    map_token = _token(rng)
    tables.add_log_with_map(
        root, log_token, map_token, "singapore-onenorth", "fixture-log", np.full((8, 8), 255, np.uint8)
    )

    scene_names = []
    timestamp = 1_600_000_000_000_000
    for scene_number in range(scenes):
        scene_token = _token(rng)
        name = f"fixture-{seed}-{scene_number:04d}"
        scene_names.append(name)
        ego_xy = rng.uniform(100, 900, 2)
        ego_heading = rng.uniform(-math.pi, math.pi)
        # Agents of the scene: class, start position relative to the ego, velocity, lifetime.
        agents = []
        for _ in range(rng.integers(14, 22)):
            category = CATEGORIES[rng.integers(len(CATEGORIES) - 2)] if rng.random() > 0.05 else "animal"
            agents.append(
                {
                    "category": category,
                    "instance": _token(rng),
                    # Cones and barriers near the path (their range is 30 m), the rest up to 60 m away.
                    "xy": ego_xy + rng.uniform(-60, 60, 2) * (0.4 if category.startswith("movable") else 1.0),
                    "v": rng.normal(0, 3, 2) if not category.startswith("movable") else np.zeros(2),
                    "yaw": rng.uniform(-math.pi, math.pi),
                    "first": int(rng.integers(0, samples_per_scene)),
                    "gap": bool(rng.random() < 0.15),
                    "single": bool(rng.random() < 0.1),
                    "attr": rng.random(),
                }
            )
        # A bike rack near the ego with one bicycle in it and one just outside it.
        rack_xy = ego_xy + np.array([8.0, 5.0])
        agents.append(
            {
                "category": "static_object.bicycle_rack",
                "instance": _token(rng),
                "xy": rack_xy,
                "v": np.zeros(2),
                "yaw": 0.3,
                "first": 0,
                "gap": False,
                "single": False,
                "attr": 1.0,
            }
        )
        for offset in ((0.5, 0.2), (0.0, 6.0)):
            agents.append(
                {
                    "category": "vehicle.bicycle",
                    "instance": _token(rng),
                    "xy": rack_xy + np.array(offset),
                    "v": np.zeros(2),
                    "yaw": 0.3,
                    "first": 0,
                    "gap": False,
                    "single": False,
                    "attr": 0.5,
                }
            )
        sample_tokens = [_token(rng) for _ in range(samples_per_scene)]
        tables.add_scene(
            scene_token, name, log_token, sample_tokens, [timestamp + k * 500_000 for k in range(samples_per_scene)]
        )
        annotations_before_scene = len(rows["sample_annotation"])
        last_ann: dict[str, dict[str, Any]] = {}
        for k, sample_token in enumerate(sample_tokens):
            t = timestamp + k * 500_000
            ego_k = ego_xy + 5.0 * k * np.array([math.cos(ego_heading), math.sin(ego_heading)])
            # A non-key-frame lidar sweep just before the key frame, at a different pose: the metric
            # must use the key frame's pose.
            for channel, key_frame, dt, shift in (
                ("LIDAR_TOP", False, -50_000, 2.5),
                ("LIDAR_TOP", True, 0, 0.0),
                ("CAM_FRONT", True, 10_000, 0.3),
            ):
                sd_token = _token(rng)
                rows["sample_data"].append(
                    {
                        "token": sd_token,
                        "sample_token": sample_token,
                        "ego_pose_token": sd_token,
                        "calibrated_sensor_token": calibration[channel],
                        "timestamp": t + dt,
                        "fileformat": "pcd" if channel == "LIDAR_TOP" else "jpg",
                        "is_key_frame": key_frame,
                        "height": 0,
                        "width": 0,
                        "filename": f"samples/{channel}/{sd_token}",
                        "prev": "",
                        "next": "",
                    }
                )
                rows["ego_pose"].append(
                    {
                        "token": sd_token,
                        "timestamp": t + dt,
                        "translation": [*(ego_k - shift), 0.0],
                        "rotation": _quaternion(ego_heading),
                    }
                )
            for agent in agents:
                if k < agent["first"] or (agent["single"] and k != agent["first"]):
                    continue
                if agent["gap"] and k in (
                    agent["first"] + 1,
                    agent["first"] + 2,
                    agent["first"] + 3,
                    agent["first"] + 4,
                ):
                    continue  # a 2.5 s hole in the track: no velocity across it
                category = agent["category"]
                xy = agent["xy"] + agent["v"] * 0.5 * k
                group = _attribute_group(category)
                attrs = (
                    []
                    if group is None or agent["attr"] < 0.1
                    else [attribute_token[ATTRIBUTES_OF[group][int(agent["attr"] * 10) % len(ATTRIBUTES_OF[group])]]]
                )
                distance = float(np.linalg.norm(xy - ego_k))
                num_lidar = 0 if rng.random() < 0.08 else int(max(1, 400 / (1 + distance)))
                ann = {
                    "token": _token(rng),
                    "sample_token": sample_token,
                    "instance_token": agent["instance"],
                    "visibility_token": "4",
                    "attribute_tokens": attrs,
                    "translation": [float(xy[0]), float(xy[1]), float(rng.uniform(0.5, 1.5))],
                    "size": [s * float(rng.uniform(0.9, 1.1)) for s in SIZES[category]],
                    "rotation": _quaternion(agent["yaw"]),
                    "num_lidar_pts": num_lidar,
                    "num_radar_pts": int(rng.integers(0, 3)),
                    "prev": "",
                    "next": "",
                }
                previous = last_ann.get(agent["instance"])
                if previous is not None:
                    previous["next"] = ann["token"]
                    ann["prev"] = previous["token"]
                last_ann[agent["instance"]] = ann
                rows["sample_annotation"].append(ann)
        annotations_of: dict[str, list[dict[str, Any]]] = {}
        for ann in rows["sample_annotation"][annotations_before_scene:]:
            annotations_of.setdefault(ann["instance_token"], []).append(ann)
        for agent in agents:
            anns = annotations_of.get(agent["instance"], [])
            if anns:
                rows["instance"].append(
                    {
                        "token": agent["instance"],
                        "category_token": category_token[agent["category"]],
                        "nbr_annotations": len(anns),
                        "first_annotation_token": anns[0]["token"],
                        "last_annotation_token": anns[-1]["token"],
                    }
                )
        timestamp += 100_000_000
    # Shuffle the annotation table so that table order differs from sample order.
    order = rng.permutation(len(rows["sample_annotation"]))
    rows["sample_annotation"] = [rows["sample_annotation"][i] for i in order]
    split_at = max(1, scenes // 3)
    return tables.write(root, VERSION, {"synth_train": scene_names[:split_at], SPLIT: scene_names[split_at:]})


def make_predictions(dataroot: Path, *, seed: int, split: str = SPLIT, version: str = VERSION) -> dict[str, Any]:
    """A results payload from the ground truth of `split`: perturbed, missing, duplicated and
    spurious boxes, scores with ties, wrong attributes, wrong classes."""
    rng = np.random.default_rng(seed)
    gt = load_ground_truth(dataroot, version, split)
    boxes = gt.boxes
    results: dict[str, list[dict[str, Any]]] = {token: [] for token in gt.sample_tokens}
    for row in range(len(boxes)):
        token = gt.sample_tokens[boxes.sample_index[row]]
        copies = 0 if rng.random() < 0.15 else (2 if rng.random() < 0.1 else 1)
        for _ in range(copies):
            yaw = 2 * math.atan2(boxes.rotation_wxyz[row, 3], boxes.rotation_wxyz[row, 0]) + rng.normal(0, 0.3)
            velocity = np.nan_to_num(boxes.velocity_xy[row]) + rng.normal(0, 0.7, 2)
            label = int(boxes.label[row]) if rng.random() < 0.93 else int(rng.integers(len(DETECTION_CLASSES)))
            results[token].append(
                {
                    "sample_token": token,
                    "translation": (boxes.translation[row] + rng.normal(0, [0.6, 0.6, 0.2])).tolist(),
                    "size": (boxes.size_wlh[row] * rng.uniform(0.8, 1.25, 3)).tolist(),
                    "rotation": _quaternion(yaw),
                    "velocity": velocity.tolist(),
                    "detection_name": DETECTION_CLASSES[label],
                    "detection_score": round(float(rng.uniform(0.05, 1.0)), 2),
                    "attribute_name": ATTRIBUTES[int(boxes.attribute[row])]
                    if boxes.attribute[row] >= 0 and rng.random() < 0.8
                    else ("" if rng.random() < 0.5 else ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]),
                }
            )
    for position, token in enumerate(gt.sample_tokens):
        ego = gt.ego_translation[position]
        for _ in range(rng.integers(0, 8)):
            label = int(rng.integers(len(DETECTION_CLASSES)))
            results[token].append(
                {
                    "sample_token": token,
                    "translation": (ego + np.array([*rng.uniform(-55, 55, 2), 1.0])).tolist(),
                    "size": rng.uniform(0.4, 5.0, 3).tolist(),
                    "rotation": _quaternion(float(rng.uniform(-math.pi, math.pi))),
                    "velocity": rng.normal(0, 2, 2).tolist(),
                    "detection_name": DETECTION_CLASSES[label],
                    "detection_score": round(float(rng.uniform(0.0, 0.6)), 2),
                    "attribute_name": "",
                }
            )
        rng.shuffle(results[token])
    return {
        "meta": {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False},
        "results": results,
    }


@pytest.fixture(scope="session")
def minimal_log(tmp_path_factory: pytest.TempPathFactory, log_tables: type[LogTables]) -> Path:
    """A 6-scene x 8-sample database (2 scenes in synth_train, 4 in synth_val)."""
    return write_minimal_log(
        tmp_path_factory.mktemp("minimal_log"), log_tables(), seed=7, scenes=6, samples_per_scene=8
    )


@pytest.fixture(scope="session")
def predictions_for():
    """`make_predictions` as a fixture (test modules cannot import conftest under importlib mode)."""
    return make_predictions


@pytest.fixture(scope="session")
def write_log(log_tables: type[LogTables]) -> Callable[..., Path]:
    """`write_minimal_log` as a fixture: `write_log(root, seed=..., scenes=..., samples_per_scene=...)`."""
    return lambda root, **options: write_minimal_log(root, log_tables(), **options)
