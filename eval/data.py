"""Ground truth and predictions for the detection metric, read straight into arrays.

`load_ground_truth` reads the nuScenes JSON tables of a dataroot/version (no `NuScenes` object,
no reverse index of every table) and gives what the devkit's `load_gt` + `add_center_dist` +
bike-rack lookup would: the same boxes, in the same order, with the same velocities.
`load_predictions` reads a results file, checks it (`submission.validate_results`) and turns it
into an `EvalBoxSet`.

Speed: both read the big JSON files (sample_annotation, sample_data, ego_pose, instance, the
results) through `fastload`: msgspec decodes them into typed structs, checking every field's type
as it goes, and the joins run on whole columns. Whenever that path meets anything it does not
plainly understand it steps aside and the `json` + Python code below (`load_ground_truth_reference`,
`load_predictions_reference`, the slow twins the tests compare against) reads the input and names
the problem. While this process decodes the annotations, a helper process finds which of them the
split holds, then reads the ego poses and (`load_ground_truth_and_predictions`) the results file.

Facts kept from the devkit (they change numbers):
- The samples of a split are the `sample` table's rows whose scene is in the split, in table
  order; a sample's boxes are its annotations in `sample_annotation` table order.
- Velocity is the devkit's `box_velocity`: centred difference over the previous and next
  annotation of the instance (one-sided at the ends), NaN when the instance has a single
  annotation or the time span exceeds 1.5 s (3 s when centred); times are `1e-6 * timestamp`.
- `num_pts` = num_lidar_pts + num_radar_pts. An annotation has at most one attribute.
- The ego position of a sample is the ego pose of its key-frame LIDAR_TOP sample_data.
- Split names resolve through `datasets.splits.resolve_split` (built-in names use the devkit's
  own scene lists, others `<dataroot>/<version>/splits.json`). For a built-in split the
  devkit keeps the results file's sample order (it decides how equal scores rank); for a custom one
  it uses the split's order. `PredictionSet.boxes` follows the same rule.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.datasets.splits import resolve_split
from avfusion.errors import FileFormatError, InputError
from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.config import DetectionConfig
from avfusion.eval.fastload import (
    annotation_split_rows,
    ground_truth_fast,
    lidar_ego_translations,
    results_columns_fast,
)
from avfusion.eval.inputs import (
    BIKE_RACK_CATEGORY,
    LIDAR_CHANNEL,
    BikeRacks,
    GroundTruth,
    PredictionSet,
    SplitSamples,
    velocity_from_track,
)
from avfusion.eval.submission import (
    RepeatedKey,
    ResultsProblems,
    pairs_without_repeats,
    result_columns_valid,
    validate_results,
)
from avfusion.labels import ATTRIBUTE_INDEX, CATEGORY_TO_CLASS, CLASS_INDEX

_HELPER_START_METHOD = "fork"  # see `_in_helper_processes`
_FLOAT64_MAX_INT = int(sys.float_info.max)


# ----------------------------------------------------------------------------------------------
# Tables and splits


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading.

    Decoding a large JSON file allocates millions of lists and dicts; none of them forms a reference
    cycle, yet every allocation burst triggers a collection that rescans all of them, which doubles
    the decode time. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_table(dataroot: str | os.PathLike[str], version: str, name: str) -> list[dict[str, Any]]:
    """`<dataroot>/<version>/<name>.json` as a list of records."""
    path = Path(dataroot) / version / f"{name}.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: table {name!r} not found (is --dataroot/--version right?)") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    try:
        records = json.loads(data)
    except json.JSONDecodeError as error:
        raise FileFormatError(path, f"not valid JSON ({error})") from None
    if not isinstance(records, list):
        raise FileFormatError(path, f"expected a JSON list of records, found {type(records).__name__}")
    return records


def split_scene_names(dataroot: str | os.PathLike[str], version: str, split: str) -> tuple[list[str], bool]:
    """The scene names of `split` and whether it is one of the devkit's built-in splits
    (`datasets.splits.resolve_split`: the same resolution as replay, train and bench)."""
    resolved = resolve_split(dataroot, version, split)
    return list(resolved.scene_names), resolved.predefined


def _field(record: dict[str, Any], key: str, table: str) -> Any:
    try:
        return record[key]
    except KeyError:
        raise InputError(f"table {table}: record {record.get('token', '?')!r} has no field {key!r}") from None
    except TypeError:
        raise InputError(f"table {table}: expected records to be objects, found {type(record).__name__}") from None


def _lookup(mapping: dict[str, Any], token: str, what: str, owner: str) -> Any:
    try:
        return mapping[token]
    except KeyError:
        raise InputError(f"{owner} refers to {what} {token!r}, which does not exist") from None


# ----------------------------------------------------------------------------------------------
# Ground truth


def load_ground_truth(dataroot: str | os.PathLike[str], version: str, split: str) -> GroundTruth:
    """Read the ground truth of `split` from `<dataroot>/<version>/*.json` (see the module docstring).

    The big tables go through `fastload` (msgspec); a log it does not plainly understand is read by
    `load_ground_truth_reference`, which names any problem.
    """
    with gc_paused():
        samples = _split_samples(dataroot, version, split)
        with _in_helper_processes(partial(annotation_split_rows, dataroot, version, samples.position_of_sample)) as (
            split_rows,
        ):
            fast = ground_truth_fast(dataroot, version, split, samples, split_rows)
        return _checked_ground_truth(fast, dataroot, version, split, samples)


def load_ground_truth_reference(dataroot: str | os.PathLike[str], version: str, split: str) -> GroundTruth:
    """`load_ground_truth` through `json` and plain Python only: the slow, obviously-correct twin."""
    with gc_paused():
        return _checked_ground_truth(None, dataroot, version, split, _split_samples(dataroot, version, split))


def _checked_ground_truth(
    fast: GroundTruth | None, dataroot: str | os.PathLike[str], version: str, split: str, samples: SplitSamples
) -> GroundTruth:
    """The fast path's ground truth when it gave one and it passes `validate_ground_truth`, else
    the reference path's (whose record checks name the annotation token), validated too."""
    if fast is not None:
        try:
            validate_ground_truth(fast)
            return fast
        except InputError:
            pass  # the reference path names the annotation; its columns are checked again below
    ground_truth = _load_ground_truth(dataroot, version, split, samples)
    validate_ground_truth(ground_truth)
    return ground_truth


