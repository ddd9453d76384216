"""The fast path of `data.load_ground_truth` and `data.load_predictions`: the big JSON files through
`jsonscan` (one Numba pass, exact numbers) and every join on whole token columns.

Each function gives exactly what the reference path in `data` gives, or None whenever the input is
not plainly well-formed (a missing or mistyped field, a dangling or duplicate token, ...); the
caller then runs the reference path, which raises the same clear error as before. So no check here
needs its own error message, and the two paths can be compared on any input.

sample_annotation, sample_data and ego_pose are first scanned for the split's records only (a
split is often a small part of the log): the other records are checked but not kept
(`jsonscan.RecordFilter`). Such a scan is only used when everything it needs is among the kept
records and every record, skipped or not, passes the same checks as in a scan of the whole table
(a skipped record with a mistyped field, a token equal to another, ...); otherwise the whole table
is scanned again without the filter, which then decides as before (a track that crosses the split
stays fast, a malformed record goes on to the reference path). A skipped record therefore never
makes the fast path accept a table it used to leave to the reference path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.labels import ATTRIBUTE_INDEX, ATTRIBUTES, CATEGORY_TO_CLASS, CLASS_INDEX, DETECTION_CLASSES
from avfusion.errors import InputError
from avfusion.eval import jsonscan
from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.data import (
    BIKE_RACK_CATEGORY,
    BikeRacks,
    GroundTruth,
    SplitSamples,
    lidar_calibration_tokens,
    read_table,
    velocity_from_track,
)
from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.submission import REQUIRED_FIELDS, columns_values_valid
from avfusion.eval.jsonscan import ARRAY, NUMBER, STRING, RecordFilter, StringIndex, encode_strings

# Wanted fields -> number slots (jsonscan.scan_records).
ANNOTATION_FIELDS = {
    "token": 0, "sample_token": 0, "instance_token": 0, "attribute_tokens": 0, "translation": 3, "size": 3,
    "rotation": 4, "prev": 0, "next": 0, "num_lidar_pts": 0, "num_radar_pts": 0,
}  # fmt: skip
RESULT_FIELDS = {
    "sample_token": 0, "translation": 3, "size": 3, "rotation": 4, "velocity": 2, "detection_name": 0,
    "detection_score": 1, "attribute_name": 0, "num_pts": 0, "ego_translation": 3,
}  # fmt: skip
assert set(REQUIRED_FIELDS) <= set(RESULT_FIELDS)


def _read_table(dataroot: str | os.PathLike[str], version: str, name: str) -> bytes | None:
    try:
        return jsonscan.read_file_mapped(Path(dataroot) / version / f"{name}.json")
    except (OSError, ValueError):
        return None


def _scan_table(
    dataroot: str | os.PathLike[str],
    version: str,
    name: str,
    fields: Mapping[str, int],
    keep: RecordFilter | None = None,
) -> jsonscan.ScannedRecords | None:
    """The table scanned in one pass, in the calling thread."""
    data = _read_table(dataroot, version, name)
    return None if data is None else jsonscan.scan_records(data, jsonscan.TABLE, fields, keep)


def scan_pool() -> ThreadPoolExecutor:
    """The thread pool the loading scans share: one worker per core (`jsonscan.scan_workers`)."""
    return ThreadPoolExecutor(max_workers=jsonscan.scan_workers(), thread_name_prefix="avfusion-scan")


# Pieces of sample_annotation (and of a results file) per worker: small pieces even out the
# workers' loads (another table's scan may hold one of them for a while).
_PIECES_PER_WORKER = 4


# ----------------------------------------------------------------------------------------------
# Ground truth


def ground_truth_fast(
    dataroot: str | os.PathLike[str], version: str, split: str, samples: SplitSamples
) -> GroundTruth | None:
    """`data._load_ground_truth`'s answer, or None (see the module docstring)."""
    with scan_pool() as pool:
        return start_ground_truth(dataroot, version, split, samples, pool)()


