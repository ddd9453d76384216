"""`avfusion bench ...`: benchmarks that time ours beside a peer in the same run.

Each benchmark lives in `avfusion.tools.bench.<name>` and exposes `add_parser(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES: tuple[str, ...] = (
    "avfusion.tools.bench.infer",
    "avfusion.tools.bench.ablation",
    "avfusion.tools.bench.robustness",
    "avfusion.tools.bench.fusion",
    "avfusion.tools.bench.checks",
    "avfusion.tools.bench.realdata",
    "avfusion.tools.bench.voxelize",
    "avfusion.tools.bench.eval",
    "avfusion.tools.bench.synthetic",
    "avfusion.tools.bench.realism",
    "avfusion.tools.bench.gpu",
    "avfusion.tools.bench.tracking",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: ours beside a peer, as ratios")
    bench_subparsers = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for module_name in BENCH_MODULES:
        importlib.import_module(module_name).add_parser(bench_subparsers)
