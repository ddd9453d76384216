"""`avfusion train`: train the BEV fusion network on a nuScenes-format log.

    avfusion train --dataroot D --version v1.0-mini --split train --out runs/fused [--preset cpu]
    torchrun --nproc_per_node 2 -m avfusion.tools.cli train ...     (DDP; gloo on CPUs)

`--split train` picks `synth_train` from `<version>/splits.json` when that file names no split
`train` (synthetic logs name theirs `synth_*`, see DESIGN.md section 4); `--split all` takes every
scene of the log (a log generated for training only, from its own seed).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from avfusion.datasets.frames import open_frames
from avfusion.datasets.nuscenes_log import FrameOptions
from avfusion.errors import InputError
from avfusion.fusion.config import FUSION_STRATEGIES, PRESETS, FusionConfig, configure
from avfusion.fusion.late import FEATURE_NAMES
from avfusion.fusion.train import export_weights, fit_late_fusion, train
from avfusion.sensors.types import SyncedFrame


def config_from_args(args: argparse.Namespace) -> FusionConfig:
    return configure(
        args.preset,
        args.config,
        args.modalities,
        fusion=args.fusion,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        heading_weight=args.heading_weight,
        weather=args.weather,
    )


def check_counts(args: argparse.Namespace) -> None:
    """One-line errors for counts that make no run: --max-steps and --checkpoint-every >= 1, --workers >= 0."""
    for flag, value, least in (
        ("--max-steps", args.max_steps, 1),
        ("--checkpoint-every", args.checkpoint_every, 1),
        ("--workers", args.workers, 0),
    ):
        if value is not None and value < least:
            raise InputError(f"{flag} must be >= {least}, got {value}")
    if args.resume and args.force:
        raise InputError("--resume continues the run in --out and --force replaces it: pass one of them")


def run(args: argparse.Namespace) -> int:
    check_counts(args)
    config = config_from_args(args)
    scenes = args.scenes.split(",") if args.scenes else None
    options = FrameOptions(num_sweeps=config.lidar.num_sweeps, image_scale=config.camera.decode_scale)
    if args.fusion == "late":
        return run_late(args, open_frames(args.dataroot, args.version, args.split, scenes, options))
    frames = open_frames(args.dataroot, args.version, args.split, scenes, options, keep_in_memory=args.cache_frames)
    result = train(
        config,
        frames,
        args.out,
        resume=args.resume,
        device=args.device,
        amp=args.amp,
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
        workers=args.workers,
        init_from=args.init_from or (),
        overwrite=args.force,
    )
    print(
        f"trained {result.steps} steps in {result.seconds:.0f} s on {len(frames)} samples; weights: {result.weights_path}"
    )
    print("final losses: " + ", ".join(f"{k} {v:.4f}" for k, v in result.final_losses.items()))
    if args.export:
        export_weights(result.weights_path, args.export)
        print(f"exported float16 weights to {args.export} (+ {Path(args.export).with_suffix('.json').name})")
    return 0


def run_late(args: argparse.Namespace, frames: Sequence[SyncedFrame]) -> int:
    """`--fusion late`: fit the late-fusion score model over the trunks of one fused model."""
    if not args.init_from or len(args.init_from) != 1:
        raise InputError("--fusion late fits a score model over one fused model's trunks: give it as one --init-from")
    out = Path(args.out)
    weights = out / "weights.pt"
    if weights.exists() and not args.force:
        raise InputError(f"--out {out} already holds weights.pt: pass --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    model = fit_late_fusion(args.init_from[0], frames, weights)
    print(f"late fusion: score model fitted on {len(frames)} samples; weights: {weights}")
    print("coefficients: " + ", ".join(f"{k} {v:.3f}" for k, v in zip(FEATURE_NAMES, model.weights, strict=True)))
    if args.export:
        export_weights(weights, args.export)
        print(f"exported float16 weights to {args.export} (+ {Path(args.export).with_suffix('.json').name})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train the BEV fusion network on a nuScenes-format log")
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument(
        "--split", default="train", help="split name (train -> synth_train for synthetic logs; all = every scene)"
    )
    parser.add_argument("--scenes", default=None, help="comma-separated scene names (instead of / within --split)")
    parser.add_argument("--out", required=True, help="run folder: config.json, checkpoints, weights, loss log + plot")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--config", default=None, help="a FusionConfig JSON (overrides --preset)")
    parser.add_argument("--modalities", default=None, help="branches to build, e.g. lidar,map or camera,map")
    parser.add_argument(
        "--fusion",
        choices=FUSION_STRATEGIES,
        default=None,
        help="fusion strategy (default: the preset's, intermediate); late fits its score model over "
        "the trunks of the one --init-from fused model instead of training a network",
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--heading-weight",
        type=float,
        default=None,
        help="loss weight of the yaw's sin and cos regression channels (default: the config's, 1)",
    )
    parser.add_argument(
        "--weather",
        type=float,
        default=None,
        help="share of training samples under fog or snow of severity 1-3 (default: the config's, 0)",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resumable)")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    parser.add_argument(
        "--force", action="store_true", help="replace an earlier run in --out (its weights, checkpoint and loss log)"
    )
    parser.add_argument("--workers", type=int, default=0, help="loader processes preparing the next batches")
    parser.add_argument(
        "--cache-frames",
        action="store_true",
        help="keep every frame in memory once read (about 3 MB a frame with the CPU preset)",
    )
    parser.add_argument(
        "--init-from",
        action="append",
        default=None,
        metavar="CKPT",
        help="warm-start from a checkpoint (repeatable): the first gives its branches, fuser, "
        "backbone and head; later ones only the branches still missing, e.g. a lidar,map model "
        "then a camera,map model; the fuser inputs of branches the first lacks start at zero",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU only)")
    parser.add_argument("--export", default=None, help="also write small float16 weights here (+ .json config)")
    parser.set_defaults(func=run)