def start_ground_truth(
    dataroot: str | os.PathLike[str], version: str, split: str, samples: SplitSamples, pool: Executor
) -> Callable[[], GroundTruth | None]:
    """Start the scans of `ground_truth_fast` on `pool` and return the call that waits for them and
    gives its answer. Tasks submitted to `pool` after this one run once these scans are under way:
    the joins at the end need the scans, while the other work fills a core the joins leave idle."""
    all_tokens = list(samples.timestamp_of_sample)
    # Tokens are compared as zero-padded bytes: a NUL inside one could make two of them equal.
    if not all(type(t) is str for t in all_tokens) or "\x00" in "".join(all_tokens):
        return lambda: None
    split_index = StringIndex(encode_strings(samples.split_tokens))
    sample_matrix = encode_strings(all_tokens)
    sample_index = StringIndex(sample_matrix)
    if not (split_index.unique and sample_index.unique):
        return lambda: None
    # The lidar poses (sample_data + ego_pose) and the annotations are independent: the scanner
    # releases the GIL, so the scans share the cores.
    poses = pool.submit(_lidar_ego_translations, dataroot, version, split_index, samples.split_tokens)
    try:
        annotations = _start_ground_truth_annotations(dataroot, version, split_index, sample_index, sample_matrix, samples, pool)
        error = None
    except InputError as raised:
        annotations, error = None, raised

    def finish() -> GroundTruth | None:
        if error is not None:
            # Errors surface in the sequential order: the poses' first, then the annotations'.
            if poses.result() is None:
                return None
            raise error
        assert annotations is not None
        boxes_and_racks = annotations()
        ego_translation = poses.result()
        if ego_translation is None or boxes_and_racks is None:
            return None
        boxes, bike_racks = boxes_and_racks
        return GroundTruth(
            dataroot=str(dataroot),
            version=version,
            split=split,
            predefined_split=samples.predefined,
            boxes=boxes,
            ego_translation=ego_translation,
            bike_racks=bike_racks,
        )

    return finish


def _start_ground_truth_annotations(
    dataroot: str | os.PathLike[str],
    version: str,
    split_index: StringIndex,
    sample_index: StringIndex,
    sample_matrix: np.ndarray,
    samples: SplitSamples,
    pool: Executor,
) -> Callable[[], tuple[EvalBoxSet, BikeRacks] | None]:
    all_tokens = list(samples.timestamp_of_sample)
    try:
        timestamps_s = 1e-6 * np.array(list(samples.timestamp_of_sample.values()), np.float64)
    except (TypeError, ValueError):
        return lambda: None
    if timestamps_s.shape != (len(all_tokens),):
        return lambda: None
    return _start_annotations(
        dataroot, version, split_index, sample_index, sample_matrix, timestamps_s, samples.split_tokens, pool
    )


def _lidar_ego_translations(
    dataroot: str | os.PathLike[str], version: str, split_index: StringIndex, split_tokens: list[str]
) -> np.ndarray | None:
    """(S, 3) as `data._lidar_ego_translations`, or None.

    Each table is first scanned for the split's records only (`RecordFilter`); should that meet
    anything it does not plainly understand, the whole table is scanned again without the filter,
    so a table gives what it gave before filtering existed."""
    lidar_calibrations = lidar_calibration_tokens(dataroot, version)
    if not all(type(t) is str and "\x00" not in t for t in lidar_calibrations):
        return None
    lidar_index = StringIndex(encode_strings(sorted(lidar_calibrations)))
    for keep in (RecordFilter("sample_token", split_tokens), None):
        pose_tokens = _lidar_pose_tokens(dataroot, version, lidar_index, split_index, len(split_tokens), keep)
        if pose_tokens is not None:
            break
    else:
        return None
    for keep in (RecordFilter("token", jsonscan.decode_strings(pose_tokens), id_key="token"), None):
        translation = _pose_translations(dataroot, version, pose_tokens, keep)
        if translation is not None:
            return translation
    return None


