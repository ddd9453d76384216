"""`avfusion bench eval`: our detection metric beside nuscenes-devkit's `DetectionEval`, same inputs.

Both sides are timed from files to metrics in the same run, ground-truth loading included:
- ours: `load_ground_truth_and_predictions` (the JSON tables, a helper process finding the split's
  annotations, the ego poses and the results file meanwhile; then checked) + `evaluate` (filters,
  matching, APs, TP errors, NDS);
- devkit: `NuScenes(version, dataroot)` (its table load) + `DetectionEval(...)` (results, ground
  truth, filters) + `.evaluate()`.
The metrics of both must agree to 1e-9 (mAP, NDS, every AP and TP error), else the command fails.
The ratio is of wall times; the CPU seconds of both sides (ours with its helper process) are
reported beside it, since on a shared machine the load can change during the devkit's minutes.

The inputs are an annotations-only synthetic log (`make_synthetic_log(..., annotations_only=True)`)
and a results file made from its ground truth (kept boxes moved and resized a little, some missed,
some duplicated, false positives up to `--boxes-per-sample` per sample, scores with ties), both
cached under `~/.cache/avfusion/bench-eval/` by their parameters. `--dataroot` evaluates an
existing log instead (e.g. a real nuScenes val split).

    avfusion bench eval [--scenes 40 --seconds 20 --boxes-per-sample 100] [--repeats 1] [--json out.json]

Both sides read every table from disk inside the timed call (no parsed state is kept between runs;
ours decodes the big JSON files with msgspec; the untimed warm-up run pays the metric's Numba
compilation, which is cached on disk). The README's rows are
`--scenes 140 --seconds 30 --split synth_val` (2,100 of the log's 8,400 samples scored, all four
tables read) and `--scenes 60 --seconds 20 --split synth_train` (1,800 samples, 180,000 predictions).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.eval.config import default_config
from avfusion.eval.data import load_ground_truth, load_ground_truth_and_predictions
from avfusion.eval.detection import evaluate
from avfusion.eval.devkit_bridge import run_devkit_eval
from avfusion.fileio import write_json_atomic
from avfusion.labels import ATTRIBUTES, DETECTION_CLASSES
from avfusion.tools.bench.common import BenchReport, time_call

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avfusion" / "bench-eval"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="detection metric: ours vs nuscenes-devkit DetectionEval (GT loading included), same numbers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenes", type=int, default=40, help="scenes of the generated log (default 40)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per scene (default 20: 40 samples)")
    parser.add_argument("--boxes-per-sample", type=int, default=100, help="predictions per sample (default 100)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the log and the predictions")
    parser.add_argument("--dataroot", default=None, help="evaluate this existing log instead of generating one")
    parser.add_argument("--version", default="v1.0-mini", help="table version (default v1.0-mini)")
    parser.add_argument(
        "--split", default=None, help="split to evaluate (default: synth_val, or the larger synthetic split)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of the devkit (default 1: it takes minutes)")
    parser.add_argument(
        "--our-repeats",
        type=int,
        default=3,
        help="timed runs of ours (default 3: a few seconds each, so a load spike on the shared machine can "
        "swamp one run, while the devkit's single run spans minutes of load; the median is reported)",
    )
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE), help=f"where generated inputs are kept (default {DEFAULT_CACHE})"
    )
    parser.add_argument("--json", default=None, help="write the figures as JSON here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = default_config()
    dataroot, version, split, results_path = prepare_inputs(args)
    gt = load_ground_truth(dataroot, version, split)
    n_pred = sum(len(boxes) for boxes in json.loads(Path(results_path).read_text())["results"].values())

    cpu_seconds: dict[str, list[float]] = {"avfusion_eval": [], "devkit": []}

    def ours() -> Any:
        before = cpu_seconds_used()
        ground_truth, predictions = load_ground_truth_and_predictions(dataroot, version, split, results_path, config)
        evaluation = evaluate(ground_truth, predictions.boxes, config)
        cpu_seconds["avfusion_eval"].append(cpu_seconds_used() - before)
        return evaluation

    devkit_dir = Path(tempfile.mkdtemp(prefix="avfusion-bench-eval-devkit-"))
    outputs: dict[str, Any] = {}

    def devkit() -> Any:
        before = cpu_seconds_used()
        outputs["devkit"] = run_devkit_eval(dataroot, version, split, results_path, config, devkit_dir)
        cpu_seconds["devkit"].append(cpu_seconds_used() - before)
        return outputs["devkit"]

    print(
        f"timing ours ({args.our_repeats} run(s) after 1 warm-up) and the devkit ({args.repeats} run(s)) on {len(gt.sample_tokens)} samples ..."
    )
    load_before = os.getloadavg()
    report = BenchReport(f"bench eval: {split} of {dataroot}, {len(gt.sample_tokens)} samples, {n_pred} predictions")
    report.ours.append(time_call("avfusion_eval", ours, repeats=args.our_repeats, warmup=1))
    report.peers.append(time_call("devkit", devkit, repeats=args.repeats, warmup=0))
    shutil.rmtree(devkit_dir, ignore_errors=True)
    load_after = os.getloadavg()

    # The CPU time of the timed calls (ours without its warm-up): a load that slows the two sides'
    # wall time unevenly changes it much less.
    cpu_median = {
        "avfusion_eval": float(np.median(cpu_seconds["avfusion_eval"][1:])),
        "devkit": float(np.median(cpu_seconds["devkit"])),
    }
    ours_summary = ours().metrics.summary_json()
    max_diff = metric_difference(ours_summary, outputs["devkit"].summary)
    report.facts.update(
        {
            "samples": len(gt.sample_tokens),
            "gt_boxes": len(gt.boxes),
            "predictions": n_pred,
            "predictions_per_sample": round(n_pred / max(1, len(gt.sample_tokens)), 1),
            "results_file_mb": round(Path(results_path).stat().st_size / 1e6, 1),
            "tables_mb": round(sum(p.stat().st_size for p in (Path(dataroot) / version).glob("*.json")) / 1e6, 1),
            "mAP": ours_summary["mean_ap"],
            "NDS": ours_summary["nd_score"],
            "max_abs_metric_difference_vs_devkit": max_diff,
            "cpu_seconds_median": {name: round(value, 3) for name, value in cpu_median.items()},
            "cpu_ratio_vs_devkit": round(cpu_median["devkit"] / cpu_median["avfusion_eval"], 1),
            # The machine is shared: the 1-minute load average before and after the timed runs.
            "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "cpu_count": os.cpu_count(),
        }
    )
    report.emit(args.json)
    if not max_diff <= 1e-9:
        print(f"error: our metrics differ from the devkit's by up to {max_diff:g}")
        return 1
    return 0


def cpu_seconds_used() -> float:
    """CPU seconds (user + system) of this process's threads and of its finished child processes
    (`load_ground_truth_and_predictions` decodes the results file in one)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def metric_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """Largest absolute difference over mAP, NDS, every AP, TP error and mean (NaN vs NaN counts as 0;
    NaN vs a number counts as infinite)."""
    pairs = [(ours["mean_ap"], theirs["mean_ap"]), (ours["nd_score"], theirs["nd_score"])]
    for name, aps in theirs["label_aps"].items():
        pairs += [(ours["label_aps"][name][str(th)], ap) for th, ap in aps.items()]
        pairs += [(ours["label_tp_errors"][name][m], v) for m, v in theirs["label_tp_errors"][name].items()]
    for metric, value in theirs["tp_errors"].items():
        pairs.append((ours["tp_errors"][metric], value))
    worst = 0.0
    for a, b in pairs:
        if math.isnan(a) and math.isnan(b):
            continue
        worst = max(worst, abs(a - b)) if not (math.isnan(a) or math.isnan(b)) else math.inf
    return worst


