"""The evaluation report: a summary table, the devkit's JSON files, PNG plots, a distance breakdown.

`write_report(out_dir, ...)` writes, each file atomically:
- `metrics_summary.json` and `metrics_details.json`, in nuscenes-devkit's format (same keys);
- `metrics_distance_bands.json`: mAP, NDS, per-class AP and TP errors per ego-distance band;
- `plots/summary.png` (PR curves of every class at every threshold, plus the TP errors),
  `plots/<class>_pr.png`, `plots/<class>_tp.png`, `plots/dist_pr_<th>.png`, `plots/distance_bands.png`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from avfusion.eval.algo import TP_METRICS
from avfusion.eval.config import DetectionConfig, default_config
from avfusion.eval.detection import (
    DetectionEvaluation,
    evaluate_distance_bands,
    evaluate_results_file,
)
from avfusion.fileio import write_bytes_atomic, write_json_atomic

TP_SHORT_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}
TP_COLUMN = {"trans_err": "ATE", "scale_err": "ASE", "orient_err": "AOE", "vel_err": "AVE", "attr_err": "AAE"}
TP_UNITS = {"trans_err": "m", "scale_err": "1-IoU", "orient_err": "rad", "vel_err": "m/s", "attr_err": "1-acc"}
PRETTY_CLASS = {
    "car": "Car",
    "truck": "Truck",
    "bus": "Bus",
    "trailer": "Trailer",
    "construction_vehicle": "Constr. veh.",
    "pedestrian": "Pedestrian",
    "motorcycle": "Motorcycle",
    "bicycle": "Bicycle",
    "traffic_cone": "Traffic cone",
    "barrier": "Barrier",
}
CLASS_COLORS = {name: f"C{i}" for i, name in enumerate(PRETTY_CLASS)}

BandResults = Sequence[tuple[tuple[float, float], DetectionEvaluation]]


def band_label(band_m: tuple[float, float]) -> str:
    near, far = band_m
    return f"{near:g}+ m" if math.isinf(far) else f"{near:g}-{far:g} m"


def _number(value: float, width: int = 6, digits: int = 3) -> str:
    return f"{'n/a':>{width}}" if math.isnan(value) else f"{value:{width}.{digits}f}"


def summary_table(evaluation: DetectionEvaluation, bands: BandResults = ()) -> str:
    """The headline numbers, the per-class table (AP at each threshold, TP errors, box counts) and,
    when given, the per-distance-band table, as plain text."""
    metrics = evaluation.metrics
    config = metrics.config
    lines = [f"mAP: {metrics.mean_ap:.4f}    NDS: {metrics.nd_score:.4f}"]
    errors = metrics.tp_errors
    lines.append("    ".join(f"{TP_SHORT_NAMES[m]}: {_number(errors[m], 0, 4)}" for m in TP_METRICS))
    lines.append(f"Eval time: {metrics.eval_time_s:.2f} s")
    lines.append("")
    threshold_headers = "".join(f"{'AP@' + format(th, 'g'):>8}" for th in config.dist_ths_m)
    tp_headers = "".join(f"{TP_COLUMN[m]:>7}" for m in TP_METRICS)
    lines.append(f"{'Object class':<22}{'AP':>7}{threshold_headers}{tp_headers}{'#GT':>8}{'#pred':>8}")
    for name in config.class_names:
        aps = metrics.label_aps[name]
        row = f"{name:<22}{metrics.mean_dist_aps[name]:7.3f}"
        row += "".join(f"{aps[th]:8.3f}" for th in config.dist_ths_m)
        row += "".join(f" {_number(metrics.label_tp_errors[name][m])}" for m in TP_METRICS)
        row += f"{evaluation.num_gt.get(name, 0):8d}{evaluation.num_pred.get(name, 0):8d}"
        lines.append(row)
    if bands:
        lines.append("")
        lines.append("By distance from the ego vehicle (ground truth and predictions each by their own centre):")
        headers = "".join(f"{PRETTY_CLASS[n][:10]:>11}" for n in config.class_names)
        lines.append(f"{'band':<10}{'mAP':>7}{'NDS':>7}{'mATE':>7}{'#GT':>8}{headers}")
        for band, band_eval in bands:
            m = band_eval.metrics
            row = f"{band_label(band):<10}{m.mean_ap:7.3f}{m.nd_score:7.3f} {_number(m.tp_errors['trans_err'])}"
            row += f"{sum(band_eval.num_gt.values()):8d}"
            row += "".join(f"{m.mean_dist_aps[n]:11.3f}" for n in config.class_names)
            lines.append(row)
    return "\n".join(lines)


def distance_bands_json(bands: BandResults) -> dict[str, Any]:
    return {
        band_label(band): {
            "near_m": band[0],
            "far_m": None if math.isinf(band[1]) else band[1],
            "mean_ap": band_eval.metrics.mean_ap,
            "nd_score": band_eval.metrics.nd_score,
            "tp_errors": band_eval.metrics.tp_errors,
            "mean_dist_aps": band_eval.metrics.mean_dist_aps,
            "label_tp_errors": {k: dict(v) for k, v in band_eval.metrics.label_tp_errors.items()},
            "num_gt": dict(band_eval.num_gt),
            "num_pred": dict(band_eval.num_pred),
        }
        for band, band_eval in bands
    }


def write_report(
    out_dir: str | os.PathLike[str],
    evaluation: DetectionEvaluation,
    meta: Mapping[str, Any],
    bands: BandResults = (),
    plots: bool = True,
) -> list[Path]:
    """Write the report files (see the module docstring) and return their paths."""
    out = Path(out_dir)
    written = []
    summary_path = out / "metrics_summary.json"
    write_json_atomic(summary_path, evaluation.metrics.summary_json(meta))
    written.append(summary_path)
    details_path = out / "metrics_details.json"
    write_json_atomic(details_path, evaluation.details_json())
    written.append(details_path)
    if bands:
        bands_path = out / "metrics_distance_bands.json"
        write_json_atomic(bands_path, distance_bands_json(bands))
        written.append(bands_path)
    if plots:
        written += write_plots(out / "plots", evaluation, bands)
    return written


# ----------------------------------------------------------------------------------------------
# Plots


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _style_pr_axis(ax: Any, min_recall: float, min_precision: float, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title(title)
    ax.axvline(min_recall, linestyle="--", color="0.6", linewidth=1)
    ax.axhline(min_precision, linestyle="--", color="0.6", linewidth=1)
    ax.grid(alpha=0.3)


def plot_class_pr(ax: Any, evaluation: DetectionEvaluation, class_name: str) -> None:
    """Precision-recall of one class at every threshold (AP in the legend)."""
    metrics = evaluation.metrics
    config = metrics.config
    for i, threshold in enumerate(config.dist_ths_m):
        md = evaluation.metric_data[(class_name, threshold)]
        ap = metrics.label_aps[class_name][threshold]
        ax.plot(md.recall, md.precision, color=f"C{i}", label=f"{threshold:g} m: AP {ap:.3f}")
    _style_pr_axis(
        ax,
        config.min_recall,
        config.min_precision,
        f"{PRETTY_CLASS[class_name]}: AP {metrics.mean_dist_aps[class_name]:.3f}",
    )
    ax.legend(loc="lower left", fontsize=8)


def plot_class_tp(ax: Any, evaluation: DetectionEvaluation, class_name: str) -> None:
    """TP errors of one class vs recall, at the TP threshold, up to the highest recall reached."""
    metrics = evaluation.metrics
    config = metrics.config
    md = evaluation.metric_data[(class_name, config.dist_th_tp_m)]
    last = md.max_recall_ind
    first = round(100 * config.min_recall) + 1
    plotted = False
    for i, metric in enumerate(TP_METRICS):
        value = metrics.label_tp_errors[class_name][metric]
        if math.isnan(value) or last < first:
            continue
        curve = md.error(metric)
        ax.plot(
            md.recall[: last + 1],
            curve[: last + 1],
            color=f"C{i}",
            label=f"{TP_COLUMN[metric]}: {value:.3f} ({TP_UNITS[metric]})",
        )
        plotted = True
    ax.set_xlim(0, 1)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Error")
    ax.axvline(config.min_recall, linestyle="--", color="0.6", linewidth=1)
    ax.set_title(f"{PRETTY_CLASS[class_name]}: TP errors at {config.dist_th_tp_m:g} m")
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "recall never reaches the minimum", ha="center", va="center", transform=ax.transAxes)


def plot_dist_pr(ax: Any, evaluation: DetectionEvaluation, threshold: float) -> None:
    """Precision-recall of every class at one threshold."""
    metrics = evaluation.metrics
    config = metrics.config
    for name in config.class_names:
        md = evaluation.metric_data[(name, threshold)]
        ax.plot(
            md.recall,
            md.precision,
            color=CLASS_COLORS[name],
            label=f"{PRETTY_CLASS[name]}: {metrics.label_aps[name][threshold]:.3f}",
        )
    _style_pr_axis(ax, config.min_recall, config.min_precision, f"Match distance {threshold:g} m")
    ax.legend(loc="lower left", fontsize=7, ncol=2)


def plot_distance_bands(ax: Any, bands: BandResults) -> None:
    """Per-class AP grouped by class, one bar per distance band."""
    if not bands:
        return
    class_names = bands[0][1].metrics.config.class_names
    x = np.arange(len(class_names))
    width = 0.8 / len(bands)
    for i, (band, band_eval) in enumerate(bands):
        values = [band_eval.metrics.mean_dist_aps[n] for n in class_names]
        ax.bar(
            x + (i - (len(bands) - 1) / 2) * width,
            values,
            width,
            label=f"{band_label(band)}: mAP {band_eval.metrics.mean_ap:.3f}",
        )
    ax.set_xticks(x, [PRETTY_CLASS[n] for n in class_names], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("AP")
    ax.set_title("AP by distance from the ego vehicle")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def write_plots(plot_dir: Path, evaluation: DetectionEvaluation, bands: BandResults = ()) -> list[Path]:
    config = evaluation.metrics.config
    metrics = evaluation.metrics
    written = []

    figure = Figure(figsize=(20, 9), layout="constrained")
    grid = figure.subplots(2, 6)
    for ax, name in zip(grid.flat, config.class_names, strict=False):
        plot_class_pr(ax, evaluation, name)
    errors = metrics.tp_errors
    ax = grid.flat[len(config.class_names)]
    names = list(TP_METRICS)
    ax.bar(
        [TP_SHORT_NAMES[m] for m in names],
        [0 if math.isnan(errors[m]) else errors[m] for m in names],
        color=[f"C{i}" for i in range(5)],
    )
    ax.set_title("Mean TP errors")
    ax.grid(axis="y", alpha=0.3)
    ax = grid.flat[len(config.class_names) + 1]
    ax.axis("off")
    ax.text(
        0.05,
        0.6,
        f"mAP  {metrics.mean_ap:.4f}\nNDS  {metrics.nd_score:.4f}",
        fontsize=20,
        family="monospace",
        transform=ax.transAxes,
    )
    figure.suptitle("nuScenes detection: precision-recall per class")
    written.append(_save(figure, plot_dir / "summary.png"))

    for name in config.class_names:
        figure = Figure(figsize=(6, 5))
        plot_class_pr(figure.subplots(), evaluation, name)
        written.append(_save(figure, plot_dir / f"{name}_pr.png"))
        figure = Figure(figsize=(6, 5))
        plot_class_tp(figure.subplots(), evaluation, name)
        written.append(_save(figure, plot_dir / f"{name}_tp.png"))
    for threshold in config.dist_ths_m:
        figure = Figure(figsize=(7, 6))
        plot_dist_pr(figure.subplots(), evaluation, threshold)
        written.append(_save(figure, plot_dir / f"dist_pr_{threshold}.png"))
    if bands:
        figure = Figure(figsize=(10, 5))
        plot_distance_bands(figure.subplots(), bands)
        written.append(_save(figure, plot_dir / "distance_bands.png"))
    return written


# ----------------------------------------------------------------------------------------------
# One call for the command line


@dataclass(frozen=True, slots=True)
class Report:
    """What `evaluate_and_report` did: the evaluation, its distance bands, the table and the files."""

    evaluation: DetectionEvaluation
    bands: BandResults
    table: str
    written: tuple[Path, ...]


def evaluate_and_report(
    results_path: str | os.PathLike[str],
    dataroot: str | os.PathLike[str],
    version: str,
    split: str,
    out_dir: str | os.PathLike[str],
    config: DetectionConfig | None = None,
    plots: bool = True,
) -> Report:
    """Evaluate a results file against a split and write the whole report into `out_dir`."""
    config = default_config() if config is None else config
    file_evaluation = evaluate_results_file(results_path, dataroot, version, split, config)
    bands = evaluate_distance_bands(file_evaluation.ground_truth, file_evaluation.predictions.boxes, config)
    written = write_report(out_dir, file_evaluation.evaluation, file_evaluation.predictions.meta, bands, plots=plots)
    return Report(
        evaluation=file_evaluation.evaluation,
        bands=bands,
        table=summary_table(file_evaluation.evaluation, bands),
        written=tuple(written),
    )