def _lidar_pose_tokens(
    dataroot: str | os.PathLike[str],
    version: str,
    lidar_index: StringIndex,
    split_index: StringIndex,
    n_samples: int,
    keep: RecordFilter | None,
) -> np.ndarray | None:
    """(S, L) the ego_pose token of each split sample's last key-frame lidar sample_data, or None."""
    fields = dict.fromkeys(("is_key_frame", "calibrated_sensor_token", "sample_token", "ego_pose_token"), 0)
    records = _scan_table(dataroot, version, "sample_data", fields, keep)
    if records is None or len(records) + len(records.skipped) == 0:
        return None
    if not records.all_kinds_in("is_key_frame", jsonscan.TRUE, jsonscan.FALSE):
        return None
    key_frame_kind = records.kind[:, records.column("is_key_frame")]
    calibration = records.strings("calibrated_sensor_token")
    sample = records.strings("sample_token")
    if calibration is None or sample is None:
        return None
    is_lidar = lidar_index.lookup(calibration) >= 0
    position = split_index.lookup(sample)
    chosen = np.flatnonzero((key_frame_kind == jsonscan.TRUE) & is_lidar & (position >= 0))
    pose_column = records.column("ego_pose_token")
    if not np.all(records.kind[chosen, pose_column] == STRING) or np.any(records.string_flags[chosen, pose_column]):
        return None
    # Later rows overwrite earlier ones (the devkit keeps the last key frame per sample).
    last_row_of_sample = np.full(n_samples, -1, np.int64)
    last_row_of_sample[position[chosen]] = chosen  # fancy assignment: the last write wins
    if np.any(last_row_of_sample < 0):
        return None
    return records.strings_at("ego_pose_token", last_row_of_sample)


def _pose_translations(
    dataroot: str | os.PathLike[str], version: str, pose_tokens: np.ndarray, keep: RecordFilter | None
) -> np.ndarray | None:
    """(S, 3) the translation of each ego pose of `pose_tokens` (S, L), or None."""
    poses = _scan_table(dataroot, version, "ego_pose", {"token": 0, "translation": 3}, keep)
    if poses is None:
        return None
    pose_token = poses.strings("token")
    pose_translation = poses.floats("translation", 3)
    if pose_token is None or pose_translation is None:
        return None
    pose_index = StringIndex(pose_token)
    if not (pose_index.unique and poses.ids_distinct("token")):
        return None
    rows = pose_index.lookup(pose_tokens)
    if np.any(rows < 0):
        return None
    return pose_translation[rows]


def _start_annotations(
    dataroot: str | os.PathLike[str],
    version: str,
    split_index: StringIndex,
    sample_index: StringIndex,
    sample_index_matrix: np.ndarray,
    timestamps_s: np.ndarray,
    split_tokens: list[str],
    pool: Executor,
) -> Callable[[], tuple[EvalBoxSet, BikeRacks] | None]:
    """Read the small tables, start the sample_annotation scan on `pool`; the call returned waits
    for it and gives what `data._annotations` gives, or None. Raises `InputError` as the reference
    path's reading of the small tables does."""
    categories = read_table(dataroot, version, "category")
    attributes = read_table(dataroot, version, "attribute")
    try:
        category_tokens = [c["token"] for c in categories]
        category_names = [c["name"] for c in categories]
        attribute_tokens = [a["token"] for a in attributes]
        attribute_names = [a["name"] for a in attributes]
    except (KeyError, TypeError):
        return lambda: None
    if not all(type(t) is str and "\x00" not in t for t in (*category_tokens, *category_names, *attribute_tokens, *attribute_names)):
        return lambda: None
    category_index = StringIndex(encode_strings(category_tokens))
    attribute_index = StringIndex(encode_strings(attribute_tokens))
    if not (category_index.unique and attribute_index.unique):
        return lambda: None
    class_of_category = np.array([CLASS_INDEX.get(CATEGORY_TO_CLASS.get(name, ""), -1) for name in category_names], np.int64)
    rack_category = np.array([name == BIKE_RACK_CATEGORY for name in category_names], bool)
    attribute_of_token = np.array([ATTRIBUTE_INDEX.get(name, -2) for name in attribute_names], np.int64)

    instances = _scan_table(dataroot, version, "instance", {"token": 0, "category_token": 0})
    if instances is None:
        return lambda: None
    instance_token, instance_category = instances.strings("token"), instances.strings("category_token")
    if instance_token is None or instance_category is None:
        return lambda: None
    instance_index = StringIndex(instance_token)
    if not instance_index.unique:
        return lambda: None
    labels = _Labels(
        instance_index=instance_index,
        instance_category=instance_category,
        category_index=category_index,
        class_of_category=class_of_category,
        rack_category=rack_category,
        attribute_index=attribute_index,
        attribute_of_token=attribute_of_token,
    )
    data = _read_table(dataroot, version, "sample_annotation")
    if data is None:
        return lambda: None
    parts = jsonscan.scan_workers() * _PIECES_PER_WORKER
    # The split's records first (see `_lidar_ego_translations`), else the whole table.
    filtered = jsonscan.start_table_scan(data, ANNOTATION_FIELDS, RecordFilter("sample_token", split_tokens, id_key="token"), pool, parts)

    def finish() -> tuple[EvalBoxSet, BikeRacks] | None:
        for scan in (filtered.result, lambda: jsonscan.start_table_scan(data, ANNOTATION_FIELDS, None, pool, parts).result()):
            records = scan()
            if records is None:
                continue
            boxes = _annotation_boxes(records, labels, split_index, sample_index, sample_index_matrix, timestamps_s, split_tokens)
            if boxes is not None:
                return boxes
        return None

    return finish


