"""The per-dataroot log index: everything a frame needs except the sensor files, cached on disk.

Built once through nuscenes-devkit (`NuScenes(...)`, and `box_velocity` for ground-truth velocities),
then saved as a NumPy `.npz` (no pickles) under `$AVFUSION_CACHE` or `~/.cache/avfusion`, keyed by
dataroot and version, so the dataroot itself may be read-only. The cache records the size and mtime
of every table file and is rebuilt when one changes.

Layout: columnar arrays. Scenes own contiguous, time-ordered runs of samples; samples own runs of
annotations. `sample_data` keeps only LIDAR_TOP and the six cameras, with each record's own ego
pose and its `prev` record as an index (-1 at the start of a chain).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from avfusion.calibration.se3 import validated_unit_quaternion
from avfusion.datasets.tables import check_table, check_tables, sensor_record_problem
from avfusion.errors import FileFormatError, InputError
from avfusion.fileio import write_bytes_atomic
from avfusion.labels import ATTRIBUTE_INDEX
from avfusion.sensors.sync import check_increasing
from avfusion.sensors.types import CAMERA_NAMES, LIDAR_NAME

# An index of this version was built from tables that passed `datasets.tables.check_tables`, with
# non-finite ego poses kept as NaN; an index of another version is rebuilt.
INDEX_FORMAT_VERSION = 3
TABLE_NAMES: tuple[str, ...] = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)
# Channels the index keeps, in this order (sd_channel indexes into it).
CHANNELS: tuple[str, ...] = (LIDAR_NAME, *CAMERA_NAMES)


def cache_root() -> Path:
    """`$AVFUSION_CACHE`, else `~/.cache/avfusion`."""
    configured = os.environ.get("AVFUSION_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "avfusion"


def table_stamps(dataroot: Path, version: str) -> dict[str, list[int]]:
    """(size, mtime_ns) of every table file and of splits.json (absent: [-1, -1])."""
    table_dir = dataroot / version
    stamps = {}
    for name in (*TABLE_NAMES, "splits"):
        path = table_dir / f"{name}.json"
        try:
            stat = path.stat()
            stamps[name] = [int(stat.st_size), int(stat.st_mtime_ns)]
        except FileNotFoundError:
            stamps[name] = [-1, -1]
    return stamps


def check_tables_present(dataroot: Path, version: str) -> None:
    """InputError naming the dataroot, version folder or table file that is missing."""
    if not dataroot.is_dir():
        raise InputError(f"{dataroot}: dataroot not found")
    table_dir = dataroot / version
    if not table_dir.is_dir():
        found = sorted(p.name for p in dataroot.iterdir() if p.is_dir() and (p / "sample.json").exists())
        raise InputError(f"{table_dir}: version folder not found (versions present: {found or 'none'})")
    missing = [name for name in TABLE_NAMES if not (table_dir / f"{name}.json").is_file()]
    if missing:
        raise InputError(
            f"{table_dir}: missing table file(s) {', '.join(n + '.json' for n in missing)} "
            f"(a nuScenes version folder needs all {len(TABLE_NAMES)} tables)"
        )


@dataclass(frozen=True, slots=True, eq=False)
class LogIndex:
    """Columnar index of one dataroot + version (see the module docstring). Strings are `U` arrays."""

    dataroot: str
    version: str
    stamps_json: str
    has_annotations: bool
    # scenes (C,)
    scene_token: np.ndarray
    scene_name: np.ndarray
    scene_location: np.ndarray
    scene_sample_start: np.ndarray
    scene_sample_count: np.ndarray
    # samples (S,)
    sample_token: np.ndarray
    sample_timestamp_us: np.ndarray
    sample_scene: np.ndarray
    sample_keyframe: np.ndarray  # (S, len(CHANNELS)) int64 sd index, -1 = none
    sample_ann_start: np.ndarray
    sample_ann_count: np.ndarray
    # sample_data (D,) for CHANNELS only
    sd_token: np.ndarray
    sd_channel: np.ndarray
    sd_scene: np.ndarray
    sd_timestamp_us: np.ndarray
    sd_is_key_frame: np.ndarray
    sd_filename: np.ndarray
    sd_width: np.ndarray
    sd_height: np.ndarray
    sd_prev: np.ndarray
    sd_calib: np.ndarray
    sd_pose_translation: np.ndarray  # (D, 3); NaN where the table's ego pose is not finite
    sd_pose_rotation: np.ndarray  # (D, 4) w, x, y, z; NaN likewise
    sd_problem: np.ndarray  # why the record's file cannot be used ("" when it can): its sensor is missing
    # calibrated_sensor (K,)
    calib_token: np.ndarray
    calib_translation: np.ndarray
    calib_rotation: np.ndarray
    calib_intrinsic: np.ndarray  # (K, 3, 3), NaN for non-cameras
    # sample_annotation (A,), grouped by sample
    ann_token: np.ndarray
    ann_instance_token: np.ndarray
    ann_category: np.ndarray
    ann_translation: np.ndarray
    ann_size_wlh: np.ndarray
    ann_rotation: np.ndarray
    ann_attribute: np.ndarray  # index into ATTRIBUTES, -1 = none
    ann_num_lidar_pts: np.ndarray
    ann_num_radar_pts: np.ndarray
    ann_velocity: np.ndarray  # (A, 3) devkit box_velocity, NaN = unknown
    # location -> map file (relative to dataroot)
    map_location: np.ndarray
    map_filename: np.ndarray

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        arrays["format_version"] = np.asarray(INDEX_FORMAT_VERSION)
        np.savez(buffer, **arrays)
        write_bytes_atomic(path, buffer.getvalue())

    @staticmethod
    def load(path: Path) -> LogIndex | None:
        """The saved index, or None when absent, unreadable or of another format version."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format_version"]) != INDEX_FORMAT_VERSION:
                    return None
                values = {}
                for f in fields(LogIndex):
                    array = data[f.name]
                    values[f.name] = array.item() if array.ndim == 0 else array
        except (OSError, KeyError, ValueError):
            return None
        values["has_annotations"] = bool(values["has_annotations"])
        return LogIndex(**values)


