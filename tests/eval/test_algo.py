"""accumulate / calc_ap / calc_tp against hand-worked cases and nuscenes-devkit's pure functions."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.eval.common.utils import center_distance
from nuscenes.eval.detection import algo as devkit_algo

from avfusion.eval import algo
from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.devkit_bridge import eval_boxes_from_boxset
from avfusion.labels import ATTRIBUTES, CLASS_INDEX, DETECTION_CLASSES


def _boxes(rows: list[dict], sample_tokens: tuple[str, ...]) -> EvalBoxSet:
    """Boxes from short dicts: sample (position), xy, and optional fields."""
    rows = sorted(rows, key=lambda row: row["sample"])  # stable: keeps the order within a sample
    n = len(rows)
    yaw = np.array([row.get("yaw", 0.0) for row in rows])
    return EvalBoxSet(
        sample_tokens=sample_tokens,
        sample_index=np.array([row["sample"] for row in rows], np.int64),
        translation=np.array([[*row["xy"], row.get("z", 1.0)] for row in rows], np.float64).reshape(n, 3),
        size_wlh=np.array([row.get("wlh", (2.0, 4.0, 1.5)) for row in rows], np.float64).reshape(n, 3),
        rotation_wxyz=np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], axis=1),
        velocity_xy=np.array([row.get("v", (0.0, 0.0)) for row in rows], np.float64).reshape(n, 2),
        label=np.array([CLASS_INDEX[row.get("cls", "car")] for row in rows], np.int64),
        score=np.array([row.get("score", -1.0) for row in rows], np.float64),
        attribute=np.array([row.get("attr", -1) for row in rows], np.int64),
        num_pts=np.array([row.get("num_pts", -1) for row in rows], np.int64),
    )


def test_three_box_case_worked_by_hand():
    # Two cars of ground truth; predictions: a hit (0.1 m off), a far false positive, a hit (0.2 m off).
    tokens = ("s0",)
    gt = _boxes([{"sample": 0, "xy": (0.0, 0.0)}, {"sample": 0, "xy": (10.0, 0.0)}], tokens)
    pred = _boxes(
        [
            {"sample": 0, "xy": (0.1, 0.0), "score": 0.9},
            {"sample": 0, "xy": (50.0, 0.0), "score": 0.8},
            {"sample": 0, "xy": (10.2, 0.0), "score": 0.7},
        ],
        tokens,
    )
    md = algo.accumulate(gt, pred, "car", 2.0)
    # Cumulative: TP 1,1,2 / FP 0,1,1 -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1. Interpolated:
    # 1 below recall 0.5, 1/2 at 0.5 (np.interp takes the last of repeated recalls), then linear to 2/3.
    # AP = mean over bins 0.11..1.00 of max(p - 0.1, 0) / 0.9
    #    = (39 * 0.9 + 0.4 + sum_k=1..50 (0.4 + 0.01 k / 3)) / 90 / 0.9 = 59.75 / 81.
    assert algo.calc_ap(md, 0.1, 0.1) == pytest.approx(59.75 / 81, abs=1e-12)
    # Translation errors 0.1 then 0.2: running mean 0.1, 0.15 at scores 0.9, 0.7; resampled on the
    # interpolated confidence (0.9 below recall 0.5, 0.8 at 0.5, then down to 0.7 at recall 1):
    # (39 * 0.1 + 0.125 + sum_k (0.125 + 0.0005 k)) / 90 = 10.9125 / 90.
    assert algo.calc_tp(md, 0.1, "trans_err") == pytest.approx(10.9125 / 90, abs=1e-12)
    assert md.max_recall_ind == 100
    assert algo.calc_tp(md, 0.1, "scale_err") == pytest.approx(0.0, abs=1e-12)


def test_no_ground_truth_or_no_match_gives_the_no_prediction_curves():
    tokens = ("s0",)
    gt = _boxes([{"sample": 0, "xy": (0.0, 0.0)}], tokens)
    far = _boxes([{"sample": 0, "xy": (30.0, 0.0), "score": 0.5}], tokens)
    for md in (algo.accumulate(gt, far, "car", 4.0), algo.accumulate(gt, far, "truck", 4.0)):
        assert algo.calc_ap(md, 0.1, 0.1) == 0.0
        assert algo.calc_tp(md, 0.1, "trans_err") == 1.0


def test_max_recall_below_min_recall_scores_tp_error_one():
    # One hit out of 20 ground-truth boxes: recall 0.05 < 0.1.
    tokens = ("s0",)
    gt = _boxes([{"sample": 0, "xy": (10.0 * i, 0.0)} for i in range(20)], tokens)
    pred = _boxes([{"sample": 0, "xy": (0.3, 0.0), "score": 0.9}], tokens)
    md = algo.accumulate(gt, pred, "car", 1.0)
    assert md.max_recall_ind == 5
    assert algo.calc_tp(md, 0.1, "trans_err") == 1.0


def test_equal_scores_rank_the_later_row_first():
    # Two equal-score predictions compete for one ground truth: the later row takes it (devkit order).
    tokens = ("s0",)
    gt = _boxes([{"sample": 0, "xy": (0.0, 0.0)}], tokens)
    pred = _boxes(
        [{"sample": 0, "xy": (0.5, 0.0), "score": 0.5}, {"sample": 0, "xy": (0.9, 0.0), "score": 0.5}], tokens
    )
    md = algo.accumulate(gt, pred, "car", 2.0)
    assert md.trans_err[11] == pytest.approx(0.9)


def test_barrier_orientation_is_judged_modulo_pi():
    tokens = ("s0",)
    for cls, expected in (("barrier", 0.0), ("car", np.pi)):
        gt = _boxes([{"sample": 0, "xy": (0.0, 0.0), "cls": cls, "yaw": 0.3}], tokens)
        pred = _boxes([{"sample": 0, "xy": (0.0, 0.0), "cls": cls, "yaw": 0.3 + np.pi, "score": 0.5}], tokens)
        md = algo.accumulate(gt, pred, cls, 2.0)
        assert algo.calc_tp(md, 0.1, "orient_err") == pytest.approx(expected, abs=1e-9)


def _random_sets(rng: np.random.Generator, n_samples: int) -> tuple[EvalBoxSet, EvalBoxSet]:
    """Ground truth in a few classes, predictions: perturbed copies, duplicates, misses, spurious boxes,
    and scores rounded so that ties happen."""
    tokens = tuple(f"sample{i}" for i in range(n_samples))
    classes = ("car", "pedestrian", "barrier", "traffic_cone", "bicycle")
    gt_rows, pred_rows = [], []
    for sample in range(n_samples):
        for _ in range(rng.integers(0, 12)):
            cls = classes[rng.integers(len(classes))]
            xy = rng.uniform(-8, 8, 2)
            attr = (
                -1 if cls in ("barrier", "traffic_cone") or rng.random() < 0.2 else int(rng.integers(len(ATTRIBUTES)))
            )
            v = (np.nan, np.nan) if rng.random() < 0.2 else tuple(rng.normal(0, 2, 2))
            wlh = tuple(rng.uniform(0.5, 4.0, 3))
            yaw = rng.uniform(-np.pi, np.pi)
            gt_rows.append({"sample": sample, "xy": xy, "cls": cls, "attr": attr, "v": v, "wlh": wlh, "yaw": yaw})
            copies = 0 if rng.random() < 0.15 else (2 if rng.random() < 0.15 else 1)
            for _ in range(copies):
                pred_rows.append(
                    {
                        "sample": sample,
                        "xy": xy + rng.normal(0, 0.8, 2),
                        "cls": cls if rng.random() < 0.9 else classes[rng.integers(len(classes))],
                        "attr": int(rng.integers(-1, len(ATTRIBUTES))),
                        "v": tuple(np.nan_to_num(v) + rng.normal(0, 0.5, 2)),
                        "wlh": tuple(np.array(wlh) * rng.uniform(0.8, 1.2, 3)),
                        "yaw": yaw + rng.normal(0, 0.5),
                        "score": round(float(rng.random()), 1),
                    }
                )
        for _ in range(rng.integers(0, 4)):
            pred_rows.append(
                {
                    "sample": sample,
                    "xy": rng.uniform(-8, 8, 2),
                    "cls": classes[rng.integers(len(classes))],
                    "score": round(float(rng.random()), 1),
                    "yaw": rng.uniform(-np.pi, np.pi),
                }
            )
    rng.shuffle(pred_rows)
    return _boxes(gt_rows, tokens), _boxes(pred_rows, tokens)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accumulate_calc_ap_calc_tp_equal_the_devkit(seed):
    gt, pred = _random_sets(np.random.default_rng(seed), n_samples=6)
    gt_devkit, pred_devkit = eval_boxes_from_boxset(gt), eval_boxes_from_boxset(pred)
    ours_all = algo.accumulate_all(gt, pred, DETECTION_CLASSES, (0.5, 1.0, 2.0, 4.0))
    for cls in ("car", "pedestrian", "barrier", "traffic_cone", "bicycle", "truck"):
        for threshold in (0.5, 1.0, 2.0, 4.0):
            theirs = devkit_algo.accumulate(gt_devkit, pred_devkit, cls, center_distance, threshold)
            ours = ours_all[(cls, threshold)]
            for field in ("recall", "precision", "confidence", *algo.TP_METRICS):
                np.testing.assert_allclose(
                    getattr(ours, field),
                    getattr(theirs, field),
                    rtol=0,
                    atol=1e-12,
                    err_msg=f"{cls} {threshold} {field}",
                )
            assert algo.calc_ap(ours, 0.1, 0.1) == pytest.approx(devkit_algo.calc_ap(theirs, 0.1, 0.1), abs=1e-12)
            for metric in algo.TP_METRICS:
                ours_tp, theirs_tp = algo.calc_tp(ours, 0.1, metric), devkit_algo.calc_tp(theirs, 0.1, metric)
                assert ours_tp == pytest.approx(theirs_tp, abs=1e-12, nan_ok=True), (cls, threshold, metric)


@pytest.mark.parametrize(("seed", "n_cells"), [(0, 4), (1, 4), (2, 4), (3, 4), (4, 1), (5, 9)])
def test_greedy_match_equals_its_reference_twin(seed, n_cells):
    # Dense clusters and duplicate positions force conflicts and distance ties; one big cell, and
    # cells without ground truth (9 ids for 60 boxes leaves some empty).
    rng = np.random.default_rng(seed)
    n_gt, n_pred = 60, 120
    gt_cell = rng.integers(0, n_cells, n_gt)
    gt_xy = rng.uniform(0, 6, (n_gt, 2)).round(1)
    pred_cell = rng.integers(-1, n_cells + 1, n_pred)
    pred_xy = np.concatenate([gt_xy[rng.integers(0, n_gt, n_pred // 2)], rng.uniform(0, 6, (n_pred // 2, 2))]).round(1)
    rank = algo.rank_by_score(rng.integers(0, 5, n_pred).astype(float))
    ths = (0.5, 1.0, 2.0, 4.0)
    fast = algo.greedy_match(gt_cell, gt_xy, pred_cell, pred_xy, rank, ths)
    slow = algo.greedy_match_reference(gt_cell, gt_xy, pred_cell, pred_xy, rank, ths)
    np.testing.assert_array_equal(fast, slow)
    assert (fast >= 0).sum() > 50  # the case exercises matching, not only misses


def test_yaw_from_quaternions_matches_the_devkit():
    from nuscenes.eval.common.utils import quaternion_yaw
    from pyquaternion import Quaternion

    rng = np.random.default_rng(5)
    q = rng.normal(size=(50, 4))
    q[:40] /= np.linalg.norm(q[:40], axis=1, keepdims=True)  # unit ones and some that pyquaternion normalizes
    expected = [quaternion_yaw(Quaternion(row)) for row in q]
    np.testing.assert_allclose(algo.yaw_from_quaternions(q), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("workers", [2, 3, 16])
def test_accumulating_class_groups_on_threads_gives_the_same_numbers(workers):
    gt, pred = _random_sets(np.random.default_rng(9), n_samples=8)
    ths = (0.5, 1.0, 2.0, 4.0)
    one = algo.accumulate_all(gt, pred, DETECTION_CLASSES, ths)
    groups = algo._class_groups(gt, pred, DETECTION_CLASSES, workers)
    assert 2 <= len(groups) <= workers and sorted(name for group in groups for name in group) == sorted(
        DETECTION_CLASSES
    )
    threaded = algo.accumulate_all(gt, pred, DETECTION_CLASSES, ths, workers=workers)
    assert list(threaded) == list(one)  # the same keys in the same order
    matched = 0
    for key, data in one.items():
        for field in ("recall", "precision", "confidence", *algo.TP_METRICS):
            np.testing.assert_array_equal(getattr(threaded[key], field), getattr(data, field), err_msg=f"{key} {field}")
        matched += int(np.any(data.precision > 0))
    assert matched > 10  # the case has true positives in many (class, threshold) cells
    subset = ("truck", "car", "barrier")
    assert list(algo.accumulate_all(gt, pred, subset, ths, workers=2)) == list(
        algo.accumulate_all(gt, pred, subset, ths)
    )
