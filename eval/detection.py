"""The nuScenes detection metric: filters, per-class APs and TP errors, mAP and NDS.

`evaluate(ground_truth, predictions, config)` gives the same numbers as nuscenes-devkit 1.2.0's
`DetectionEval(...).evaluate()`; `evaluate_results_file` runs it from files. Steps, as the devkit:

1. Filters, applied to ground truth and predictions alike (`filter_boxes`): drop boxes whose xy
   distance from the ego vehicle (at the sample's key-frame lidar pose) is not below the class
   range; drop boxes with `num_pts == 0` (ground truth without any lidar or radar point;
   predictions carry -1 unless the file says otherwise); drop bicycles and motorcycles whose centre
   lies in a bicycle rack of the sample.
2. `algo.accumulate_all` for every class and centre-distance threshold; `calc_ap` for each;
   `calc_tp` at `dist_th_tp` for the TP errors, where traffic cones have no attribute, velocity or
   orientation error and barriers no attribute or velocity error (NaN, skipped in the means).
3. mAP = mean over classes of the mean AP over thresholds; mTPE = NaN-skipping mean over classes;
   NDS = (w * mAP + sum over the 5 TP metrics of max(0, 1 - mTPE)) / (w + 5), w = mean_ap_weight.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avfusion.eval.algo import TP_METRICS, MetricData, accumulate_all, calc_ap, calc_tp
from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.config import DetectionConfig, default_config
from avfusion.eval.data import load_ground_truth_and_predictions
from avfusion.eval.inputs import BikeRacks, GroundTruth, PredictionSet
from avfusion.labels import CLASS_INDEX, DETECTION_CLASSES

CYCLE_LABELS = (CLASS_INDEX["bicycle"], CLASS_INDEX["motorcycle"])
# Errors the metric does not define for a class (NaN): cones have no heading, attribute or motion
# worth scoring; barriers no attribute or motion.
UNDEFINED_TP_METRICS: Mapping[str, tuple[str, ...]] = {
    "traffic_cone": ("attr_err", "vel_err", "orient_err"),
    "barrier": ("attr_err", "vel_err"),
}
DISTANCE_BANDS_M: tuple[tuple[float, float], ...] = ((0.0, 20.0), (20.0, 30.0), (30.0, math.inf))


@dataclass(frozen=True, slots=True)
class DetectionMetrics:
    """Per-class APs and TP errors and what they sum up to (devkit `DetectionMetrics`).

    label_aps[class][dist_th_m] = AP; label_tp_errors[class][metric] = error (NaN where undefined).
    Classes in the configuration's order. eval_time_s: seconds the accumulation and metrics took.
    """

    config: DetectionConfig
    label_aps: Mapping[str, Mapping[float, float]]
    label_tp_errors: Mapping[str, Mapping[str, float]]
    eval_time_s: float

    @property
    def mean_dist_aps(self) -> dict[str, float]:
        """Per class, the AP averaged over the distance thresholds."""
        return {name: float(np.mean(list(aps.values()))) for name, aps in self.label_aps.items()}

    @property
    def mean_ap(self) -> float:
        return float(np.mean(list(self.mean_dist_aps.values())))

    @property
    def tp_errors(self) -> dict[str, float]:
        """Per TP metric, the mean over classes that define it (mATE, mASE, mAOE, mAVE, mAAE)."""
        errors = {}
        for metric in TP_METRICS:
            values = [self.label_tp_errors[name][metric] for name in self.config.class_names]
            errors[metric] = float(np.nanmean(values)) if not all(np.isnan(values)) else math.nan
        return errors

    @property
    def tp_scores(self) -> dict[str, float]:
        return {metric: max(0.0, 1.0 - error) for metric, error in self.tp_errors.items()}

    @property
    def nd_score(self) -> float:
        """The nuScenes detection score (NDS)."""
        scores = self.tp_scores
        total = float(self.config.mean_ap_weight * self.mean_ap + np.sum(list(scores.values())))
        return total / float(self.config.mean_ap_weight + len(scores))

    def summary_json(self, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`metrics_summary.json` content, with the devkit's keys and layout."""
        summary = {
            "label_aps": {name: {str(th): ap for th, ap in aps.items()} for name, aps in self.label_aps.items()},
            "mean_dist_aps": self.mean_dist_aps,
            "mean_ap": self.mean_ap,
            "label_tp_errors": {name: dict(errors) for name, errors in self.label_tp_errors.items()},
            "tp_errors": self.tp_errors,
            "tp_scores": self.tp_scores,
            "nd_score": self.nd_score,
            "eval_time": self.eval_time_s,
            "cfg": self.config.to_json(),
        }
        if meta is not None:
            summary["meta"] = dict(meta)
        return summary