class NoGroundTruth(InputError):
    """The split holds no annotation of a detection class: there is nothing to score."""


def validate_ground_truth(ground_truth: GroundTruth) -> None:
    """Check ground truth as strictly as predictions are checked, on its columns (whatever reader
    made them): finite centres, sizes > 0, finite non-zero quaternions, and at least one box of a
    detection class in the split (a metric over no boxes is meaningless: mAP 0, NDS 0).

    Raises `InputError` naming the split, or the sample and the box's position in it.
    """
    boxes = ground_truth.boxes
    version_dir = Path(ground_truth.dataroot) / ground_truth.version
    if len(boxes.score) == 0:
        raise NoGroundTruth(
            f"split {ground_truth.split!r} of {version_dir}: its {len(boxes.sample_tokens)} samples have no annotations "
            f"of the detection classes, so there is nothing to score (a test split has no ground truth)"
        )
    norm = np.sqrt(np.einsum("ij,ij->i", boxes.rotation_wxyz, boxes.rotation_wxyz))
    checks = (
        ("translation", ~np.isfinite(boxes.translation).all(axis=1), "must be finite"),
        (
            "size",
            ~(np.isfinite(boxes.size_wlh).all(axis=1) & (boxes.size_wlh > 0).all(axis=1)),
            "must be finite and > 0",
        ),
        (
            "rotation",
            ~(np.isfinite(boxes.rotation_wxyz).all(axis=1) & (norm > 0)),
            "must be a finite, non-zero quaternion",
        ),
    )
    for name, bad, expected in checks:
        rows = np.flatnonzero(bad)
        if rows.size:
            row = int(rows[0])
            sample = int(boxes.sample_index[row])
            in_sample = row - int(np.searchsorted(boxes.sample_index, sample, side="left"))
            values = {"translation": boxes.translation, "size": boxes.size_wlh, "rotation": boxes.rotation_wxyz}[name][
                row
            ]
            raise InputError(
                f"{version_dir / 'sample_annotation.json'}: ground truth of sample {boxes.sample_tokens[sample]} "
                f"box {in_sample}: {name} {expected}, found {values.tolist()} ({rows.size} such boxes)"
            )


