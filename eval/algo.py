"""The nuScenes detection metric's core, as pure functions over arrays: accumulate, calc_ap, calc_tp.

Same structure and the same numbers as nuscenes-devkit 1.2.0's `eval/detection/algo.py`:

- Predictions of a class are ranked by descending score over all samples; equal scores are ranked
  by *later* row first (the devkit reverses an ascending sort of (score, row)).
- In rank order each prediction takes the nearest not-yet-taken ground-truth box of its class in
  its sample (xy centre distance; the first such box in file order on a tie) and is a true positive
  when that distance is strictly below the threshold.
- Precision and recall are linearly interpolated at 101 recall points (no monotone envelope;
  recall beyond the highest reached counts as precision 0). TP errors are NaN-aware running means
  re-sampled on the same confidence axis.

The devkit matches one prediction at a time in Python, over every box of the sample. Here the
greedy matching of every class, sample and threshold is one compiled pass (`greedy_match`) in
which each prediction looks only at the ground truth of its own sample and class;
`greedy_match_reference` is its slow, obviously-correct twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from avfusion.eval.boxset import EvalBoxSet
from avfusion.labels import CLASS_INDEX, DETECTION_CLASSES

NELEM = 101  # recall bins 0.00, 0.01, ..., 1.00
TP_METRICS: tuple[str, ...] = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")

# pyquaternion only re-normalizes a quaternion whose squared norm is off by at least this much;
# matching that keeps the yaw of near-unit quaternions bit-for-bit the devkit's.
_PYQUATERNION_UNIT_TOLERANCE = 1e-14


@dataclass(frozen=True, slots=True)
class MetricData:
    """Accumulated metric data of one class at one distance threshold (devkit `DetectionMetricData`).

    Every field is a (101,) float64 array over the recall axis `recall = linspace(0, 1, 101)`:
    interpolated precision, the matching score threshold (`confidence`, descending, 0 beyond the
    highest recall reached) and the TP errors: trans_err (m, xy), vel_err (m/s), scale_err (1 - IoU),
    orient_err (rad), attr_err (1 - accuracy).
    """

    recall: np.ndarray
    precision: np.ndarray
    confidence: np.ndarray
    trans_err: np.ndarray
    vel_err: np.ndarray
    scale_err: np.ndarray
    orient_err: np.ndarray
    attr_err: np.ndarray

    def __post_init__(self) -> None:
        for name in ("recall", "precision", "confidence", *TP_METRICS):
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.shape != (NELEM,):
                found = array.shape if isinstance(array, np.ndarray) else type(array).__name__
                raise ValueError(f"MetricData.{name} must have shape ({NELEM},), got {found}")

    @classmethod
    def no_predictions(cls) -> MetricData:
        """What a class with no ground truth or no true positive scores: precision 0, errors 1."""
        return cls(
            recall=np.linspace(0, 1, NELEM),
            precision=np.zeros(NELEM),
            confidence=np.zeros(NELEM),
            trans_err=np.ones(NELEM),
            vel_err=np.ones(NELEM),
            scale_err=np.ones(NELEM),
            orient_err=np.ones(NELEM),
            attr_err=np.ones(NELEM),
        )

    @property
    def max_recall_ind(self) -> int:
        """Index of the highest recall reached: the last bin with a non-zero confidence (0 if none)."""
        nonzero = np.flatnonzero(self.confidence)
        return int(nonzero[-1]) if nonzero.size else 0

    @property
    def max_recall(self) -> float:
        return float(self.recall[self.max_recall_ind])

    def error(self, metric_name: str) -> np.ndarray:
        """The (101,) curve of one of `TP_METRICS`."""
        match metric_name:
            case "trans_err":
                return self.trans_err
            case "vel_err":
                return self.vel_err
            case "scale_err":
                return self.scale_err
            case "orient_err":
                return self.orient_err
            case "attr_err":
                return self.attr_err
        raise ValueError(f"unknown TP metric {metric_name!r}, expected one of {TP_METRICS}")

    def to_json(self) -> dict[str, list[float]]:
        """The devkit's `DetectionMetricData.serialize()` layout."""
        return {
            "recall": self.recall.tolist(),
            "precision": self.precision.tolist(),
            "confidence": self.confidence.tolist(),
            "trans_err": self.trans_err.tolist(),
            "vel_err": self.vel_err.tolist(),
            "scale_err": self.scale_err.tolist(),
            "orient_err": self.orient_err.tolist(),
            "attr_err": self.attr_err.tolist(),
        }


