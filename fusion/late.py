"""Late fusion: the boxes of a lidar model and of a camera model merged per class, their scores
combined by a small learned model (CLOCs-style score fusion).

Both inputs are decoded `Boxes3D` in the ego frame (x forward, y left, z up, metres), labels index
`DETECTION_CLASSES`, scores in [0, 1]. Per class, lidar and camera boxes are paired by their BEV
centre distance, solved optimally with `scipy.optimize.linear_sum_assignment` under a gate (the
nuScenes match distance, 2 m: two boxes further apart could not both count as the same true
object). A box with no partner stays single. Each candidate (pair or single) gets a feature vector
(`FEATURE_NAMES`) and `LateScoreModel`, a logistic regression, turns it into the merged score.

Determinism: pairing, fitting (L-BFGS from zero on a strictly convex loss) and the output order
depend only on the inputs' values and order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize
from scipy.special import expit, logit

from avfusion.calibration.boxes import Boxes3D
from avfusion.errors import InputError
from avfusion.labels import DETECTION_CLASSES

# The nuScenes centre-distance threshold (m) at which its TP errors are measured.
MATCH_DIST_M = 2.0
# Ranges are divided by this (m), so that the range feature is of order one over a nuScenes scene.
RANGE_SCALE_M = 50.0
# The weights' L2 penalty: a Gaussian prior of standard deviation 10 (logit units per feature unit),
# weak beside any real training set, enough to keep a perfectly separable one finite.
L2 = 1e-2
# Scores are clipped to [_SCORE_EPS, 1 - _SCORE_EPS] before the logit, which stays within +-9.2.
_SCORE_EPS = 1e-4

FEATURE_NAMES: tuple[str, ...] = (
    "lidar_logit",
    "lidar_missing",
    "camera_logit",
    "camera_missing",
    "pair_dist_m",
    "range_per_50m",
    *(f"bias_{name}" for name in DETECTION_CLASSES),
)


@dataclass(frozen=True, slots=True, eq=False)
class LateCandidates:
    """The K merge candidates of one frame: every lidar box in input order (paired or single),
    then the unpaired camera boxes in input order.

    Attributes:
        boxes: `Boxes3D` of length K, ego frame: the geometry, yaw, velocity and attribute each
            candidate keeps (the lidar box's for a pair), scores as its source gave them.
        lidar_index: `(K,)` int64 index into the lidar boxes, -1 = no lidar box.
        camera_index: `(K,)` int64 index into the camera boxes, -1 = no camera box.
        lidar_score: `(K,)` float64 lidar score, NaN = no lidar box.
        camera_score: `(K,)` float64 camera score, NaN = no camera box.
        pair_dist_m: `(K,)` float64 BEV centre distance of the pair (m), 0 for a single.
        gate_m: the pairing gate (m): paired centres lie less than this apart.
    """

    boxes: Boxes3D
    lidar_index: np.ndarray
    camera_index: np.ndarray
    lidar_score: np.ndarray
    camera_score: np.ndarray
    pair_dist_m: np.ndarray
    gate_m: float

    def __len__(self) -> int:
        return len(self.boxes)


def _check_scores(boxes: Boxes3D, name: str) -> None:
    bad = ~((boxes.score >= 0.0) & (boxes.score <= 1.0))
    if np.any(bad):
        raise InputError(f"late fusion: {name} box scores must lie in [0, 1], got {boxes.score[bad][:3].tolist()}")


def pair_boxes(lidar: Boxes3D, camera: Boxes3D, gate_m: float = MATCH_DIST_M) -> LateCandidates:
    """Pair lidar and camera boxes of the same class whose BEV centres lie less than `gate_m` apart.

    Per class, the assignment maximises the number of pairs, then minimises their summed distance
    (optimal, not greedy). Both inputs are in the ego frame.
    """
    _check_scores(lidar, "lidar")
    _check_scores(camera, "camera")
    camera_for_lidar = np.full(len(lidar), -1, dtype=np.int64)
    for label in np.intersect1d(lidar.label, camera.label):
        rows = np.flatnonzero(lidar.label == label)
        cols = np.flatnonzero(camera.label == label)
        offset = lidar.center[rows, None, :2] - camera.center[None, cols, :2]  # (R, C, 2)
        dist = np.hypot(offset[..., 0], offset[..., 1])  # (R, C)
        # A pair beyond the gate costs more than any set of gated pairs together, so the assignment
        # first maximises the number of gated pairs, then minimises their summed distance.
        cost = np.where(dist < gate_m, dist, gate_m * (min(dist.shape) + 1))
        for r, c in zip(*linear_sum_assignment(cost), strict=True):
            if dist[r, c] < gate_m:
                camera_for_lidar[rows[r]] = cols[c]

    unpaired_camera = np.setdiff1d(np.arange(len(camera)), camera_for_lidar)  # sorted
    paired = camera_for_lidar >= 0
    lidar_score = np.concatenate([lidar.score, np.full(len(unpaired_camera), np.nan)])
    camera_score = np.full(len(lidar), np.nan)
    camera_score[paired] = camera.score[camera_for_lidar[paired]]
    dist_m = np.zeros(len(lidar))
    offset = lidar.center[paired, :2] - camera.center[camera_for_lidar[paired], :2]
    dist_m[paired] = np.hypot(offset[:, 0], offset[:, 1])
    n_camera_single = len(unpaired_camera)
    return LateCandidates(
        boxes=Boxes3D.concat([lidar, camera[unpaired_camera]]),
        lidar_index=np.concatenate([np.arange(len(lidar)), np.full(n_camera_single, -1)]).astype(np.int64),
        camera_index=np.concatenate([camera_for_lidar, unpaired_camera]).astype(np.int64),
        lidar_score=lidar_score,
        camera_score=np.concatenate([camera_score, camera.score[unpaired_camera]]),
        pair_dist_m=np.concatenate([dist_m, np.zeros(n_camera_single)]),
        gate_m=float(gate_m),
    )


def late_features(candidates: LateCandidates) -> np.ndarray:
    """`(K, F)` float64 features in `FEATURE_NAMES` order: each sensor's score logit (0 when its box
    is missing) and missing flag, the pair's BEV centre distance (m, 0 for a single), the BEV range
    of the kept centre from the ego origin / 50 m, and a one-hot of the class (a bias per class)."""

    def logit_or_zero(score: np.ndarray) -> np.ndarray:
        present = ~np.isnan(score)
        return np.where(present, logit(np.clip(np.nan_to_num(score), _SCORE_EPS, 1.0 - _SCORE_EPS)), 0.0)

    k = len(candidates)
    features = np.zeros((k, len(FEATURE_NAMES)))
    features[:, 0] = logit_or_zero(candidates.lidar_score)
    features[:, 1] = np.isnan(candidates.lidar_score)
    features[:, 2] = logit_or_zero(candidates.camera_score)
    features[:, 3] = np.isnan(candidates.camera_score)
    features[:, 4] = candidates.pair_dist_m
    center = candidates.boxes.center
    features[:, 5] = np.hypot(center[:, 0], center[:, 1]) / RANGE_SCALE_M
    features[np.arange(k), 6 + candidates.boxes.label] = 1.0
    return features


@dataclass(frozen=True, slots=True, eq=False)
class LateScoreModel:
    """Logistic regression over `late_features`: score = sigmoid(features @ weights).

    Attributes:
        weights: `(F,)` float64, in `FEATURE_NAMES` order (the class one-hot carries the intercept).
        gate_m: the pairing gate (m) the model was fitted with; `merge` pairs with the same gate.
    """

    weights: np.ndarray
    gate_m: float = MATCH_DIST_M

    def __post_init__(self) -> None:
        weights = np.array(self.weights, dtype=np.float64)
        if weights.shape != (len(FEATURE_NAMES),) or not np.all(np.isfinite(weights)):
            raise ValueError(f"LateScoreModel.weights must be {len(FEATURE_NAMES)} finite floats, got {weights}")
        weights.flags.writeable = False
        object.__setattr__(self, "weights", weights)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """`(K,)` probabilities in [0, 1] for `(K, F)` features."""
        return expit(features @ self.weights)

    @staticmethod
    def fit(features: np.ndarray, labels: np.ndarray, gate_m: float = MATCH_DIST_M, l2: float = L2) -> LateScoreModel:
        """Minimise the summed binary cross-entropy + `l2` / 2 * |weights|^2 with L-BFGS from zero.

        `features` `(K, F)`, `labels` `(K,)` in {0, 1}. The L2 term (a zero-mean Gaussian prior of
        precision `l2`, whose pull fades as the data grow) makes the loss strictly convex, so the
        optimum is unique and finite even when the data separate perfectly; a class that never
        occurs keeps a zero bias. The loss is divided by K for the optimiser's tolerances.
        """
        x = np.asarray(features, dtype=np.float64)  # (K, F)
        y = np.asarray(labels, dtype=np.float64)  # (K,)
        if x.shape[0] == 0:
            raise InputError("late fusion: no candidate boxes to fit the score model on")

        def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
            z = x @ w
            loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * (w @ w) / len(y)
            grad = (x.T @ (expit(z) - y) + l2 * w) / len(y)
            return float(loss), grad

        result = minimize(
            loss_and_grad, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-9}
        )
        if not result.success and np.max(np.abs(result.jac)) > 1e-6:
            raise RuntimeError(f"late score model fit did not converge: {result.message}")
        return LateScoreModel(weights=result.x, gate_m=gate_m)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able floats: the gate and one weight per feature name."""
        return {
            "gate_m": float(self.gate_m),
            "weights": dict(zip(FEATURE_NAMES, map(float, self.weights), strict=True)),
        }

    @staticmethod
    def from_dict(data: Mapping[str, object]) -> LateScoreModel:
        """The inverse of `to_dict`; a missing, extra or non-finite field raises `InputError` naming it."""
        weights = data.get("weights") if isinstance(data, Mapping) else None
        if not isinstance(weights, Mapping) or set(weights) != set(FEATURE_NAMES):
            found = sorted(weights) if isinstance(weights, Mapping) else type(weights).__name__
            raise InputError(f"late score model: 'weights' must map exactly {list(FEATURE_NAMES)}, got {found}")
        gate_m = _finite_number("gate_m", data.get("gate_m"))
        if gate_m <= 0:
            raise InputError(f"late score model: 'gate_m' must be > 0, got {gate_m}")
        values = [_finite_number(name, weights[name]) for name in FEATURE_NAMES]
        return LateScoreModel(weights=np.array(values), gate_m=gate_m)


