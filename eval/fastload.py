"""The fast path of `data.load_ground_truth` and `data.load_predictions`: the big JSON files decoded by
msgspec into typed structs, then the same joins as the reference path in `data`, on whole columns.

Each function gives exactly what the reference path gives, or None whenever the input is not
plainly well-formed; the caller then runs the reference path, which names the problem. So nothing
here raises for bad input, and the two paths can be compared on any input.

msgspec checks while it decodes what the reference path checks field by field: that every field is
there, that strings are strings, integers integers (not booleans or floats), numbers numbers, and
vectors of the right length. It is stricter in places (a missing field the reference path never
reads, a number beyond the float range): such files take the reference path. Two things msgspec
leaves unchecked, this module checks: the UTF-8 of values it skips (fields not asked for), and the
results file's `meta` object, which is read by `json` as the reference path reads it.
Numbers are correctly rounded by both decoders, so the arrays are bit-identical.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np

from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.inputs import (
    BIKE_RACK_CATEGORY,
    LIDAR_CHANNEL,
    BikeRacks,
    GroundTruth,
    SplitSamples,
    velocity_from_track,
)
from avfusion.eval.submission import columns_values_valid
from avfusion.labels import ATTRIBUTE_INDEX, CATEGORY_TO_CLASS, CLASS_INDEX

Vector2 = tuple[float, float]
Vector3 = tuple[float, float, float]
Vector4 = tuple[float, float, float, float]

# The fields of each table that the metric reads; the decoder skips the others. `gc=False`: the
# structs hold no containers of their own objects, so they never form reference cycles.


class Sensor(msgspec.Struct, gc=False):
    token: str
    channel: str


class CalibratedSensor(msgspec.Struct, gc=False):
    token: str
    sensor_token: str


class SampleData(msgspec.Struct, gc=False):
    sample_token: str
    ego_pose_token: str
    calibrated_sensor_token: str
    is_key_frame: bool


class EgoPose(msgspec.Struct, gc=False):
    token: str
    translation: Vector3


class Category(msgspec.Struct, gc=False):
    token: str
    name: str


class Attribute(msgspec.Struct, gc=False):
    token: str
    name: str


class Instance(msgspec.Struct, gc=False):
    token: str
    category_token: str


class Annotation(msgspec.Struct, gc=False):
    """A `sample_annotation` record: centre (x, y, z) and size (w, l, h) in metres, global frame;
    rotation (w, x, y, z); prev/next the neighbouring annotations of its instance ("" at the ends)."""

    token: str
    sample_token: str
    instance_token: str
    attribute_tokens: list[str]
    translation: Vector3
    size: Vector3
    rotation: Vector4
    prev: str
    next: str
    num_lidar_pts: int
    num_radar_pts: int


class ResultBox(msgspec.Struct, gc=False):
    """One box of a results file (see `submission`); `num_pts` and `ego_translation` are optional."""

    sample_token: str
    translation: Vector3
    size: Vector3
    rotation: Vector4
    velocity: Vector2
    detection_name: str
    detection_score: float
    attribute_name: str
    num_pts: int | msgspec.UnsetType = msgspec.UNSET
    ego_translation: Vector3 | msgspec.UnsetType = msgspec.UNSET


class Results(msgspec.Struct, gc=False):
    """A results file; `meta` is kept as its raw bytes (read by `json`, as the reference path reads it)."""

    meta: msgspec.Raw
    results: dict[str, list[ResultBox]]


RecordT = TypeVar("RecordT")

_TABLE_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    record_type: msgspec.json.Decoder(list[record_type])
    for record_type in (Sensor, CalibratedSensor, SampleData, EgoPose, Category, Attribute, Instance, Annotation)
}
_RESULTS_DECODER = msgspec.json.Decoder(Results)


def decode_json(data: bytes, decoder: msgspec.json.Decoder[RecordT]) -> RecordT | None:
    """`data` decoded by `decoder`, or None when it is not a document that `json` reads the same way."""
    if not _is_utf8(data):
        return None
    try:
        return decoder.decode(data)
    except msgspec.DecodeError:  # malformed JSON, or a field of the wrong type (ValidationError)
        return None


def _is_utf8(data: bytes) -> bool:
    # msgspec checks the UTF-8 of the strings it decodes but not of those it skips, which `json`
    # refuses like any other bad byte. ASCII (the usual case) is checked a word at a time.
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_table(dataroot: str | os.PathLike[str], version: str, record_type: type[RecordT], name: str) -> list[RecordT] | None:
    """`<dataroot>/<version>/<name>.json` as a list of `record_type`, or None."""
    try:
        data = (Path(dataroot) / version / f"{name}.json").read_bytes()
    except OSError:
        return None
    return decode_json(data, _TABLE_DECODERS[record_type])


# ----------------------------------------------------------------------------------------------
# Ground truth


def ground_truth_fast(
    dataroot: str | os.PathLike[str], version: str, split: str, samples: SplitSamples
) -> GroundTruth | None:
    """`data._load_ground_truth`'s answer, or None (see the module docstring)."""
    seconds_of_sample = _seconds_of_sample(samples.timestamp_of_sample)
    if seconds_of_sample is None:
        return None
    ego_translation = _lidar_ego_translations(dataroot, version, samples)
    if ego_translation is None:
        return None
    boxes_and_racks = _annotations(dataroot, version, samples, seconds_of_sample)
    if boxes_and_racks is None:
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


