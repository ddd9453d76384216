"""nuScenes detection submissions: records from `Boxes3D`, checking results files, atomic writing.

A results file is `{"meta": {...}, "results": {sample_token: [box, ...]}}` with, per box (global
frame): `sample_token`, `translation` [x, y, z] (box centre, m), `size` [w, l, h] (m, > 0),
`rotation` [w, x, y, z] (unit quaternion), `velocity` [vx, vy] (m/s), `detection_name` (one of the
10 classes), `detection_score` (a finite number) and `attribute_name` ("" or one of the 8
attributes). `num_pts` and `ego_translation` are optional, as in the devkit; the devkit drops a
box whose `num_pts` is 0, so we honour that too.

`validate_results` checks a whole file against the samples of a split and reports every problem
(the first `MAX_LISTED_PROBLEMS`, then a count), each naming the sample token, box index and field.
The common case (a valid file) runs on whole columns at once; only a file with problems is walked
box by box to name them.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import quaternion_from_yaw
from avfusion.errors import InputError
from avfusion.eval.boxset import EvalBoxSet
from avfusion.fileio import write_json_atomic
from avfusion.labels import ATTRIBUTE_INDEX, ATTRIBUTES, CLASS_INDEX, DEFAULT_ATTRIBUTE, DETECTION_CLASSES

MAX_BOXES_PER_SAMPLE = 500
MAX_LISTED_PROBLEMS = 50
# A quaternion whose norm is off by more than this is a bug in the writer, not rounding.
QUATERNION_NORM_TOLERANCE = 1e-3

REQUIRED_FIELDS: tuple[str, ...] = (
    "sample_token",
    "translation",
    "size",
    "rotation",
    "velocity",
    "detection_name",
    "detection_score",
    "attribute_name",
)
META_FIELDS: tuple[str, ...] = ("use_camera", "use_lidar", "use_radar", "use_map", "use_external")
# The largest integer a float64 holds without overflowing (JSON integers have no limit).
_FLOAT64_MAX_INT = int(sys.float_info.max)
_INT64_MAX = 2**63 - 1


class ResultsProblems(InputError):
    """A results file with problems; `problems` lists them all (the message shows the first ones)."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - len(shown)
        lines = "; ".join(shown) + (f"; ... and {more} more" if more else "")
        super().__init__(f"{source}: {len(problems)} problem(s) in the results: {lines}")
        self.problems = tuple(problems)


