"""`avfusion bench fusion`: the four fusion strategies side by side.

For each strategy (early, intermediate, gated, late: its shipped weights, or `--models NAME=PATH`),
every keyframe of the split is read once and detected clean and under the ten MultiCorrupt
corruptions (`--severities`, default 1-3; the same seeded draws for every model), without
tracking. Per strategy: clean NDS, mAP, mAVE, mAOE; RA per type and mRA as `bench robustness`
defines them; frames per second of `Detector.detect` on the clean frames (one thread each for
torch and Numba unless `--threads`); parameters in the weights.

The default strategy is chosen by a rule fixed before measuring: the best clean NDS among the
strategies whose mRA is not below intermediate fusion's.

    avfusion bench fusion --dataroot data/val_seed2000 --split synth_all --json fusion.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from avfusion.datasets.frames import open_frames
from avfusion.datasets.splits import resolve_split
from avfusion.errors import InputError
from avfusion.eval.data import load_ground_truth
from avfusion.fileio import write_bytes_atomic
from avfusion.fusion.checkpoint import load_checkpoint, weights_for_strategy
from avfusion.fusion.config import FUSION_STRATEGIES
from avfusion.sensors.corruptions import MULTICORRUPT_TYPES, SEVERITIES, Corruption
from avfusion.tools.bench.common import BenchReport, HostCpuTimes, Timing, host_state_facts, set_threads
from avfusion.tools.bench.robustness import (
    CLEAN,
    detect_runs,
    ground_truth_subset,
    heatmap_png,
    parse_severity,
    resistance,
    same_frame_options,
    score,
)
from avfusion.tools.replay.frames import load_detector

REFERENCE = "intermediate"


def strategy_weights(overrides: list[str] | None) -> dict[str, Path | None]:
    """Strategy -> checkpoint: `--models NAME=PATH` where given (NAME a strategy), else the
    shipped weights of the strategy (None = the default weights)."""
    given: dict[str, Path] = {}
    for value in overrides or ():
        name, sep, path = value.partition("=")
        if not sep or name not in FUSION_STRATEGIES:
            raise InputError(
                f"--models {value!r}: expected STRATEGY=PATH, STRATEGY one of {', '.join(FUSION_STRATEGIES)}"
            )
        given[name] = Path(path)
    return {name: weights_for_strategy(name, given.get(name)) for name in FUSION_STRATEGIES}


def parameter_count(checkpoint: Path | None) -> int:
    """Learned numbers in the weights: tensors other than batch-norm statistics, plus a late
    model's score-model coefficients."""
    config, payload = load_checkpoint(checkpoint)
    state = payload["model"]
    tensors = sum(
        int(t.numel())
        for name, t in state.items()
        if t.is_floating_point() and not name.endswith(("running_mean", "running_var"))
    )
    return tensors + len(config.fuser.late_model)


def choose_default(results: dict[str, dict[str, Any]]) -> str:
    """The rule: best clean NDS among the strategies whose mRA is not below intermediate's."""
    floor = results[REFERENCE]["mRA_of_types_run"]
    eligible = [name for name, r in results.items() if r["mRA_of_types_run"] >= floor]
    return max(eligible, key=lambda name: results[name]["clean"]["NDS"])


def table(results: dict[str, dict[str, Any]], default: str) -> str:
    lines = [
        "| strategy | NDS | mAP | mAVE | mAOE | mRA | worst type (RA) | frames/s | parameters |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        clean = r["clean"]
        worst = r["worst_type"]
        mark = " (default by the rule)" if name == default else ""
        lines.append(
            f"| {name}{mark} | {clean['NDS']:.4f} | {clean['mAP']:.4f} | {clean['mAVE']:.3f} | {clean['mAOE']:.3f} "
            f"| {r['mRA_of_types_run']:.3f} | {worst} ({r['RA'][worst]:.3f}) | {r['frames_per_s']:.2f} "
            f"| {r['parameters']:,} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.frames is not None and args.frames < 1:
        raise InputError(f"--frames must be >= 1, got {args.frames}")
    set_threads(args.threads)
    checkpoints = strategy_weights(args.models)
    detectors = {name: load_detector(path, args.device) for name, path in checkpoints.items()}
    split = resolve_split(args.dataroot, args.version, args.split).name
    frames = open_frames(args.dataroot, args.version, split, args.scenes or None, same_frame_options(detectors))
    count = len(frames) if args.frames is None else min(args.frames, len(frames))
    ground_truth = ground_truth_subset(
        load_ground_truth(args.dataroot, args.version, split), list(frames.tokens[:count])
    )
    severities = args.severities or list(SEVERITIES)
    corruptions = [Corruption(t, s) for t in MULTICORRUPT_TYPES for s in severities]

    host_before = HostCpuTimes.read()
    detected = detect_runs(detectors, frames, count, corruptions, args.seed)
    host = host_state_facts(host_before)

    results: dict[str, dict[str, Any]] = {}
    for name in detectors:
        runs: dict[str, dict[str, dict[str, float]]] = {
            CLEAN: {CLEAN: score(ground_truth, detected.records[name][CLEAN], full=True)}
        }
        for corruption in corruptions:
            runs.setdefault(corruption.type, {})[str(corruption.severity)] = score(
                ground_truth, detected.records[name][str(corruption)]
            )
        results[name] = {
            "checkpoint": str(checkpoints[name]) if checkpoints[name] else "shipped default weights",
            "clean": runs[CLEAN][CLEAN],
            "runs": runs,
            "frames_per_s": 1000.0 / float(np.mean(detected.detect_ms[name])),
            "parameters": parameter_count(checkpoints[name]),
            **resistance(runs),
        }
    default = choose_default(results)
    print(table(results, default))
    print(
        f"default by the rule (best clean NDS among strategies with mRA >= {REFERENCE}'s): {default}; "
        f"severities {severities}, {count} samples"
    )
    report = BenchReport(
        f"bench fusion: {count} samples of {args.dataroot} split {split}, severities {severities}, seed {args.seed}"
    )
    for name, times in detected.detect_ms.items():
        report.ours.append(Timing(f"detect_{name}", tuple(times)))
    report.facts.update(strategies=results, default_by_rule=default, samples=count, **host)
    if args.heatmap:
        ra = {name: r["RA"] for name, r in results.items()}
        title = f"RA per type, {count} samples of {Path(args.dataroot).name} {split}"
        write_bytes_atomic(args.heatmap, heatmap_png(ra, list(MULTICORRUPT_TYPES), title))
        print(f"wrote {args.heatmap}")
    report.emit(args.json)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fusion", help="early / intermediate / gated / late fusion side by side: NDS, mAP, mAVE, mAOE, mRA, speed"
    )
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--split", default="val", help="split to score (val resolves to synth_val where defined)")
    parser.add_argument("--scenes", nargs="+", default=None, metavar="NAME", help="only these scenes of the split")
    parser.add_argument("--frames", type=int, default=None, help="only the first N keyframes (scored on those alone)")
    parser.add_argument("--models", nargs="+", metavar="STRATEGY=PATH", help="weights instead of a strategy's shipped")
    parser.add_argument("--severities", nargs="+", type=parse_severity, help="corruption severities (default: 1 2 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions' draws")
    parser.add_argument("--threads", type=int, default=1, help="torch and Numba threads (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device for the networks (cpu, cuda, cuda:1)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--heatmap", default=None, metavar="PNG", help="write the RA heatmap (types x strategies)")
    parser.set_defaults(func=run)