def _seconds_of_sample(timestamp_of_sample: dict[str, int]) -> dict[str, float] | None:
    """Each sample's timestamp in seconds, as the reference path computes it (`1e-6 * float64`);
    None unless every timestamp is an integer (the reference path then decides)."""
    timestamps = list(timestamp_of_sample.values())
    if any(type(t) is not int for t in timestamps):
        return None
    try:
        seconds = 1e-6 * np.array(timestamps, np.float64)
    except OverflowError:
        return None
    return dict(zip(timestamp_of_sample, seconds.tolist()))


def _lidar_ego_translations(dataroot: str | os.PathLike[str], version: str, samples: SplitSamples) -> np.ndarray | None:
    """(S, 3) as `data._lidar_ego_translations`, or None."""
    sensors = read_table(dataroot, version, Sensor, "sensor")
    calibrated = read_table(dataroot, version, CalibratedSensor, "calibrated_sensor")
    sample_data = read_table(dataroot, version, SampleData, "sample_data")
    poses = read_table(dataroot, version, EgoPose, "ego_pose")
    if sensors is None or calibrated is None or sample_data is None or poses is None:
        return None
    channel_of_sensor = {s.token: s.channel for s in sensors}
    lidar_calibrations = {c.token for c in calibrated if channel_of_sensor.get(c.sensor_token) == LIDAR_CHANNEL}
    position_of_sample = samples.position_of_sample
    # The devkit keeps the last key-frame record per sample and channel, so later rows overwrite.
    pose_token_of_sample = {
        record.sample_token: record.ego_pose_token
        for record in sample_data
        if record.is_key_frame and record.calibrated_sensor_token in lidar_calibrations and record.sample_token in position_of_sample
    }
    if len(pose_token_of_sample) != len(position_of_sample):
        return None
    wanted_poses = set(pose_token_of_sample.values())
    translation_of_pose = {pose.token: pose.translation for pose in poses if pose.token in wanted_poses}
    try:
        rows = [translation_of_pose[pose_token_of_sample[token]] for token in samples.split_tokens]
    except KeyError:
        return None
    return np.array(rows, np.float64).reshape(len(rows), 3)