class RepeatedKey(InputError):
    """A JSON object lists a key twice (a parser would silently keep only the last copy)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} appears more than once in one JSON object")
        self.key = key


def pairs_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads(..., object_pairs_hook=pairs_without_repeats)`: a dict, or `RepeatedKey` naming
    the first key listed twice (in `results` that is a sample token listed twice)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RepeatedKey(key)
            seen.add(key)
    return result


def check_sample_keys_unique(sample_keys: Sequence[str], source: str = "results") -> None:
    """`ResultsProblems` naming every sample token listed more than once among the keys of
    `results`, in file order (for a reader that gives the keys as written, repeats included)."""
    seen: set[str] = set()
    repeated: list[str] = []
    for key in sample_keys:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    if repeated:
        raise ResultsProblems(
            source,
            [
                f"sample {key}: listed more than once in 'results' (only one list of boxes per sample)"
                for key in repeated
            ],
        )


# ----------------------------------------------------------------------------------------------
# Checking


def validate_results(
    payload: Any,
    split_sample_tokens: Sequence[str],
    max_boxes_per_sample: int = MAX_BOXES_PER_SAMPLE,
    source: str = "results",
) -> EvalBoxSet:
    """Check a parsed results file against the samples of a split and return it as columns.

    Every sample of the split must be present (with `[]` when nothing was detected), and no other;
    see the module docstring for the box fields. Raises `ResultsProblems` (an `InputError`) naming
    every problem found.
    """
    problems: list[str] = []
    if not isinstance(payload, dict):
        raise ResultsProblems(
            source, [f"expected a JSON object with 'meta' and 'results', found {type(payload).__name__}"]
        )
    if "meta" not in payload:
        problems.append("missing top-level field 'meta' (an object such as {\"use_lidar\": true, ...})")
    elif not isinstance(payload["meta"], dict):
        problems.append(f"'meta' must be an object, found {type(payload['meta']).__name__}")
    results = payload.get("results")
    if results is None:
        problems.append("missing top-level field 'results' (an object of sample_token -> list of boxes)")
        raise ResultsProblems(source, problems)
    if not isinstance(results, dict):
        problems.append(f"'results' must be an object of sample_token -> list of boxes, found {type(results).__name__}")
        raise ResultsProblems(source, problems)

    split = set(split_sample_tokens)
    extra = [token for token in results if token not in split]
    missing = [token for token in split_sample_tokens if token not in results]
    problems += [f"sample {token}: not a sample of the evaluated split" for token in extra]
    problems += [
        f"sample {token}: missing from 'results' (every sample of the split needs an entry, [] if empty)"
        for token in missing
    ]
    for token, boxes in results.items():
        if not isinstance(boxes, list):
            problems.append(f"sample {token}: expected a list of boxes, found {type(boxes).__name__}")
        elif len(boxes) > max_boxes_per_sample:
            problems.append(f"sample {token}: {len(boxes)} boxes, at most {max_boxes_per_sample} are allowed")
    if problems:
        # Box-level problems too, so one run lists everything.
        problems += _box_problems(results)
        raise ResultsProblems(source, problems)

    columns = _columns_fast(results)
    if columns is None:
        raise ResultsProblems(source, _box_problems(results) or ["malformed boxes (no single field to blame found)"])
    return columns


def _columns_fast(results: dict[str, list[Any]]) -> EvalBoxSet | None:
    """Whole-column conversion and checks; None when anything is off (then `_box_problems` names it)."""
    tokens = tuple(results)
    counts = [len(boxes) for boxes in results.values()]
    all_boxes = list(chain.from_iterable(results.values()))
    n = len(all_boxes)
    if set(map(type, all_boxes)) - {dict}:
        return None
    try:
        fields = {key: [box[key] for box in all_boxes] for key in REQUIRED_FIELDS}
    except KeyError:
        return None
    sample_index = np.repeat(np.arange(len(tokens), dtype=np.int64), counts)
    if fields["sample_token"] != [tokens[i] for i in sample_index.tolist()]:
        return None
    numeric = {}
    for key, width in (("translation", 3), ("size", 3), ("rotation", 4), ("velocity", 2)):
        values = fields[key]
        if set(map(type, values)) - {list} or set(map(len, values)) - {width}:
            return None
        if set(map(type, chain.from_iterable(values))) - {int, float}:
            return None
        try:
            numeric[key] = np.fromiter(chain.from_iterable(values), np.float64, count=n * width).reshape(n, width)
        except OverflowError:  # an integer beyond float64
            return None
    scores = fields["detection_score"]
    if set(map(type, scores)) - {int, float}:
        return None
    try:
        score = np.fromiter(scores, np.float64, count=n)
    except OverflowError:
        return None
    label = np.fromiter(
        (CLASS_INDEX.get(name, -1) if isinstance(name, str) else -1 for name in fields["detection_name"]),
        np.int64,
        count=n,
    )
    attribute_index = {"": -1, **ATTRIBUTE_INDEX}
    attribute = np.fromiter(
        (attribute_index.get(name, -2) if isinstance(name, str) else -2 for name in fields["attribute_name"]),
        np.int64,
        count=n,
    )
    num_pts = np.full(n, -1, np.int64)
    if any("num_pts" in box for box in all_boxes):
        values = [box.get("num_pts", -1) for box in all_boxes]
        if set(map(type, values)) - {int} or not all(-1 <= v <= _INT64_MAX for v in values):
            return None
        if any(box.get("num_pts", 0) < 0 for box in all_boxes):  # -1 stands for "not given", never written
            return None
        num_pts = np.array(values, np.int64)
    if any("ego_translation" in box for box in all_boxes):
        for box in all_boxes:
            if "ego_translation" in box and _vector_problem(box["ego_translation"], 3) is not None:
                return None
    if not columns_values_valid(
        numeric["translation"], numeric["size"], numeric["rotation"], numeric["velocity"], score, label, attribute
    ):
        return None
    return EvalBoxSet(
        sample_tokens=tokens,
        sample_index=sample_index,
        translation=numeric["translation"],
        size_wlh=numeric["size"],
        rotation_wxyz=numeric["rotation"],
        velocity_xy=numeric["velocity"],
        label=label,
        score=score,
        attribute=attribute,
        num_pts=num_pts,
    )


def result_columns_valid(columns: EvalBoxSet) -> bool:
    """Every value check of a results file that its columns still allow, whatever reader made
    them: `columns_values_valid`, and `num_pts` >= 0 where given (-1 stands for "not given").
    A reader whose columns fail it hands the file to `validate_results`, which names the box."""
    return columns_values_valid(
        columns.translation,
        columns.size_wlh,
        columns.rotation_wxyz,
        columns.velocity_xy,
        columns.score,
        columns.label,
        columns.attribute,
    ) and not np.any(columns.num_pts < -1)


def columns_values_valid(
    translation: np.ndarray,
    size_wlh: np.ndarray,
    rotation_wxyz: np.ndarray,
    velocity_xy: np.ndarray,
    score: np.ndarray,
    label: np.ndarray,
    attribute: np.ndarray,
) -> bool:
    """Whole-column value checks of a results file: finite numbers, known class (label >= 0) and
    attribute (>= -1), sizes > 0, unit quaternions."""
    finite = all(np.isfinite(a).all() for a in (translation, size_wlh, rotation_wxyz, velocity_xy, score))
    norm = np.sqrt(np.einsum("ij,ij->i", rotation_wxyz, rotation_wxyz))
    return bool(
        finite
        and not np.any(label < 0)
        and not np.any(attribute < -1)
        and not np.any(size_wlh <= 0)
        and not np.any(np.abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE)
    )


def _box_problems(results: dict[str, Any]) -> list[str]:
    """Every box-level problem, each naming sample token, box index and field."""
    problems: list[str] = []
    for token, boxes in results.items():
        if not isinstance(boxes, list):
            continue
        for index, box in enumerate(boxes):
            where = f"sample {token} box {index}"
            if not isinstance(box, dict):
                problems.append(f"{where}: expected an object, found {type(box).__name__}")
                continue
            for key in REQUIRED_FIELDS:
                if key not in box:
                    problems.append(f"{where} field {key}: missing")
            problems += [f"{where} field {key}: {problem}" for key, problem in _field_problems(box, token)]
    return problems


def _field_problems(box: dict[str, Any], token: str) -> Iterable[tuple[str, str]]:
    if "sample_token" in box and box["sample_token"] != token:
        yield "sample_token", f"expected {token!r} (the sample it is listed under), found {box['sample_token']!r}"
    for key, width in (("translation", 3), ("size", 3), ("rotation", 4), ("velocity", 2)):
        if key in box:
            problem = _vector_problem(box[key], width)
            if problem is not None:
                yield key, problem
    if "size" in box and _vector_problem(box["size"], 3) is None and min(box["size"]) <= 0:
        yield "size", f"every size must be > 0 metres, found {box['size']}"
    if "rotation" in box and _vector_problem(box["rotation"], 4) is None:
        norm = math.sqrt(sum(x * x for x in box["rotation"]))
        if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            yield "rotation", f"expected a unit quaternion [w, x, y, z], found norm {norm:.6g}"
    if "detection_name" in box and box["detection_name"] not in CLASS_INDEX:
        yield "detection_name", f"unknown class {box['detection_name']!r}, expected one of {list(DETECTION_CLASSES)}"
    if "detection_score" in box and not _is_finite_number(box["detection_score"]):
        yield "detection_score", f"expected a finite number, found {_shown(box['detection_score'])}"
    if "attribute_name" in box:
        name = box["attribute_name"]
        if not isinstance(name, str) or (name != "" and name not in ATTRIBUTE_INDEX):
            yield "attribute_name", f'unknown attribute {name!r}, expected "" or one of {list(ATTRIBUTES)}'
    if "num_pts" in box and (type(box["num_pts"]) is not int or not 0 <= box["num_pts"] <= _INT64_MAX):
        yield "num_pts", f"expected an integer from 0 to 2**63 - 1, found {_shown(box['num_pts'])}"
    if "ego_translation" in box:
        problem = _vector_problem(box["ego_translation"], 3)
        if problem is not None:
            yield "ego_translation", problem


def _is_finite_number(value: Any) -> bool:
    """A JSON number that is a finite float64 (an integer beyond float64's range is not)."""
    if type(value) is int:
        return -_FLOAT64_MAX_INT <= value <= _FLOAT64_MAX_INT
    return type(value) is float and math.isfinite(value)


def _shown(value: Any) -> str:
    """`repr(value)`, shortened: a 400-digit number is named, not printed whole."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _vector_problem(value: Any, width: int) -> str | None:
    if not isinstance(value, list) or len(value) != width:
        return f"expected a list of {width} numbers, found {_shown(value)}"
    if not all(type(x) in (int, float) for x in value):
        return f"expected {width} numbers, found {_shown(value)}"
    if not all(_is_finite_number(x) for x in value):
        return f"expected finite numbers a float64 can hold, found {_shown(value)}"
    return None


# ----------------------------------------------------------------------------------------------
# Writing


def submission_meta(
    *, use_camera: bool, use_lidar: bool, use_radar: bool = False, use_map: bool = False, use_external: bool = False
) -> dict[str, bool]:
    """The `meta` object of a submission: which inputs the detector used."""
    return {
        "use_camera": bool(use_camera),
        "use_lidar": bool(use_lidar),
        "use_radar": bool(use_radar),
        "use_map": bool(use_map),
        "use_external": bool(use_external),
    }


def detection_records(sample_token: str, boxes_global: Boxes3D) -> list[dict[str, Any]]:
    """One sample's boxes (global frame) as submission records.

    The rotation is the quaternion of the yaw about +z. An unknown velocity (NaN) is written as
    0 m/s (the format has no "unknown"), and a missing attribute (-1) as the class's most common one
    (`DEFAULT_ATTRIBUTE`), which is what an attribute-less detector should guess.
    """
    n = len(boxes_global)
    quaternions = quaternion_from_yaw(np.asarray(boxes_global.yaw_rad)).reshape(n, 4)
    velocity = np.nan_to_num(np.asarray(boxes_global.velocity_xy, np.float64), nan=0.0)
    records = []
    for i in range(n):
        class_name = DETECTION_CLASSES[int(boxes_global.label[i])]
        attribute = int(boxes_global.attribute[i])
        records.append(
            {
                "sample_token": sample_token,
                "translation": [float(x) for x in boxes_global.center[i]],
                "size": [float(x) for x in boxes_global.size_wlh[i]],
                "rotation": [float(x) for x in quaternions[i]],
                "velocity": [float(x) for x in velocity[i]],
                "detection_name": class_name,
                "detection_score": float(boxes_global.score[i]),
                "attribute_name": ATTRIBUTES[attribute] if attribute >= 0 else DEFAULT_ATTRIBUTE[class_name],
            }
        )
    return records


def write_results(
    path: str | os.PathLike[str],
    results: Mapping[str, list[dict[str, Any]]],
    meta: Mapping[str, Any],
    split_sample_tokens: Sequence[str] | None = None,
) -> None:
    """Check and write a results file atomically (nothing is written when a box is malformed).

    With `split_sample_tokens`, the file must cover exactly those samples (as evaluation requires);
    without, its own sample keys are taken as the split.
    """
    payload = {"meta": dict(meta), "results": {token: list(boxes) for token, boxes in results.items()}}
    tokens = list(results) if split_sample_tokens is None else list(split_sample_tokens)
    validate_results(payload, tokens, source=str(path))
    write_json_atomic(path, payload, indent=None)
