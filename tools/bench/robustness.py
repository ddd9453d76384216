"""`avfusion bench robustness`: detection quality under MultiCorrupt's corruptions, per model.

For each model (the shipped default weights, plus `--models NAME=PATH ...`), every keyframe of the
chosen split is read once and detected clean and under each corruption type at severities 1-3
(`avfusion.sensors.corruptions`: the ten MultiCorrupt types, GNSS noise and map removal), each
(type, severity) once per frame, with the same seeded draws for every model. Each run is scored
with avfusion's nuScenes detection metric against the benchmarked samples' ground truth:

    RA_type = mean over severities of NDS(type, severity) / NDS(clean)
    mRA     = mean of RA_type over the ten MultiCorrupt types (GNSS noise and map removal are
              reported beside it, not in it)

Beside the corruptions, each model also detects every frame with its cameras dropped
(`camera_dropped`, as `replay --drop camera`): a camera corruption that scores below it would have
been better ignored. `camera_corruptions_minus_camera_dropped` gives that margin (NDS) per
camera-only type and severity.

GNSS noise only matters where the map is placed from the GNSS fix, so its runs use the model with
its map branch posed from GNSS (`MapConfig.pose_source = "gnss"`), as `bench ablation`'s
`gnss_noise` row does; their RA is relative to the clean model as shipped.

`--json PATH` writes every figure; `--heatmap PNG` draws RA per type (rows) and model (columns).

    avfusion bench robustness --dataroot /work/data/val_seed2000 --split synth_all --json r.json --heatmap r.png
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from avfusion.datasets.frames import open_frames
from avfusion.datasets.nuscenes_log import FrameOptions
from avfusion.datasets.splits import resolve_split
from avfusion.errors import InputError
from avfusion.eval.data import load_ground_truth
from avfusion.eval.detection import evaluate
from avfusion.eval.submission import detection_records, submission_meta, validate_results
from avfusion.fileio import write_bytes_atomic
from avfusion.fusion.config import MapConfig
from avfusion.sensors.corruptions import (
    CORRUPTION_TYPES,
    MULTICORRUPT_TYPES,
    SEVERITIES,
    Corruption,
    corrupt_frame,
)
from avfusion.tools.bench.common import (
    BenchReport,
    HostCpuTimes,
    Timing,
    host_state_facts,
    set_threads,
)
from avfusion.tools.replay.frames import load_detector

CLEAN = "clean"
CAMERA_DROPPED = "camera_dropped"
DEFAULT_MODEL = "default"


# ---------------------------------------------------------------------------------------------
# Scoring


def ground_truth_subset(ground_truth: Any, sample_tokens: Sequence[str]) -> Any:
    """`ground_truth` (eval.data.GroundTruth) restricted to `sample_tokens` (kept in its order)."""
    position = {token: i for i, token in enumerate(ground_truth.sample_tokens)}
    absent = [token for token in sample_tokens if token not in position]
    if absent:
        raise InputError(f"sample(s) {absent[:3]} are not in split {ground_truth.split}")
    kept = np.array(sorted(position[token] for token in set(sample_tokens)), dtype=np.int64)
    new_position = np.full(len(position), -1, dtype=np.int64)
    new_position[kept] = np.arange(kept.size)
    tokens = tuple(ground_truth.sample_tokens[i] for i in kept)

    boxes = ground_truth.boxes
    rows = np.flatnonzero(new_position[boxes.sample_index] >= 0)
    chosen = boxes.select(rows)
    chosen = dataclasses.replace(chosen, sample_tokens=tokens, sample_index=new_position[chosen.sample_index])
    racks = ground_truth.bike_racks
    rack_rows = (
        np.flatnonzero(new_position[racks.sample_index] >= 0) if len(racks.sample_index) else np.zeros(0, np.int64)
    )
    racks = dataclasses.replace(
        racks,
        sample_index=new_position[racks.sample_index[rack_rows]],
        translation=racks.translation[rack_rows],
        size_wlh=racks.size_wlh[rack_rows],
        rotation_wxyz=racks.rotation_wxyz[rack_rows],
    )
    return dataclasses.replace(
        ground_truth, boxes=chosen, ego_translation=ground_truth.ego_translation[kept], bike_racks=racks
    )


def score(ground_truth: Any, records: dict[str, list[dict[str, Any]]], full: bool = False) -> dict[str, float]:
    """NDS and mAP of one run's submission records (every sample of `ground_truth` present);
    with `full`, the five mean TP errors too (mATE, mASE, mAOE, mAVE, mAAE)."""

    payload = {
        "meta": submission_meta(use_camera=True, use_lidar=True, use_map=True),
        "results": {token: records[token] for token in ground_truth.sample_tokens},
    }
    predictions = validate_results(payload, ground_truth.sample_tokens)
    metrics = evaluate(ground_truth, predictions).metrics
    result = {"NDS": float(metrics.nd_score), "mAP": float(metrics.mean_ap)}
    if full:
        errors = metrics.tp_errors
        for name, key in TP_ERROR_NAMES.items():
            result[name] = float(errors[key])
    return result


# The mean TP errors' short names -> their key in the metrics summary.
TP_ERROR_NAMES = {
    "mATE": "trans_err",
    "mASE": "scale_err",
    "mAOE": "orient_err",
    "mAVE": "vel_err",
    "mAAE": "attr_err",
}


@dataclasses.dataclass
class DetectedRuns:
    """Every model's submission records per run (clean and each corruption), and the times."""

    records: dict[str, dict[str, dict[str, list]]]
    detect_ms: dict[str, list[float]]  # model -> ms per clean frame
    corrupt_ms: dict[str, list[float]]  # corruption type -> ms per frame