# ----------------------------------------------------------------------------------------------
# Inputs


def prepare_inputs(args: argparse.Namespace) -> tuple[str, str, str, str]:
    """(dataroot, version, split, results path), generating and caching what is missing."""
    if args.dataroot is not None:
        dataroot = args.dataroot
        split = args.split or "synth_val"
        cache = (
            Path(args.cache_dir)
            / f"results-{_slug(Path(dataroot).resolve())}-{args.version}-{split}-k{args.boxes_per_sample}-seed{args.seed}"
        )
    else:
        cache = Path(args.cache_dir) / f"log-s{args.scenes}-t{args.seconds:g}-seed{args.seed}"
        dataroot = str(cache / "dataroot")
        if not (cache / "dataroot.complete").exists():
            print(
                f"generating an annotations-only log of {args.scenes} scenes x {args.seconds:g} s into {dataroot} (cached) ..."
            )
            shutil.rmtree(dataroot, ignore_errors=True)
            make_synthetic_log(
                dataroot,
                num_scenes=args.scenes,
                seconds=args.seconds,
                seed=args.seed,
                version=args.version,
                annotations_only=True,
                progress=True,
            )
            (cache / "dataroot.complete").write_text("ok\n")
        split = args.split or _largest_synthetic_split(dataroot, args.version)
    results_path = cache / f"results-{split}-k{args.boxes_per_sample}-seed{args.seed}.json"
    if not results_path.exists():
        print(f"writing ~{args.boxes_per_sample} predictions per sample of {split} into {results_path} (cached) ...")
        payload = make_benchmark_results(dataroot, args.version, split, args.boxes_per_sample, args.seed)
        write_json_atomic(results_path, payload, indent=None)
    return dataroot, args.version, split, str(results_path)