def _split_samples(dataroot: str | os.PathLike[str], version: str, split: str) -> SplitSamples:
    version_dir = Path(dataroot) / version
    if not version_dir.is_dir():
        raise InputError(f"{version_dir}: no such directory (dataroot {str(dataroot)!r}, version {version!r})")
    scene_names, predefined = split_scene_names(dataroot, version, split)
    wanted_scenes = set(scene_names)

    scenes = read_table(dataroot, version, "scene")
    scene_name_of = {_field(s, "token", "scene"): _field(s, "name", "scene") for s in scenes}
    samples = read_table(dataroot, version, "sample")
    if not samples:
        raise InputError(f"{version_dir / 'sample.json'}: the database has no samples")
    timestamp_of_sample: dict[str, int] = {}
    split_tokens: list[str] = []
    for sample in samples:
        token = _field(sample, "token", "sample")
        timestamp_of_sample[token] = _field(sample, "timestamp", "sample")
        scene_token = _field(sample, "scene_token", "sample")
        if _lookup(scene_name_of, scene_token, "scene", f"sample {token!r}") in wanted_scenes:
            split_tokens.append(token)
    if not split_tokens:
        raise InputError(
            f"split {split!r} has no samples in {version_dir} (its scenes: {sorted(wanted_scenes)[:5]}...)"
        )
    position_of_sample = {token: position for position, token in enumerate(split_tokens)}
    return SplitSamples(split_tokens, position_of_sample, timestamp_of_sample, predefined)


def _load_ground_truth(
    dataroot: str | os.PathLike[str], version: str, split: str, samples: SplitSamples
) -> GroundTruth:
    split_tokens, position_of_sample = samples.split_tokens, samples.position_of_sample
    timestamp_of_sample, predefined = samples.timestamp_of_sample, samples.predefined
    ego_translation = _lidar_ego_translations(dataroot, version, split_tokens, position_of_sample)
    boxes, bike_racks = _annotations(dataroot, version, split_tokens, position_of_sample, timestamp_of_sample)
    return GroundTruth(
        dataroot=str(dataroot),
        version=version,
        split=split,
        predefined_split=predefined,
        boxes=boxes,
        ego_translation=ego_translation,
        bike_racks=bike_racks,
    )


def lidar_calibration_tokens(dataroot: str | os.PathLike[str], version: str) -> set[str]:
    """The calibrated_sensor tokens of the LIDAR_TOP channel."""
    sensors = read_table(dataroot, version, "sensor")
    channel_of_sensor = {_field(s, "token", "sensor"): _field(s, "channel", "sensor") for s in sensors}
    calibrated = read_table(dataroot, version, "calibrated_sensor")
    return {
        _field(c, "token", "calibrated_sensor")
        for c in calibrated
        if channel_of_sensor.get(_field(c, "sensor_token", "calibrated_sensor")) == LIDAR_CHANNEL
    }


def _lidar_ego_translations(
    dataroot: str | os.PathLike[str], version: str, split_tokens: list[str], position_of_sample: dict[str, int]
) -> np.ndarray:
    """(S, 3) ego pose translation of each sample's key-frame LIDAR_TOP sample_data."""
    lidar_calibrations = lidar_calibration_tokens(dataroot, version)
    # The devkit keeps the last key-frame record per sample and channel, so later rows overwrite.
    pose_token_of_sample: dict[str, str] = {}
    for record in read_table(dataroot, version, "sample_data"):
        if (
            record.get("is_key_frame")
            and record.get("calibrated_sensor_token") in lidar_calibrations
            and record.get("sample_token") in position_of_sample
        ):
            pose_token_of_sample[record["sample_token"]] = _field(record, "ego_pose_token", "sample_data")
    missing = [token for token in split_tokens if token not in pose_token_of_sample]
    if missing:
        raise InputError(
            f"{len(missing)} samples have no key-frame {LIDAR_CHANNEL} sample_data (the metric measures "
            f"distances from its ego pose), e.g. sample {missing[0]!r}"
        )
    wanted_poses = set(pose_token_of_sample.values())
    translation_of_pose = {
        record["token"]: _field(record, "translation", "ego_pose")
        for record in read_table(dataroot, version, "ego_pose")
        if record.get("token") in wanted_poses
    }
    rows = [
        _lookup(
            translation_of_pose, pose_token_of_sample[token], "ego_pose", f"LIDAR_TOP sample_data of sample {token!r}"
        )
        for token in split_tokens
    ]
    return np.array(rows, np.float64).reshape(len(split_tokens), 3)