def index_cache_path(dataroot: Path, version: str) -> Path:
    key = hashlib.sha1(f"{dataroot.resolve()}\0{version}".encode()).hexdigest()[:16]
    return cache_root() / "index" / f"{dataroot.resolve().name}-{version}-{key}.npz"


def open_index(
    dataroot: str | os.PathLike[str], version: str, use_cache: bool = True, verbose: bool = False
) -> tuple[LogIndex, bool]:
    """The index of `dataroot`/`version`, from the cache when it is current; (index, came_from_cache)."""
    root = Path(dataroot)
    check_tables_present(root, version)
    stamps = json.dumps(table_stamps(root, version), sort_keys=True)
    cache_path = index_cache_path(root, version)
    if use_cache:
        cached = LogIndex.load(cache_path)
        if cached is not None and cached.stamps_json == stamps and cached.dataroot == str(root.resolve()):
            return cached, True
    index = build_index(root, version, stamps, verbose=verbose)
    if use_cache:
        # A read-only or full cache directory only costs speed on the next open.
        with contextlib.suppress(OSError):
            index.save(cache_path)
    return index, False


def _check_raw_tables(root: Path, version: str) -> None:
    """Read every table with `json` and check its records (`tables.check_table`): what names the
    record when the devkit fails on one without saying which."""
    for name in TABLE_NAMES:
        path = root / version / f"{name}.json"
        try:
            records = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise FileFormatError(path, f"not valid JSON: {error}") from None
        check_table(path, name, records)