def _slug(path: Path) -> str:
    return str(path).strip("/").replace("/", "_")[-80:]


def _largest_synthetic_split(dataroot: str, version: str) -> str:
    """synth_val, unless the log's synth_train is the one with thousands of samples to evaluate."""
    splits = json.loads((Path(dataroot) / version / "splits.json").read_text())
    return "synth_val" if len(splits.get("synth_val", [])) >= len(splits.get("synth_train", [])) / 4 else "synth_train"


def make_benchmark_results(dataroot: str, version: str, split: str, boxes_per_sample: int, seed: int) -> dict[str, Any]:
    """A results payload for `split` made from its ground truth: each box kept with probability 0.85
    (moved ~0.5 m, resized ~10 %, turned ~0.2 rad, velocity off by ~0.5 m/s, attribute mostly right),
    10 % of kept ones twice; then false positives within 60 m of the ego vehicle up to
    `boxes_per_sample`; scores rounded to 2 decimals so that ties occur, as in real detector output."""
    rng = np.random.default_rng(seed)
    gt = load_ground_truth(dataroot, version, split)
    boxes = gt.boxes
    results: dict[str, list[dict[str, Any]]] = {}
    for position, token in enumerate(gt.sample_tokens):
        rows = np.flatnonzero(boxes.sample_index == position)
        keep = rows[rng.random(len(rows)) < 0.85]
        keep = np.concatenate([keep, keep[rng.random(len(keep)) < 0.1]])[:boxes_per_sample]
        n_true, n_false = len(keep), max(0, boxes_per_sample - len(keep))
        q = boxes.rotation_wxyz[keep]
        yaw = np.concatenate(
            [2 * np.arctan2(q[:, 3], q[:, 0]) + rng.normal(0, 0.2, n_true), rng.uniform(-np.pi, np.pi, n_false)]
        )
        ego = gt.ego_translation[position]
        translation = np.concatenate(
            [
                boxes.translation[keep] + rng.normal(0, [0.5, 0.5, 0.1], (n_true, 3)),
                ego + np.column_stack([rng.uniform(-60, 60, (n_false, 2)), rng.uniform(0, 2, n_false)]),
            ]
        )
        size = np.concatenate(
            [boxes.size_wlh[keep] * rng.uniform(0.9, 1.1, (n_true, 3)), rng.uniform(0.5, 5.0, (n_false, 3))]
        )
        velocity = np.concatenate(
            [np.nan_to_num(boxes.velocity_xy[keep]) + rng.normal(0, 0.5, (n_true, 2)), rng.normal(0, 2, (n_false, 2))]
        )
        label = np.concatenate([boxes.label[keep], rng.integers(0, len(DETECTION_CLASSES), n_false)])
        attribute = np.concatenate(
            [np.where(rng.random(n_true) < 0.8, boxes.attribute[keep], -1), np.full(n_false, -1)]
        )
        score = np.round(np.concatenate([rng.uniform(0.3, 1.0, n_true), rng.uniform(0.0, 0.6, n_false)]), 2)
        results[token] = [
            {
                "sample_token": token,
                "translation": translation[i].tolist(),
                "size": size[i].tolist(),
                "rotation": [math.cos(yaw[i] / 2), 0.0, 0.0, math.sin(yaw[i] / 2)],
                "velocity": velocity[i].tolist(),
                "detection_name": DETECTION_CLASSES[label[i]],
                "detection_score": float(score[i]),
                "attribute_name": ATTRIBUTES[attribute[i]] if attribute[i] >= 0 else "",
            }
            for i in rng.permutation(n_true + n_false)
        ]
    meta = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}
    return {"meta": meta, "results": results}