def _annotations(
    dataroot: str | os.PathLike[str], version: str, samples: SplitSamples, seconds_of_sample: dict[str, float]
) -> tuple[EvalBoxSet, BikeRacks] | None:
    """What `data._annotations` gives, or None."""
    categories = read_table(dataroot, version, Category, "category")
    attributes = read_table(dataroot, version, Attribute, "attribute")
    instances = read_table(dataroot, version, Instance, "instance")
    if categories is None or attributes is None or instances is None:
        return None
    annotations = read_table(dataroot, version, Annotation, "sample_annotation")
    if annotations is None:
        return None

    # Later records overwrite earlier ones with the same token, as in the reference path's dicts.
    name_of_category = {c.token: c.name for c in categories}
    # Per instance: its detection class (>= 0), _NO_CLASS, or _NO_CATEGORY when its category
    # token leads nowhere; instances of bike racks, apart.
    class_of_instance: dict[str, int] = {}
    rack_instances: set[str] = set()
    for instance in instances:
        name = name_of_category.get(instance.category_token)
        class_name = CATEGORY_TO_CLASS.get(name) if name is not None else None
        class_of_instance[instance.token] = (
            _NO_CATEGORY if name is None else CLASS_INDEX[class_name] if class_name is not None else _NO_CLASS
        )
        if name == BIKE_RACK_CATEGORY:
            rack_instances.add(instance.token)
        else:
            rack_instances.discard(instance.token)
    attribute_of_token = {a.token: ATTRIBUTE_INDEX.get(a.name, _NO_ATTRIBUTE) for a in attributes}

    position_of_sample = samples.position_of_sample
    in_split = [row for row, annotation in enumerate(annotations) if annotation.sample_token in position_of_sample]
    labels = np.fromiter(
        (class_of_instance.get(annotations[row].instance_token, _NO_INSTANCE) for row in in_split), np.int64, len(in_split)
    )
    if np.any(labels <= _NO_CATEGORY):  # a dangling instance or category token
        return None
    in_split_rows = np.array(in_split, np.int64)
    kept = in_split_rows[labels >= 0]
    rack_rows = [row for row in in_split if annotations[row].instance_token in rack_instances]

    attribute = _attribute_column(annotations, kept.tolist(), attribute_of_token)
    if attribute is None:
        return None
    sample_index = np.fromiter(
        (position_of_sample[annotations[row].sample_token] for row in kept.tolist()), np.int64, len(kept)
    )
    # Group by sample in split order; a stable sort keeps the table order within a sample.
    order = np.argsort(sample_index, kind="stable")
    rows = kept[order].tolist()
    translation = _vectors((annotations[row].translation for row in rows), len(rows), 3)
    try:
        num_pts = np.array([annotations[row].num_lidar_pts + annotations[row].num_radar_pts for row in rows], np.int64)
    except OverflowError:
        return None
    velocity = _velocities(annotations, rows, translation, seconds_of_sample)
    if velocity is None:
        return None
    boxes = EvalBoxSet(
        sample_tokens=tuple(samples.split_tokens),
        sample_index=sample_index[order],
        translation=translation,
        size_wlh=_vectors((annotations[row].size for row in rows), len(rows), 3),
        rotation_wxyz=_vectors((annotations[row].rotation for row in rows), len(rows), 4),
        velocity_xy=velocity,
        label=labels[labels >= 0][order],
        score=np.full(len(rows), -1.0),
        attribute=attribute[order],
        num_pts=num_pts.reshape(len(rows)),
    )
    bike_racks = BikeRacks(
        sample_index=np.array([position_of_sample[annotations[row].sample_token] for row in rack_rows], np.int64),
        translation=_vectors((annotations[row].translation for row in rack_rows), len(rack_rows), 3),
        size_wlh=_vectors((annotations[row].size for row in rack_rows), len(rack_rows), 3),
        rotation_wxyz=_vectors((annotations[row].rotation for row in rack_rows), len(rack_rows), 4),
    )
    return boxes, bike_racks


# Codes of the joins above (class indices are >= 0).
_NO_CLASS = -1
_NO_CATEGORY = -2
_NO_INSTANCE = -3
_NO_ATTRIBUTE = -2


def _attribute_column(annotations: list[Annotation], rows: list[int], attribute_of_token: dict[str, int]) -> np.ndarray | None:
    """(N,) int64 the attribute of each annotation at `rows` (-1: none), or None when one has more
    than one, or one that is not a known nuScenes attribute."""
    attribute = np.full(len(rows), -1, np.int64)
    for i, row in enumerate(rows):
        tokens = annotations[row].attribute_tokens
        if not tokens:
            continue
        if len(tokens) > 1:
            return None
        value = attribute_of_token.get(tokens[0], _NO_ATTRIBUTE)
        if value < 0:
            return None
        attribute[i] = value
    return attribute


def _vectors(values: Iterable[tuple[float, ...]], n: int, width: int) -> np.ndarray:
    """(n, width) float64 of n tuples of `width` floats (the decoder checked their lengths)."""
    return np.fromiter(chain.from_iterable(values), np.float64, n * width).reshape(n, width)