def _load_devkit(root: Path, version: str, verbose: bool):  # -> nuscenes.NuScenes
    """`NuScenes(...)` with its failures turned into one-line errors naming the table and record."""
    from nuscenes.nuscenes import NuScenes

    try:
        nusc = NuScenes(version=version, dataroot=str(root), verbose=verbose)
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        # A record without a field the devkit reads, or of the wrong type, fails inside its
        # reverse index: name the record if a field check finds it, else the dangling token.
        _check_raw_tables(root, version)
        if isinstance(error, KeyError):
            raise InputError(
                f"{root / version}: inconsistent tables, a record refers to the missing token {error}"
            ) from error
        if isinstance(error, IndexError):
            raise InputError(
                f"{root / version}: the map table is empty (nuScenes needs at least one map record)"
            ) from error
        raise InputError(
            f"{root / version}: nuscenes-devkit cannot index the tables ({type(error).__name__}: {error})"
        ) from error
    except json.JSONDecodeError as error:
        for name in TABLE_NAMES:
            path = root / version / f"{name}.json"
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as table_error:
                raise FileFormatError(path, f"not valid JSON: {table_error}") from error
        raise InputError(f"{root / version}: a table is not valid JSON: {error}") from error
    except AssertionError as error:
        raise InputError(f"{root / version}: nuscenes-devkit rejected the log: {error}") from error
    except Exception as error:  # the devkit's bare `Exception` for a map table without log_tokens
        if type(error) is not Exception:
            raise
        _check_raw_tables(root, version)
        raise InputError(f"{root / version}: nuscenes-devkit rejected the log: {error}") from error
    # Every field and type once, on the records the devkit holds (no second parse).
    check_tables(root / version, {name: getattr(nusc, name) for name in TABLE_NAMES})
    return nusc


