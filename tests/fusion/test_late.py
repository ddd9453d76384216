"""Late fusion on hand-made boxes whose right answers are worked out by hand: pairing (same class
only, the gate, optimal not greedy), the feature vector, the training labels, a fit that learns
that pairs are true more often than singles, determinism, the JSON round trip, empty inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from avfusion.calibration.boxes import Boxes3D
from avfusion.errors import InputError
from avfusion.fusion.late import (
    FEATURE_NAMES,
    LateScoreModel,
    fit_late_model,
    late_features,
    merge,
    pair_boxes,
    training_labels,
)
from avfusion.labels import CLASS_INDEX, DETECTION_CLASSES


def make_boxes(rows: list[tuple[str, float, float, float]], yaw_rad: float = 0.0, attribute: int = -1) -> Boxes3D:
    """Boxes from (class, x, y, score) tuples in the ego frame; z = 1 m, a car-sized box."""
    n = len(rows)
    return Boxes3D(
        center=np.array([[r[1], r[2], 1.0] for r in rows]).reshape(n, 3),
        size_wlh=np.tile([1.9, 4.5, 1.6], (n, 1)),
        yaw_rad=np.full(n, yaw_rad),
        label=np.array([CLASS_INDEX[r[0]] for r in rows], np.int64),
        score=np.array([r[3] for r in rows], np.float64),
        attribute=np.full(n, attribute, np.int64),
    )


def test_pairs_only_within_a_class() -> None:
    lidar = make_boxes([("car", 10.0, 0.0, 0.9)])
    camera = make_boxes([("pedestrian", 10.0, 0.5, 0.7)])
    candidates = pair_boxes(lidar, camera)
    assert candidates.lidar_index.tolist() == [0, -1]
    assert candidates.camera_index.tolist() == [-1, 0]
    assert candidates.pair_dist_m.tolist() == [0.0, 0.0]
    assert np.isnan(candidates.camera_score[0]) and np.isnan(candidates.lidar_score[1])


def test_gate_is_strict_like_the_nuscenes_match() -> None:
    lidar = make_boxes([("car", 0.0, 0.0, 0.9), ("bus", 20.0, 0.0, 0.9)])
    camera = make_boxes([("car", 1.99, 0.0, 0.5), ("bus", 22.0, 0.0, 0.5)])  # 1.99 m and exactly 2 m
    candidates = pair_boxes(lidar, camera)
    assert candidates.camera_index.tolist() == [0, -1, 1]
    assert candidates.pair_dist_m[0] == pytest.approx(1.99)
    # A wider gate takes the bus pair too.
    assert pair_boxes(lidar, camera, gate_m=2.5).camera_index.tolist() == [0, 1]


def test_pairing_is_optimal_not_greedy() -> None:
    # Closest first would pair L2-C1 (0.8 m) and leave L1 with C2 at 3.5 m, beyond the gate: one
    # pair. The optimum pairs L1-C1 (1.0 m) and L2-C2 (1.7 m): two pairs.
    lidar = make_boxes([("car", 0.0, 0.0, 0.9), ("car", 1.8, 0.0, 0.9)])
    camera = make_boxes([("car", 1.0, 0.0, 0.5), ("car", 3.5, 0.0, 0.5)])
    candidates = pair_boxes(lidar, camera)
    assert candidates.camera_index.tolist() == [0, 1]
    np.testing.assert_allclose(candidates.pair_dist_m, [1.0, 1.7])

    # Both within the gate: closest first gives L2-C1 0.1 + L1-C2 1.95 = 2.05 m, the optimum
    # L1-C1 0.9 + L2-C2 0.95 = 1.85 m.
    lidar = make_boxes([("car", 0.0, 0.0, 0.9), ("car", 1.0, 0.0, 0.9)])
    camera = make_boxes([("car", 0.9, 0.0, 0.5), ("car", 1.95, 0.0, 0.5)])
    candidates = pair_boxes(lidar, camera)
    assert candidates.camera_index.tolist() == [0, 1]
    np.testing.assert_allclose(candidates.pair_dist_m, [0.9, 0.95])


def test_features_by_hand() -> None:
    # A car pair at 3-4-5 offsets (distance 1 m) 50 m from the ego; a lidar-only car with a score
    # of 1 (clipped); a camera-only pedestrian 10 m away with a score of 0.5 (logit 0).
    lidar = make_boxes([("car", 30.0, 40.0, 0.8), ("car", -20.0, 0.0, 1.0)])
    camera = make_boxes([("car", 30.6, 40.8, 0.6), ("pedestrian", 0.0, -10.0, 0.5)])
    features = late_features(pair_boxes(lidar, camera))
    assert features.shape == (3, len(FEATURE_NAMES))
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    expected = np.zeros((3, len(FEATURE_NAMES)))
    expected[0, [column["lidar_logit"], column["camera_logit"]]] = [math.log(4.0), math.log(1.5)]
    expected[0, column["pair_dist_m"]] = 1.0
    expected[0, column["range_per_50m"]] = 1.0
    expected[0, column["bias_car"]] = 1.0
    expected[1, column["lidar_logit"]] = math.log(9999.0)
    expected[1, column["camera_missing"]] = 1.0
    expected[1, column["range_per_50m"]] = 0.4
    expected[1, column["bias_car"]] = 1.0
    expected[2, column["lidar_missing"]] = 1.0
    expected[2, column["range_per_50m"]] = 0.2
    expected[2, column["bias_pedestrian"]] = 1.0
    np.testing.assert_allclose(features, expected, atol=1e-9)


def test_training_labels_match_greedily_by_score() -> None:
    # Two car candidates near one car GT: the pair L1+C0 (ordered by its camera score 0.95, kept
    # centre 1.5 m away) takes it before the closer lidar single L0 (0.6, 0.5 m away). The
    # pedestrian GT 0.1 m from the truck is of another class; the bus is exactly 2 m off: no match.
    lidar = make_boxes([("car", 2.5, 0.0, 0.6), ("car", 1.5, 0.0, 0.4), ("truck", 30.0, 0.0, 0.9)])
    camera = make_boxes([("car", 1.2, 0.0, 0.95), ("bus", 60.0, 0.0, 0.9)])
    gt = make_boxes([("car", 3.0, 0.0, 1.0), ("pedestrian", 30.1, 0.0, 1.0), ("bus", 62.0, 0.0, 1.0)])
    candidates = pair_boxes(lidar, camera)
    # C0 pairs with L1 (0.3 m; L0 is 1.3 m away); candidate order: L0, L1+C0, L2, the camera bus.
    assert candidates.camera_index.tolist() == [-1, 0, -1, 1]
    assert training_labels(candidates, gt).tolist() == [False, True, False, False]


def make_training_set(seed: int, frames: int = 40) -> tuple[list, list[Boxes3D]]:
    """Frames of objects on a 10 m grid, so that no two objects can pair across. Pairs are true
    9 times in 10, lidar and camera singles 2 in 10; scores are uniform, telling nothing."""
    rng = np.random.default_rng(seed)
    candidates, gts = [], []
    for _ in range(frames):
        lidar_rows, camera_rows, gt_rows = [], [], []
        for slot in range(24):
            name = DETECTION_CLASSES[rng.integers(len(DETECTION_CLASSES))]
            x, y = 10.0 * (slot % 6) - 25.0, 10.0 * (slot // 6) - 15.0
            kind = ("pair", "lidar", "camera")[slot % 3]
            truth = rng.random() < (0.9 if kind == "pair" else 0.2)
            if truth:
                gt_rows.append((name, x, y, 1.0))
            if kind in ("pair", "lidar"):
                lidar_rows.append((name, x + rng.normal(0, 0.2), y + rng.normal(0, 0.2), rng.uniform(0.1, 0.9)))
            if kind in ("pair", "camera"):
                camera_rows.append((name, x + rng.normal(0, 0.4), y + rng.normal(0, 0.4), rng.uniform(0.1, 0.9)))
        candidates.append(pair_boxes(make_boxes(lidar_rows), make_boxes(camera_rows)))
        gts.append(make_boxes(gt_rows))
    return candidates, gts


def test_fit_learns_that_pairs_beat_singles() -> None:
    candidates, gts = make_training_set(seed=0)
    model = fit_late_model(candidates, gts)
    features = np.concatenate([late_features(c) for c in candidates])
    labels = np.concatenate([training_labels(c, gt) for c, gt in zip(candidates, gts, strict=True)])
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    is_pair = (features[:, column["lidar_missing"]] == 0) & (features[:, column["camera_missing"]] == 0)
    assert labels[is_pair].mean() > 0.85 and labels[~is_pair].mean() < 0.25  # the set is what it says

    probability = model.predict(features)
    # Logistic regression reproduces each group's rate (exactly at the optimum without L2).
    assert probability[is_pair].mean() == pytest.approx(labels[is_pair].mean(), abs=0.01)
    assert probability[~is_pair].mean() == pytest.approx(labels[~is_pair].mean(), abs=0.01)
    # The same car with the same scores: a pair scores above either single.
    lidar = make_boxes([("car", 20.0, 0.0, 0.5)])
    camera = make_boxes([("car", 20.3, 0.0, 0.5)])
    pair_score = merge(lidar, camera, model).score
    lidar_single = merge(lidar, Boxes3D.empty(), model).score
    camera_single = merge(Boxes3D.empty(), camera, model).score
    assert pair_score.shape == (1,)
    assert pair_score[0] > 0.7 > 0.35 > max(lidar_single[0], camera_single[0])


def test_fit_and_merge_are_deterministic() -> None:
    candidates, gts = make_training_set(seed=1, frames=10)
    first, second = fit_late_model(candidates, gts), fit_late_model(candidates, gts)
    assert first.weights.tobytes() == second.weights.tobytes()

    lidar = make_boxes([("car", 5.0, 1.0, 0.7), ("car", 30.0, -4.0, 0.4), ("barrier", 12.0, 8.0, 0.6)])
    camera = make_boxes([("car", 5.5, 1.2, 0.8), ("pedestrian", 9.0, 3.0, 0.3), ("barrier", 12.4, 8.1, 0.2)])
    merged = merge(lidar, camera, first)
    # The output order does not depend on the input order.
    shuffled = merge(lidar[[2, 0, 1]], camera[[1, 2, 0]], first)
    for name in ("center", "size_wlh", "yaw_rad", "label", "score", "attribute"):
        assert getattr(merged, name).tobytes() == getattr(shuffled, name).tobytes()
    assert np.all(np.diff(merged.score) <= 0)


def test_merge_keeps_lidar_geometry_and_scores_with_the_model() -> None:
    # Weights: the two logits only, so a pair scores sigmoid(logit 0.8 + logit 0.6) = 0.48 / 0.56.
    weights = np.zeros(len(FEATURE_NAMES))
    weights[[FEATURE_NAMES.index("lidar_logit"), FEATURE_NAMES.index("camera_logit")]] = 1.0
    model = LateScoreModel(weights=weights)
    lidar = make_boxes([("car", 10.0, 0.0, 0.8)], yaw_rad=0.1, attribute=5)
    camera = make_boxes([("car", 11.0, 0.5, 0.6), ("bicycle", -5.0, 2.0, 0.5)], yaw_rad=2.0, attribute=0)
    merged = merge(lidar, camera, model)
    np.testing.assert_allclose(merged.score, [0.48 / 0.56, 0.5])
    assert merged.class_names == ("car", "bicycle")
    np.testing.assert_array_equal(merged.center, [[10.0, 0.0, 1.0], [-5.0, 2.0, 1.0]])
    np.testing.assert_array_equal(merged.yaw_rad, [0.1, 2.0])
    np.testing.assert_array_equal(merged.attribute, [5, 0])


def test_model_round_trips_through_json() -> None:
    candidates, gts = make_training_set(seed=2, frames=5)
    model = fit_late_model(candidates, gts)
    stored = json.loads(json.dumps(model.to_dict()))
    assert set(stored["weights"]) == set(FEATURE_NAMES)
    loaded = LateScoreModel.from_dict(stored)
    assert loaded.weights.tobytes() == model.weights.tobytes() and loaded.gate_m == model.gate_m

    del stored["weights"]["bias_car"]
    with pytest.raises(InputError, match="'weights' must map exactly"):
        LateScoreModel.from_dict(stored)
    with pytest.raises(InputError, match="'camera_logit' must be a finite number"):
        LateScoreModel.from_dict({**model.to_dict(), "weights": {**model.to_dict()["weights"], "camera_logit": "x"}})
    with pytest.raises(InputError, match="'gate_m' must be > 0"):
        LateScoreModel.from_dict({**model.to_dict(), "gate_m": 0.0})


def test_empty_inputs() -> None:
    model = LateScoreModel(weights=np.zeros(len(FEATURE_NAMES)))
    assert len(merge(Boxes3D.empty(), Boxes3D.empty(), model)) == 0
    lidar = make_boxes([("car", 1.0, 2.0, 0.9), ("truck", 3.0, 4.0, 0.2)])
    only_lidar = pair_boxes(lidar, Boxes3D.empty())
    assert only_lidar.camera_index.tolist() == [-1, -1]
    assert late_features(pair_boxes(Boxes3D.empty(), Boxes3D.empty())).shape == (0, len(FEATURE_NAMES))
    assert len(merge(lidar, Boxes3D.empty(), model)) == 2
    # Frames with no boxes add nothing; no candidate at all cannot be fitted.
    with pytest.raises(InputError, match="no candidate boxes"):
        fit_late_model([pair_boxes(Boxes3D.empty(), Boxes3D.empty())], [Boxes3D.empty()])
    with pytest.raises(InputError, match="no candidate boxes"):
        fit_late_model([], [])
    with pytest.raises(InputError, match="2 frames of candidates but 1"):
        fit_late_model([only_lidar, only_lidar], [Boxes3D.empty()])
    with pytest.raises(InputError, match="different gates"):
        fit_late_model([only_lidar, pair_boxes(lidar, Boxes3D.empty(), gate_m=3.0)], [lidar, lidar])


def test_score_outside_unit_interval_is_bad_input() -> None:
    with pytest.raises(InputError, match="camera box scores must lie in"):
        pair_boxes(make_boxes([("car", 0.0, 0.0, 0.5)]), make_boxes([("car", 0.0, 0.0, 1.5)]))
