"""`avfusion demo`: the whole pipeline on the embedded synthetic world, in about a minute.

With no arguments it makes the synthetic demo log (once; kept in `$AVFUSION_CACHE/demo` or
`~/.cache/avfusion/demo`), replays its validation split with the shipped weights, evaluates the
run, renders a few fused-BEV pictures and prints where everything is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from avfusion.datasets.index import cache_root
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.errors import InputError
from avfusion.tools.replay.engine import run_replay, summary_table
from avfusion.tools.replay.frames import load_detector
from avfusion.tools.replay.types import ReplayRequest

DEMO_VERSION = "v1.0-mini"
DEMO_SPLIT = "synth_val"
# Two scenes (one per split) of 8 s: 16 keyframes to replay, a couple of minutes to write once.
DEMO_SCENES = 2
DEMO_SECONDS = 8.0
DEMO_SEED = 2024
# Images at a quarter of nuScenes' size: the network reads them at 1/8 anyway, and the pictures'
# camera tiles are 400 px wide.
DEMO_IMAGE_SCALE = 0.25
DEMO_PICTURES = 6


@dataclass(frozen=True, slots=True)
class DemoPaths:
    """Where the demo puts things."""

    root: Path

    @property
    def log(self) -> Path:
        return self.root / "log"

    def run(self, stamp: str) -> Path:
        return self.root / "runs" / stamp


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="make the synthetic demo log (once), replay it, evaluate, render pictures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cache", type=Path, help="demo folder (default: $AVFUSION_CACHE/demo or ~/.cache/avfusion/demo)"
    )
    parser.add_argument("--checkpoint", type=Path, help="fusion weights (default: the shipped weights)")
    parser.add_argument(
        "--pictures", type=int, default=DEMO_PICTURES, help=f"fused-BEV pictures to render ({DEMO_PICTURES})"
    )
    parser.add_argument("--remake-log", action="store_true", help="write the synthetic demo log again")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"seed of the synthetic world ({DEMO_SEED})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.pictures < 0:
        raise InputError(f"--pictures must be >= 0, got {args.pictures}")
    load_detector(args.checkpoint, "cpu")  # a bad checkpoint fails now, not after making the log
    paths = DemoPaths(args.cache if args.cache is not None else cache_root() / "demo")
    started = time.perf_counter()
    log_root = ensure_demo_log(paths, seed=args.seed, remake=args.remake_log)
    run_dir = paths.run(time.strftime("%Y%m%d-%H%M%S"))
    print(f"replaying {DEMO_SPLIT} of {log_root} into {run_dir}")
    request = ReplayRequest(
        dataroot=log_root,
        version=DEMO_VERSION,
        split=DEMO_SPLIT,
        out_dir=run_dir,
        checkpoint=args.checkpoint,
        save_bev=True,
    )
    outcome = run_replay(request)
    print(summary_table(outcome))

    pictures_dir = run_dir / "pictures"
    rendered = False
    if args.pictures:
        rendered = render_pictures(log_root, run_dir, pictures_dir, args.pictures)
    print(f"\ndone in {time.perf_counter() - started:.0f} s. Everything is under {paths.root}:")
    print(f"  synthetic log  {log_root}")
    print(f"  submission     {outcome.submission_path}")
    tracks_path = outcome.out_dir / "tracking_submission.json"
    if tracks_path.is_file():
        print(f"  tracks         {tracks_path}")
    if outcome.metrics_path is not None:
        print(f"  metrics        {outcome.metrics_path}")
    print(f"  latency        {outcome.latency_path}")
    print(f"  sensor health  {outcome.health_path}")
    if rendered:
        print(f"  pictures       {pictures_dir}")
    print("next:")
    print(
        f"  avfusion viz --dataroot {log_root} --version {DEMO_VERSION} --run {run_dir}    (a window; needs a display)"
    )
    print(
        f"  avfusion eval --dataroot {log_root} --version {DEMO_VERSION} --split {DEMO_SPLIT} --results {outcome.submission_path} --out {run_dir / 'eval'}"
    )
    return 0


def ensure_demo_log(paths: DemoPaths, seed: int = DEMO_SEED, remake: bool = False) -> Path:
    """The demo log, written first if it is not there (the generator writes beside it and renames,
    so an interrupted generation leaves nothing half-made)."""
    marker = paths.log / DEMO_VERSION / "sample.json"
    if marker.is_file() and not remake:
        print(f"demo log: {paths.log} (already made)")
        return paths.log
    print(f"making the synthetic demo log in {paths.log} (once) ...")
    return make_synthetic_log(
        paths.log,
        num_scenes=DEMO_SCENES,
        seconds=DEMO_SECONDS,
        seed=seed,
        version=DEMO_VERSION,
        image_scale=DEMO_IMAGE_SCALE,
        progress=True,
    )


def render_pictures(log_root: Path, run_dir: Path, pictures_dir: Path, count: int) -> bool:
    """Render the first `count` frames of the run headless, in a child process: an offscreen
    renderer without a graphics driver can abort its process, and the demo's results must survive
    that. Returns whether the pictures were made."""
    command = [
        sys.executable,
        "-m",
        "avfusion.tools.cli",
        "viz",
        "--dataroot",
        str(log_root),
        "--version",
        DEMO_VERSION,
        "--run",
        str(run_dir),
        "--headless",
        "--out",
        str(pictures_dir),
        "--frames",
        str(count),
        "--color",
        "camera",
    ]
    print(f"rendering {count} fused-BEV pictures ...")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        print(
            f"could not render pictures ({reason}); on Debian/Ubuntu install libvulkan1 and "
            "mesa-vulkan-drivers (`make system-deps`) and run `avfusion viz ... --headless` again"
        )
        return False
    return True
