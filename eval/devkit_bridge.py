"""The bridge to nuscenes-devkit's own evaluation: our reference and our benchmark peer.

Converts between our `EvalBoxSet` and the devkit's `EvalBoxes`, and runs the devkit's
`DetectionEval` on a results file, so tests and `avfusion bench eval` can put our numbers and the
devkit's side by side. Nothing in the evaluation itself goes through here.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.config import DetectionConfig
from avfusion.labels import ATTRIBUTES, CLASS_INDEX, DETECTION_CLASSES


def boxset_from_eval_boxes(eval_boxes: Any) -> EvalBoxSet:
    """A devkit `EvalBoxes` of `DetectionBox` -> `EvalBoxSet` (sample and box order kept)."""
    tokens = tuple(eval_boxes.sample_tokens)
    rows = [(position, box) for position, token in enumerate(tokens) for box in eval_boxes[token]]
    if not rows:
        return EvalBoxSet.empty(tokens)
    boxes = [box for _, box in rows]
    return EvalBoxSet(
        sample_tokens=tokens,
        sample_index=np.array([position for position, _ in rows], np.int64),
        translation=np.array([box.translation for box in boxes], np.float64),
        size_wlh=np.array([box.size for box in boxes], np.float64),
        rotation_wxyz=np.array([box.rotation for box in boxes], np.float64),
        velocity_xy=np.array([np.asarray(box.velocity, np.float64)[:2] for box in boxes], np.float64),
        label=np.array([CLASS_INDEX[box.detection_name] for box in boxes], np.int64),
        score=np.array([box.detection_score for box in boxes], np.float64),
        attribute=np.array(
            [ATTRIBUTES.index(box.attribute_name) if box.attribute_name else -1 for box in boxes], np.int64
        ),
        num_pts=np.array([box.num_pts for box in boxes], np.int64),
    )


def eval_boxes_from_boxset(boxset: EvalBoxSet) -> Any:
    """`EvalBoxSet` -> a devkit `EvalBoxes` of `DetectionBox` (every sample present, maybe empty)."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    eval_boxes = EvalBoxes()
    for position, token in enumerate(boxset.sample_tokens):
        rows = np.flatnonzero(boxset.sample_index == position)
        eval_boxes.add_boxes(
            token,
            [
                DetectionBox(
                    sample_token=token,
                    translation=tuple(boxset.translation[row].tolist()),
                    size=tuple(boxset.size_wlh[row].tolist()),
                    rotation=tuple(boxset.rotation_wxyz[row].tolist()),
                    velocity=tuple(boxset.velocity_xy[row].tolist()),
                    num_pts=int(boxset.num_pts[row]),
                    detection_name=DETECTION_CLASSES[boxset.label[row]],
                    detection_score=float(boxset.score[row]),
                    attribute_name=ATTRIBUTES[boxset.attribute[row]] if boxset.attribute[row] >= 0 else "",
                )
                for row in rows
            ],
        )
    return eval_boxes


def devkit_config(config: DetectionConfig) -> Any:
    """Our configuration as the devkit's `DetectionConfig`."""
    from nuscenes.eval.detection.data_classes import DetectionConfig as DevkitDetectionConfig

    return DevkitDetectionConfig.deserialize(config.to_json())


@dataclass(frozen=True, slots=True)
class DevkitRun:
    """What the devkit's `DetectionEval` produced: its summary (the `metrics_summary.json` content,
    without `meta`) and its metric data list serialized as `metrics_details.json`."""

    summary: dict[str, Any]
    details: dict[str, Any]


def run_devkit_eval(
    dataroot: str | os.PathLike[str],
    version: str,
    split: str,
    results_path: str | os.PathLike[str],
    config: DetectionConfig,
    output_dir: str | os.PathLike[str],
) -> DevkitRun:
    """Load the tables with `NuScenes(...)` and evaluate `results_path` with the devkit's `DetectionEval`
    (quietly: its progress bars and prints go nowhere)."""
    from nuscenes import NuScenes
    from nuscenes.eval.detection.evaluate import DetectionEval

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
        evaluator = DetectionEval(
            nusc,
            config=devkit_config(config),
            result_path=str(results_path),
            eval_set=split,
            output_dir=str(Path(output_dir)),
            verbose=False,
        )
        metrics, metric_data_list = evaluator.evaluate()
    return DevkitRun(summary=metrics.serialize(), details=metric_data_list.serialize())