@dataclass(frozen=True, slots=True)
class DetectionEvaluation:
    """The metrics, the curves behind them (keyed by (class, dist_th_m)), and box counts per class
    after filtering (`num_gt`, `num_pred`)."""

    metrics: DetectionMetrics
    metric_data: Mapping[tuple[str, float], MetricData]
    num_gt: Mapping[str, int] = field(default_factory=dict)
    num_pred: Mapping[str, int] = field(default_factory=dict)

    def details_json(self) -> dict[str, Any]:
        """`metrics_details.json` content, with the devkit's keys ("car:0.5", ...) and layout."""
        return {f"{name}:{threshold}": md.to_json() for (name, threshold), md in self.metric_data.items()}


# ----------------------------------------------------------------------------------------------
# Filters


def ego_distances(boxes: EvalBoxSet, ground_truth: GroundTruth) -> np.ndarray:
    """(N,) xy distance in metres of each box centre from the ego vehicle of its sample."""
    positions = _positions_in_ground_truth(boxes, ground_truth)
    if np.any(positions < 0):
        raise ValueError("boxes of samples that are not in the ground truth's split")
    ego = np.take(ground_truth.ego_translation, positions, axis=0)
    dx = boxes.translation[:, 0] - ego[:, 0]
    dy = boxes.translation[:, 1] - ego[:, 1]
    return np.sqrt(dx**2 + dy**2)


def filter_boxes(boxes: EvalBoxSet, ground_truth: GroundTruth, config: DetectionConfig) -> EvalBoxSet:
    """The devkit's `filter_eval_boxes`: class range from the ego pose, zero-point boxes, bike racks."""
    class_range = np.zeros(len(DETECTION_CLASSES))
    for name, range_m in config.class_range_m:
        class_range[CLASS_INDEX[name]] = range_m
    keep = ego_distances(boxes, ground_truth) < class_range[boxes.label]
    keep &= boxes.num_pts != 0
    keep &= ~in_bike_rack(boxes, ground_truth)
    return boxes.select(keep)


