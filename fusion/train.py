"""Training loop: augmentation, modality dropout, checkpoints and resume, a loss log and its plot, DDP.

    run = train(config, frames, out_dir)      # frames: a sequence of SyncedFrame (len + indexing)

What lands in `out_dir`:
    config.json            the resolved `FusionConfig` (written first, before any step)
    checkpoint_last.pt     model + optimizer + scheduler + position, every `checkpoint_every` steps
    weights.pt             the final model (with its config inside) for `Detector.load`
    loss_log.jsonl         one JSON line per step: epoch, step, lr, total and each loss part
    loss.png               the loss log plotted (rewritten at each checkpoint)

Multi-GPU / multi-node: start under `torchrun`; when `WORLD_SIZE` > 1 the process group is formed
(NCCL on GPUs, gloo on CPUs), each rank trains on its shard of every epoch's permutation, gradients
are averaged by `DistributedDataParallel`, and rank 0 alone writes files. On a GPU, `amp=True`
runs the forward pass under bfloat16 autocast (no loss scaling is needed with bfloat16).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from avfusion.calibration.boxes import Boxes3D
from avfusion.errors import InputError
from avfusion.fileio import atomic_open, write_json_atomic
from avfusion.fusion.augment import camera_free_copy, corrupt_for_training, draw_augmentation, lidar_free_copy
from avfusion.fusion.batch import collate
from avfusion.fusion.checkpoint import load_checkpoint, save_checkpoint
from avfusion.fusion.config import FusionConfig
from avfusion.fusion.inference import Detector, late_model_values
from avfusion.fusion.late import LateScoreModel, fit_late_model, pair_boxes
from avfusion.fusion.losses import sample_weights, total_loss
from avfusion.fusion.model import BEVFusion
from avfusion.fusion.warmstart import warm_start
from avfusion.sensors.types import SyncedFrame

# What a run writes into its folder: a folder holding any of them is an earlier run.
RUN_FILES: tuple[str, ...] = (
    "config.json",
    "checkpoint_last.pt",
    "weights.pt",
    "loss_log.jsonl",
    "loss.png",
    "warm_start.json",
)


class TrainingDiverged(InputError):
    """The loss became NaN or infinite: the run stops, its last checkpoint is kept."""


def prepare_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder holding an earlier run unless resuming it (`resume`) or
    replacing it (`overwrite`: its run files are removed first); refuse a path that is a file."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a run folder")
    earlier = [name for name in RUN_FILES if (out / name).exists()]
    if not earlier or resume:
        return
    if not overwrite:
        raise InputError(
            f"--out {out} already holds a training run ({', '.join(earlier)}); pass --resume to continue it, "
            f"--force to replace it, or choose another --out"
        )
    for name in earlier:
        (out / name).unlink()


def check_batch_fits(num_frames: int, batch_size: int, world: int) -> None:
    """A batch must fit in the samples each rank gets (else an epoch has no step)."""
    if num_frames < world * batch_size:
        per_rank = f" per rank ({world} ranks)" if world > 1 else ""
        raise InputError(
            f"--batch-size {batch_size} is larger than the {num_frames // world} training samples{per_rank}"
        )


def config_differences(saved: FusionConfig, wanted: FusionConfig) -> list[str]:
    """`section.field` of every value that differs between two configs."""
    saved_dict, wanted_dict = saved.to_dict(), wanted.to_dict()
    return [
        f"{section}.{key}"
        for section in sorted(set(saved_dict) | set(wanted_dict))
        for key in sorted(set(saved_dict.get(section, {})) | set(wanted_dict.get(section, {})))
        if saved_dict.get(section, {}).get(key) != wanted_dict.get(section, {}).get(key)
    ]


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a finished (or stopped) run produced."""

    out_dir: Path
    weights_path: Path
    steps: int
    final_losses: dict[str, float]
    seconds: float