@dataclass(frozen=True, slots=True)
class _Labels:
    """The joins from an annotation's instance token to its detection class (-1: none) and bike-rack
    flag, and from its attribute token to its attribute (-2: not a nuScenes one)."""

    instance_index: StringIndex
    instance_category: np.ndarray  # (I, L) category token of each instance row
    category_index: StringIndex
    class_of_category: np.ndarray  # (C,) int64
    rack_category: np.ndarray  # (C,) bool
    attribute_index: StringIndex
    attribute_of_token: np.ndarray  # (A,) int64


def _annotation_boxes(
    records: jsonscan.ScannedRecords,
    labels: _Labels,
    split_index: StringIndex,
    sample_index: StringIndex,
    sample_index_matrix: np.ndarray,
    timestamps_s: np.ndarray,
    split_tokens: list[str],
) -> tuple[EvalBoxSet, BikeRacks] | None:
    """The boxes and bike racks of the split from the scanned sample_annotation table, or None."""
    token = records.strings("token")
    sample = records.strings("sample_token")
    instance = records.strings("instance_token")
    prev_token, next_token = records.strings("prev"), records.strings("next")
    translation_all = records.floats("translation", 3)
    size_all = records.floats("size", 3)
    rotation_all = records.floats("rotation", 4)
    if any(a is None for a in (token, sample, instance, prev_token, next_token, translation_all, size_all, rotation_all)):
        return None
    annotation_index = StringIndex(token)
    if not (annotation_index.unique and records.ids_distinct("token")):
        return None
    # One look-up of every annotation's sample; its split position follows from the sample row.
    sample_row = sample_index.lookup(sample)
    split_position_of_sample_row = split_index.lookup(sample_index_matrix)
    position = np.where(sample_row >= 0, split_position_of_sample_row[sample_row], -1)
    in_split = np.flatnonzero(position >= 0)
    instance_row = labels.instance_index.lookup(instance[in_split])
    if np.any(instance_row < 0):
        return None
    category_row = labels.category_index.lookup(labels.instance_category[instance_row])
    if np.any(category_row < 0):
        return None
    label_in_split = labels.class_of_category[category_row]
    kept = in_split[label_in_split >= 0]
    label = label_in_split[label_in_split >= 0]
    racks = in_split[labels.rack_category[category_row]]

    # At most one attribute, a known one.
    attribute_column = records.column("attribute_tokens")
    if not np.all(records.kind[kept, attribute_column] == ARRAY):
        return None
    count = records.element_count[kept, attribute_column]
    if np.any(count > 1) or np.any((count == 1) & (records.element_kinds[kept, attribute_column] != 1 << STRING)):
        return None
    if np.any(records.string_flags[kept[count == 1], attribute_column]):
        return None
    attribute = np.full(len(kept), -1, np.int64)
    with_attribute = np.flatnonzero(count == 1)
    if with_attribute.size:
        first = records.strings_at("attribute_tokens", kept[with_attribute])
        attribute_row = labels.attribute_index.lookup(first)
        if np.any(attribute_row < 0):
            return None
        attribute[with_attribute] = labels.attribute_of_token[attribute_row]
        if np.any(attribute < -1):
            return None

    lidar_pts = records.integers("num_lidar_pts", kept)
    radar_pts = records.integers("num_radar_pts", kept)
    if lidar_pts is None or radar_pts is None:
        return None

    # Group by sample in split order; a stable sort keeps the table order within a sample.
    sample_position = position[kept]
    order = np.argsort(sample_position, kind="stable")
    rows = kept[order]
    velocity = _velocities(rows, prev_token, next_token, annotation_index, sample_row, timestamps_s, translation_all)
    if velocity is None:
        return None
    boxes = EvalBoxSet(
        sample_tokens=tuple(split_tokens),
        sample_index=sample_position[order],
        translation=np.take(translation_all, rows, axis=0),  # np.take: faster than a[rows] on (N, k)
        size_wlh=np.take(size_all, rows, axis=0),
        rotation_wxyz=np.take(rotation_all, rows, axis=0),
        velocity_xy=velocity,
        label=label[order],
        score=np.full(len(rows), -1.0),
        attribute=attribute[order],
        num_pts=(lidar_pts + radar_pts)[order],
    )
    bike_racks = BikeRacks(
        sample_index=position[racks],
        translation=np.take(translation_all, racks, axis=0),
        size_wlh=np.take(size_all, racks, axis=0),
        rotation_wxyz=np.take(rotation_all, racks, axis=0),
    )
    return boxes, bike_racks