# ----------------------------------------------------------------------------------------------
# Box geometry, as the devkit computes it.


def yaw_from_quaternions(rotation_wxyz: np.ndarray) -> np.ndarray:
    """(N, 4) w, x, y, z quaternions -> (N,) yaw in radians, as devkit `quaternion_yaw`.

    The yaw is the heading of the rotated x axis in the xy plane: atan2(R[1, 0], R[0, 0]) of the
    rotation matrix of the quaternion, normalized first when it is not a unit one (pyquaternion).
    """
    q = np.asarray(rotation_wxyz, dtype=np.float64)
    squared_norm = np.einsum("ij,ij->i", q, q)
    renormalize = (np.abs(1.0 - squared_norm) >= _PYQUATERNION_UNIT_TOLERANCE) & (squared_norm > 0)
    if np.any(renormalize):
        q = q.copy()
        q[renormalize] /= np.sqrt(squared_norm[renormalize])[:, None]
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    r00 = x * x + w * w - z * z - y * y
    r10 = 2.0 * (x * y + w * z)
    return np.arctan2(r10, r00)


def abs_angle_diff(yaw_a_rad: np.ndarray, yaw_b_rad: np.ndarray, period: float) -> np.ndarray:
    """|smallest angle from b to a| for angles known up to `period` (2 pi, or pi for barriers)."""
    diff = (yaw_a_rad - yaw_b_rad + period / 2) % period - period / 2
    diff = np.where(diff > np.pi, diff - 2 * np.pi, diff)
    return np.abs(diff)


def scale_iou(size_a_wlh: np.ndarray, size_b_wlh: np.ndarray) -> np.ndarray:
    """(N, 3), (N, 3) -> (N,) IoU of boxes with equal centre and orientation (sizes must be > 0)."""
    intersection = np.prod(np.minimum(size_a_wlh, size_b_wlh), axis=1)
    union = np.prod(size_a_wlh, axis=1) + np.prod(size_b_wlh, axis=1) - intersection
    return intersection / union


def cummean(values: np.ndarray) -> np.ndarray:
    """Running mean that skips NaNs (0 before the first number); all-NaN input gives all ones."""
    values = np.asarray(values, dtype=np.float64)
    is_number = ~np.isnan(values)
    if not np.any(is_number):
        return np.ones(len(values))
    sums = np.nancumsum(values)
    counts = np.cumsum(is_number)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts != 0)


# ----------------------------------------------------------------------------------------------
# Greedy matching.


def rank_by_score(score: np.ndarray) -> np.ndarray:
    """(P,) scores -> (P,) rank (0 = matched first): descending score, later row first on a tie."""
    order = np.lexsort((np.arange(len(score)), score))[::-1]
    rank = np.empty(len(score), np.int64)
    rank[order] = np.arange(len(score))
    return rank