def _annotations(
    dataroot: str | os.PathLike[str],
    version: str,
    split_tokens: list[str],
    position_of_sample: dict[str, int],
    timestamp_of_sample: dict[str, int],
) -> tuple[EvalBoxSet, BikeRacks]:
    categories = {
        _field(c, "token", "category"): _field(c, "name", "category") for c in read_table(dataroot, version, "category")
    }
    category_of_instance = {
        _field(i, "token", "instance"): _field(i, "category_token", "instance")
        for i in read_table(dataroot, version, "instance")
    }
    attribute_name_of = {
        _field(a, "token", "attribute"): _field(a, "name", "attribute")
        for a in read_table(dataroot, version, "attribute")
    }
    annotations = read_table(dataroot, version, "sample_annotation")
    row_of_annotation = {_field(a, "token", "sample_annotation"): row for row, a in enumerate(annotations)}

    kept_rows: list[int] = []  # detection-class annotations of the split, table order
    kept_labels: list[int] = []
    kept_attributes: list[int] = []
    rack_rows: list[int] = []
    for row, annotation in enumerate(annotations):
        if _field(annotation, "sample_token", "sample_annotation") not in position_of_sample:
            continue
        owner = f"sample_annotation {annotation['token']!r}"
        instance_token = _field(annotation, "instance_token", "sample_annotation")
        category = _lookup(
            categories, _lookup(category_of_instance, instance_token, "instance", owner), "category", owner
        )
        if category == BIKE_RACK_CATEGORY:
            rack_rows.append(row)
        class_name = CATEGORY_TO_CLASS.get(category)
        if class_name is None:
            continue
        attribute_tokens = _field(annotation, "attribute_tokens", "sample_annotation")
        if len(attribute_tokens) > 1:
            raise InputError(f"{owner} has {len(attribute_tokens)} attributes; the metric allows at most one")
        if attribute_tokens:
            name = _lookup(attribute_name_of, attribute_tokens[0], "attribute", owner)
            if name not in ATTRIBUTE_INDEX:
                raise InputError(f"{owner} has attribute {name!r}, not a nuScenes attribute")
            kept_attributes.append(ATTRIBUTE_INDEX[name])
        else:
            kept_attributes.append(-1)
        kept_rows.append(row)
        kept_labels.append(CLASS_INDEX[class_name])

    rows = np.array(kept_rows, np.int64)
    sample_index = np.array([position_of_sample[annotations[row]["sample_token"]] for row in kept_rows], np.int64)
    # Group by sample in split order; a stable sort keeps the table order within a sample.
    order = np.argsort(sample_index, kind="stable")
    rows, sample_index = rows[order], sample_index[order]
    take = rows.tolist()
    n = len(take)
    translation = _float_rows(annotations, take, "translation", 3)
    boxes = EvalBoxSet(
        sample_tokens=tuple(split_tokens),
        sample_index=sample_index,
        translation=translation,
        size_wlh=_float_rows(annotations, take, "size", 3, positive=True),
        rotation_wxyz=_float_rows(annotations, take, "rotation", 4),
        velocity_xy=_velocities(annotations, take, translation, row_of_annotation, timestamp_of_sample),
        label=np.array(kept_labels, np.int64)[order] if n else np.zeros(0, np.int64),
        score=np.full(n, -1.0),
        attribute=np.array(kept_attributes, np.int64)[order] if n else np.zeros(0, np.int64),
        num_pts=np.array(
            [
                _field(annotations[row], "num_lidar_pts", "sample_annotation")
                + _field(annotations[row], "num_radar_pts", "sample_annotation")
                for row in take
            ],
            np.int64,
        ).reshape(n),
    )
    rack_sample = np.array([position_of_sample[annotations[row]["sample_token"]] for row in rack_rows], np.int64)
    bike_racks = BikeRacks(
        sample_index=rack_sample,
        translation=_float_rows(annotations, rack_rows, "translation", 3),
        size_wlh=_float_rows(annotations, rack_rows, "size", 3),
        rotation_wxyz=_float_rows(annotations, rack_rows, "rotation", 4),
    )
    return boxes, bike_racks


def _float_rows(
    records: list[dict[str, Any]], rows: list[int], key: str, width: int, positive: bool = False
) -> np.ndarray:
    """(len(rows), width) float64 of the field `key` of sample_annotation records, each of which
    must be a list of `width` finite JSON numbers (not strings, not booleans, none beyond float64),
    all > 0 with `positive`."""
    values = [_field(records[row], key, "sample_annotation") for row in rows]
    for row, value in zip(rows, values, strict=False):
        if not _is_number_list(value, width) or (positive and not all(x > 0 for x in value)):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:60] + "..."
            expected = f"{width} finite numbers" + (" > 0" if positive else "")
            raise InputError(
                f"sample_annotation {records[row].get('token')!r}: {key} must be {expected}, found {shown}"
            )
    return np.array(values, np.float64).reshape(len(rows), width)