def _velocities(
    rows: np.ndarray,
    prev_token: np.ndarray,
    next_token: np.ndarray,
    annotation_index: StringIndex,
    sample_row: np.ndarray,
    timestamps_s: np.ndarray,
    translation_all: np.ndarray,
) -> np.ndarray | None:
    """(N, 2) as `data._velocities` for the annotation rows `rows`, or None."""

    def neighbour(tokens: np.ndarray) -> np.ndarray | None:
        # Every row is looked up (`rows` are most of them), which spares gathering theirs first.
        # A scanned string never holds a NUL byte (control characters are refused), so the empty
        # ones are those whose first byte is the padding.
        found = annotation_index.lookup(tokens)[rows]
        empty = tokens[rows, 0] == 0
        if np.any((found < 0) & ~empty):
            return None
        return np.where(empty, rows, found)

    prev_rows, next_rows = neighbour(prev_token), neighbour(next_token)
    if prev_rows is None or next_rows is None:
        return None
    prev_sample = sample_row[prev_rows]
    next_sample = sample_row[next_rows]
    if np.any(prev_sample < 0) or np.any(next_sample < 0):
        return None
    return velocity_from_track(
        np.take(translation_all, prev_rows, axis=0),
        np.take(translation_all, next_rows, axis=0),
        timestamps_s[prev_sample],
        timestamps_s[next_sample],
        prev_rows != rows,
        next_rows != rows,
    )


# ----------------------------------------------------------------------------------------------
# Predictions


def results_columns_fast(
    data: bytes, split_sample_tokens: Sequence[str], max_boxes_per_sample: int
) -> tuple[EvalBoxSet, dict[str, Any]] | None:
    """(`submission.validate_results`' columns, the meta object) of a results file's bytes, or None."""
    return results_columns_from(jsonscan.scan_records(data, jsonscan.RESULTS, RESULT_FIELDS), split_sample_tokens, max_boxes_per_sample)


def start_results_scan(data: bytes, pool: Executor) -> jsonscan.PendingScan:
    """The scan of `results_columns_fast` started on `pool` in pieces (`jsonscan.start_results_scan`);
    its result goes to `results_columns_from`."""
    return jsonscan.start_results_scan(data, RESULT_FIELDS, pool, jsonscan.scan_workers() * _PIECES_PER_WORKER)


class PendingColumns:
    """`results_columns_fast` running on a pool (`start_results_columns`): the scan's pieces, then a
    task that waits for them and checks and converts the records (`results_columns_from`)."""

    def __init__(self, data: bytes, split_sample_tokens: Sequence[str], max_boxes_per_sample: int, pool: Executor) -> None:
        self._scan = start_results_scan(data, pool)
        # Queued after every piece: when a worker takes it, the pieces have all started, so its
        # wait cannot keep one from running.
        self._columns = pool.submit(
            lambda: results_columns_from(self._scan.result(), split_sample_tokens, max_boxes_per_sample)
        )

    def cancel(self) -> None:
        self._columns.cancel()
        self._scan.cancel()

    def result(self) -> tuple[EvalBoxSet, dict[str, Any]] | None:
        return self._columns.result()