def _finite_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"late score model: {name!r} must be a finite number, got {value!r}")
    return float(value)


def training_labels(candidates: LateCandidates, gt: Boxes3D, match_m: float = MATCH_DIST_M) -> np.ndarray:
    """`(K,)` bool: a ground-truth box of the candidate's class lies less than `match_m` from its
    kept BEV centre, matched as the nuScenes metric does: candidates by score descending (the
    higher of their two sensor scores; ties in candidate order), each to the nearest free GT box."""
    order_score = np.fmax(candidates.lidar_score, candidates.camera_score)
    taken = np.zeros(len(gt), dtype=bool)
    labels = np.zeros(len(candidates), dtype=bool)
    for k in np.argsort(-order_score, kind="stable"):
        free = np.flatnonzero((gt.label == candidates.boxes.label[k]) & ~taken)
        if free.size == 0:
            continue
        offset = gt.center[free, :2] - candidates.boxes.center[k, :2]
        dist = np.hypot(offset[:, 0], offset[:, 1])
        nearest = int(np.argmin(dist))
        if dist[nearest] < match_m:
            taken[free[nearest]] = True
            labels[k] = True
    return labels


def fit_late_model(
    pairs_per_frame: Sequence[LateCandidates], gt_per_frame: Sequence[Boxes3D], l2: float = L2
) -> LateScoreModel:
    """Fit `LateScoreModel` on the candidates of many frames (`pair_boxes`, one gate for all)
    against each frame's ground truth (same frame as the candidates); the model records the gate."""
    if len(pairs_per_frame) != len(gt_per_frame):
        raise InputError(
            f"fit_late_model: {len(pairs_per_frame)} frames of candidates but {len(gt_per_frame)} of ground truth"
        )
    gates = sorted({c.gate_m for c in pairs_per_frame})
    if len(gates) > 1:
        raise InputError(f"fit_late_model: the frames were paired with different gates {gates}")
    features = [late_features(c) for c in pairs_per_frame]
    labels = [training_labels(c, gt) for c, gt in zip(pairs_per_frame, gt_per_frame, strict=True)]
    return LateScoreModel.fit(
        np.concatenate(features) if features else np.zeros((0, len(FEATURE_NAMES))),
        np.concatenate(labels) if labels else np.zeros(0),
        gate_m=gates[0] if gates else MATCH_DIST_M,
        l2=l2,
    )


def merge(lidar: Boxes3D, camera: Boxes3D, model: LateScoreModel) -> Boxes3D:
    """The late-fused boxes of one frame (ego frame), scored by `model`.

    A pair keeps the lidar box's centre, size, yaw, velocity and attribute: lidar measures range
    directly, so it localises far better than a camera's depth estimate. A single keeps its own.
    The output is sorted by score descending, then class, x, y, then candidate order.
    """
    candidates = pair_boxes(lidar, camera, model.gate_m)
    score = model.predict(late_features(candidates))
    boxes = candidates.boxes
    order = np.lexsort((boxes.center[:, 1], boxes.center[:, 0], boxes.label, -score))
    return replace(boxes, score=score)[order]