def _is_number_list(value: Any, width: int) -> bool:
    return isinstance(value, list) and len(value) == width and all(_is_finite_float64(x) for x in value)


def _is_finite_float64(value: Any) -> bool:
    """A JSON number that is a finite float64 (JSON integers have no limit; booleans are not numbers)."""
    if type(value) is int:
        return abs(value) <= _FLOAT64_MAX_INT
    return type(value) is float and math.isfinite(value)


def _velocities(
    annotations: list[dict[str, Any]],
    rows: list[int],
    translation: np.ndarray,
    row_of_annotation: dict[str, int],
    timestamp_of_sample: dict[str, int],
) -> np.ndarray:
    """(N, 2) the devkit's `box_velocity(...)[:2]` of the annotations at `rows` (see module docstring)."""
    n = len(rows)
    if n == 0:
        return np.zeros((0, 2))
    prev_rows = np.empty(n, np.int64)
    next_rows = np.empty(n, np.int64)
    for i, row in enumerate(rows):
        annotation = annotations[row]
        owner = f"sample_annotation {annotation['token']!r}"
        prev_token = _field(annotation, "prev", "sample_annotation")
        next_token = _field(annotation, "next", "sample_annotation")
        prev_rows[i] = _lookup(row_of_annotation, prev_token, "prev annotation", owner) if prev_token else row
        next_rows[i] = _lookup(row_of_annotation, next_token, "next annotation", owner) if next_token else row
    own_rows = np.array(rows, np.int64)
    has_prev = prev_rows != own_rows
    has_next = next_rows != own_rows

    def position(rows_: np.ndarray) -> np.ndarray:
        # The ends of a track are often the annotation itself: reuse its already-read centre.
        out = translation.copy()
        other = np.flatnonzero(rows_ != own_rows)
        if other.size:
            out[other] = _float_rows(annotations, rows_[other].tolist(), "translation", 3)
        return out

    def seconds(rows_: np.ndarray) -> np.ndarray:
        stamps = [
            _lookup(
                timestamp_of_sample,
                annotations[row]["sample_token"],
                "sample",
                f"sample_annotation {annotations[row]['token']!r}",
            )
            for row in rows_.tolist()
        ]
        return 1e-6 * np.array(stamps, np.float64)

    first_pos, last_pos = position(prev_rows), position(next_rows)
    return velocity_from_track(first_pos, last_pos, seconds(prev_rows), seconds(next_rows), has_prev, has_next)


# ----------------------------------------------------------------------------------------------
# Predictions


def load_predictions(
    results_path: str | os.PathLike[str], ground_truth: GroundTruth, config: DetectionConfig
) -> PredictionSet:
    """Read, check and convert a results file for evaluation against `ground_truth`.

    Raises `InputError` listing every problem found (see `submission.validate_results`).
    """
    with gc_paused():
        return _load_predictions(Path(results_path), ground_truth, config, fast=True)


def load_predictions_reference(
    results_path: str | os.PathLike[str], ground_truth: GroundTruth, config: DetectionConfig
) -> PredictionSet:
    """`load_predictions` through `json` and `submission.validate_results` only (the slow twin)."""
    with gc_paused():
        return _load_predictions(Path(results_path), ground_truth, config, fast=False)


def _load_predictions(path: Path, ground_truth: GroundTruth, config: DetectionConfig, fast: bool) -> PredictionSet:
    scanned = _predictions_fast(path, ground_truth.sample_tokens, config.max_boxes_per_sample) if fast else None
    return _predictions_from(path, scanned, ground_truth, config)