def start_results_columns(
    data: bytes, split_sample_tokens: Sequence[str], max_boxes_per_sample: int, pool: Executor
) -> PendingColumns:
    """Start `results_columns_fast(data, split_sample_tokens, max_boxes_per_sample)` on `pool`."""
    return PendingColumns(data, tuple(split_sample_tokens), max_boxes_per_sample, pool)


def results_columns_from(
    records: jsonscan.ScannedRecords | None, split_sample_tokens: Sequence[str], max_boxes_per_sample: int
) -> tuple[EvalBoxSet, dict[str, Any]] | None:
    """`results_columns_fast` of the scan `records` (`RESULT_FIELDS`, RESULTS layout) of a results file."""
    if "\x00" in "".join(split_sample_tokens):
        return None  # tokens are compared as zero-padded bytes
    if records is None:
        return None
    data = records.data
    meta_start, meta_end = records.meta_range
    if meta_start < 0:
        return None
    try:
        meta = json.loads(data[meta_start:meta_end])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict):
        return None

    # Exactly the split's samples, once each, none with too many boxes.
    group_keys = records.group_keys()
    group_index = StringIndex(group_keys)
    if not group_index.unique or len(group_keys) != len(split_sample_tokens):
        return None
    if len(split_sample_tokens) and np.any(group_index.lookup(encode_strings(split_sample_tokens)) < 0):
        return None
    if np.any(records.group_size > max_boxes_per_sample):
        return None

    n = len(records)
    sample_token = records.strings("sample_token") if n else np.zeros((0, 1), np.uint8)
    if sample_token is None:
        return None
    width = max(sample_token.shape[1], group_keys.shape[1])
    own_group = np.take(_padded(group_keys, width), records.record_group, axis=0)
    if not np.array_equal(_padded(sample_token, width), own_group):
        return None
    numeric = {key: records.floats(key, w) for key, w in (("translation", 3), ("size", 3), ("rotation", 4), ("velocity", 2))}
    score = records.scalars("detection_score")
    names = records.strings("detection_name") if n else np.zeros((0, 1), np.uint8)
    attribute_names = records.strings("attribute_name") if n else np.zeros((0, 1), np.uint8)
    if any(v is None for v in numeric.values()) or score is None or names is None or attribute_names is None:
        return None
    label = StringIndex(encode_strings(DETECTION_CLASSES)).lookup(names)
    attribute = StringIndex(encode_strings(("", *ATTRIBUTES))).lookup(attribute_names) - 1

    num_pts = np.full(n, -1, np.int64)
    k = records.column("num_pts")
    present = np.flatnonzero(records.kind[:, k] != jsonscan.ABSENT)
    if present.size:
        values = records.integers("num_pts", present)
        if values is None:
            return None
        num_pts[present] = values
    k = records.column("ego_translation")
    present = np.flatnonzero(records.kind[:, k] != jsonscan.ABSENT)
    if present.size and not (
        np.all(records.kind[present, k] == ARRAY)
        and np.all(records.element_count[present, k] == 3)
        and np.all(records.element_kinds[present, k] == 1 << NUMBER)
        and np.isfinite(records.number_slots("ego_translation")[present]).all()
    ):
        return None
    # Unknown names are -1 (class) / -2 (attribute): the shared value checks reject them.
    if not columns_values_valid(numeric["translation"], numeric["size"], numeric["rotation"], numeric["velocity"], score, label, attribute):
        return None
    columns = EvalBoxSet(
        sample_tokens=tuple(jsonscan.decode_strings(group_keys)) if len(group_keys) else (),
        sample_index=records.record_group.astype(np.int64),
        translation=numeric["translation"],
        size_wlh=numeric["size"],
        rotation_wxyz=numeric["rotation"],
        velocity_xy=numeric["velocity"],
        label=label,
        score=score,
        attribute=attribute,
        num_pts=num_pts,
    )
    return columns, meta


def _padded(matrix: np.ndarray, width: int) -> np.ndarray:
    if matrix.shape[1] == width:
        return matrix
    out = np.zeros((matrix.shape[0], width), np.uint8)
    out[:, : matrix.shape[1]] = matrix
    return out
