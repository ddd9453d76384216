"""The real nuScenes keyframe of `../shared/realdata` (see its MANIFEST.md), read and turned into a dataroot.

The fixture holds one v1.0-mini keyframe of scene-0061 (singapore-onenorth): the LIDAR_TOP sweep,
six 1600x900 images and an mmdetection3d info file (`*.pkl.json`) with the calibration, the ego
pose and 69 ground-truth boxes in the LIDAR_TOP frame (`[x, y, z_centre, l, w, h, yaw]`).

`find_realdata` locates the folder holding `nuscenes_fixture/` the way a user's checkout has it.
`read_fixture` parses the info file into a `RealKeyframe`. `write_fixture_dataroot` writes a
nuScenes-format dataroot from it that `nuscenes.nuscenes.NuScenes` loads and `avfusion replay` /
`avfusion eval` run on: the 13 tables, `splits.json` with the split `REAL_SPLIT`, the sensor files
(copied), and the boxes as global `sample_annotation` records. The fixture has no map raster; the
devkit insists on a map record and its PNG, so a 1 x 1 non-drivable placeholder is written, which
the reader's map check treats as missing (no drivable area around the ego). Attributes,
visibility and velocity are not in the info file: annotations carry none (the devkit then leaves
those errors out of its means); the box's own velocity in the info is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import SE3
from avfusion.datasets.index import TABLE_NAMES
from avfusion.datasets.synthetic.tables import VISIBILITY_LEVELS
from avfusion.errors import InputError
from avfusion.fileio import write_json_atomic
from avfusion.labels import ATTRIBUTES, CLASS_INDEX, DETECTION_CLASSES

FIXTURE_SUBDIR = Path("nuscenes_fixture/mmdetection3d/demo/data/nuscenes")
INFO_NAME = "n015-2018-07-24-11-22-45+0800.pkl.json"
LOGFILE = "n015-2018-07-24-11-22-45+0800"
LOCATION = "singapore-onenorth"
SCENE_NAME = "scene-0061"
REAL_SPLIT = "realdata"
ONENORTH_MAP_TOKEN = "53992ee3023e5494b90c316c183be829"  # the semantic-prior PNG name of singapore-onenorth
REALDATA_ENV = "AVFUSION_REALDATA"
LIDAR_CHANNEL = "LIDAR_TOP"
# The nuScenes category written for each detection class (the most common one of the class).
CLASS_CATEGORY = {
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "bus": "vehicle.bus.rigid",
    "trailer": "vehicle.trailer",
    "construction_vehicle": "vehicle.construction",
    "pedestrian": "human.pedestrian.adult",
    "motorcycle": "vehicle.motorcycle",
    "bicycle": "vehicle.bicycle",
    "traffic_cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier",
}


def find_realdata(explicit: str | os.PathLike[str] | None = None, *, start: Path | None = None) -> Path:
    """The folder holding `nuscenes_fixture/`: `explicit` when given, else `$AVFUSION_REALDATA`, else
    the first `shared/realdata` (or `realdata`) beside the working directory or one of its parents,
    then beside the installed source or one of its parents (a checkout's `../shared/realdata`).

    Raises:
        InputError: nothing found (the message lists where it looked), or `explicit` /
            `$AVFUSION_REALDATA` names a folder without the fixture.
    """

    def holds_fixture(folder: Path) -> bool:
        return (folder / FIXTURE_SUBDIR / INFO_NAME).is_file()

    for given, what in ((explicit, "--realdata"), (os.environ.get(REALDATA_ENV) or None, f"${REALDATA_ENV}")):
        if given is not None:
            folder = Path(given)
            if not holds_fixture(folder):
                raise InputError(f"{what} {folder}: no {FIXTURE_SUBDIR / INFO_NAME} inside")
            return folder
    tried: list[Path] = []
    for base in _ancestors([Path.cwd() if start is None else start, Path(__file__).resolve().parent]):
        for folder in (base / "shared" / "realdata", base / "realdata"):
            tried.append(folder)
            if holds_fixture(folder):
                return folder
    raise InputError(
        f"real nuScenes fixture not found: set --realdata or ${REALDATA_ENV} to the folder holding "
        f"nuscenes_fixture/ (looked in shared/realdata and realdata beside {tried[0].parents[1]} "
        "and its parents, and beside the installed source)"
    )


def _ancestors(starts: Iterable[Path]) -> list[Path]:
    seen: list[Path] = []
    for start in starts:
        for folder in (start, *start.parents):
            if folder not in seen:
                seen.append(folder)
    return seen


def _ndarray(value: object) -> np.ndarray:
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value.get("dtype", "float64")).reshape(value["shape"])
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class RealCamera:
    """One camera of the keyframe: full-resolution intrinsics `(3, 3)`, `ego_from_camera`, and
    `global_from_camera_ego` (the ego pose at the camera's exposure, from the info's `lidar2cam`,
    which folds in the ego motion between the lidar and camera times)."""

    name: str
    path: Path
    intrinsics: np.ndarray
    ego_from_camera: SE3
    global_from_camera_ego: SE3
    timestamp_us: int
    token: str


@dataclass(frozen=True, slots=True)
class RealKeyframe:
    """The fixture keyframe.

    Attributes:
        sample_token, timestamp_us: the sample and its LIDAR_TOP time.
        lidar_path: the sweep file (`(34688, 5)` x, y, z, intensity, ring).
        ego_from_lidar, global_from_ego: calibration and the ego pose at the lidar time.
        cameras: the six cameras by channel.
        boxes_lidar: the 68 boxes of the detection classes in the LIDAR_TOP frame, with labels and
            `num_lidar_pts`; `num_radar_pts` alongside `(68,)`.
        instances_in_file: all instances of the info file (one outside the detection classes).
    """

    sample_token: str
    timestamp_us: int
    lidar_path: Path
    ego_from_lidar: SE3
    global_from_ego: SE3
    cameras: dict[str, RealCamera]
    boxes_lidar: Boxes3D
    num_radar_pts: np.ndarray
    instances_in_file: int

    @property
    def boxes_ego(self) -> Boxes3D:
        return self.boxes_lidar.transform(self.ego_from_lidar)

    @property
    def boxes_global(self) -> Boxes3D:
        return self.boxes_lidar.transform(self.global_from_ego @ self.ego_from_lidar)


def read_fixture(realdata_root: str | os.PathLike[str]) -> RealKeyframe:
    """Parse the fixture's info file (`InputError` naming the file when it is absent)."""
    folder = Path(realdata_root) / FIXTURE_SUBDIR
    info_path = folder / INFO_NAME
    if not info_path.is_file():
        raise InputError(f"real nuScenes fixture not found: {info_path}")
    info = json.loads(info_path.read_text())
    categories = {index: name for name, index in info["metainfo"]["categories"].items()}
    sample = info["data_list"][0]
    global_from_ego = SE3.from_matrix(_ndarray(sample["ego2global"]))
    ego_from_lidar = SE3.from_matrix(_ndarray(sample["lidar_points"]["lidar2ego"]))
    lidar_path = folder / Path(sample["lidar_points"]["lidar_path"]).name
    cameras = {}
    for name, record in sample["images"].items():
        ego_from_camera = _ndarray(record["cam2ego"])
        global_from_camera_ego = (
            global_from_ego.matrix
            @ ego_from_lidar.matrix
            @ np.linalg.inv(_ndarray(record["lidar2cam"]))
            @ np.linalg.inv(ego_from_camera)
        )
        cameras[name] = RealCamera(
            name=name,
            path=folder / Path(record["img_path"]).name,
            intrinsics=_ndarray(record["cam2img"])[:3, :3],
            ego_from_camera=SE3.from_matrix(ego_from_camera),
            global_from_camera_ego=SE3.from_matrix(global_from_camera_ego),
            timestamp_us=round(float(record["timestamp"]) * 1e6),
            token=str(record["sample_data_token"]),
        )
    kept = [b for b in sample["instances"] if b["bbox_label_3d"] >= 0]
    boxes = np.array([b["bbox_3d"] for b in kept], dtype=np.float64).reshape(-1, 7)
    velocity = np.nan_to_num(np.array([b["velocity"] for b in kept], dtype=np.float64).reshape(-1, 2))
    boxes_lidar = Boxes3D(
        center=boxes[:, :3],
        size_wlh=boxes[:, [4, 3, 5]],
        yaw_rad=boxes[:, 6],
        velocity_xy=velocity,
        label=np.array([CLASS_INDEX[categories[b["bbox_label_3d"]]] for b in kept], dtype=np.int64),
        num_lidar_pts=np.array([b["num_lidar_pts"] for b in kept], dtype=np.int64),
    )
    return RealKeyframe(
        sample_token=str(sample["token"]),
        timestamp_us=round(float(sample["timestamp"]) * 1e6),
        lidar_path=lidar_path,
        ego_from_lidar=ego_from_lidar,
        global_from_ego=global_from_ego,
        cameras=cameras,
        boxes_lidar=boxes_lidar,
        num_radar_pts=np.array([b["num_radar_pts"] for b in kept], dtype=np.int64),
        instances_in_file=len(sample["instances"]),
    )


def _token(*parts: object) -> str:
    """A 32-hex token from a record's identity (stable: same fixture, same dataroot bytes)."""
    return hashlib.md5("/".join(str(p) for p in ("avfusion-realdata", *parts)).encode()).hexdigest()


def _pose(token: str, pose: SE3, timestamp_us: int) -> dict:
    return {
        "token": token,
        "timestamp": int(timestamp_us),
        "rotation": pose.quaternion.tolist(),
        "translation": pose.translation.tolist(),
    }


def fixture_tables(keyframe: RealKeyframe) -> dict[str, list[dict]]:
    """The 13 nuScenes tables of a one-sample, one-scene log holding the keyframe.

    Filenames follow nuScenes' layout (`samples/<CHANNEL>/<file name>`). The camera sample_data
    tokens are the real ones from the info file; it does not give the lidar's, nor the instance
    and annotation tokens, so those are derived from the record's identity."""
    tables: dict[str, list[dict]] = {name: [] for name in TABLE_NAMES}
    log_token, scene_token = _token("log", LOGFILE), _token("scene", SCENE_NAME)
    tables["log"].append(
        {"token": log_token, "logfile": LOGFILE, "vehicle": "n015", "date_captured": "2018-07-24", "location": LOCATION}
    )
    tables["map"].append(
        {
            "token": ONENORTH_MAP_TOKEN,
            "log_tokens": [log_token],
            "category": "semantic_prior",
            "filename": f"maps/{ONENORTH_MAP_TOKEN}.png",
        }
    )
    tables["scene"].append(
        {
            "token": scene_token,
            "name": SCENE_NAME,
            "log_token": log_token,
            "nbr_samples": 1,
            "first_sample_token": keyframe.sample_token,
            "last_sample_token": keyframe.sample_token,
            "description": "real nuScenes v1.0-mini keyframe (first sample of scene-0061)",
        }
    )
    tables["sample"].append(
        {
            "token": keyframe.sample_token,
            "timestamp": keyframe.timestamp_us,
            "scene_token": scene_token,
            "prev": "",
            "next": "",
        }
    )
    for token, level, description in VISIBILITY_LEVELS:
        tables["visibility"].append({"token": token, "level": level, "description": description})
    for name in ATTRIBUTES:
        tables["attribute"].append({"token": _token("attribute", name), "name": name, "description": ""})

    no_intrinsic: list[list[float]] = []  # the lidar's calibrated_sensor record has none
    channels = [
        (
            LIDAR_CHANNEL,
            "lidar",
            keyframe.ego_from_lidar,
            no_intrinsic,
            keyframe.lidar_path,
            keyframe.timestamp_us,
            _token("sample_data", LIDAR_CHANNEL),
            keyframe.global_from_ego,
            0,
            0,
        )
    ]
    for name, camera in sorted(keyframe.cameras.items()):
        channels.append(
            (
                name,
                "camera",
                camera.ego_from_camera,
                camera.intrinsics.tolist(),
                camera.path,
                camera.timestamp_us,
                camera.token,
                camera.global_from_camera_ego,
                1600,
                900,
            )
        )
    for channel, modality, ego_from_sensor, intrinsic, path, timestamp_us, token, pose, width, height in channels:
        sensor_token, calibration_token = _token("sensor", channel), _token("calibrated_sensor", channel)
        tables["sensor"].append({"token": sensor_token, "channel": channel, "modality": modality})
        tables["calibrated_sensor"].append(
            {
                "token": calibration_token,
                "sensor_token": sensor_token,
                "translation": ego_from_sensor.translation.tolist(),
                "rotation": ego_from_sensor.quaternion.tolist(),
                "camera_intrinsic": intrinsic,
            }
        )
        tables["ego_pose"].append(_pose(token, pose, timestamp_us))
        tables["sample_data"].append(
            {
                "token": token,
                "sample_token": keyframe.sample_token,
                "ego_pose_token": token,
                "calibrated_sensor_token": calibration_token,
                "filename": f"samples/{channel}/{path.name}",
                "fileformat": "pcd" if modality == "lidar" else "jpg",
                "width": width,
                "height": height,
                "timestamp": int(timestamp_us),
                "is_key_frame": True,
                "prev": "",
                "next": "",
            }
        )

    boxes = keyframe.boxes_global
    used = sorted({CLASS_CATEGORY[DETECTION_CLASSES[label]] for label in boxes.label})
    for category in used:
        tables["category"].append({"token": _token("category", category), "name": category, "description": ""})
    for index in range(len(boxes)):
        category = CLASS_CATEGORY[DETECTION_CLASSES[int(boxes.label[index])]]
        instance_token, annotation_token = _token("instance", index), _token("sample_annotation", index)
        box_width, box_length, box_height = (float(v) for v in boxes.size_wlh[index])
        rotation = SE3.from_yaw(float(boxes.yaw_rad[index]), np.zeros(3)).quaternion.tolist()
        tables["instance"].append(
            {
                "token": instance_token,
                "category_token": _token("category", category),
                "nbr_annotations": 1,
                "first_annotation_token": annotation_token,
                "last_annotation_token": annotation_token,
            }
        )
        tables["sample_annotation"].append(
            {
                "token": annotation_token,
                "sample_token": keyframe.sample_token,
                "instance_token": instance_token,
                "visibility_token": "",
                "attribute_tokens": [],
                "translation": boxes.center[index].tolist(),
                "size": [box_width, box_length, box_height],
                "rotation": rotation,
                "num_lidar_pts": int(boxes.num_lidar_pts[index]),
                "num_radar_pts": int(keyframe.num_radar_pts[index]),
                "prev": "",
                "next": "",
            }
        )
    return tables


def write_fixture_dataroot(
    realdata_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], version: str = "v1.0-mini"
) -> Path:
    """Write the fixture keyframe as a nuScenes-format dataroot into `out_dir` (see the module
    docstring) and return it. `out_dir` must be absent or empty (`InputError` otherwise)."""
    keyframe = read_fixture(realdata_root)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"output {out} exists and is not an empty directory")
    tables = fixture_tables(keyframe)
    for record in tables["sample_data"]:
        source = (
            keyframe.lidar_path
            if record["fileformat"] == "pcd"
            else next(c.path for c in keyframe.cameras.values() if c.token == record["token"])
        )
        target = out / record["filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
    assert ok, "PNG encoding of a 1 x 1 image cannot fail"
    (out / tables["map"][0]["filename"]).write_bytes(png.tobytes())
    for name in TABLE_NAMES:
        write_json_atomic(out / version / f"{name}.json", tables[name])
    write_json_atomic(out / version / "splits.json", {REAL_SPLIT: [SCENE_NAME]})
    return out