def _predictions_fast(
    path: Path, split_sample_tokens: Sequence[str], max_boxes_per_sample: int
) -> tuple[EvalBoxSet, dict[str, Any]] | None:
    """`fastload.results_columns_fast` of the file, or None (also when it cannot be read: the
    reference path then names the problem)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    with gc_paused():
        return results_columns_fast(data, split_sample_tokens, max_boxes_per_sample)


def _predictions_from(
    path: Path,
    scanned: tuple[EvalBoxSet, dict[str, Any]] | None,
    ground_truth: GroundTruth,
    config: DetectionConfig,
) -> PredictionSet:
    """The prediction set of the fast path's answer `scanned` when its columns pass
    `result_columns_valid`, else of the reference path (which names every problem)."""
    if scanned is not None and result_columns_valid(scanned[0]):
        columns, meta = scanned
        return PredictionSet(boxes=_boxset_from_columns(columns, ground_truth), meta=meta)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: results file not found") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read the results file ({error.strerror})") from None
    try:
        payload = json.loads(data, object_pairs_hook=pairs_without_repeats)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(path, f"not valid JSON ({error})") from None
    except RepeatedKey as error:
        # A parser keeps the last copy of a repeated key: a sample listed twice would lose boxes.
        raise ResultsProblems(
            str(path), [f"sample {error.key}: listed more than once (in 'results' or one of its boxes)"]
        ) from None
    columns = validate_results(
        payload, ground_truth.sample_tokens, max_boxes_per_sample=config.max_boxes_per_sample, source=str(path)
    )
    return PredictionSet(boxes=_boxset_from_columns(columns, ground_truth), meta=payload["meta"])


def load_ground_truth_and_predictions(
    dataroot: str | os.PathLike[str],
    version: str,
    split: str,
    results_path: str | os.PathLike[str],
    config: DetectionConfig,
) -> tuple[GroundTruth, PredictionSet]:
    """`load_ground_truth` and then `load_predictions`: the same values and the same errors, the
    ground truth's first.

    The results file is independent of the tables until it is checked against the split, so helper
    processes decode it (`fastload`), and find the split's annotations and ego poses, while this one
    reads the annotations (`_in_helper_processes`).
    """
    path = Path(results_path)
    with gc_paused():
        samples = _split_samples(dataroot, version, split)
        with _in_helper_processes(
            partial(annotation_split_rows, dataroot, version, samples.position_of_sample),
            partial(lidar_ego_translations, dataroot, version, samples),
            partial(_predictions_fast, path, samples.split_tokens, config.max_boxes_per_sample),
        ) as (split_rows, ego_translation, scanned):
            fast = ground_truth_fast(dataroot, version, split, samples, split_rows, ego_translation)
            ground_truth = _checked_ground_truth(fast, dataroot, version, split, samples)
            columns = scanned()
        return ground_truth, _predictions_from(path, columns, ground_truth, config)


@contextlib.contextmanager
def _in_helper_processes(*calls: Callable[[], Any]) -> Iterator[list[Callable[[], Any]]]:
    """Start the `calls` in forked processes (one per core but this process's, at least one; the
    calls start in the order given) for the length of the `with` block, which gets one callable per call that waits
    for its value. Where this platform cannot fork, or when a process fails (killed, out of memory),
    the callable computes the value here instead.

    A fork starts at once and has everything this process has imported; the children run only
    msgspec and numpy code, which takes no lock that another thread of this process could hold.
    (`forkserver` and `spawn` would import the caller's main module again in the child, which
    breaks scripts without an `if __name__ == "__main__"` guard.)
    """
    if _HELPER_START_METHOD not in multiprocessing.get_all_start_methods():
        yield list(calls)
        return
    workers = max(1, min(len(calls), (os.cpu_count() or 1) - 1))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(_HELPER_START_METHOD))
    try:
        futures = [pool.submit(call) for call in calls]

        def waiter(future: Future[Any], call: Callable[[], Any]) -> Callable[[], Any]:
            def result() -> Any:
                try:
                    return future.result()
                except BrokenProcessPool:
                    return call()

            return result

        yield [waiter(future, call) for future, call in zip(futures, calls, strict=True)]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a block that raised waits for the running calls


def _boxset_from_columns(columns: EvalBoxSet, ground_truth: GroundTruth) -> EvalBoxSet:
    """Order the checked results as the devkit would: file order for built-in splits, else split order."""
    if ground_truth.predefined_split:
        return columns
    sample_tokens = ground_truth.sample_tokens
    position_in_split = {token: position for position, token in enumerate(sample_tokens)}
    remap = np.array([position_in_split[token] for token in columns.sample_tokens], np.int64)
    sample_index = remap[columns.sample_index] if len(columns.sample_index) else columns.sample_index
    order = np.argsort(sample_index, kind="stable")
    return EvalBoxSet(
        sample_tokens=tuple(sample_tokens),
        sample_index=sample_index[order],
        translation=np.take(columns.translation, order, axis=0),  # np.take: faster than a[order] on (N, k)
        size_wlh=np.take(columns.size_wlh, order, axis=0),
        rotation_wxyz=np.take(columns.rotation_wxyz, order, axis=0),
        velocity_xy=np.take(columns.velocity_xy, order, axis=0),
        label=columns.label[order],
        score=columns.score[order],
        attribute=columns.attribute[order],
        num_pts=columns.num_pts[order],
    )