def detect_runs(
    detectors: dict[str, Any], frames: Any, count: int, corruptions: Sequence[Corruption], seed: int
) -> DetectedRuns:
    """Read each of the first `count` frames once and detect it clean and under each corruption
    (seeded, the same draws for every model); GNSS noise runs each model with its map posed from
    the GNSS fix."""
    gnss_detectors = {}
    for name, detector in detectors.items():
        config = detector.config.replace(map=MapConfig(channels=detector.config.map.channels, pose_source="gnss"))
        gnss_detectors[name] = type(detector)(detector.model, config, detector.device, detector.voxel_backend)
    run_names = [CLEAN, CAMERA_DROPPED] + [str(c) for c in corruptions]
    records: dict[str, dict[str, dict[str, list]]] = {m: {r: {} for r in run_names} for m in detectors}
    detect_ms: dict[str, list[float]] = {m: [] for m in detectors}
    corrupt_ms: dict[str, list[float]] = {t: [] for t in dict.fromkeys(c.type for c in corruptions)}
    previous = None
    for index in tqdm(range(count), desc="robustness", unit="frame"):
        frame = frames[index]
        if previous is not None and previous.scene_name != frame.scene_name:
            previous = None
        for name, detector in detectors.items():
            dropped = detector.detect(frame, drop={"camera"})
            records[name][CAMERA_DROPPED][frame.sample_token] = detection_records(
                frame.sample_token, dropped.boxes_global
            )
        for run_name, corruption in [(CLEAN, None), *[(str(c), c) for c in corruptions]]:
            start = time.perf_counter()
            seen = frame if corruption is None else corrupt_frame(frame, corruption, seed, previous)
            if corruption is not None:
                corrupt_ms[corruption.type].append((time.perf_counter() - start) * 1e3)
            use_gnss = corruption is not None and corruption.type == "gnss_noise"
            for name, plain in detectors.items():
                detector = gnss_detectors[name] if use_gnss else plain
                start = time.perf_counter()
                detections = detector.detect(seen)
                if corruption is None:
                    detect_ms[name].append((time.perf_counter() - start) * 1e3)
                records[name][run_name][frame.sample_token] = detection_records(
                    frame.sample_token, detections.boxes_global
                )
        previous = frame
    return DetectedRuns(records, detect_ms, corrupt_ms)


def same_frame_options(detectors: dict[str, Any]) -> FrameOptions:
    """The reader options of the first model; `InputError` naming a model that reads otherwise."""
    first = next(iter(detectors.values())).config
    options = FrameOptions(num_sweeps=first.lidar.num_sweeps, image_scale=first.camera.decode_scale, load_boxes=False)
    for name, detector in detectors.items():
        if (detector.config.lidar.num_sweeps, detector.config.camera.decode_scale) != (
            options.num_sweeps,
            options.image_scale,
        ):
            raise InputError(
                f"--models {name}: reads frames with other options than the first model "
                "(num_sweeps / decode_scale); bench it on its own"
            )
    return options