def _distributed() -> tuple[int, int]:
    """(rank, world size), forming the process group when started by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def epoch_order(num_frames: int, epoch: int, seed: int, rank: int, world: int) -> np.ndarray:
    """This rank's frame indices for an epoch: a seeded permutation, dealt round-robin to the ranks
    and cut to equal length so every rank runs the same number of steps (DDP needs that)."""
    order = np.random.default_rng([seed, epoch]).permutation(num_frames)
    per_rank = num_frames // world
    return order[rank::world][:per_rank]


class _StepBatches(torch.utils.data.Dataset):
    """Item `step` = the augmented, collated training batch of that optimizer step on this rank.

    Everything random is seeded by (seed, step, rank), so the batches do not depend on whether
    they are built in the training process or in loader workers, nor on resuming.
    """

    def __init__(
        self, frames: Sequence[SyncedFrame], config: FusionConfig, steps_per_epoch: int, rank: int, world: int
    ) -> None:
        self.frames, self.config = frames, config
        self.steps_per_epoch, self.rank, self.world = steps_per_epoch, rank, world

    def __len__(self) -> int:
        return self.steps_per_epoch * self.config.train.epochs

    def _previous(self, index: int, frame: SyncedFrame) -> SyncedFrame | None:
        """The keyframe before `frame` in its scene (stale-data augmentation), or None."""
        if not self.config.augment.needs_previous_frame or index == 0:
            return None
        before = self.frames[index - 1]
        return before if before.scene_name == frame.scene_name and before.timestamp_us < frame.timestamp_us else None

    def __getitem__(self, step: int):
        train_cfg = self.config.train
        epoch, position = divmod(step, self.steps_per_epoch)
        order = epoch_order(len(self.frames), epoch, train_cfg.seed, self.rank, self.world)
        chosen = order[position * train_cfg.batch_size : (position + 1) * train_cfg.batch_size]
        rng = np.random.default_rng([train_cfg.seed, step, self.rank])
        batch_frames = [self.frames[int(i)] for i in chosen]
        if self.config.augment.corrupts:
            # Its own stream, so that the draws below are the same with it on or off.
            corruption_rng = np.random.default_rng([train_cfg.seed, step, self.rank, 1])
            batch_frames = [
                corrupt_for_training(f, self._previous(int(i), f), self.config.augment, corruption_rng)
                for i, f in zip(chosen, batch_frames, strict=False)
            ]
        use = self.config.train
        augmentations = [
            draw_augmentation(
                rng,
                self.config.augment,
                has_map=f.map is not None,
                has_lidar_branch=use.use_lidar,
                has_camera_branch=use.use_camera,
            )
            for f in batch_frames
        ]
        # Every sample once per trunk: as drawn for the main trunk, without lidar for the lidar-free
        # one, without cameras for the camera-free one.
        twins = [augmentations]
        if self.config.builds_lidar_free_trunk:
            twins.append([lidar_free_copy(a) for a in augmentations])
        if self.config.builds_camera_free_trunk:
            twins.append([camera_free_copy(a) for a in augmentations])
        return collate(
            batch_frames * len(twins), self.config, augmentations=[a for twin in twins for a in twin], with_targets=True
        )


def plot_loss_log(log_path: Path, png_path: Path) -> None:
    """Plot every loss part of a `loss_log.jsonl` against the step, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not records:
        return
    steps = [r["step"] for r in records]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name in ["total", *sorted(records[-1]["losses"])]:
        values = [r["total"] if name == "total" else r["losses"].get(name, float("nan")) for r in records]
        window = max(1, len(values) // 50)
        smoothed = np.convolve(values, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1 :], smoothed, label=name, linewidth=2 if name == "total" else 1)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title(f"training loss ({window}-step moving average)")
    figure.tight_layout()
    with atomic_open(png_path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def train(
    config: FusionConfig,
    frames: Sequence[SyncedFrame],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "cpu",
    amp: bool = False,
    max_steps: int | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
    workers: int = 0,
    init_from: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
) -> TrainResult:
    """Train `BEVFusion.from_config(config)` on `frames` (with ground truth) into `out_dir`.

    Args:
        resume: continue from `out_dir/checkpoint_last.pt` (its config must equal `config`).
        max_steps: stop after this many optimizer steps in total (the schedule still spans all
            epochs, so a stopped run resumes where it was).
        workers: loader processes reading and collating the next batches while the model trains
            (0 = in this process).
        init_from: checkpoints to warm-start from (`fusion.warmstart`: the first gives the trunk);
            ignored when resuming from a checkpoint, which already holds the warm-started weights.
        overwrite: replace an earlier run in `out_dir` (without it or `resume`, an `InputError`).
    Raises:
        InputError: `out_dir` holds another run, the batch is larger than the samples, a resumed
            checkpoint was made with another config; `TrainingDiverged` when the loss turns NaN.
    """
    rank, world = _distributed()
    out = Path(out_dir)
    started = time.perf_counter()
    train_cfg = config.train
    torch.manual_seed(train_cfg.seed + rank)
    device_t = torch.device(device)
    check_batch_fits(len(frames), train_cfg.batch_size, world)
    if rank == 0:
        prepare_run_folder(out, resume, overwrite)

    model = BEVFusion.from_config(config).to(device_t)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)
    steps_per_epoch = len(frames) // world // train_cfg.batch_size
    total_steps = steps_per_epoch * train_cfg.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=train_cfg.learning_rate, total_steps=max(total_steps, 1), pct_start=0.3
    )
    step = 0
    started_from = None
    checkpoint_path = out / "checkpoint_last.pt"
    if resume and checkpoint_path.is_file():
        saved_config, payload = load_checkpoint(checkpoint_path)
        if saved_config != config:
            changed = config_differences(saved_config, config)
            raise InputError(
                f"--resume: {checkpoint_path} was made with another config ({', '.join(changed[:8])} differ); "
                f"resume with the same preset, --config and overrides, or train into another --out"
            )
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        step = int(payload["step"])
    elif init_from:
        started_from = warm_start(model, config, init_from)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", config.to_dict())
        if started_from is not None:
            write_json_atomic(out / "warm_start.json", started_from.to_dict())
        elif not resume:
            (out / "warm_start.json").unlink(missing_ok=True)  # from an earlier run in this folder
        if not resume:
            (out / "loss_log.jsonl").unlink(missing_ok=True)

    network: torch.nn.Module = model
    if world > 1:
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device_t.index] if device_t.type == "cuda" else None, find_unused_parameters=True
        )
    last_step = total_steps if max_steps is None else min(total_steps, max_steps)
    bar = tqdm(total=last_step, initial=step, desc="train", disable=not progress or rank != 0, unit="step")
    losses: dict[str, float] = {}
    log_path = out / "loss_log.jsonl"
    model.train()
    batches = torch.utils.data.DataLoader(
        _StepBatches(frames, config, steps_per_epoch, rank, world),
        batch_size=None,
        sampler=range(step, last_step),
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        # Spawned, not forked: Numba's OpenMP kernels refuse to run in a child forked after them.
        multiprocessing_context="spawn" if workers else None,
    )
    for batch in batches:
        epoch = step // steps_per_epoch
        batch = batch.to(device_t)
        with torch.autocast(device_type=device_t.type, dtype=torch.bfloat16, enabled=amp and device_t.type == "cuda"):
            outputs = network(batch)
        weights = sample_weights(batch.modality.lidar, config.loss, config.train.use_lidar)
        loss, losses = total_loss(
            outputs, batch.targets, batch.depth_target_bin, config.loss, weights, batch.pillar_point_labels
        )
        if not math.isfinite(float(loss.detach())):
            kept = (
                f"the last checkpoint {checkpoint_path} is kept"
                if checkpoint_path.is_file()
                else "no checkpoint was written yet"
            )
            raise TrainingDiverged(
                f"train: the loss became {float(loss.detach())} at step {step} (learning rate "
                f"{scheduler.get_last_lr()[0]:.3g}; non-finite parts: "
                f"{', '.join(k for k, v in losses.items() if not math.isfinite(v)) or 'total'}); stopped, "
                f"{kept}; try a lower --lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", epoch=epoch)
        if rank == 0:
            record = {
                "epoch": epoch,
                "step": step,
                "lr": scheduler.get_last_lr()[0],
                "total": float(loss.detach()),
                "losses": losses,
            }
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if step % checkpoint_every == 0 or step == last_step:
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "epoch": epoch,
                }
                save_checkpoint(checkpoint_path, config, state)
                plot_loss_log(log_path, out / "loss.png")
    bar.close()
    weights_path = out / "weights.pt"
    if rank == 0:
        save_checkpoint(weights_path, config, {"model": model.state_dict(), "step": step})
        if log_path.is_file():
            plot_loss_log(log_path, out / "loss.png")
    if world > 1:
        dist.barrier()
    return TrainResult(out, weights_path, step, losses, time.perf_counter() - started)