def _velocities(
    annotations: list[Annotation], rows: list[int], translation: np.ndarray, seconds_of_sample: dict[str, float]
) -> np.ndarray | None:
    """(N, 2) as `data._velocities` for the annotations at `rows` (centres `translation`), or None."""
    n = len(rows)
    if n == 0:
        return np.zeros((0, 2))
    row_of_annotation = {annotation.token: row for row, annotation in enumerate(annotations)}
    try:
        prev_rows = [row_of_annotation[annotations[row].prev] if annotations[row].prev else row for row in rows]
        next_rows = [row_of_annotation[annotations[row].next] if annotations[row].next else row for row in rows]
        first_s = np.fromiter((seconds_of_sample[annotations[row].sample_token] for row in prev_rows), np.float64, n)
        last_s = np.fromiter((seconds_of_sample[annotations[row].sample_token] for row in next_rows), np.float64, n)
    except KeyError:  # a dangling prev/next, or a neighbour in a sample the log does not have
        return None
    own = np.array(rows, np.int64)
    prev_array, next_array = np.array(prev_rows, np.int64), np.array(next_rows, np.int64)
    has_prev, has_next = prev_array != own, next_array != own
    return velocity_from_track(
        _neighbour_positions(annotations, prev_array, has_prev, translation),
        _neighbour_positions(annotations, next_array, has_next, translation),
        first_s,
        last_s,
        has_prev,
        has_next,
    )


def _neighbour_positions(
    annotations: list[Annotation], neighbour_rows: np.ndarray, is_other: np.ndarray, translation: np.ndarray
) -> np.ndarray:
    # The ends of a track are often the annotation itself: reuse its already-read centre.
    out = translation.copy()
    other = np.flatnonzero(is_other)
    out[other] = _vectors((annotations[row].translation for row in neighbour_rows[other].tolist()), len(other), 3)
    return out


# ----------------------------------------------------------------------------------------------
# Predictions


def results_columns_fast(
    data: bytes, split_sample_tokens: Sequence[str], max_boxes_per_sample: int
) -> tuple[EvalBoxSet, dict[str, Any]] | None:
    """(`submission.validate_results`' columns, the meta object) of a results file's bytes, or None."""
    decoded = decode_json(data, _RESULTS_DECODER)
    if decoded is None:
        return None
    try:
        meta = json.loads(bytes(decoded.meta))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    results = decoded.results
    # Exactly the split's samples, none with too many boxes.
    if results.keys() != set(split_sample_tokens):
        return None
    counts = [len(boxes) for boxes in results.values()]
    if counts and max(counts) > max_boxes_per_sample:
        return None
    tokens = tuple(results)
    boxes = list(chain.from_iterable(results.values()))
    n = len(boxes)
    sample_index = np.repeat(np.arange(len(tokens), dtype=np.int64), counts)
    if [box.sample_token for box in boxes] != [tokens[i] for i in sample_index.tolist()]:
        return None

    translation = _vectors((box.translation for box in boxes), n, 3)
    size_wlh = _vectors((box.size for box in boxes), n, 3)
    rotation_wxyz = _vectors((box.rotation for box in boxes), n, 4)
    velocity_xy = _vectors((box.velocity for box in boxes), n, 2)
    score = np.fromiter((box.detection_score for box in boxes), np.float64, n)
    label = np.fromiter((CLASS_INDEX.get(box.detection_name, -1) for box in boxes), np.int64, n)
    attribute_index = {"": -1, **ATTRIBUTE_INDEX}
    attribute = np.fromiter((attribute_index.get(box.attribute_name, -2) for box in boxes), np.int64, n)
    try:
        num_pts = np.array([-1 if box.num_pts is msgspec.UNSET else box.num_pts for box in boxes], np.int64).reshape(n)
    except OverflowError:
        return None
    ego_translations = [box.ego_translation for box in boxes if box.ego_translation is not msgspec.UNSET]
    if ego_translations and not np.isfinite(np.array(ego_translations, np.float64)).all():
        return None
    # Unknown names are -1 (class) / -2 (attribute): the shared value checks reject them.
    if not columns_values_valid(translation, size_wlh, rotation_wxyz, velocity_xy, score, label, attribute):
        return None
    columns = EvalBoxSet(
        sample_tokens=tokens,
        sample_index=sample_index,
        translation=translation,
        size_wlh=size_wlh,
        rotation_wxyz=rotation_wxyz,
        velocity_xy=velocity_xy,
        label=label,
        score=score,
        attribute=attribute,
        num_pts=num_pts,
    )
    return columns, meta