def resistance(runs: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """RA per type and mRA over the MultiCorrupt types from `runs[name][severity or "clean"]`."""
    clean = runs[CLEAN][CLEAN]["NDS"]
    ra = {}
    for type_name in CORRUPTION_TYPES:
        if type_name in runs:
            values = [
                runs[type_name][str(s)]["NDS"] / clean if clean > 0 else float("nan")
                for s in SEVERITIES
                if str(s) in runs[type_name]
            ]
            ra[type_name] = float(np.mean(values)) if values else float("nan")
    present = {t: ra[t] for t in MULTICORRUPT_TYPES if t in ra}
    mean = float(np.mean(list(present.values()))) if present else None
    return {
        "RA": ra,
        "mRA": mean if len(present) == len(MULTICORRUPT_TYPES) else None,
        "mRA_of_types_run": mean,
        "worst_type": min(present, key=present.__getitem__) if present else None,
    }


# ---------------------------------------------------------------------------------------------
# Pictures and tables


def heatmap_png(table: dict[str, dict[str, float]], types: Sequence[str], title: str) -> bytes:
    """A types x models picture of RA (`table[model][type]`), values printed in the cells."""
    from matplotlib.figure import Figure

    models = list(table)
    values = np.array([[table[m].get(t, np.nan) for m in models] for t in types], dtype=np.float64)
    figure = Figure(figsize=(2.0 + 1.3 * len(models), 1.0 + 0.42 * len(types)), dpi=120)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(values, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(models)), labels=models)
    axes.set_yticks(range(len(types)), labels=list(types))
    for row in range(len(types)):
        for col in range(len(models)):
            if np.isfinite(values[row, col]):
                axes.text(col, row, f"{values[row, col]:.3f}", ha="center", va="center", fontsize=8)
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label="RA (NDS corrupted / clean)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def markdown_table(models: dict[str, dict[str, Any]], types: Sequence[str]) -> str:
    """Per model: clean NDS / mAP, then per type NDS at severities 1-3 and RA; mRA last."""
    lines = []
    for name, result in models.items():
        runs = result["runs"]
        lines.append(f"model {name}: clean NDS {runs[CLEAN][CLEAN]['NDS']:.4f}  mAP {runs[CLEAN][CLEAN]['mAP']:.4f}")
        lines.append("| type | NDS s1 | NDS s2 | NDS s3 | mAP s1 | mAP s2 | mAP s3 | RA |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for type_name in types:
            by_severity = runs[type_name]
            nds = " | ".join(f"{by_severity[str(s)]['NDS']:.4f}" if str(s) in by_severity else "-" for s in SEVERITIES)
            maps = " | ".join(f"{by_severity[str(s)]['mAP']:.4f}" if str(s) in by_severity else "-" for s in SEVERITIES)
            lines.append(f"| {type_name} | {nds} | {maps} | {result['RA'][type_name]:.3f} |")
        mra = result["mRA"]
        lines.append(
            f"mRA (ten MultiCorrupt types): {mra:.4f}"
            if mra is not None
            else f"mRA of the types run: {result['mRA_of_types_run']:.4f} (not all ten types run)"
        )
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The run


def parse_models(values: Sequence[str] | None) -> dict[str, Path | None]:
    """`--models NAME=PATH ...` -> {name: checkpoint}; the default weights always come first."""
    models: dict[str, Path | None] = {DEFAULT_MODEL: None}
    for value in values or ():
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--models {value!r}: expected NAME=PATH")
        if name in models:
            raise InputError(f"--models: the name {name!r} is given twice (or is the default's)")
        if not Path(path).is_file():
            raise InputError(f"--models {name}: checkpoint {path} not found")
        models[name] = Path(path)
    return models


def chosen_runs(types: Sequence[str] | None, severities: Sequence[int] | None) -> list[Corruption]:
    """The corruptions to run (every type and severity by default)."""
    type_names = list(types) if types else list(CORRUPTION_TYPES)
    levels = list(severities) if severities else list(SEVERITIES)
    return [Corruption(t, s) for t in type_names for s in levels]


def run(args: argparse.Namespace) -> int:

    if args.frames is not None and args.frames < 1:
        raise InputError(f"--frames must be >= 1, got {args.frames}")
    corruptions = chosen_runs(args.types, args.severities)
    models = parse_models(args.models)
    if args.threads:
        set_threads(args.threads)
    detectors = {name: load_detector(path, args.device) for name, path in models.items()}
    split = resolve_split(args.dataroot, args.version, args.split).name
    options = same_frame_options(detectors)
    frames = open_frames(args.dataroot, args.version, split, args.scenes or None, options)
    count = len(frames) if args.frames is None else min(args.frames, len(frames))
    tokens = list(frames.tokens[:count])
    ground_truth = ground_truth_subset(load_ground_truth(args.dataroot, args.version, split), tokens)

    run_names = [CLEAN] + [str(c) for c in corruptions]
    host_before = HostCpuTimes.read()
    detected = detect_runs(detectors, frames, count, corruptions, args.seed)
    records, corrupt_ms = detected.records, detected.corrupt_ms
    detect_ms = [ms for times in detected.detect_ms.values() for ms in times]
    host = host_state_facts(host_before)

    results: dict[str, dict[str, Any]] = {}
    for name in detectors:
        runs: dict[str, dict[str, dict[str, float]]] = {CLEAN: {CLEAN: score(ground_truth, records[name][CLEAN])}}
        for corruption in corruptions:
            runs.setdefault(corruption.type, {})[str(corruption.severity)] = score(
                ground_truth, records[name][str(corruption)]
            )
        dropped = score(ground_truth, records[name][CAMERA_DROPPED])
        margins = {
            str(c): runs[c.type][str(c.severity)]["NDS"] - dropped["NDS"]
            for c in corruptions
            if CORRUPTION_TYPES[c.type] == "camera"
        }
        results[name] = {
            "checkpoint": str(models[name]) if models[name] else "shipped default weights",
            "runs": runs,
            **resistance(runs),
            CAMERA_DROPPED: dropped,
            "camera_corruptions_minus_camera_dropped": margins,
        }
        if margins:
            worst = min(margins, key=margins.__getitem__)
            print(
                f"{name}: cameras dropped NDS {dropped['NDS']:.3f}; the worst camera corruption, {worst}, "
                f"scores {margins[worst]:+.3f} against it"
            )

    types = list(dict.fromkeys(c.type for c in corruptions))
    print(markdown_table(results, types))
    report = BenchReport(
        f"bench robustness: {count} samples of {args.dataroot} split {split}, "
        f"{len(run_names)} runs x {len(detectors)} model(s), seed {args.seed}"
    )
    report.ours.append(Timing("detect_per_frame", tuple(detect_ms)))
    for type_name, times in corrupt_ms.items():
        if times:
            report.ours.append(Timing(f"corrupt_{type_name}", tuple(times)))
    report.facts["models"] = results
    report.facts["samples"] = count
    report.facts.update(host)
    if args.heatmap:
        table = {name: result["RA"] for name, result in results.items()}
        title = f"RA per type, {count} samples of {Path(args.dataroot).name} {split}"
        write_bytes_atomic(args.heatmap, heatmap_png(table, types, title))
        print(f"wrote {args.heatmap}")
    report.emit(args.json)
    return 0


def parse_severity(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"severity {text!r} is not one of {list(SEVERITIES)}") from None
    if value not in SEVERITIES:
        raise argparse.ArgumentTypeError(f"severity {value} is not one of {list(SEVERITIES)}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "robustness", help="NDS / mAP under the MultiCorrupt corruptions per model; RA per type, mRA, heatmap"
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--split", default="val", help="split to score (val resolves to synth_val where defined)")
    parser.add_argument("--scenes", nargs="+", default=None, metavar="NAME", help="only these scenes of the split")
    parser.add_argument("--frames", type=int, default=None, help="only the first N keyframes (scored on those alone)")
    parser.add_argument("--models", nargs="+", metavar="NAME=PATH", help="more models beside the default weights")
    parser.add_argument("--types", nargs="+", choices=list(CORRUPTION_TYPES), help="corruption types (default: all)")
    parser.add_argument("--severities", nargs="+", type=parse_severity, help="severities (default: 1 2 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions' draws")
    parser.add_argument("--threads", type=int, default=0, help="torch and Numba threads (0 = default)")
    parser.add_argument("--device", default="cpu", help="torch device for the networks (cpu, cuda, cuda:1)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--heatmap", default=None, metavar="PNG", help="write the RA heatmap (types x models)")
    parser.set_defaults(func=run)
