"""`avfusion eval --task tracking`: nuscenes-devkit's tracking metric on hand-made submissions
(perfect tracks, id switches, fragmentations, false tracks) and on the tracker's own output,
devkit identity, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from avfusion.calibration.se3 import yaw_from_quaternion
from avfusion.eval.tracking import evaluate_tracking, run_devkit_tracking_eval, split_sample_tokens, tracking_records
from avfusion.fusion.tracking import FrameDetections, track_scene
from avfusion.labels import CLASS_INDEX
from avfusion.tools.cli import main
from avfusion.tools.replay.tracking import boxes_of

VERSION = "v1.0-mini"
SPLIT = "synth_val"
TRACKING_NAME = {
    "vehicle.car": "car",
    "vehicle.truck": "truck",
    "vehicle.bus.rigid": "bus",
    "vehicle.bus.bendy": "bus",
    "vehicle.trailer": "trailer",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.bicycle": "bicycle",
}


def _table(root: Path, name: str) -> list[dict]:
    return json.loads((root / VERSION / f"{name}.json").read_text())


def ground_truth_tracks(dataroot: Path) -> dict[str, list[dict]]:
    """The split's annotations of the tracking classes that the metric keeps (with lidar points),
    as a tracking submission whose ids are the instance tokens: the perfect tracker's output."""
    tokens = split_sample_tokens(dataroot, VERSION, SPLIT)
    category = {c["token"]: c["name"] for c in _table(dataroot, "category")}
    instance_category = {i["token"]: category[i["category_token"]] for i in _table(dataroot, "instance")}
    results: dict[str, list[dict]] = {token: [] for token in tokens}
    for ann in _table(dataroot, "sample_annotation"):
        name = TRACKING_NAME.get(instance_category[ann["instance_token"]])
        if ann["sample_token"] not in results or name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
            continue
        results[ann["sample_token"]].append(
            {
                "sample_token": ann["sample_token"],
                "translation": ann["translation"],
                "size": ann["size"],
                "rotation": ann["rotation"],
                "velocity": [0.0, 0.0],
                "tracking_id": ann["instance_token"],
                "tracking_name": name,
                "tracking_score": 0.9,
            }
        )
    return results


def submission(results: dict[str, list[dict]]) -> dict:
    meta = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}
    return {"meta": meta, "results": results}


