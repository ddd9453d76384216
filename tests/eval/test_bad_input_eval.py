"""Evaluation input the metric must refuse: ground truth checked as strictly as predictions, a split
with nothing to score, a sample listed twice, numbers a float64 cannot hold. Each is one
`InputError` naming the annotation or the sample, on the fast and the reference readers alike."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest

from avfusion.errors import InputError
from avfusion.eval.config import default_config
from avfusion.eval.data import (
    load_ground_truth,
    load_ground_truth_and_predictions,
    load_ground_truth_reference,
    load_predictions,
    load_predictions_reference,
)
from avfusion.eval.submission import ResultsProblems, check_sample_keys_unique

VERSION = "v1.0-mini"
SPLIT = "synth_val"
GROUND_TRUTH_LOADERS = (load_ground_truth, load_ground_truth_reference)
PREDICTION_LOADERS = (load_predictions, load_predictions_reference)


@pytest.fixture
def log_copy(minimal_log: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(minimal_log, tmp_path / "log"))


def _spoil_first_annotation(root: Path, edit) -> str:
    """Apply `edit` to the first annotation of a sample of the split; returns its token."""
    split_tokens = set(load_ground_truth_reference(root, VERSION, SPLIT).sample_tokens)
    path = root / VERSION / "sample_annotation.json"
    records = json.loads(path.read_text())
    record = next(r for r in records if r["sample_token"] in split_tokens)
    edit(record)
    path.write_text(json.dumps(records))
    return record["token"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r["translation"].__setitem__(0, math.nan), "translation must be 3 finite numbers"),
        (lambda r: r["size"].__setitem__(1, -2.0), "size must be 3 finite numbers > 0"),
        (lambda r: r["size"].__setitem__(0, "1.5"), r"size must be 3 finite numbers > 0, found \['1.5'"),
        (lambda r: r["size"].__setitem__(2, True), "size must be 3 finite numbers > 0"),
        (lambda r: r["rotation"].__setitem__(0, 10**400), "rotation must be 4 finite numbers"),
    ],
)
def test_bad_ground_truth_is_named_by_every_reader(
    log_copy: Path, tmp_path: Path, predictions_for, edit, expected
) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(predictions_for(log_copy, seed=5)))
    token = _spoil_first_annotation(log_copy, edit)
    for load in GROUND_TRUTH_LOADERS:
        with pytest.raises(InputError, match=f"sample_annotation '{token}': {expected}"):
            load(log_copy, VERSION, SPLIT)
    with pytest.raises(InputError, match=f"sample_annotation '{token}': {expected}"):
        load_ground_truth_and_predictions(log_copy, VERSION, SPLIT, results, default_config())


def test_a_split_without_annotations_is_an_error(log_copy: Path) -> None:
    (log_copy / VERSION / "sample_annotation.json").write_text("[]")
    for load in GROUND_TRUTH_LOADERS:
        with pytest.raises(
            InputError, match=f"split '{SPLIT}' of .*: its 32 samples have no annotations of the detection classes"
        ):
            load(log_copy, VERSION, SPLIT)


@pytest.fixture
def ground_truth(minimal_log: Path):
    return load_ground_truth(minimal_log, VERSION, SPLIT)


@pytest.fixture
def payload(minimal_log: Path, predictions_for) -> dict:
    return predictions_for(minimal_log, seed=5)


def _first_token(payload: dict) -> str:
    return next(token for token, boxes in payload["results"].items() if boxes)


def test_a_sample_listed_twice_is_named(payload: dict, ground_truth, tmp_path: Path) -> None:
    token = _first_token(payload)
    text = json.dumps(payload).replace('"results": {', f'"results": {{"{token}": [], ', 1)
    path = tmp_path / "twice.json"
    path.write_text(text)
    assert len(json.loads(text)["results"][token]) > 0  # json keeps the last copy: boxes would be lost silently
    for load in PREDICTION_LOADERS:
        with pytest.raises(ResultsProblems, match=f"sample {token}: listed more than once"):
            load(path, ground_truth, default_config())
    with pytest.raises(ResultsProblems, match=f"sample {token}: listed more than once in 'results'"):
        check_sample_keys_unique(["a", token, "b", token])
    check_sample_keys_unique(["a", "b"])


@pytest.mark.parametrize(
    ("field", "literal", "expected"),
    [
        ("translation", "1" + "0" * 400, "field translation: expected finite numbers a float64 can hold"),
        ("size", "1e400", "field size: expected finite numbers a float64 can hold, found [inf"),
        ("detection_score", "-" + "9" * 401, "field detection_score: expected a finite number, found -99"),
        ("num_pts", "9" * 30, "field num_pts: expected an integer from 0 to 2**63 - 1"),
        ("num_pts", "-3", "field num_pts: expected an integer from 0 to 2**63 - 1"),
    ],
)
def test_numbers_a_float64_cannot_hold_are_named(
    payload: dict, ground_truth, tmp_path: Path, field, literal, expected
) -> None:
    payload = copy.deepcopy(payload)
    token = _first_token(payload)
    box = payload["results"][token][0]
    marker = 123456.25
    box[field] = [marker, 1.0, 1.0] if field in ("translation", "size") else marker
    path = tmp_path / "big.json"
    path.write_text(json.dumps(payload).replace(repr(marker), literal))
    for load in PREDICTION_LOADERS:
        with pytest.raises(ResultsProblems) as caught:
            load(path, ground_truth, default_config())
        message = str(caught.value)
        assert f"sample {token} box 0 {expected}" in message, message
        assert len(message) < 400  # the number is named, not printed whole