def export_weights(checkpoint: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> None:
    """A small inference-only copy of a checkpoint: the model in float16 plus its config; the
    resolved config is also written beside it as JSON (`<name>.json`)."""
    config, payload = load_checkpoint(checkpoint)
    state = {name: value.half() if value.is_floating_point() else value for name, value in payload["model"].items()}
    save_checkpoint(out_path, config, {"model": state})
    write_json_atomic(Path(out_path).with_suffix(".json"), config.to_dict())


def fit_late_fusion(
    checkpoint: str | os.PathLike[str], frames: Sequence[SyncedFrame], out_path: str | os.PathLike[str]
) -> LateScoreModel:
    """Late fusion's training: the score model (`fusion.late`) fitted on `frames` (the training
    log, never an evaluation log) to the boxes of `checkpoint`'s camera-free and lidar-free
    trunks, each box labelled by whether a ground-truth box of its class with lidar points lies
    within 2 m. Writes `out_path`: the checkpoint's network with the late strategy and the fitted
    model in its config. The network itself is not retrained."""
    config, payload = load_checkpoint(checkpoint)
    if not (config.builds_lidar_free_trunk and config.builds_camera_free_trunk):
        raise InputError(
            f"--fusion late: {checkpoint} needs a lidar-free and a camera-free trunk (a fused model of the cpu preset)"
        )
    base = config.replace(fuser=dataclasses.replace(config.fuser, strategy="intermediate", late_model=()))
    detector = Detector(BEVFusion.from_config(base), base)
    state = {name: value.float() if value.is_floating_point() else value for name, value in payload["model"].items()}
    detector.model.load_state_dict(state)
    candidates, truths = [], []
    for frame in tqdm(frames, desc="late fusion: trunk boxes", unit="frame"):
        lidar = detector.detect(frame, drop={"camera"}).boxes_ego
        camera = detector.detect(frame, drop={"lidar"}).boxes_ego
        gt = frame.gt_boxes if frame.gt_boxes is not None else Boxes3D.empty()
        candidates.append(pair_boxes(lidar, camera))
        truths.append(gt[gt.num_lidar_pts != 0])
    model = fit_late_model(candidates, truths)
    late = config.replace(fuser=dataclasses.replace(config.fuser, strategy="late", late_model=late_model_values(model)))
    save_checkpoint(out_path, late, {"model": payload["model"]})
    return model
