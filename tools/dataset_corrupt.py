"""`avfusion dataset corrupt`: a corrupted copy of a dataroot (untouched files linked, not copied)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avfusion.datasets.corrupt import write_corrupted_copy
from avfusion.sensors.corruptions import CORRUPTION_TYPES, Corruption


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "corrupt",
        help="write a copy of a dataroot with one corruption applied (MultiCorrupt types, GNSS noise, map removal)",
        description="Write DIR: a copy of the dataroot where the files the corruption changes are written anew "
        "and every other file is a hard (or symbolic) link to the original. The devkit reads it like the original.",
    )
    parser.add_argument("--dataroot", type=Path, required=True, help="the nuScenes-format dataroot to copy")
    parser.add_argument("--version", default="v1.0-mini", help="table folder, e.g. v1.0-mini (default)")
    parser.add_argument("--type", required=True, metavar="TYPE", help=f"one of: {', '.join(CORRUPTION_TYPES)}")
    parser.add_argument("--severity", required=True, metavar="S", help="1, 2 or 3")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the copy to create")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruption's draws (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    corruption = Corruption.parse(f"{args.type}:{args.severity}")
    copy = write_corrupted_copy(
        args.dataroot,
        args.version,
        args.out,
        corruption,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {copy.path}: {corruption}, {copy.files_written} files corrupted, {copy.files_linked} linked")
    return 0