def spoiled(results: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The perfect tracks with the errors a tracker makes: from the middle of the split on, the
    first two tracks of each class in a sample swap ids (id switches), and the third takes a new id
    (a fragmentation); a track drops out for a keyframe; a false track drives through empty space."""
    tokens = list(results)
    out = {token: [dict(box) for box in boxes] for token, boxes in results.items()}
    half = len(tokens) // 2
    for position, token in enumerate(tokens):
        boxes = out[token]
        for name in sorted({b["tracking_name"] for b in boxes}):
            same = sorted((b for b in boxes if b["tracking_name"] == name), key=lambda b: b["tracking_id"])
            if position >= half and len(same) >= 2:
                same[0]["tracking_id"], same[1]["tracking_id"] = same[1]["tracking_id"], same[0]["tracking_id"]
            if position >= half and len(same) >= 3:
                same[2]["tracking_id"] = same[2]["tracking_id"] + "-fragment"
        if position == half - 1 and boxes:
            boxes.pop()
        x = 200.0 + 2.0 * position
        boxes.append(
            {
                "sample_token": token,
                "translation": [x, 5.0, 1.0],
                "size": [1.9, 4.6, 1.7],
                "rotation": [1.0, 0.0, 0.0, 0.0],
                "velocity": [4.0, 0.0],
                "tracking_id": "false-track",
                "tracking_name": "car",
                "tracking_score": 0.5,
            }
        )
    return out


def _run(tmp_path: Path, dataroot: Path, payload: dict, name: str) -> tuple[int, Path, Path]:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(payload))
    out = tmp_path / f"{name}_report"
    code = main(
        [
            "eval",
            "--task",
            "tracking",
            "--results",
            str(path),
            "--dataroot",
            str(dataroot),
            "--version",
            VERSION,
            "--split",
            SPLIT,
            "--out",
            str(out),
            "--no-plots",
        ]
    )
    return code, path, out


def test_perfect_tracks_score_perfectly(minimal_log, tmp_path, capsys):
    code, _, out = _run(tmp_path, minimal_log, submission(ground_truth_tracks(minimal_log)), "perfect")
    assert code == 0
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert summary["amota"] == pytest.approx(1.0, abs=1e-12)
    assert summary["amotp"] == pytest.approx(0.0, abs=1e-5)  # the devkit keeps centres in float32
    assert summary["ids"] == 0 and summary["frag"] == 0 and summary["fp"] == 0 and summary["fn"] == 0
    assert "AMOTA 1.0000" in capsys.readouterr().out


def test_errors_are_counted_and_equal_the_devkit(minimal_log, tmp_path):
    code, path, out = _run(tmp_path, minimal_log, submission(spoiled(ground_truth_tracks(minimal_log))), "spoiled")
    assert code == 0
    ours = json.loads((out / "metrics_summary.json").read_text())
    # (The one-keyframe dropout costs nothing: the metric interpolates tracks over gaps.)
    assert ours["ids"] >= 2 and ours["fp"] > 0 and ours["amota"] < 1.0
    devkit = run_devkit_tracking_eval(path, minimal_log, VERSION, SPLIT, tmp_path / "devkit", plots=False)
    assert set(ours) == set(devkit)
    for key, value in devkit.items():
        if key in ("eval_time", "meta", "cfg"):
            continue
        if isinstance(value, dict):
            for name, per_class in value.items():
                for class_name, number in per_class.items():
                    other = ours[key][name][class_name]
                    assert (math.isnan(number) and math.isnan(other)) or abs(number - other) <= 1e-9, (
                        key,
                        name,
                        class_name,
                    )
        else:
            assert (math.isnan(value) and math.isnan(ours[key])) or abs(value - ours[key]) <= 1e-9, key
    assert (out / "metrics_details.json").is_file()


def test_plots_are_written(minimal_log, tmp_path):
    path = tmp_path / "perfect.json"
    path.write_text(json.dumps(submission(ground_truth_tracks(minimal_log))))
    report = evaluate_tracking(path, minimal_log, VERSION, SPLIT, tmp_path / "report", plots=True)
    names = {p.relative_to(tmp_path / "report").as_posix() for p in report.written}
    assert {
        "metrics_summary.json",
        "metrics_details.json",
        "plots/summary.pdf",
        "plots/mota.pdf",
        "plots/ids.pdf",
    } <= names
    assert not list((tmp_path / "report").glob(".tracking-eval.*"))


def _first_box(results: dict[str, list[dict]]) -> tuple[str, int]:
    for token, boxes in results.items():
        if len(boxes) >= 2:
            return token, 0
    raise AssertionError("no sample with two boxes")


@pytest.mark.parametrize(
    "problem", ["missing_sample", "unknown_name", "repeated_id", "nan_box", "detection_submission", "no_boxes"]
)
def test_bad_submissions_fail_in_one_line_and_write_nothing(minimal_log, tmp_path, capsys, problem):
    results = ground_truth_tracks(minimal_log)
    token, index = _first_box(results)
    box = results[token][index]
    expected = {
        "missing_sample": "missing from 'results'",
        "unknown_name": "unknown class 'traffic_cone'",
        "repeated_id": "repeats box 0",
        "nan_box": "field translation: expected finite numbers",
        "detection_submission": "detection submission",
        "no_boxes": "holds no boxes at all",
    }[problem]
    if problem == "missing_sample":
        del results[token]
    elif problem == "unknown_name":
        box["tracking_name"] = "traffic_cone"
    elif problem == "repeated_id":
        results[token][1]["tracking_id"] = box["tracking_id"]
    elif problem == "nan_box":
        box["translation"] = [float("nan"), 0.0, 0.0]
    elif problem == "no_boxes":
        results = {t: [] for t in results}
    else:
        for boxes in results.values():
            for b in boxes:
                b["detection_name"] = b.pop("tracking_name")
                b["detection_score"] = b.pop("tracking_score")
                b["attribute_name"] = ""
                del b["tracking_id"]
    code, path, out = _run(tmp_path, minimal_log, submission(results), problem)
    error = capsys.readouterr().err
    assert code == 2
    assert len(error.strip().splitlines()) == 1 and str(path) in error and expected in error, error
    if problem not in ("missing_sample", "no_boxes"):
        assert token in error
    assert not out.exists()


def tracker_submission(dataroot: Path, seed: int) -> dict[str, list[dict]]:
    """The tracker's offline output on the split's annotations turned into noisy detections
    (centres jittered by 0.2 m, 15% missed, headings read backwards a third of the time, a false
    positive now and then), as a tracking submission: what `avfusion replay` writes."""
    rng = np.random.default_rng(seed)
    truth = ground_truth_tracks(dataroot)
    samples = {s["token"]: s for s in _table(dataroot, "sample")}
    scenes: dict[str, list[str]] = {}
    for token in truth:
        scenes.setdefault(samples[token]["scene_token"], []).append(token)
    results: dict[str, list[dict]] = {}
    for scene, tokens in sorted(scenes.items()):
        tokens.sort(key=lambda t: samples[t]["timestamp"])
        frames = []
        for token in tokens:
            boxes = [b for b in truth[token] if rng.random() > 0.15]
            rows = [
                (
                    np.array(b["translation"]) + np.append(rng.normal(0, 0.2, 2), 0.0),
                    b["size"],
                    float(yaw_from_quaternion(np.array(b["rotation"]))) + (math.pi if rng.random() < 0.33 else 0.0),
                    rng.uniform(0.3, 0.9),
                    CLASS_INDEX[b["tracking_name"]],
                )
                for b in boxes
            ]
            if rng.random() < 0.3:
                rows.append((np.array([rng.uniform(-50, 50), rng.uniform(-50, 50), 1.0]), [1.9, 4.5, 1.6], 0.0, 0.3, 0))
            n = len(rows)
            frames.append(
                FrameDetections(
                    sample_token=token,
                    timestamp_us=samples[token]["timestamp"],
                    center=np.array([r[0] for r in rows]).reshape(n, 3),
                    size_wlh=np.array([r[1] for r in rows], np.float64).reshape(n, 3),
                    yaw_rad=np.array([r[2] for r in rows], np.float64),
                    velocity_xy=np.full((n, 2), np.nan),
                    score=np.array([r[3] for r in rows], np.float64),
                    label=np.array([r[4] for r in rows], np.int64),
                    attribute=np.full(n, -1, np.int64),
                )
            )
        for frame in track_scene(frames, "offline").frames:
            tracked = frame.track_id >= 0
            results[frame.sample_token] = tracking_records(
                frame.sample_token, boxes_of(frame)[tracked], [f"{scene}-{i}" for i in frame.track_id[tracked].tolist()]
            )
    return results


def test_our_trackers_submission_equals_the_devkit(minimal_log, tmp_path):
    code, path, out = _run(tmp_path, minimal_log, submission(tracker_submission(minimal_log, seed=3)), "tracker")
    assert code == 0
    ours = json.loads((out / "metrics_summary.json").read_text())
    assert 0.0 < ours["amota"] < 1.0
    devkit = run_devkit_tracking_eval(path, minimal_log, VERSION, SPLIT, tmp_path / "devkit", plots=False)
    for key in (
        "amota",
        "amotp",
        "recall",
        "motar",
        "mota",
        "motp",
        "mt",
        "ml",
        "faf",
        "tp",
        "fp",
        "fn",
        "ids",
        "frag",
    ):
        assert (math.isnan(devkit[key]) and math.isnan(ours[key])) or abs(devkit[key] - ours[key]) <= 1e-9, key
    for class_name, number in devkit["label_metrics"]["amota"].items():
        other = ours["label_metrics"]["amota"][class_name]
        assert (math.isnan(number) and math.isnan(other)) or abs(number - other) <= 1e-9, class_name
