"""`avfusion bench realism`: the real nuScenes sweep beside synthetic sweeps, statistic by statistic.

Reads the real keyframe sweep of `../shared/realdata` (with its 68 annotated boxes) and up to
`--max-frames` keyframe sweeps of a synthetic log (evenly spread over the split's keyframes, with
their annotations), accumulates `avfusion.sensors.lidar_statistics.SweepStatistics` for each and
prints them side by side: returns per ring, xy range, height and intensity histograms (quantiles),
the share of returns on ground / objects / everything else, and the returns inside boxes by class
and distance (median per box; the real boxes' own `num_lidar_pts` beside our count). Each
statistic gets a distance (Jensen-Shannon and Wasserstein-1, see `lidar_statistics.compare`).
`--png` draws the histograms, `--json` writes every histogram and distance.

The real keyframe is one sweep of one street: what it can tell is how the synthetic lidar's
returns are distributed, not how the detector does. Only unlabelled point statistics and box
point counts are compared here; nothing is fitted to the real boxes.

    avfusion bench realism --dataroot LOG [--split synth_all] [--max-frames 60] [--png P] [--json J]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.datasets.real_fixture import find_realdata, read_fixture
from avfusion.datasets.splits import resolve_split
from avfusion.errors import InputError
from avfusion.fileio import atomic_open, write_json_atomic
from avfusion.labels import DETECTION_CLASSES
from avfusion.sensors import lidar_statistics as ls
from avfusion.sensors.lidar_statistics import SweepStatistics
from avfusion.sensors.pcd import read_pcd_bin
from avfusion.tools.bench.common import BenchReport

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "realism", help="the real nuScenes sweep vs synthetic sweeps: histograms and distances"
    )
    parser.add_argument("--dataroot", required=True, help="synthetic nuScenes-format log")
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--split", default=None, help="split of the log (default: every scene)")
    parser.add_argument("--max-frames", type=int, default=60, help="keyframe sweeps read from the log (evenly spread)")
    parser.add_argument("--realdata", default=None, help="folder holding nuscenes_fixture/ (default: found, see docs)")
    parser.add_argument("--png", default=None, metavar="PATH", help="write the histograms as a PNG")
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.set_defaults(func=run)


def real_statistics(realdata_root: Path):
    """`SweepStatistics` of the real keyframe sweep (the boxes' own `num_lidar_pts` kept beside)."""

    keyframe = read_fixture(realdata_root)
    statistics = SweepStatistics()
    statistics.add(read_pcd_bin(keyframe.lidar_path), keyframe.ego_from_lidar, keyframe.boxes_ego)
    return statistics


def log_statistics(dataroot: str, version: str, split: str | None, max_frames: int):
    """`SweepStatistics` of up to `max_frames` keyframe sweeps of a log, evenly spread, and how many were read."""

    if max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {max_frames}")
    log = NuScenesLog.open(
        dataroot, version, split=None if split is None else resolve_split(dataroot, version, split).name
    )
    tokens = log.sample_tokens()
    if not tokens:
        raise InputError(f"{dataroot} {version} split {split}: no samples")
    chosen = np.unique(np.linspace(0, len(tokens) - 1, min(max_frames, len(tokens))).round().astype(int))
    statistics = SweepStatistics()
    for index in chosen:
        source = log.lidar_sources(tokens[index], 1)[0]
        boxes_global = log.gt_boxes_global(tokens[index])
        boxes_ego = None if boxes_global is None else boxes_global.transform(source.global_from_ego.inverse())
        statistics.add(read_pcd_bin(source.path), source.ego_from_lidar, boxes_ego)
    return statistics, len(chosen)


def _quantiles(counts: np.ndarray, edges: np.ndarray) -> list[float]:
    """Quantiles of a histogram (linear within a bin)."""
    cumulative = np.concatenate([[0.0], np.cumsum(counts) / max(counts.sum(), 1)])
    return [round(float(np.interp(q, cumulative, edges)), 2) for q in QUANTILES]


def comparison(real, synthetic) -> dict[str, Any]:
    """Side-by-side figures and distances (plain data for the printout and the JSON)."""

    distances = ls.compare(real, synthetic)
    figures: dict[str, Any] = {
        "distances": {
            name: {
                "jensen_shannon": round(d.jensen_shannon, 4),
                "wasserstein": None if d.wasserstein is None else round(d.wasserstein, 4),
                "unit": d.unit,
            }
            for name, d in distances.items()
        }
    }
    for name, statistics in (("real", real), ("synthetic", synthetic)):
        normalised = statistics.normalised()
        figures[name] = {
            "sweeps": statistics.sweeps,
            "returns_per_sweep": round(float(statistics.ring_returns.sum()) / statistics.sweeps, 1),
            "ring_return_rate": [round(float(v), 3) for v in normalised["ring_return_rate"]],
            "range_quantiles_m": _quantiles(statistics.range_counts, ls.RANGE_EDGES_M),
            "height_quantiles_m": _quantiles(statistics.height_counts, ls.HEIGHT_EDGES_M),
            "intensity_quantiles": _quantiles(statistics.intensity_counts, ls.INTENSITY_EDGES),
            "share": {n: round(float(v), 4) for n, v in zip(ls.SHARE_NAMES, normalised["share"], strict=True)},
            "histograms": {
                "range": statistics.range_counts.tolist(),
                "height": statistics.height_counts.tolist(),
                "intensity": statistics.intensity_counts.tolist(),
                "ring": statistics.ring_returns.tolist(),
            },
        }
    boxes: dict[str, dict[str, Any]] = {}
    real_table, synthetic_table = real.box_table(), synthetic.box_table()
    for label, distance_bin in sorted(set(real_table) | set(synthetic_table)):
        edges = ls.BOX_DISTANCE_EDGES_M
        key = f"{DETECTION_CLASSES[label]} {edges[distance_bin]:.0f}-{edges[distance_bin + 1]:.0f} m"
        row: dict[str, Any] = {}
        for name, table in (("real", real_table), ("synthetic", synthetic_table)):
            counts = table.get((label, distance_bin))
            row[f"{name}_boxes"] = 0 if counts is None else len(counts)
            row[f"{name}_median_points"] = None if counts is None else float(np.median(counts))
        boxes[key] = row
    figures["box_points"] = boxes
    annotated = np.array(real.box_points_annotated)
    counted = np.array(real.box_points)
    figures["real_box_points_equal_num_lidar_pts"] = f"{int((annotated == counted).sum())} of {len(counted)}"
    return figures


def draw(real, synthetic, path: str, title: str) -> None:
    """The histograms of both sources, one panel per statistic, written as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(16, 9))
    a, b = real.normalised(), synthetic.normalised()
    panels = (
        (axes[0, 0], np.arange(ls.NUM_RINGS + 1) - 0.5, "ring_return_rate", "ring index", "returns per firing"),
        (axes[0, 1], ls.RANGE_EDGES_M, "range", "xy range (m)", "fraction of returns"),
        (axes[0, 2], ls.HEIGHT_EDGES_M, "height", "ego z (m)", "fraction of returns"),
        (axes[1, 0], ls.INTENSITY_EDGES, "intensity", "intensity (0-255)", "fraction of returns"),
    )
    for axis, edges, key, xlabel, ylabel in panels:
        axis.stairs(a[key], edges, label="real", linewidth=1.5)
        axis.stairs(b[key], edges, label="synthetic", linewidth=1.5)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.legend()
    axes[1, 0].set_yscale("log")
    positions = np.arange(len(ls.SHARE_NAMES))
    axes[1, 1].bar(positions - 0.2, a["share"], 0.4, label="real")
    axes[1, 1].bar(positions + 0.2, b["share"], 0.4, label="synthetic")
    axes[1, 1].set_xticks(positions, ls.SHARE_NAMES)
    axes[1, 1].set_ylabel("fraction of returns")
    axes[1, 1].legend()
    axis = axes[1, 2]
    for name, statistics, marker in (("real", real, "o"), ("synthetic", synthetic, ".")):
        labels = np.array(statistics.box_label, dtype=np.int64)
        for label in np.unique(labels):
            chosen = labels == label
            axis.scatter(
                np.array(statistics.box_distance_m)[chosen],
                np.array(statistics.box_points)[chosen] + 1,
                marker=marker,
                s=18 if marker == "o" else 4,
                alpha=0.9 if marker == "o" else 0.3,
                color=f"C{label}",
                label=f"{DETECTION_CLASSES[label]} ({name})",
            )
    axis.set_yscale("log")
    axis.set_xlim(0, 60)
    axis.set_xlabel("box distance (m)")
    axis.set_ylabel("returns in box + 1")
    axis.legend(fontsize=6, ncol=2)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=80, metadata={"Software": None})
    plt.close(figure)


def run(args: argparse.Namespace) -> int:

    realdata = find_realdata(args.realdata)
    real = real_statistics(realdata)
    synthetic, frames = log_statistics(args.dataroot, args.version, args.split, args.max_frames)
    figures = comparison(real, synthetic)
    report = BenchReport(f"bench realism: real nuScenes keyframe sweep vs {frames} keyframe sweeps of {args.dataroot}")
    report.facts["peer"] = "none (a comparison of data, not a timing)"
    lines = [f"{'statistic':<22}{'real':>44}{'synthetic':>44}{'JS':>8}{'W1':>9}  unit"]
    distances = figures["distances"]
    for key, name in (
        ("range_quantiles_m", "range"),
        ("height_quantiles_m", "height"),
        ("intensity_quantiles", "intensity"),
        ("share", "share"),
    ):
        real_value, synthetic_value = figures["real"][key], figures["synthetic"][key]
        if isinstance(real_value, dict):
            real_value, synthetic_value = list(real_value.values()), list(synthetic_value.values())
        d = distances[name]
        lines.append(
            f"{name:<22}{real_value!s:>44}{synthetic_value!s:>44}{d['jensen_shannon']:8.3f}"
            f"{d['wasserstein']:9.3f}  {d['unit']}"
        )
    d = distances["ring"]
    lines.append(
        f"{'ring return rate':<22}{'mean ' + format(np.mean(figures['real']['ring_return_rate']), '.3f'):>44}"
        f"{'mean ' + format(np.mean(figures['synthetic']['ring_return_rate']), '.3f'):>44}"
        f"{d['jensen_shannon']:8.3f}{d['wasserstein']:9.3f}  {d['unit']}"
    )
    lines.append(
        f"{'returns per sweep':<22}{figures['real']['returns_per_sweep']:>44}"
        f"{figures['synthetic']['returns_per_sweep']:>44}"
    )
    lines.append(f"quantiles are {', '.join(str(q) for q in QUANTILES)}; share is ground, objects, other")
    lines.append(f"{'boxes (class, distance)':<30}{'real n':>8}{'real median':>13}{'synth n':>9}{'synth median':>14}")
    for key, row in figures["box_points"].items():
        if row["real_boxes"]:
            lines.append(
                f"{key:<30}{row['real_boxes']:>8}{row['real_median_points']!s:>13}"
                f"{row['synthetic_boxes']:>9}{row['synthetic_median_points']!s:>14}"
            )
    d = distances["box_points"]
    lines.append(f"box points distance: {d['wasserstein']:.3f} ({d['unit']}, weighted by the real boxes)")
    lines.append(
        f"real boxes whose count here equals their num_lidar_pts: {figures['real_box_points_equal_num_lidar_pts']}"
    )
    print("\n".join(lines))
    report.facts["figures"] = figures
    if args.png is not None:
        draw(real, synthetic, args.png, report.title)
        print(f"wrote {args.png}")
    # The table above is the readable form; the JSON carries everything.
    if args.json is not None:
        write_json_atomic(args.json, report.as_dict())
        print(f"wrote {args.json}")
    return 0
