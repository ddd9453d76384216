"""`avfusion dataset ...`: make a synthetic log, summarize a dataroot, print one synchronized frame,
write a corrupted copy of a dataroot.

Each action lives in its own module exposing `add_parser(subparsers)`; they are listed here.
"""

from __future__ import annotations

import argparse
import importlib

DATASET_MODULES: tuple[str, ...] = (
    "avfusion.tools.dataset_info",
    "avfusion.tools.dataset_frame",
    "avfusion.tools.dataset_synthetic",
    "avfusion.tools.dataset_corrupt",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="make synthetic logs, inspect a dataroot or a frame")
    dataset_subparsers = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for module_name in DATASET_MODULES:
        importlib.import_module(module_name).add_parser(dataset_subparsers)