def build_index(root: Path, version: str, stamps_json: str, verbose: bool = False) -> LogIndex:
    """Read the tables through nuscenes-devkit and validate what frames rely on.

    Every record's fields and types are checked once here (`datasets.tables`); a sample_data
    record whose ego pose is not finite is kept with a NaN pose (its sensor is missing from its
    frames, see `NuScenesLog.frame`).
    """
    nusc = _load_devkit(root, version, verbose)
    table_dir = root / version

    # calibrated sensors
    calib_position = {}
    calib_translation: list[list[float]] = []
    calib_rotation: list[np.ndarray] = []
    calib_intrinsic: list[np.ndarray] = []
    calib_token: list[str] = []
    for record in nusc.calibrated_sensor:
        calib_position[record["token"]] = len(calib_token)
        calib_token.append(record["token"])
        calib_translation.append(record["translation"])
        calib_rotation.append(
            validated_unit_quaternion(
                record["rotation"], f"{table_dir / 'calibrated_sensor.json'} token {record['token']}"
            )
        )
        intrinsic = record.get("camera_intrinsic") or []
        calib_intrinsic.append(
            np.asarray(intrinsic, dtype=np.float64) if len(intrinsic) == 3 else np.full((3, 3), np.nan)
        )

    # map file per location, through the logs each map record lists
    location_of_log = {log["token"]: log["location"] for log in nusc.log}
    map_files: dict[str, str] = {}
    for record in nusc.map:
        for log_token in record.get("log_tokens", []):
            if log_token in location_of_log:
                map_files.setdefault(location_of_log[log_token], record["filename"])

    # scenes and samples in time order
    scene_token, scene_name, scene_location, scene_start, scene_count = [], [], [], [], []
    sample_token: list[str] = []
    sample_timestamp: list[int] = []
    sample_scene: list[int] = []
    sample_position: dict[str, int] = {}
    sample_exists = {s["token"] for s in nusc.sample}
    for scene_index, scene in enumerate(nusc.scene):
        scene_token.append(scene["token"])
        scene_name.append(scene["name"])
        scene_location.append(nusc.get("log", scene["log_token"])["location"])
        scene_start.append(len(sample_token))
        tokens: list[str] = []
        stamps: list[int] = []
        token = scene["first_sample_token"]
        if token not in sample_exists:
            # an excerpt of a log (e.g. a test fixture) may lack the first sample: start from the
            # earliest sample of the scene that is present
            present = sorted((s["timestamp"], s["token"]) for s in nusc.sample if s["scene_token"] == scene["token"])
            token = present[0][1] if present else ""
        while token in sample_exists:  # a dangling next token ends the chain, as the devkit tolerates
            sample = nusc.get("sample", token)
            if token in sample_position or len(tokens) > len(nusc.sample):
                raise InputError(
                    f"{table_dir / 'sample.json'}: the next-chain of scene {scene['name']} loops at sample {token}"
                )
            sample_position[token] = len(sample_token) + len(tokens)
            tokens.append(token)
            stamps.append(sample["timestamp"])
            token = sample["next"]
        check_increasing(np.asarray(stamps), f"{table_dir / 'sample.json'}: samples of scene {scene['name']}", tokens)
        sample_token.extend(tokens)
        sample_timestamp.extend(stamps)
        sample_scene.extend([scene_index] * len(tokens))
        scene_count.append(len(tokens))

    # sample_data of the kept channels
    channel_index = {name: i for i, name in enumerate(CHANNELS)}
    kept = [sd for sd in nusc.sample_data if sd["channel"] in channel_index and sd["sample_token"] in sample_position]
    sd_position = {sd["token"]: i for i, sd in enumerate(kept)}
    sd_pose_translation = np.empty((len(kept), 3))
    sd_pose_rotation = np.empty((len(kept), 4))
    ego_pose_path = table_dir / "ego_pose.json"
    for i, sd in enumerate(kept):
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        if not (np.isfinite(pose["translation"]).all() and np.isfinite(pose["rotation"]).all()):
            # Kept as NaN: the sensors recorded at this pose are missing from their frames.
            sd_pose_translation[i] = np.nan
            sd_pose_rotation[i] = np.nan
            continue
        sd_pose_translation[i] = pose["translation"]
        sd_pose_rotation[i] = validated_unit_quaternion(pose["rotation"], f"{ego_pose_path} token {pose['token']}")
    sd_timestamp = np.array([sd["timestamp"] for sd in kept], dtype=np.int64)
    sd_problem = [sensor_record_problem(sd) for sd in kept]
    sd_prev = np.array([sd_position.get(sd["prev"], -1) for sd in kept], dtype=np.int64)
    has_prev = np.flatnonzero(sd_prev >= 0)
    backwards = has_prev[sd_timestamp[sd_prev[has_prev]] >= sd_timestamp[has_prev]]
    if backwards.size:
        i = int(backwards[0])
        raise InputError(
            f"{table_dir / 'sample_data.json'}: timestamps out of order: {kept[i]['channel']} record {kept[i]['token']} "
            f"({sd_timestamp[i]} us) is not after its prev {kept[sd_prev[i]]['token']} ({sd_timestamp[sd_prev[i]]} us)"
        )
    sample_keyframe = np.full((len(sample_token), len(CHANNELS)), -1, dtype=np.int64)
    for i, sd in enumerate(kept):
        if sd["is_key_frame"]:
            sample_keyframe[sample_position[sd["sample_token"]], channel_index[sd["channel"]]] = i

    # annotations grouped by sample, velocities from the devkit
    attribute_name_of = {a["token"]: a["name"] for a in nusc.attribute}
    ann_rows: list[list] = [[] for _ in sample_token]
    for ann in nusc.sample_annotation:
        if ann["sample_token"] in sample_position:
            ann_rows[sample_position[ann["sample_token"]]].append(ann)
    annotations = [ann for rows in ann_rows for ann in rows]
    annotation_path = table_dir / "sample_annotation.json"
    ann_velocity = np.full((len(annotations), 3), np.nan)
    for i, ann in enumerate(annotations):
        # prev/next may point to records not in this log (e.g. the Lyft excerpts): velocity unknown.
        with contextlib.suppress(KeyError):
            ann_velocity[i] = nusc.box_velocity(ann["token"])
    ann_attribute = []
    for ann in annotations:
        names = [attribute_name_of[t] for t in ann["attribute_tokens"] if t in attribute_name_of]
        ann_attribute.append(ATTRIBUTE_INDEX.get(names[0], -1) if names else -1)

    def strings(values: list[str]) -> np.ndarray:
        return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")

    def floats(values: list, shape: tuple[int, ...]) -> np.ndarray:
        return np.array(values, dtype=np.float64).reshape((-1, *shape)) if values else np.zeros((0, *shape))

    ann_rotation = [
        validated_unit_quaternion(ann["rotation"], f"{annotation_path} token {ann['token']}") for ann in annotations
    ]
    ann_counts = np.array([len(rows) for rows in ann_rows], dtype=np.int64)
    return LogIndex(
        dataroot=str(root.resolve()),
        version=version,
        stamps_json=stamps_json,
        has_annotations=len(nusc.sample_annotation) > 0,
        scene_token=strings(scene_token),
        scene_name=strings(scene_name),
        scene_location=strings(scene_location),
        scene_sample_start=np.array(scene_start, dtype=np.int64),
        scene_sample_count=np.array(scene_count, dtype=np.int64),
        sample_token=strings(sample_token),
        sample_timestamp_us=np.array(sample_timestamp, dtype=np.int64),
        sample_scene=np.array(sample_scene, dtype=np.int64),
        sample_keyframe=sample_keyframe,
        sample_ann_start=np.concatenate([[0], np.cumsum(ann_counts)[:-1]]).astype(np.int64)
        if len(ann_counts)
        else np.zeros(0, np.int64),
        sample_ann_count=ann_counts,
        sd_token=strings([sd["token"] for sd in kept]),
        sd_channel=np.array([channel_index[sd["channel"]] for sd in kept], dtype=np.int64),
        sd_scene=np.array([sample_scene[sample_position[sd["sample_token"]]] for sd in kept], dtype=np.int64),
        sd_timestamp_us=sd_timestamp,
        sd_is_key_frame=np.array([bool(sd["is_key_frame"]) for sd in kept], dtype=bool),
        sd_filename=strings(
            [sd["filename"] if not problem else "" for sd, problem in zip(kept, sd_problem, strict=True)]
        ),
        sd_width=np.array(
            [sd.get("width") or 0 if not problem else 0 for sd, problem in zip(kept, sd_problem, strict=True)],
            dtype=np.int64,
        ),
        sd_height=np.array(
            [sd.get("height") or 0 if not problem else 0 for sd, problem in zip(kept, sd_problem, strict=True)],
            dtype=np.int64,
        ),
        sd_prev=sd_prev,
        sd_calib=np.array([calib_position[sd["calibrated_sensor_token"]] for sd in kept], dtype=np.int64),
        sd_pose_translation=sd_pose_translation,
        sd_pose_rotation=sd_pose_rotation,
        sd_problem=strings(sd_problem),
        calib_token=strings(calib_token),
        calib_translation=floats(calib_translation, (3,)),
        calib_rotation=floats(calib_rotation, (4,)),
        calib_intrinsic=floats(calib_intrinsic, (3, 3)),
        ann_token=strings([a["token"] for a in annotations]),
        ann_instance_token=strings([a["instance_token"] for a in annotations]),
        ann_category=strings([a["category_name"] for a in annotations]),
        ann_translation=floats([a["translation"] for a in annotations], (3,)),
        ann_size_wlh=floats([a["size"] for a in annotations], (3,)),
        ann_rotation=floats(ann_rotation, (4,)),
        ann_attribute=np.array(ann_attribute, dtype=np.int64),
        ann_num_lidar_pts=np.array([a.get("num_lidar_pts", -1) for a in annotations], dtype=np.int64),
        ann_num_radar_pts=np.array([a.get("num_radar_pts", -1) for a in annotations], dtype=np.int64),
        ann_velocity=ann_velocity,
        map_location=strings(list(map_files)),
        map_filename=strings(list(map_files.values())),
    )
