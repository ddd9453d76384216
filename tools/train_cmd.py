"""`avfusion train`: train the BEV fusion network on a nuScenes-format log.

    avfusion train --dataroot D --version v1.0-mini --split train --out runs/fused [--preset cpu]
    torchrun --nproc_per_node 2 -m avfusion.tools.cli train ...     (DDP; gloo on CPUs)

`--split train` picks `synth_train` from `<version>/splits.json` when that file names no split
`train` (synthetic logs name theirs `synth_*`, see DESIGN.md section 4); `--split all` takes every
scene of the log (a log generated for training only, from its own seed).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from avfusion.calibration.errors import InputError
from avfusion.fusion.config import FusionConfig, cpu_default, gpu_large, tiny_for_tests
from avfusion.sensors.types import SyncedFrame

PRESETS = {"cpu": cpu_default, "gpu": gpu_large, "tiny": tiny_for_tests}


def resolve_split(dataroot: str, version: str, split: str) -> str:
    """`split`, or `synth_<split>` when only that one is defined in `<version>/splits.json`."""
    splits_path = Path(dataroot) / version / "splits.json"
    if splits_path.is_file():
        try:
            names = json.loads(splits_path.read_text())
        except json.JSONDecodeError:
            return split  # the reader reports the broken file with its own message
        if isinstance(names, dict) and split not in names and f"synth_{split}" in names:
            return f"synth_{split}"
    return split


class LogFrames(Sequence[SyncedFrame]):
    """The keyframes of a log as a sequence, read on access with the reader options a config asks for.

    `keep_in_memory`: keep every frame once read (training reads each frame once an epoch; a
    frame of the CPU preset is about 3 MB: 5 sweeps of points and six 1/8-scale images; the
    location's map raster is one object shared by all frames). Frames are immutable values, so
    sharing them between epochs is safe. Loader processes (`train(workers=...)`) each keep
    their own copies.
    """

    def __init__(self, log, config: FusionConfig, load_boxes: bool = True, keep_in_memory: bool = False) -> None:
        from avfusion.datasets.nuscenes_log import FrameOptions

        self.log = log
        self.tokens = log.sample_tokens()
        self.options = FrameOptions(
            num_sweeps=config.lidar.num_sweeps, image_scale=config.camera.decode_scale, load_boxes=load_boxes
        )
        self._kept: dict[int, SyncedFrame] | None = {} if keep_in_memory else None

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._kept is None:
            return self.log.frame(self.tokens[index], self.options)
        frame = self._kept.get(index)
        if frame is None:
            frame = self._kept[index] = self.log.frame(self.tokens[index], self.options)
        return frame


def open_frames(dataroot: str, version: str, split: str | None, scenes: Sequence[str] | None,
                config: FusionConfig, load_boxes: bool = True, keep_in_memory: bool = False) -> LogFrames:  # fmt: skip
    from avfusion.datasets.nuscenes_log import NuScenesLog

    resolved = None if split in (None, "all") else resolve_split(dataroot, version, split)
    log = NuScenesLog.open(dataroot, version, split=resolved, scenes=scenes)
    frames = LogFrames(log, config, load_boxes=load_boxes, keep_in_memory=keep_in_memory)
    if len(frames) == 0:
        raise InputError(f"{dataroot} {version} split {resolved}: no samples")
    return frames


def resolve_config(args: argparse.Namespace) -> FusionConfig:
    config = FusionConfig.load_json(args.config) if args.config else PRESETS[args.preset]()
    train = config.train
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed,
    }  # fmt: skip
    changes = {k: v for k, v in overrides.items() if v is not None}
    if args.modalities:
        chosen = set(args.modalities.split(","))
        unknown = chosen - {"lidar", "camera", "map"}
        if unknown or not chosen & {"lidar", "camera"}:
            raise InputError(f"--modalities must list lidar and/or camera (and map), got {args.modalities!r}")
        changes.update(use_lidar="lidar" in chosen, use_camera="camera" in chosen, use_map="map" in chosen)
    if changes:
        config = config.replace(train=train.__class__(**{**_fields(train), **changes}))
    return config


def _fields(instance) -> dict:
    return {name: getattr(instance, name) for name in instance.__dataclass_fields__}


def run(args: argparse.Namespace) -> int:
    from avfusion.fusion.train import export_weights, train

    config = resolve_config(args)
    scenes = args.scenes.split(",") if args.scenes else None
    frames = open_frames(args.dataroot, args.version, args.split, scenes, config, keep_in_memory=args.cache_frames)
    result = train(
        config, frames, args.out, resume=args.resume, device=args.device, amp=args.amp,
        max_steps=args.max_steps, checkpoint_every=args.checkpoint_every, workers=args.workers,
        init_from=args.init_from or (),
    )  # fmt: skip
    print(f"trained {result.steps} steps in {result.seconds:.0f} s on {len(frames)} samples; weights: {result.weights_path}")
    print("final losses: " + ", ".join(f"{k} {v:.4f}" for k, v in result.final_losses.items()))
    if args.export:
        export_weights(result.weights_path, args.export)
        print(f"exported float16 weights to {args.export} (+ {Path(args.export).with_suffix('.json').name})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train the BEV fusion network on a nuScenes-format log")
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--split", default="train",
                        help="split name (train -> synth_train for synthetic logs; all = every scene)")  # fmt: skip
    parser.add_argument("--scenes", default=None, help="comma-separated scene names (instead of / within --split)")
    parser.add_argument("--out", required=True, help="run folder: config.json, checkpoints, weights, loss log + plot")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--config", default=None, help="a FusionConfig JSON (overrides --preset)")
    parser.add_argument("--modalities", default=None, help="branches to build, e.g. lidar,map or camera,map")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resumable)")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    parser.add_argument("--workers", type=int, default=0, help="loader processes preparing the next batches")
    parser.add_argument("--cache-frames", action="store_true",
                        help="keep every frame in memory once read (about 3 MB a frame with the CPU preset)")  # fmt: skip
    parser.add_argument("--init-from", action="append", default=None, metavar="CKPT",
                        help="warm-start from a checkpoint (repeatable): the first gives its branches, fuser, "
                        "backbone and head; later ones only the branches still missing, e.g. a lidar,map model "
                        "then a camera,map model; the fuser inputs of branches the first lacks start at zero")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU only)")
    parser.add_argument("--export", default=None, help="also write small float16 weights here (+ .json config)")
    parser.set_defaults(func=run)
