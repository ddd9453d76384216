"""End to end against nuscenes-devkit 1.2.0: ground truth, filters and every metric on a written log."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from avfusion.datasets import synthetic
from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.config import default_config
from avfusion.eval.data import load_ground_truth, load_predictions
from avfusion.eval.detection import evaluate, evaluate_results_file, filter_boxes
from avfusion.eval.devkit_bridge import boxset_from_eval_boxes, run_devkit_eval

VERSION = "v1.0-mini"
SPLIT = "synth_val"


def _assert_boxsets_equal(ours, theirs):
    assert ours.sample_tokens == theirs.sample_tokens
    for name in ("sample_index", "label", "attribute", "num_pts"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name), err_msg=name)
    for name in ("translation", "size_wlh", "rotation_wxyz", "velocity_xy", "score"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=0, atol=1e-12, err_msg=name)


@pytest.fixture(scope="module")
def devkit_nusc(minimal_log):
    from nuscenes import NuScenes

    return NuScenes(version=VERSION, dataroot=str(minimal_log), verbose=False)


def test_ground_truth_and_filters_equal_the_devkit(minimal_log, devkit_nusc):
    from nuscenes.eval.common.loaders import (
        add_center_dist,
        filter_eval_boxes,
        get_samples_of_custom_split,
        load_gt_of_sample_tokens,
    )
    from nuscenes.eval.detection.data_classes import DetectionBox

    tokens = get_samples_of_custom_split(SPLIT, devkit_nusc)
    theirs = load_gt_of_sample_tokens(devkit_nusc, tokens, DetectionBox, verbose=False)
    gt = load_ground_truth(minimal_log, VERSION, SPLIT)
    _assert_boxsets_equal(gt.boxes, boxset_from_eval_boxes(theirs))
    assert np.isnan(gt.boxes.velocity_xy).any() and len(gt.bike_racks.sample_index) > 0

    config = default_config()
    theirs_filtered = filter_eval_boxes(devkit_nusc, add_center_dist(devkit_nusc, theirs), config.class_range_by_name)
    ours_filtered = filter_boxes(gt.boxes, gt, config)
    _assert_boxsets_equal(ours_filtered, boxset_from_eval_boxes(theirs_filtered))
    # Every filter removed something here, so each one is exercised.
    assert len(ours_filtered) < len(gt.boxes)


def _compare_summaries(ours: dict, theirs: dict) -> None:
    def close(a, b, where):
        if isinstance(b, float) and math.isnan(b):
            assert isinstance(a, float) and math.isnan(a), where
        else:
            assert a == pytest.approx(b, abs=1e-9), where

    for name, aps in theirs["label_aps"].items():
        for threshold, ap in aps.items():
            close(ours["label_aps"][name][str(threshold)], ap, f"AP {name} {threshold}")
        for metric, error in theirs["label_tp_errors"][name].items():
            close(ours["label_tp_errors"][name][metric], error, f"{metric} {name}")
        close(ours["mean_dist_aps"][name], theirs["mean_dist_aps"][name], f"mean AP {name}")
    for metric in theirs["tp_errors"]:
        close(ours["tp_errors"][metric], theirs["tp_errors"][metric], metric)
        close(ours["tp_scores"][metric], theirs["tp_scores"][metric], metric)
    close(ours["mean_ap"], theirs["mean_ap"], "mAP")
    close(ours["nd_score"], theirs["nd_score"], "NDS")
    assert set(ours) - {"meta"} == set(theirs)


@pytest.mark.parametrize("seed", [11, 12])
def test_every_metric_equals_the_devkit(minimal_log, predictions_for, tmp_path, seed):
    payload = predictions_for(minimal_log, seed=seed)
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(payload))
    config = default_config()

    ours = evaluate_results_file(results_path, minimal_log, VERSION, SPLIT, config)
    theirs = run_devkit_eval(minimal_log, VERSION, SPLIT, results_path, config, tmp_path / "devkit")
    summary = ours.evaluation.metrics.summary_json(ours.predictions.meta)
    _compare_summaries(summary, theirs.summary)
    details = ours.evaluation.details_json()
    assert set(details) == set(theirs.details)
    for key, curves in theirs.details.items():
        for name, values in curves.items():
            np.testing.assert_allclose(details[key][name], values, rtol=0, atol=1e-9, err_msg=f"{key} {name}")
    # A meaningful comparison: some classes score, none perfectly.
    assert 0.05 < summary["mean_ap"] < 0.95


def test_perfect_predictions_score_perfect_ap(minimal_log, tmp_path):
    gt = load_ground_truth(minimal_log, VERSION, SPLIT)
    config = default_config()
    # The evaluated ground truth itself as predictions (score 1): AP 1 for every class that has any.
    # (Unfiltered it would not be: the copies of boxes without lidar points would be false positives.)
    boxes = filter_boxes(gt.boxes, gt, config)
    perfect = type(boxes)(
        **{
            **{name: getattr(boxes, name) for name in boxes.__slots__},
            "score": np.ones(len(boxes)),
            "num_pts": np.full(len(boxes), -1),
        }
    )
    evaluation = evaluate(gt, perfect, config)
    for name, aps in evaluation.metrics.label_aps.items():
        if evaluation.num_gt[name]:
            assert all(ap == pytest.approx(1.0) for ap in aps.values()), name
            assert evaluation.metrics.label_tp_errors[name]["trans_err"] == pytest.approx(0.0, abs=1e-12)


def test_results_of_a_devkit_builtin_split_keep_file_order(minimal_log, tmp_path, predictions_for):
    # With a custom split, predictions are ordered by the split; the loader must reorder a file whose
    # keys come in another order, or tie-breaking between equal scores would differ from the devkit.
    payload = predictions_for(minimal_log, seed=3)
    reversed_payload = {"meta": payload["meta"], "results": dict(reversed(list(payload["results"].items())))}
    path = tmp_path / "reversed.json"
    path.write_text(json.dumps(reversed_payload))
    gt = load_ground_truth(minimal_log, VERSION, SPLIT)
    predictions = load_predictions(path, gt, default_config())
    assert predictions.boxes.sample_tokens == gt.sample_tokens
    assert np.all(np.diff(predictions.boxes.sample_index) >= 0)


def test_every_metric_equals_the_devkit_on_a_generated_synthetic_log(tmp_path_factory, predictions_for, tmp_path):
    # The project's own synthetic world (annotations only), not this folder's hand-written tables.
    dataroot = synthetic.make_synthetic_log(
        tmp_path_factory.mktemp("synthetic") / "log",
        num_scenes=2,
        seconds=4,
        seed=31,
        annotations_only=True,
        progress=False,
    )
    payload = predictions_for(dataroot, seed=4)
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(payload))
    config = default_config()
    ours = evaluate_results_file(results_path, dataroot, VERSION, SPLIT, config)
    theirs = run_devkit_eval(dataroot, VERSION, SPLIT, results_path, config, tmp_path / "devkit")
    _compare_summaries(ours.evaluation.metrics.summary_json(), theirs.summary)
    assert len(ours.ground_truth.boxes) > 20


def test_select_picks_rows_as_indexing_does():
    rng = np.random.default_rng(3)
    n = 50
    boxes = EvalBoxSet(
        sample_tokens=("a", "b", "c"),
        sample_index=np.sort(rng.integers(0, 3, n)),
        translation=rng.normal(size=(n, 3)),
        size_wlh=rng.uniform(1, 2, (n, 3)),
        rotation_wxyz=rng.normal(size=(n, 4)),
        velocity_xy=rng.normal(size=(n, 2)),
        label=rng.integers(0, 10, n),
        score=rng.random(n),
        attribute=rng.integers(-1, 8, n),
        num_pts=rng.integers(0, 9, n),
    )
    mask = rng.random(n) < 0.4
    for rows in (mask, np.flatnonzero(mask), np.zeros(n, bool), np.arange(n), []):
        picked = boxes.select(rows)
        index = np.asarray(rows, np.int64) if len(rows) == 0 else rows
        for name in (
            "sample_index",
            "translation",
            "size_wlh",
            "rotation_wxyz",
            "velocity_xy",
            "label",
            "score",
            "attribute",
            "num_pts",
        ):
            expected = getattr(boxes, name)[index]
            assert getattr(picked, name).dtype == expected.dtype and np.array_equal(getattr(picked, name), expected), (
                name
            )
    with pytest.raises(IndexError):
        boxes.select(mask[:-1])