def greedy_match(
    gt_cell: np.ndarray,
    gt_xy: np.ndarray,
    pred_cell: np.ndarray,
    pred_xy: np.ndarray,
    pred_rank: np.ndarray,
    dist_ths: Sequence[float],
) -> np.ndarray:
    """Match predictions to ground truth greedily by rank, at several thresholds at once.

    gt_cell (G,), pred_cell (P,): int64 id of the (sample, class) cell a box belongs to; boxes only
    match within a cell (-1 = a prediction no ground truth can match). gt_xy (G, 2), pred_xy (P, 2):
    global xy centres, metres. pred_rank (P,): a permutation of 0..P-1, the order in which predictions
    choose (`rank_by_score`). Returns (T, P) int64: the ground-truth row each prediction took at each
    threshold, or -1 (a false positive).

    Rule (the devkit's): in rank order, each prediction finds the nearest ground truth of its cell
    not yet taken (lowest row on a distance tie) and takes it when the distance is < threshold.

    The rule as it reads, one prediction at a time, compiled (`_greedy_match_cells`): each one only
    looks at the ground truth of its own cell (the cells' rows are found by one sort), so the work
    is the predictions times their cells' sizes, once per threshold.
    """
    thresholds = np.asarray(dist_ths, dtype=np.float64)
    n_gt, n_pred, n_ths = len(gt_cell), len(pred_cell), len(thresholds)
    if n_gt == 0 or n_pred == 0 or n_ths == 0:
        return np.full((n_ths, n_pred), -1, np.int64)
    gt_order = np.argsort(gt_cell, kind="stable")  # rows ascending within each cell
    sorted_cells = gt_cell[gt_order]
    start = np.searchsorted(sorted_cells, pred_cell, "left")
    end = np.searchsorted(sorted_cells, pred_cell, "right")
    end[pred_cell < 0] = start[pred_cell < 0]
    gt_xy = np.asarray(gt_xy, np.float64)
    pred_xy = np.asarray(pred_xy, np.float64)
    return _greedy_match_cells(
        gt_order,
        np.ascontiguousarray(gt_xy[:, 0]),
        np.ascontiguousarray(gt_xy[:, 1]),
        start,
        end,
        np.ascontiguousarray(pred_xy[:, 0]),
        np.ascontiguousarray(pred_xy[:, 1]),
        np.argsort(pred_rank),
        thresholds,
    )


@numba.njit(cache=True, nogil=True)
def _greedy_match_cells(
    gt_order, gt_x, gt_y, start, end, pred_x, pred_y, pred_order, thresholds
):  # pragma: no cover - compiled
    """`greedy_match`'s loop: prediction p's candidates are gt_order[start[p]:end[p]] (ascending
    rows); predictions choose in `pred_order`. The distance is computed as the reference does."""
    n_ths, n_pred = thresholds.shape[0], pred_x.shape[0]
    matched = np.full((n_ths, n_pred), -1, np.int64)
    taken = np.zeros((n_ths, gt_x.shape[0]), np.bool_)
    for k in range(n_pred):
        p = pred_order[k]
        for t in range(n_ths):
            best_row = -1
            best_dist = np.inf
            for j in range(start[p], end[p]):
                g = gt_order[j]
                if taken[t, g]:
                    continue
                dx = pred_x[p] - gt_x[g]
                dy = pred_y[p] - gt_y[g]
                dist = np.sqrt(dx * dx + dy * dy)
                if dist < best_dist:
                    best_row, best_dist = g, dist
            if best_dist < thresholds[t]:
                matched[t, p] = best_row
                taken[t, best_row] = True
    return matched


def greedy_match_reference(
    gt_cell: np.ndarray,
    gt_xy: np.ndarray,
    pred_cell: np.ndarray,
    pred_xy: np.ndarray,
    pred_rank: np.ndarray,
    dist_ths: Sequence[float],
) -> np.ndarray:
    """The slow twin of `greedy_match`: one prediction at a time, as the rule reads."""
    matched = np.full((len(dist_ths), len(pred_cell)), -1, np.int64)
    for t, threshold in enumerate(dist_ths):
        taken: set[int] = set()
        for pred_row in np.argsort(pred_rank):
            best_row, best_dist = -1, np.inf
            for gt_row in range(len(gt_cell)):
                if gt_cell[gt_row] != pred_cell[pred_row] or pred_cell[pred_row] < 0 or gt_row in taken:
                    continue
                delta = pred_xy[pred_row] - gt_xy[gt_row]
                dist = float(np.sqrt(delta[0] * delta[0] + delta[1] * delta[1]))
                if dist < best_dist:
                    best_row, best_dist = gt_row, dist
            if best_dist < threshold:
                matched[t, pred_row] = best_row
                taken.add(best_row)
    return matched


# ----------------------------------------------------------------------------------------------
# accumulate / calc_ap / calc_tp


