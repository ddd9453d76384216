"""nuScenes tracking submissions and metrics (AMOTA, AMOTP, MOTA, IDS, ...).

A tracking submission is `{"meta": {...}, "results": {sample_token: [box, ...]}}` with, per box
(global frame): `sample_token`, `translation` [x, y, z] (box centre, m), `size` [w, l, h] (m, > 0),
`rotation` [w, x, y, z] (unit quaternion), `velocity` [vx, vy] (m/s), `tracking_id` (a string, at
most once per sample), `tracking_name` (one of the 7 tracking classes) and `tracking_score`.

The metrics are nuscenes-devkit 1.2.0's `TrackingEval` itself (with `motmetrics` 1.4.0), called on
the checked file: `check_tracking_results` first names the first bad record of a file in one line,
so that the devkit's asserts never meet bad input and nothing is written for it; the devkit's
summary, details and plots are written beside each other in a temporary folder and moved into the
output folder only when the evaluation has finished.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import quaternion_from_yaw
from avfusion.errors import FileFormatError, InputError
from avfusion.eval.data import read_table, split_scene_names
from avfusion.eval.submission import QUATERNION_NORM_TOLERANCE
from avfusion.fileio import write_json_atomic
from avfusion.labels import DETECTION_CLASSES, TRACKING_CLASSES

TRACKING_FIELDS: tuple[str, ...] = (
    "sample_token",
    "translation",
    "size",
    "rotation",
    "velocity",
    "tracking_id",
    "tracking_name",
    "tracking_score",
)
MAX_BOXES_PER_SAMPLE = 500
# The devkit's tracking configuration (`config_factory("tracking_nips_2019")`).
TRACKING_CONFIG_NAME = "tracking_nips_2019"


# ----------------------------------------------------------------------------------------------
# Records and writing


def tracking_records(sample_token: str, boxes_global: Boxes3D, track_ids: Sequence[str]) -> list[dict[str, Any]]:
    """One sample's tracked boxes (global frame) as tracking submission records: only boxes of the
    tracking classes; `track_ids[i]` is box i's track; `tracking_score` is the box score. An
    unknown velocity (NaN) is written as 0 m/s."""
    n = len(boxes_global)
    if len(track_ids) != n:
        raise ValueError(f"tracking_records: {n} boxes but {len(track_ids)} track ids")
    quaternions = quaternion_from_yaw(np.asarray(boxes_global.yaw_rad)).reshape(n, 4)
    velocity = np.nan_to_num(np.asarray(boxes_global.velocity_xy, np.float64), nan=0.0)
    records = []
    for i in range(n):
        class_name = DETECTION_CLASSES[int(boxes_global.label[i])]
        if class_name not in TRACKING_CLASSES:
            continue
        records.append(
            {
                "sample_token": sample_token,
                "translation": [float(x) for x in boxes_global.center[i]],
                "size": [float(x) for x in boxes_global.size_wlh[i]],
                "rotation": [float(x) for x in quaternions[i]],
                "velocity": [float(x) for x in velocity[i]],
                "tracking_id": str(track_ids[i]),
                "tracking_name": class_name,
                "tracking_score": float(boxes_global.score[i]),
            }
        )
    return records


def write_tracking_results(
    path: str | os.PathLike[str],
    results: Mapping[str, list[dict[str, Any]]],
    meta: Mapping[str, Any],
    split_sample_tokens: Sequence[str] | None = None,
) -> None:
    """Check and write a tracking submission atomically (nothing is written when a record is bad)."""
    payload = {"meta": dict(meta), "results": {token: list(boxes) for token, boxes in results.items()}}
    tokens = list(results) if split_sample_tokens is None else list(split_sample_tokens)
    check_tracking_results(payload, tokens, source=str(path))
    write_json_atomic(path, payload, indent=None)


# ----------------------------------------------------------------------------------------------
# Checking


def check_tracking_results(payload: Any, split_sample_tokens: Sequence[str], source: str = "results") -> None:
    """Check a parsed tracking submission against the samples of a split; raise `FileFormatError`
    naming `source` and the first bad record (sample token, box index, field)."""

    def bad(problem: str) -> FileFormatError:
        return FileFormatError(source, problem)

    if not isinstance(payload, dict):
        raise bad(f"expected a JSON object with 'meta' and 'results', found {type(payload).__name__}")
    if not isinstance(payload.get("meta"), dict):
        raise bad("missing top-level object 'meta' (such as {\"use_lidar\": true, ...})")
    results = payload.get("results")
    if not isinstance(results, dict):
        raise bad("missing top-level object 'results' (sample_token -> list of boxes)")
    split = set(split_sample_tokens)
    for token in split_sample_tokens:
        if token not in results:
            raise bad(f"sample {token}: missing from 'results' (every sample of the split needs an entry, [] if empty)")
    for token, boxes in results.items():
        if token not in split:
            raise bad(f"sample {token}: not a sample of the evaluated split")
        if not isinstance(boxes, list):
            raise bad(f"sample {token}: expected a list of boxes, found {type(boxes).__name__}")
        if len(boxes) > MAX_BOXES_PER_SAMPLE:
            raise bad(f"sample {token}: {len(boxes)} boxes, at most {MAX_BOXES_PER_SAMPLE} are allowed")
        seen_ids: dict[str, int] = {}
        for index, box in enumerate(boxes):
            where = f"sample {token} box {index}"
            if not isinstance(box, dict):
                raise bad(f"{where}: expected an object, found {type(box).__name__}")
            if "tracking_name" not in box and "detection_name" in box:
                raise bad(
                    f"{where}: a detection record (detection_name, no tracking_name): this is a detection submission, not a tracking one"
                )
            for key in TRACKING_FIELDS:
                if key not in box:
                    raise bad(f"{where} field {key}: missing")
            problem = _box_problem(box, token)
            if problem is not None:
                raise bad(f"{where} {problem}")
            track_id = box["tracking_id"]
            if track_id in seen_ids:
                raise bad(
                    f"{where} field tracking_id: {track_id!r} repeats box {seen_ids[track_id]} of the same sample"
                )
            seen_ids[track_id] = index


def _box_problem(box: dict[str, Any], token: str) -> str | None:
    if box["sample_token"] != token:
        return f"field sample_token: expected {token!r} (the sample it is listed under), found {box['sample_token']!r}"
    for key, width in (("translation", 3), ("size", 3), ("rotation", 4), ("velocity", 2)):
        value = box[key]
        if not isinstance(value, list) or len(value) != width or not all(type(x) in (int, float) for x in value):
            return f"field {key}: expected a list of {width} numbers, found {value!r}"
        if not all(math.isfinite(x) for x in value):
            return f"field {key}: expected finite numbers, found {value!r}"
    if min(box["size"]) <= 0:
        return f"field size: every size must be > 0 metres, found {box['size']}"
    norm = math.sqrt(sum(x * x for x in box["rotation"]))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        return f"field rotation: expected a unit quaternion [w, x, y, z], found norm {norm:.6g}"
    if box["tracking_name"] not in TRACKING_CLASSES:
        return f"field tracking_name: unknown class {box['tracking_name']!r}, expected one of {list(TRACKING_CLASSES)}"
    if not isinstance(box["tracking_id"], str):
        return f"field tracking_id: expected a string, found {box['tracking_id']!r}"
    score = box["tracking_score"]
    if type(score) not in (int, float) or not math.isfinite(score):
        return f"field tracking_score: expected a finite number, found {score!r}"
    return None


def read_tracking_results(path: str | os.PathLike[str], split_sample_tokens: Sequence[str]) -> dict[str, Any]:
    """Read and check a tracking submission file (see `check_tracking_results`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--results {path}: no such file")
    try:
        payload = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(path, f"not valid JSON ({error})") from None
    check_tracking_results(payload, split_sample_tokens, source=str(path))
    return payload


# ----------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True, slots=True)
class TrackingReport:
    """What `evaluate_tracking` wrote: the devkit's summary (`metrics_summary.json` content) and
    the files, in the output folder."""

    summary: dict[str, Any]
    written: tuple[Path, ...]

    @property
    def amota(self) -> float:
        return float(self.summary["amota"])

    @property
    def amotp(self) -> float:
        return float(self.summary["amotp"])

    @property
    def ids(self) -> int:
        return int(self.summary["ids"])


def split_sample_tokens(dataroot: str | os.PathLike[str], version: str, split: str) -> list[str]:
    """The sample tokens of a split (a devkit name or one in <version>/splits.json)."""
    scene_names, _ = split_scene_names(dataroot, version, split)
    wanted = set(scene_names)
    scene_name_of = {scene["token"]: scene["name"] for scene in read_table(dataroot, version, "scene")}
    tokens = [
        s["token"] for s in read_table(dataroot, version, "sample") if scene_name_of.get(s["scene_token"]) in wanted
    ]
    if not tokens:
        raise InputError(f"split {split!r} has no samples in {Path(dataroot) / version}")
    return tokens


def evaluate_tracking(
    results_path: str | os.PathLike[str],
    dataroot: str | os.PathLike[str],
    version: str,
    split: str,
    out_dir: str | os.PathLike[str],
    plots: bool = True,
) -> TrackingReport:
    """Score a tracking submission with nuscenes-devkit's `TrackingEval` (tracking_nips_2019)
    and write its `metrics_summary.json`, `metrics_details.json` and, with `plots`, its PDF
    plots into `out_dir`. A bad file raises `InputError` before anything is written."""
    payload = read_tracking_results(results_path, split_sample_tokens(dataroot, version, split))
    if not any(payload["results"].values()):
        raise FileFormatError(results_path, "holds no boxes at all: the devkit's tracking metric needs at least one")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tracking-eval.", dir=out))
    try:
        summary = run_devkit_tracking_eval(results_path, dataroot, version, split, work, plots)
        written = []
        for source in sorted(work.rglob("*")):
            if source.is_file():
                target = out / source.relative_to(work)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
                written.append(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TrackingReport(summary=summary, written=tuple(written))


def run_devkit_tracking_eval(
    results_path: str | os.PathLike[str],
    dataroot: str | os.PathLike[str],
    version: str,
    split: str,
    output_dir: str | os.PathLike[str],
    plots: bool = True,
) -> dict[str, Any]:
    """nuscenes-devkit's `TrackingEval(...).main()` on a file, quietly (its prints and progress bars
    go nowhere); returns its summary."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.tracking.evaluate import TrackingEval

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        evaluator = TrackingEval(
            config=config_factory(TRACKING_CONFIG_NAME),
            result_path=str(results_path),
            eval_set=split,
            output_dir=str(output_dir),
            nusc_version=version,
            nusc_dataroot=str(dataroot),
            verbose=False,
        )
        return evaluator.main(render_curves=plots)


def summary_table(summary: Mapping[str, Any]) -> str:
    """The printed summary: the headline metrics, then per class AMOTA, AMOTP, MOTA, IDS."""
    lines = [
        "nuScenes tracking (nuscenes-devkit TrackingEval, tracking_nips_2019)",
        f"AMOTA {summary['amota']:.4f}  AMOTP {summary['amotp']:.4f}  MOTA {summary['mota']:.4f}  "
        f"MOTP {summary['motp']:.4f}  recall {summary['recall']:.4f}",
        f"IDS {summary['ids']:.0f}  FRAG {summary['frag']:.0f}  FP {summary['fp']:.0f}  FN {summary['fn']:.0f}  "
        f"TP {summary['tp']:.0f}  GT {summary['gt']:.0f}",
        f"{'class':<12}{'AMOTA':>8}{'AMOTP':>8}{'MOTA':>8}{'IDS':>6}",
    ]
    label = summary["label_metrics"]
    for name in TRACKING_CLASSES:
        row = [label[m].get(name, math.nan) for m in ("amota", "amotp", "mota", "ids")]
        lines.append(f"{name:<12}{row[0]:>8.3f}{row[1]:>8.3f}{row[2]:>8.3f}{row[3]:>6.0f}")
    return "\n".join(lines)
