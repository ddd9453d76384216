"""The fast path of `data.load_ground_truth` and `data.load_predictions`: the big JSON files decoded by
msgspec into typed structs, then the same joins as the reference path in `data`, on whole columns.

Each function gives exactly what the reference path gives, or None whenever the input is not
plainly well-formed; the caller then runs the reference path, which names the problem. So nothing
here raises for bad input, and the two paths can be compared on any input.

msgspec checks while it decodes what the reference path checks field by field: that every field is
there, that strings are strings, integers integers (not booleans or floats), numbers numbers, and
vectors of the right length (an annotation's vectors are checked where the reference path reads
them: for the split's records and their neighbours). It is stricter in places (a missing field the
reference path never reads, a number beyond the float range): such files take the reference path.
Two things msgspec leaves unchecked, this module checks: the UTF-8 of values it skips (fields not
asked for), and the results file's `meta` object, which is read by `json` as the reference path
reads it. Numbers are correctly rounded by both decoders, so the arrays are bit-identical.

The tables are mapped into memory rather than read (`_mapped`): the decoder reads the page cache,
and nothing copies the file. Finding the split's annotations (`annotation_split_rows`) needs every
record's sample; it can run in a helper process while the caller decodes the records' texts.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import operator
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import add, attrgetter, itemgetter
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


class AnnotationKey(msgspec.Struct, gc=False):
    """What the metric reads of every `sample_annotation` record: its token (prev/next refer to it)
    and its sample (whether the split has it)."""

    token: str
    sample_token: str


class Annotation(msgspec.Struct, gc=False):
    """A `sample_annotation` record, read for the split's records only: centre (x, y, z)
    and size (w, l, h) in metres, global frame; rotation (w, x, y, z); prev/next the neighbouring
    annotations of its instance ("" at the ends)."""

    token: str
    instance_token: str
    attribute_tokens: list[str]
    translation: Vector3
    size: Vector3
    rotation: Vector4
    prev: str
    next: str
    num_lidar_pts: int
    num_radar_pts: int


class AnnotationCentre(msgspec.Struct, gc=False):
    """The centre of a `sample_annotation` record, read for the neighbours outside the split."""

    translation: Vector3


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
Buffer = bytes | mmap.mmap  # what the decoders read

# Decoders made once: each compiles its type's schema.
_TABLE_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    Sensor: msgspec.json.Decoder(list[Sensor]),
    CalibratedSensor: msgspec.json.Decoder(list[CalibratedSensor]),
    SampleData: msgspec.json.Decoder(list[SampleData]),
    EgoPose: msgspec.json.Decoder(list[EgoPose]),
    Category: msgspec.json.Decoder(list[Category]),
    Attribute: msgspec.json.Decoder(list[Attribute]),
    Instance: msgspec.json.Decoder(list[Instance]),
    AnnotationKey: msgspec.json.Decoder(list[AnnotationKey]),
    msgspec.Raw: msgspec.json.Decoder(list[msgspec.Raw]),
}
_RECORD_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    Annotation: msgspec.json.Decoder(Annotation),
    AnnotationCentre: msgspec.json.Decoder(AnnotationCentre),
}
_RESULTS_DECODER = msgspec.json.Decoder(Results)
_ATTRIBUTE_OF_NAME = {"": -1, **ATTRIBUTE_INDEX}  # a results file's attribute_name -> index (-1: none)


def decode_json(data: Buffer, decoder: msgspec.json.Decoder[RecordT]) -> RecordT | None:
    """`data` decoded by `decoder`, or None when it is not a document that `json` reads the same way."""
    return _decode(data, decoder) if _is_utf8(data) else None


def _decode(data: Buffer, decoder: msgspec.json.Decoder[RecordT]) -> RecordT | None:
    """`decode_json` of data already known to be UTF-8."""
    try:
        return decoder.decode(data)
    except msgspec.DecodeError:  # malformed JSON, or a field of the wrong type (ValidationError)
        return None


def _is_utf8(data: Buffer) -> bool:
    # msgspec checks the UTF-8 of the strings it decodes but not of those it skips, which `json`
    # refuses like any other bad byte. ASCII (the usual case) is checked a word at a time.
    if isinstance(data, bytes):
        if data.isascii():
            return True
    else:
        codes = np.frombuffer(data, np.uint8)
        ascii_only = int(codes.max(initial=0)) < 0x80
        del codes  # the mapping cannot close while an array looks at it
        if ascii_only:
            return True
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_table(
    dataroot: str | os.PathLike[str], version: str, record_type: type[RecordT], name: str
) -> list[RecordT] | None:
    """`<dataroot>/<version>/<name>.json` as a list of `record_type`, or None."""
    with _mapped(dataroot, version, name) as data:
        return None if data is None else decode_json(data, _TABLE_DECODERS[record_type])


@contextlib.contextmanager
def _mapped(dataroot: str | os.PathLike[str], version: str, name: str) -> Iterator[Buffer | None]:
    """`<dataroot>/<version>/<name>.json` mapped into memory read-only (the bytes of an empty or
    unmappable file), or None when it cannot be read. A mapping saves copying the file: the decoder
    reads the page cache itself. Whatever still looks into the mapping (a `msgspec.Raw`) must be
    gone when the block ends; otherwise the mapping is left for the garbage collector to close."""
    try:
        file = (Path(dataroot) / version / f"{name}.json").open("rb")
    except OSError:
        yield None
        return
    with file:
        try:
            view = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
            try:
                data = file.read()
            except OSError:
                yield None
                return
            yield data
            return
        try:
            yield view
        finally:
            with contextlib.suppress(BufferError):
                view.close()


def records_at(texts: list[msgspec.Raw], rows: Iterable[int], record_type: type[RecordT]) -> list[RecordT] | None:
    """The records at `rows` of a table read as `list[msgspec.Raw]` (`texts`, UTF-8 checked),
    decoded as `record_type`, or None. One record a call: joining them into one document first
    would copy a large part of the table for nothing."""
    decode = _RECORD_DECODERS[record_type].decode
    try:
        return list(map(decode, map(texts.__getitem__, rows)))
    except msgspec.DecodeError:
        return None


def _field(records: Sequence[msgspec.Struct], name: str) -> list[Any]:
    """The field `name` of every record, in order (one loop in C)."""
    return list(map(attrgetter(name), records))


def vector_columns(
    records: Sequence[msgspec.Struct], fields: tuple[str, ...], widths: tuple[int, ...]
) -> list[np.ndarray]:
    """The vector `fields` of `records` (each holding the given number of floats: its type says so)
    as one (N, width) float64 array each, read in one pass over the records."""
    n, total = len(records), sum(widths)
    get = attrgetter(*fields)
    rows = map(get, records) if len(fields) > 1 else zip(map(get, records))  # one tuple of vectors a record
    table = np.fromiter(chain.from_iterable(chain.from_iterable(rows)), np.float64, n * total).reshape(n, total)
    ends = np.cumsum(widths)
    return [np.ascontiguousarray(table[:, end - width : end]) for end, width in zip(ends, widths, strict=True)]


# ----------------------------------------------------------------------------------------------
# Ground truth


# Codes of the joins (class and attribute indices are >= 0).
_NO_CLASS = -1
_NO_CATEGORY = -2
_NO_INSTANCE = -3
_NO_ATTRIBUTE = -2


def ground_truth_fast(
    dataroot: str | os.PathLike[str],
    version: str,
    split: str,
    samples: SplitSamples,
    split_rows: Callable[[], SplitRows | None] | None = None,
    ego_translation: Callable[[], np.ndarray | None] | None = None,
) -> GroundTruth | None:
    """`data._load_ground_truth`'s answer, or None (see the module docstring).

    `split_rows` and `ego_translation`, when given, wait for `annotation_split_rows` and
    `lidar_ego_translations` computed elsewhere (a helper process, while this one reads the
    annotations); None from them means "do it here"."""
    seconds_of_sample = _seconds_of_sample(samples.timestamp_of_sample)
    if seconds_of_sample is None:
        return None
    boxes_and_racks = _annotations(dataroot, version, samples, seconds_of_sample, split_rows)
    if boxes_and_racks is None:
        return None
    translations = ego_translation() if ego_translation is not None else None
    if translations is None:
        translations = lidar_ego_translations(dataroot, version, samples)
    if translations is None:
        return None
    boxes, bike_racks = boxes_and_racks
    return GroundTruth(
        dataroot=str(dataroot),
        version=version,
        split=split,
        predefined_split=samples.predefined,
        boxes=boxes,
        ego_translation=translations,
        bike_racks=bike_racks,
    )


def _seconds_of_sample(timestamp_of_sample: dict[str, int]) -> dict[str, float] | None:
    """Each sample's timestamp in seconds, as the reference path computes it (`1e-6 * float64`);
    None unless every timestamp is a number (integer microseconds as in nuScenes, or a float as in
    Lyft's logs); the reference path then decides."""
    timestamps = list(timestamp_of_sample.values())
    if not {type(t) for t in timestamps} <= {int, float}:
        return None
    try:
        seconds = 1e-6 * np.array(timestamps, np.float64)
    except OverflowError:
        return None
    return dict(zip(timestamp_of_sample, seconds.tolist(), strict=True))


def lidar_ego_translations(dataroot: str | os.PathLike[str], version: str, samples: SplitSamples) -> np.ndarray | None:
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
        if record.is_key_frame
        and record.calibrated_sensor_token in lidar_calibrations
        and record.sample_token in position_of_sample
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


@dataclass(frozen=True, slots=True)
class SplitRows:
    """Where the split's records sit in `sample_annotation.json`, found from every record's sample
    (`AnnotationKey`).

    table_rows: how many records the table has; rows: (M,) int64 the table rows of the split's
    records, grouped by sample in split order (table order within a sample); position: (M,) int64
    the position in the split of each one's sample; tokens_unique: whether the table lists no token twice (checked only in `annotation_split_rows`),
    so that each of the split's records is the one its token names."""

    table_rows: int
    rows: np.ndarray
    position: np.ndarray
    tokens_unique: bool


def annotation_split_rows(
    dataroot: str | os.PathLike[str], version: str, position_of_sample: Mapping[str, int]
) -> SplitRows | None:
    """The `SplitRows` of a dataroot's `sample_annotation.json` (made by a helper process while the
    caller decodes the records), or None when the table cannot be read plainly.

    The caller checks the file's UTF-8 and its length (it reads the file too)."""
    with _mapped(dataroot, version, "sample_annotation") as data:
        keys = None if data is None else _decode(data, _TABLE_DECODERS[AnnotationKey])
    if keys is None:
        return None
    return _split_rows(keys, position_of_sample, check_unique=True)


def _split_rows(keys: list[AnnotationKey], position_of_sample: Mapping[str, int], check_unique: bool) -> SplitRows:
    sample_tokens = _field(keys, "sample_token")
    position = np.fromiter(map(position_of_sample.get, sample_tokens, repeat(-1)), np.int64, len(sample_tokens))
    rows = np.flatnonzero(position >= 0)
    rows = rows[np.argsort(position[rows], kind="stable")]  # a stable sort keeps the table order
    unique = check_unique and len(set(_field(keys, "token"))) == len(keys)
    return SplitRows(len(keys), rows, position[rows], unique)


def _annotations(
    dataroot: str | os.PathLike[str],
    version: str,
    samples: SplitSamples,
    seconds_of_sample: dict[str, float],
    split_rows: Callable[[], SplitRows | None] | None = None,
) -> tuple[EvalBoxSet, BikeRacks] | None:
    """What `data._annotations` gives, or None.

    The table is read as every record's text (`msgspec.Raw`) and as every record's token and sample
    (`AnnotationKey`; or `split_rows` waits for the split's rows found from them in a helper
    process); then the split's records alone are decoded in full (a split is often a small part of a
    log, and numbers are most of the decoding's work). Each column is one pass of `map` (a loop in
    C) over the records."""
    categories = read_table(dataroot, version, Category, "category")
    attributes = read_table(dataroot, version, Attribute, "attribute")
    instances = read_table(dataroot, version, Instance, "instance")
    if categories is None or attributes is None or instances is None:
        return None
    labels_of = _InstanceLabels(categories, instances)
    attribute_of_token = {a.token: ATTRIBUTE_INDEX.get(a.name, _NO_ATTRIBUTE) for a in attributes}
    with _mapped(dataroot, version, "sample_annotation") as data:
        if data is None or not _is_utf8(data):
            return None
        return _annotations_in(data, labels_of, attribute_of_token, samples, seconds_of_sample, split_rows)


def _annotations_in(
    data: Buffer,
    labels_of: _InstanceLabels,
    attribute_of_token: dict[str, int],
    samples: SplitSamples,
    seconds_of_sample: dict[str, float],
    split_rows: Callable[[], SplitRows | None] | None,
) -> tuple[EvalBoxSet, BikeRacks] | None:
    """`_annotations` of the table's bytes `data` (the records' texts look into it: they are gone
    when this returns)."""
    texts = _decode(data, _TABLE_DECODERS[msgspec.Raw])
    if texts is None:
        return None
    split = split_rows() if split_rows is not None else None
    keys: list[AnnotationKey] | None = None
    if split is None or split.table_rows != len(texts):  # none, or of a file changed since
        keys = _decode(data, _TABLE_DECODERS[AnnotationKey])
        if keys is None:
            return None
        split = _split_rows(keys, samples.position_of_sample, check_unique=False)
    rows, position = split.rows, split.position

    records = records_at(texts, rows.tolist(), Annotation)
    if records is None:
        return None
    instance_tokens = _field(records, "instance_token")
    label = np.fromiter(
        map(labels_of.class_of_instance.get, instance_tokens, repeat(_NO_INSTANCE)), np.int64, len(records)
    )
    if np.any(label <= _NO_CATEGORY):  # a dangling instance or category token
        return None
    translation_all, size_all, rotation_all = vector_columns(records, ("translation", "size", "rotation"), (3, 3, 4))

    kept = np.flatnonzero(label >= 0)  # indices into `records` (and the split's rows)
    kept_records = list(map(records.__getitem__, kept.tolist()))
    n = len(kept_records)
    attribute = _attribute_column(_field(kept_records, "attribute_tokens"), attribute_of_token)
    if attribute is None:
        return None
    try:
        num_pts = np.fromiter(
            map(add, _field(kept_records, "num_lidar_pts"), _field(kept_records, "num_radar_pts")), np.int64, n
        )
    except OverflowError:
        return None
    split_seconds = np.fromiter(map(seconds_of_sample.__getitem__, samples.split_tokens), np.float64)
    prev_tokens, next_tokens = _field(kept_records, "prev"), _field(kept_records, "next")
    velocity: np.ndarray | None = None
    if split.tokens_unique:  # the neighbours are nearly always the split's records
        own_rows = dict(zip(_field(records, "token"), rows.tolist(), strict=True))
        table = _AnnotationTable(texts, rows, position, own_rows, None, translation_all, split_seconds)
        with contextlib.suppress(_OutsideTheSplit):
            velocity = _velocities(table, kept, prev_tokens, next_tokens, seconds_of_sample)
    if velocity is None:  # look in every record: a neighbour outside the split, or not in the table
        keys = _decode(data, _TABLE_DECODERS[AnnotationKey]) if keys is None else keys
        if keys is None:
            return None
        row_of_token = _rows_of_tokens(_field(keys, "token"), {*prev_tokens, *next_tokens} - {""})
        table = _AnnotationTable(
            texts, rows, position, row_of_token, _field(keys, "sample_token"), translation_all, split_seconds
        )
        velocity = _velocities(table, kept, prev_tokens, next_tokens, seconds_of_sample)
    if velocity is None:
        return None
    boxes = EvalBoxSet(
        sample_tokens=tuple(samples.split_tokens),
        sample_index=position[kept],
        translation=translation_all[kept],
        size_wlh=size_all[kept],
        rotation_wxyz=rotation_all[kept],
        velocity_xy=velocity,
        label=label[kept],
        score=np.full(n, -1.0),
        attribute=attribute,
        num_pts=num_pts,
    )
    racks = np.flatnonzero(np.fromiter(map(labels_of.rack_instances.__contains__, instance_tokens), bool, len(records)))
    racks = racks[np.argsort(rows[racks], kind="stable")]  # table order
    bike_racks = BikeRacks(
        sample_index=position[racks],
        translation=translation_all[racks],
        size_wlh=size_all[racks],
        rotation_wxyz=rotation_all[racks],
    )
    return boxes, bike_racks


class _InstanceLabels:
    """Per instance token: its detection class index, `_NO_CLASS`, or `_NO_CATEGORY` when its
    category token leads nowhere; and the instances of bike racks. A token listed twice takes its
    last record, as in the reference path's dicts."""

    def __init__(self, categories: list[Category], instances: list[Instance]) -> None:
        name_of_category = {c.token: c.name for c in categories}
        self.class_of_instance: dict[str, int] = {}
        self.rack_instances: set[str] = set()
        for instance in instances:
            name = name_of_category.get(instance.category_token)
            class_name = CATEGORY_TO_CLASS.get(name) if name is not None else None
            if name is None:
                self.class_of_instance[instance.token] = _NO_CATEGORY
            else:
                self.class_of_instance[instance.token] = (
                    CLASS_INDEX[class_name] if class_name is not None else _NO_CLASS
                )
            if name == BIKE_RACK_CATEGORY:
                self.rack_instances.add(instance.token)
            else:
                self.rack_instances.discard(instance.token)


def _attribute_column(token_lists: list[list[str]], attribute_of_token: dict[str, int]) -> np.ndarray | None:
    """(N,) int64 the attribute of each list of attribute tokens (-1: none), or None when one has
    more than one, or one that is not a known nuScenes attribute."""
    count = np.fromiter(map(len, token_lists), np.int64, len(token_lists))
    if np.any(count > 1):
        return None
    attribute = np.full(len(token_lists), -1, np.int64)
    with_one = np.flatnonzero(count == 1)
    first_tokens = map(itemgetter(0), map(token_lists.__getitem__, with_one.tolist()))
    values = np.fromiter(map(attribute_of_token.get, first_tokens, repeat(_NO_ATTRIBUTE)), np.int64, len(with_one))
    if np.any(values < 0):
        return None
    attribute[with_one] = values
    return attribute


@dataclass(frozen=True, slots=True)
class _AnnotationTable:
    """The `sample_annotation` table as `_annotations` read it.

    texts: every record's JSON text; rows, position: the split's records (`SplitRows`);
    row_of_token: the table row of each token that a prev/next of the split's records may name,
    either of every such token (`sample_tokens`, every record's sample token, given) or of the
    split's records only (`sample_tokens` None); translation: (M, 3) the centres of the split's records, in `rows` order;
    split_seconds: (S,) float64 the time of each sample of the split."""

    texts: list[msgspec.Raw]
    rows: np.ndarray
    position: np.ndarray
    row_of_token: Mapping[str, int]
    sample_tokens: list[str] | None
    translation: np.ndarray
    split_seconds: np.ndarray


class _OutsideTheSplit(Exception):
    """A neighbour is not one of the split's records, whose rows are all that `row_of_token` holds."""


def _velocities(
    table: _AnnotationTable,
    kept: np.ndarray,
    prev_tokens: list[str],
    next_tokens: list[str],
    seconds_of_sample: dict[str, float],
) -> np.ndarray | None:
    """(N, 2) as `data._velocities` for the split's records at `kept` of `table.rows`, whose
    neighbours are `prev_tokens` and `next_tokens`, or None.

    A track's neighbours are nearly always in the split too (a track stays in its scene), so their
    centres and times are taken from the split's columns; only the others are decoded here."""
    n = len(kept)
    if n == 0:
        return np.zeros((0, 2))
    rows = table.rows[kept]
    index_in_split = np.full(len(table.texts), -1, np.int64)
    index_in_split[table.rows] = np.arange(len(table.rows))
    neighbours = []
    for neighbour_tokens in (prev_tokens, next_tokens):
        found = np.fromiter(map(table.row_of_token.get, neighbour_tokens, repeat(-1)), np.int64, n)
        none = np.fromiter(map(operator.not_, neighbour_tokens), bool, n)  # "" at the ends of a track
        if np.any((found < 0) & ~none):
            if table.sample_tokens is None:
                raise _OutsideTheSplit
            return None  # a dangling prev/next
        neighbour_rows = np.where(none, rows, found)
        at = index_in_split[neighbour_rows]
        inside = at >= 0
        positions = table.translation[np.where(inside, at, 0)]
        seconds = table.split_seconds[table.position[np.where(inside, at, 0)]]
        outside_rows = neighbour_rows[~inside].tolist()
        if outside_rows:
            # Only a table of every record's tokens (with their samples) finds rows outside the split.
            assert table.sample_tokens is not None
            centres = records_at(table.texts, outside_rows, AnnotationCentre)
            if centres is None:
                return None
            (positions[~inside],) = vector_columns(centres, ("translation",), (3,))
            try:
                seconds[~inside] = list(
                    map(seconds_of_sample.__getitem__, map(table.sample_tokens.__getitem__, outside_rows))
                )
            except KeyError:  # a neighbour in a sample the log does not have
                return None
        neighbours.append((positions, seconds, neighbour_rows != rows))
    (first_pos, first_s, has_prev), (last_pos, last_s, has_next) = neighbours
    return velocity_from_track(first_pos, last_pos, first_s, last_s, has_prev, has_next)


def _rows_of_tokens(tokens: list[str], wanted: set[str]) -> dict[str, int]:
    """The table row of each of the `wanted` tokens that the table has. A token listed twice takes
    its last row, as in the reference path's dict of every token."""
    rows = np.flatnonzero(np.fromiter(map(wanted.__contains__, tokens), bool, len(tokens))).tolist()
    return dict(zip(map(tokens.__getitem__, rows), rows, strict=True))


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
    counts = list(map(len, results.values()))
    if counts and max(counts) > max_boxes_per_sample:
        return None
    tokens = tuple(results)
    boxes = list(chain.from_iterable(results.values()))
    n = len(boxes)
    # Each box names the sample it is listed under.
    if _field(boxes, "sample_token") != list(chain.from_iterable(map(repeat, tokens, counts))):
        return None
    num_pts_given, ego_given = _field(boxes, "num_pts"), _field(boxes, "ego_translation")
    # A JSON decoder keeps only the last copy of a repeated key, so a sample listed twice would
    # lose boxes silently. In a plain results file every `[` opens one array: a sample's box list
    # and four vectors a box (five with ego_translation). Any other count (a repeated sample, a
    # `[` inside a string, arrays in meta) sends the file to the reference path, which names a
    # repeated sample.
    if data.count(b"[") != len(tokens) + 5 * n - ego_given.count(msgspec.UNSET):
        return None
    num_pts = np.full(n, -1, np.int64)
    if num_pts_given.count(msgspec.UNSET) != n:
        try:
            num_pts[:] = [-1 if value is msgspec.UNSET else value for value in num_pts_given]
        except OverflowError:
            return None
        if any(value is not msgspec.UNSET and value < 0 for value in num_pts_given):
            return None  # the reference path names the box
    if ego_given.count(msgspec.UNSET) != n:
        ego_translation = np.array([value for value in ego_given if value is not msgspec.UNSET], np.float64)
        if not np.isfinite(ego_translation).all():
            return None
    translation, size_wlh, rotation_wxyz, velocity_xy = vector_columns(
        boxes, ("translation", "size", "rotation", "velocity"), (3, 3, 4, 2)
    )
    score = np.fromiter(_field(boxes, "detection_score"), np.float64, n)
    label = np.fromiter(map(CLASS_INDEX.get, _field(boxes, "detection_name"), repeat(-1)), np.int64, n)
    attribute = np.fromiter(map(_ATTRIBUTE_OF_NAME.get, _field(boxes, "attribute_name"), repeat(-2)), np.int64, n)
    # Unknown names are -1 (class) / -2 (attribute): the shared value checks reject them.
    if not columns_values_valid(translation, size_wlh, rotation_wxyz, velocity_xy, score, label, attribute):
        return None
    columns = EvalBoxSet(
        sample_tokens=tokens,
        sample_index=np.repeat(np.arange(len(tokens), dtype=np.int64), counts),
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