def accumulate_all(
    gt: EvalBoxSet, pred: EvalBoxSet, class_names: Sequence[str], dist_ths: Sequence[float], workers: int = 1
) -> dict[tuple[str, float], MetricData]:
    """`accumulate` for every class and threshold, sharing one batched greedy matching.

    `gt` and `pred` are the boxes left after filtering. Predictions of a sample that has no ground
    truth entry (not in `gt.sample_tokens`) are false positives. Keys are (class name, threshold),
    classes in `class_names` order.

    With `workers` > 1 the classes are split into that many groups of about as many boxes, each
    accumulated on a thread of its own over the boxes of its classes only (numpy releases the GIL
    in its array work). The numbers are the same: classes never interact (boxes match within one
    sample and class, and taking out other classes' rows keeps the order of a class's ranks).
    """
    groups = _class_groups(gt, pred, class_names, workers)
    if len(groups) <= 1:
        return _accumulate_classes(gt, pred, class_names, dist_ths)

    def group_data(names: list[str]) -> dict[tuple[str, float], MetricData]:
        labels = [CLASS_INDEX[name] for name in names]
        return _accumulate_classes(
            gt.select(np.isin(gt.label, labels)), pred.select(np.isin(pred.label, labels)), names, dist_ths
        )

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        parts = list(pool.map(group_data, groups))
    merged = {key: data for part in parts for key, data in part.items()}
    return {(name, threshold): merged[(name, threshold)] for name in class_names for threshold in dist_ths}


def _class_groups(gt: EvalBoxSet, pred: EvalBoxSet, class_names: Sequence[str], workers: int) -> list[list[str]]:
    """`class_names` in at most `workers` non-empty groups of about equal box counts (largest
    class first into the lightest group); one group when a class name is unknown or repeated
    (`_accumulate_classes` then says what is wrong)."""
    if workers <= 1 or len(class_names) <= 1 or len(set(class_names)) != len(class_names):
        return [list(class_names)]
    if any(name not in CLASS_INDEX for name in class_names):
        return [list(class_names)]
    n_classes = len(DETECTION_CLASSES)
    boxes = np.bincount(gt.label, minlength=n_classes) + np.bincount(pred.label, minlength=n_classes)
    groups: list[list[str]] = [[] for _ in range(min(workers, len(class_names)))]
    load = [0] * len(groups)
    for name in sorted(class_names, key=lambda name: -int(boxes[CLASS_INDEX[name]])):
        lightest = load.index(min(load))
        groups[lightest].append(name)
        load[lightest] += int(boxes[CLASS_INDEX[name]])
    return [group for group in groups if group]


def _accumulate_classes(
    gt: EvalBoxSet, pred: EvalBoxSet, class_names: Sequence[str], dist_ths: Sequence[float]
) -> dict[tuple[str, float], MetricData]:
    """`accumulate_all` in the calling thread."""
    position_in_gt = {token: position for position, token in enumerate(gt.sample_tokens)}
    pred_sample = np.array([position_in_gt.get(token, -1) for token in pred.sample_tokens], np.int64)
    pred_sample = pred_sample[pred.sample_index] if len(pred) else np.zeros(0, np.int64)
    n_classes = len(DETECTION_CLASSES)
    gt_cell = gt.sample_index * n_classes + gt.label
    pred_cell = np.where(pred_sample >= 0, pred_sample * n_classes + pred.label, -1)
    rank = rank_by_score(pred.score)
    matched = greedy_match(gt_cell, gt.translation[:, :2], pred_cell, pred.translation[:, :2], rank, dist_ths)

    gt_yaw = yaw_from_quaternions(gt.rotation_wxyz)
    pred_yaw = yaw_from_quaternions(pred.rotation_wxyz)
    order = np.argsort(rank)  # all predictions in rank order
    npos_per_class = np.bincount(gt.label, minlength=n_classes)
    metric_data: dict[tuple[str, float], MetricData] = {}
    for class_name in class_names:
        label = CLASS_INDEX[class_name]
        npos = int(npos_per_class[label])
        class_order = order[pred.label[order] == label]
        period = np.pi if class_name == "barrier" else 2 * np.pi  # a barrier looks the same turned by 180 deg
        for t, threshold in enumerate(dist_ths):
            if npos == 0:
                metric_data[(class_name, threshold)] = MetricData.no_predictions()
                continue
            metric_data[(class_name, threshold)] = _interpolate(
                gt, pred, gt_yaw, pred_yaw, class_order, matched[t, class_order], npos, period
            )
    return metric_data