def in_bike_rack(boxes: EvalBoxSet, ground_truth: GroundTruth) -> np.ndarray:
    """(N,) bool: a bicycle or motorcycle whose centre is inside (or on) a bike rack of its sample."""
    inside = np.zeros(len(boxes), bool)
    racks = ground_truth.bike_racks
    cycle_rows = np.flatnonzero(np.isin(boxes.label, CYCLE_LABELS))
    if len(racks.sample_index) == 0 or cycle_rows.size == 0:
        return inside
    # Every (cycle box, rack of the same sample) pair.
    rack_order = np.argsort(racks.sample_index, kind="stable")
    rack_samples = racks.sample_index[rack_order]
    cycle_samples = _positions_in_ground_truth(boxes, ground_truth)[cycle_rows]
    start = np.searchsorted(rack_samples, cycle_samples, "left")
    counts = np.searchsorted(rack_samples, cycle_samples, "right") - start
    counts[cycle_samples < 0] = 0
    pair_box = np.repeat(cycle_rows, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_rack = rack_order[np.repeat(start, counts) + within]
    origin, edges = rack_frames(racks)
    # Project each centre, relative to the rack's corner 0, on the three edges leaving that corner.
    projections = np.einsum("kij,kj->ki", edges[pair_rack], boxes.translation[pair_box] - origin[pair_rack])
    limits = np.einsum("kij,kij->ki", edges[pair_rack], edges[pair_rack])
    pair_inside = np.all((projections >= 0) & (projections <= limits), axis=1)
    inside[pair_box[pair_inside]] = True
    return inside


def rack_frames(racks: BikeRacks) -> tuple[np.ndarray, np.ndarray]:
    """Corner 0 (+l/2, +w/2, +h/2 in the box frame) of each rack, (R, 3), and the three edges leaving
    it towards -x, -y and -z, (R, 3, 3), in the global frame: the devkit's `points_in_box` geometry."""
    origins = np.zeros((len(racks.sample_index), 3))
    edges = np.zeros((len(racks.sample_index), 3, 3))
    for rack in range(len(racks.sample_index)):
        width, length, height = racks.size_wlh[rack]
        rotation = _rotation_matrix(racks.rotation_wxyz[rack])
        local = np.array(
            [
                [length / 2, width / 2, height / 2],
                [-length / 2, width / 2, height / 2],
                [length / 2, -width / 2, height / 2],
                [length / 2, width / 2, -height / 2],
            ]
        )
        corners = local @ rotation.T + racks.translation[rack]
        origins[rack] = corners[0]
        edges[rack] = corners[1:] - corners[0]
    return origins, edges


def _rotation_matrix(wxyz: np.ndarray) -> np.ndarray:
    q = np.asarray(wxyz, np.float64)
    squared = float(q @ q)
    if abs(1.0 - squared) >= 1e-14 and squared > 0:  # pyquaternion normalizes only beyond this
        q = q / math.sqrt(squared)
    w, x, y, z = q
    return np.array(
        [
            [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
        ]
    )


def _positions_in_ground_truth(boxes: EvalBoxSet, ground_truth: GroundTruth) -> np.ndarray:
    """(N,) the ground truth's sample position of each box (-1 for samples outside the split)."""
    if boxes.sample_tokens == ground_truth.sample_tokens:
        return boxes.sample_index
    position = {token: i for i, token in enumerate(ground_truth.sample_tokens)}
    per_sample = np.array([position.get(token, -1) for token in boxes.sample_tokens], np.int64)
    return per_sample[boxes.sample_index] if len(boxes) else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------------------------
# Metrics


def evaluate(
    ground_truth: GroundTruth, predictions: EvalBoxSet, config: DetectionConfig | None = None
) -> DetectionEvaluation:
    """Filter both box sets and compute every metric (see the module docstring)."""
    config = default_config() if config is None else config
    gt = filter_boxes(ground_truth.boxes, ground_truth, config)
    pred = filter_boxes(predictions, ground_truth, config)
    return metrics_of_filtered(gt, pred, config)


def metrics_of_filtered(gt: EvalBoxSet, pred: EvalBoxSet, config: DetectionConfig) -> DetectionEvaluation:
    """The metrics of box sets that are already filtered (the devkit's `evaluate()` proper)."""
    start = time.perf_counter()
    metric_data = accumulate_all(gt, pred, config.class_names, config.dist_ths_m, workers=_cores())
    label_aps: dict[str, dict[float, float]] = {}
    label_tp_errors: dict[str, dict[str, float]] = {}
    for name in config.class_names:
        label_aps[name] = {
            threshold: calc_ap(metric_data[(name, threshold)], config.min_recall, config.min_precision)
            for threshold in config.dist_ths_m
        }
        tp_data = metric_data[(name, config.dist_th_tp_m)]
        label_tp_errors[name] = {
            metric: math.nan
            if metric in UNDEFINED_TP_METRICS.get(name, ())
            else calc_tp(tp_data, config.min_recall, metric)
            for metric in TP_METRICS
        }
    metrics = DetectionMetrics(
        config=config,
        label_aps=label_aps,
        label_tp_errors=label_tp_errors,
        eval_time_s=time.perf_counter() - start,
    )
    gt_counts = np.bincount(gt.label, minlength=len(DETECTION_CLASSES))
    pred_counts = np.bincount(pred.label, minlength=len(DETECTION_CLASSES))
    return DetectionEvaluation(
        metrics=metrics,
        metric_data=metric_data,
        num_gt={name: int(gt_counts[CLASS_INDEX[name]]) for name in config.class_names},
        num_pred={name: int(pred_counts[CLASS_INDEX[name]]) for name in config.class_names},
    )


def _cores() -> int:
    """The cores this process may run on (the classes' accumulation shares them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def evaluate_distance_bands(
    ground_truth: GroundTruth,
    predictions: EvalBoxSet,
    config: DetectionConfig | None = None,
    bands_m: Sequence[tuple[float, float]] = DISTANCE_BANDS_M,
) -> list[tuple[tuple[float, float], DetectionEvaluation]]:
    """The metric restricted to ego-distance bands [near, far): after the usual filters, ground truth
    and predictions each keep the boxes whose own centre lies in the band. (Not a devkit number: a
    prediction just across a band edge from its ground truth counts as a miss plus a false positive.)"""
    config = default_config() if config is None else config
    gt = filter_boxes(ground_truth.boxes, ground_truth, config)
    pred = filter_boxes(predictions, ground_truth, config)
    gt_dist, pred_dist = ego_distances(gt, ground_truth), ego_distances(pred, ground_truth)
    results = []
    for near, far in bands_m:
        gt_band = gt.select((gt_dist >= near) & (gt_dist < far))
        pred_band = pred.select((pred_dist >= near) & (pred_dist < far))
        results.append(((near, far), metrics_of_filtered(gt_band, pred_band, config)))
    return results


@dataclass(frozen=True, slots=True)
class FileEvaluation:
    """`evaluate_results_file`'s answer: inputs as loaded and the evaluation of them."""

    ground_truth: GroundTruth
    predictions: PredictionSet
    evaluation: DetectionEvaluation


def evaluate_results_file(
    results_path: str | os.PathLike[str],
    dataroot: str | os.PathLike[str],
    version: str,
    split: str,
    config: DetectionConfig | None = None,
) -> FileEvaluation:
    """Load the ground truth of `split` and the results file, check it, and evaluate it."""
    config = default_config() if config is None else config
    ground_truth, predictions = load_ground_truth_and_predictions(dataroot, version, split, results_path, config)
    return FileEvaluation(ground_truth, predictions, evaluate(ground_truth, predictions.boxes, config))
