"""Results files: every problem named (sample, box, field), and what we write the devkit reads."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from avfusion.calibration.boxes import Boxes3D
from avfusion.errors import InputError
from avfusion.eval.config import default_config
from avfusion.eval.data import load_ground_truth, load_predictions
from avfusion.eval.detection import evaluate, filter_boxes
from avfusion.eval.devkit_bridge import run_devkit_eval
from avfusion.eval.submission import (
    MAX_LISTED_PROBLEMS,
    ResultsProblems,
    detection_records,
    submission_meta,
    validate_results,
    write_results,
)

VERSION = "v1.0-mini"
SPLIT = "synth_val"


@pytest.fixture(scope="module")
def good_payload(minimal_log, predictions_for):
    return predictions_for(minimal_log, seed=5)


@pytest.fixture(scope="module")
def split_tokens(minimal_log):
    return load_ground_truth(minimal_log, VERSION, SPLIT).sample_tokens


def _first_box(payload):
    token = next(token for token, boxes in payload["results"].items() if boxes)
    return token, payload["results"][token][0]


def _problems(payload, tokens) -> list[str]:
    with pytest.raises(ResultsProblems) as caught:
        validate_results(payload, tokens)
    return list(caught.value.problems)


def test_a_good_file_passes_and_keeps_its_order(good_payload, split_tokens):
    columns = validate_results(good_payload, split_tokens)
    assert columns.sample_tokens == tuple(good_payload["results"])
    assert len(columns.score) == sum(len(boxes) for boxes in good_payload["results"].values())


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("detection_name", "spaceship", "unknown class 'spaceship'"),
        ("attribute_name", "vehicle.flying", "unknown attribute 'vehicle.flying'"),
        ("translation", [1.0, math.nan, 0.0], "finite"),
        ("velocity", [math.inf, 0.0], "finite"),
        ("detection_score", math.nan, "finite number"),
        ("detection_score", "0.5", "finite number"),
        ("rotation", [1.0, 0.0, 0.0, 0.5], "unit quaternion"),
        ("size", [1.0, 0.0, 2.0], "> 0"),
        ("size", [1.0, 2.0], "list of 3 numbers"),
        ("sample_token", "someone-else", "the sample it is listed under"),
    ],
)
def test_each_bad_field_is_named_with_sample_and_box(good_payload, split_tokens, field, value, expected):
    payload = copy.deepcopy(good_payload)
    token, box = _first_box(payload)
    box[field] = value
    problems = _problems(payload, split_tokens)
    assert len(problems) == 1
    assert problems[0].startswith(f"sample {token} box 0 field {field}:")
    assert expected in problems[0]


def test_file_level_problems(good_payload, split_tokens):
    missing_meta = {"results": good_payload["results"]}
    assert any("'meta'" in p for p in _problems(missing_meta, split_tokens))
    assert "'results'" in _problems({"meta": {}}, split_tokens)[0]

    payload = copy.deepcopy(good_payload)
    dropped = split_tokens[0]
    del payload["results"][dropped]
    payload["results"]["a-sample-of-another-split"] = []
    problems = _problems(payload, split_tokens)
    assert any(dropped in p and "missing" in p for p in problems)
    assert any("a-sample-of-another-split" in p and "not a sample of the evaluated split" in p for p in problems)

    payload = copy.deepcopy(good_payload)
    token, box = _first_box(payload)
    payload["results"][token] = [copy.deepcopy(box) for _ in range(501)]
    assert any("501 boxes, at most 500" in p for p in _problems(payload, split_tokens))


def test_all_problems_are_listed_and_the_message_is_capped(good_payload, split_tokens):
    payload = copy.deepcopy(good_payload)
    bad = 0
    for boxes in payload["results"].values():
        for box in boxes:
            box["detection_name"] = "unicorn"
            del box["velocity"]
            bad += 1
    with pytest.raises(InputError) as caught:
        validate_results(payload, split_tokens, source="R.json")
    assert len(caught.value.problems) == 2 * bad > MAX_LISTED_PROBLEMS
    message = str(caught.value)
    assert message.startswith(f"R.json: {2 * bad} problem(s)")
    assert f"and {2 * bad - MAX_LISTED_PROBLEMS} more" in message


def test_not_json_is_a_file_format_error(minimal_log, tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"meta": {}, "results": {')
    gt = load_ground_truth(minimal_log, VERSION, SPLIT)
    with pytest.raises(InputError, match="not valid JSON"):
        load_predictions(path, gt, default_config())


def test_written_results_load_and_score_in_the_devkit_unchanged(minimal_log, tmp_path):
    # A detector's output as Boxes3D in the global frame -> our writer -> the devkit's own evaluation.
    gt = load_ground_truth(minimal_log, VERSION, SPLIT)
    config = default_config()
    evaluated = filter_boxes(gt.boxes, gt, config)
    rng = np.random.default_rng(0)
    results = {}
    for position, token in enumerate(gt.sample_tokens):
        rows = evaluated.sample_index == position
        q = evaluated.rotation_wxyz[rows]
        boxes = Boxes3D(
            center=evaluated.translation[rows] + rng.normal(0, 0.3, (rows.sum(), 3)),
            size_wlh=evaluated.size_wlh[rows],
            yaw_rad=2 * np.arctan2(q[:, 3], q[:, 0]),
            velocity_xy=np.where(rng.random((rows.sum(), 1)) < 0.3, np.nan, np.nan_to_num(evaluated.velocity_xy[rows])),
            label=evaluated.label[rows],
            score=rng.uniform(0.1, 1.0, rows.sum()),
            attribute=evaluated.attribute[rows],
        )
        results[token] = detection_records(token, boxes)
    path = tmp_path / "ours.json"
    write_results(path, results, submission_meta(use_camera=True, use_lidar=True), gt.sample_tokens)

    theirs = run_devkit_eval(minimal_log, VERSION, SPLIT, path, config, tmp_path / "devkit")
    ours = evaluate(gt, load_predictions(path, gt, config).boxes, config).metrics
    assert ours.nd_score == pytest.approx(theirs.summary["nd_score"], abs=1e-9)
    assert ours.mean_ap == pytest.approx(theirs.summary["mean_ap"], abs=1e-9)
    assert ours.mean_ap > 0.5  # near-perfect boxes score high: the records mean what they should


def test_write_results_refuses_a_bad_box_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.json"
    record = {
        "sample_token": "s",
        "translation": [0, 0, 0],
        "size": [1, 1, 1],
        "rotation": [1, 0, 0, 0],
        "velocity": [0, 0],
        "detection_name": "car",
        "detection_score": math.nan,
        "attribute_name": "",
    }
    with pytest.raises(InputError, match="sample s box 0 field detection_score"):
        write_results(path, {"s": [record]}, submission_meta(use_camera=True, use_lidar=False))
    assert not path.exists() and not list(tmp_path.iterdir())