def _interpolate(
    gt: EvalBoxSet,
    pred: EvalBoxSet,
    gt_yaw: np.ndarray,
    pred_yaw: np.ndarray,
    class_order: np.ndarray,
    class_matched: np.ndarray,
    npos: int,
    period: float,
) -> MetricData:
    """Precision/recall and TP-error curves of one class at one threshold from its matches."""
    is_tp = class_matched >= 0
    if not np.any(is_tp):
        return MetricData.no_predictions()
    tp_rows = class_order[is_tp]
    gt_rows = class_matched[is_tp]

    def of_tp(array: np.ndarray) -> np.ndarray:  # np.take: several times faster than a[rows] on (N, k)
        return np.take(array, tp_rows, axis=0)

    def of_gt(array: np.ndarray) -> np.ndarray:
        return np.take(array, gt_rows, axis=0)

    delta_xy = of_tp(pred.translation)[:, :2] - of_gt(gt.translation)[:, :2]
    delta_v = of_tp(pred.velocity_xy) - of_gt(gt.velocity_xy)
    gt_attribute = of_gt(gt.attribute)
    attr_err = np.where(gt_attribute == -1, np.nan, 1.0 - (gt_attribute == of_tp(pred.attribute)).astype(np.float64))
    errors = {
        "trans_err": np.sqrt(delta_xy[:, 0] * delta_xy[:, 0] + delta_xy[:, 1] * delta_xy[:, 1]),
        "vel_err": np.sqrt(delta_v[:, 0] * delta_v[:, 0] + delta_v[:, 1] * delta_v[:, 1]),
        "scale_err": 1.0 - scale_iou(of_gt(gt.size_wlh), of_tp(pred.size_wlh)),
        "orient_err": abs_angle_diff(of_gt(gt_yaw), of_tp(pred_yaw), period),
        "attr_err": attr_err,
    }

    tp = np.cumsum(is_tp).astype(float)
    fp = np.cumsum(~is_tp).astype(float)
    confidence = pred.score[class_order]
    precision = tp / (fp + tp)
    recall = tp / float(npos)
    recall_axis = np.linspace(0, 1, NELEM)
    precision_i = np.interp(recall_axis, recall, precision, right=0)
    confidence_i = np.interp(recall_axis, recall, confidence, right=0)
    tp_confidence = pred.score[tp_rows]
    # np.interp needs an increasing axis: resample the running means on the reversed confidences.
    resampled = {
        name: np.interp(confidence_i[::-1], tp_confidence[::-1], cummean(values)[::-1])[::-1]
        for name, values in errors.items()
    }
    return MetricData(
        recall=recall_axis,
        precision=precision_i,
        confidence=confidence_i,
        trans_err=resampled["trans_err"],
        vel_err=resampled["vel_err"],
        scale_err=resampled["scale_err"],
        orient_err=resampled["orient_err"],
        attr_err=resampled["attr_err"],
    )


def accumulate(gt: EvalBoxSet, pred: EvalBoxSet, class_name: str, dist_th: float) -> MetricData:
    """Metric data of one class at one centre-distance threshold (devkit `accumulate`)."""
    if class_name not in CLASS_INDEX:
        raise ValueError(f"unknown detection class {class_name!r}, expected one of {DETECTION_CLASSES}")
    return accumulate_all(gt, pred, (class_name,), (dist_th,))[(class_name, dist_th)]


def calc_ap(md: MetricData, min_recall: float, min_precision: float) -> float:
    """Average precision over the recall bins above `min_recall`, of the precision above `min_precision`,
    normalized to [0, 1] (devkit `calc_ap`)."""
    if not 0 <= min_precision < 1:
        raise ValueError(f"min_precision must be in [0, 1), got {min_precision}")
    if not 0 <= min_recall <= 1:
        raise ValueError(f"min_recall must be in [0, 1], got {min_recall}")
    precision = md.precision[round(100 * min_recall) + 1 :] - min_precision  # the bin at min_recall is excluded
    precision[precision < 0] = 0
    return float(np.mean(precision)) / (1.0 - min_precision)


def calc_tp(md: MetricData, min_recall: float, metric_name: str) -> float:
    """Mean of a TP error over the recall bins from just above `min_recall` to the highest recall
    reached; 1.0 when that recall is below `min_recall` (devkit `calc_tp`)."""
    first = round(100 * min_recall) + 1
    last = md.max_recall_ind
    if last < first:
        return 1.0
    return float(np.mean(md.error(metric_name)[first : last + 1]))
