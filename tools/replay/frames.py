"""One frame of a replay: open the log, plan its keyframes, load a frame and run the detector on it.

`FrameProcessor` is what each process of a replay owns (the plain run, and each Ray worker).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avfusion.datasets.index import CHANNELS
from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.errors import FileFormatError, InputError
from avfusion.eval.submission import detection_records
from avfusion.fileio import write_bytes_atomic
from avfusion.fusion.batch import DROPPABLE
from avfusion.fusion.fuser import GatedFuser
from avfusion.fusion.inference import Detector
from avfusion.sensors.checks import SensorChecks
from avfusion.sensors.corruptions import Corruption, corrupt_frame
from avfusion.sensors.types import CAMERA_NAMES, LIDAR_NAME, SyncedFrame
from avfusion.tools.replay.types import STAGES, FrameResult, PlannedFrame, ReplayPlan, ReplayRequest

# ---------------------------------------------------------------------------------------------
# Planning


def parse_drop(text: str | None) -> frozenset[str]:
    """`--drop` value ("camera", "lidar,map", "CAM_FRONT,CAM_BACK", ...) -> the set of sensor names."""
    if not text:
        return frozenset()
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - DROPPABLE)
    if unknown:
        raise InputError(f"--drop: unknown sensor(s) {unknown}; choose from {sorted(DROPPABLE)}")
    return names


def open_log(request: ReplayRequest) -> NuScenesLog:
    """The log of `request`, with a message naming what is wrong when it is not a nuScenes dataroot."""
    dataroot = Path(request.dataroot)
    if not dataroot.is_dir():
        raise InputError(f"--dataroot {dataroot}: no such directory")
    if not (dataroot / request.version).is_dir():
        versions = sorted(p.name for p in dataroot.iterdir() if p.is_dir() and (p / "sample.json").is_file())
        hint = f"it has {versions}" if versions else "it holds no <version>/sample.json: not a nuScenes-format dataroot"
        raise InputError(f"--version {request.version!r}: {dataroot / request.version} does not exist ({hint})")
    return NuScenesLog.open(dataroot, request.version, split=request.split, scenes=request.scenes or None)


def plan_replay(log: Any) -> ReplayPlan:
    """Every keyframe of the log's chosen scenes, in order."""
    frames: list[PlannedFrame] = []
    for scene_name in log.scene_names:
        for token in log.sample_tokens(scene_name):
            frames.append(PlannedFrame(len(frames), scene_name, token))
    if not frames:
        raise InputError(f"{log.dataroot / log.version}: the chosen scenes have no keyframes")
    return ReplayPlan(tuple(log.scene_names), tuple(frames))


# ---------------------------------------------------------------------------------------------
# One frame


class FrameProcessor:
    """Loads frames and runs the detector on them; one per process (Ray workers each own one).

    Args:
        request: the replay (log, checkpoint, drop, device).
        bev_dir: where to keep BEV heatmaps and, for a gated model, gate maps (None = do not keep them).
    """

    def __init__(self, request: ReplayRequest, bev_dir: Path | None = None) -> None:
        if request.torch_threads is not None:
            torch.set_num_threads(request.torch_threads)
        self.request = request
        self.log = open_log(request)
        self.detector = load_detector(request.checkpoint, request.device)
        config = self.detector.config
        dropped_cameras = (
            CAMERA_NAMES if "camera" in request.drop else tuple(n for n in CAMERA_NAMES if n in request.drop)
        )
        self.frame_options = FrameOptions(
            # The reader options the network was trained with travel in its config.
            num_sweeps=config.lidar.num_sweeps,
            image_scale=reader_image_scale(self.log, config.camera.decode_scale * NUSCENES_IMAGE_WIDTH_PX),
            # Sensors dropped on request are not read at all (the detector treats them as missing).
            cameras=tuple(n for n in CAMERA_NAMES if n not in dropped_cameras),
            load_lidar="lidar" not in request.drop,
            load_images=len(dropped_cameras) < len(CAMERA_NAMES),
            load_gnss="gnss" not in request.drop,
            load_map="map" not in request.drop,
        )
        self.corruption = Corruption.parse(request.corrupt) if request.corrupt else None
        self.checks = SensorChecks() if request.checks else None
        # The scene and keyframe index of the last frame given to the checks and, with it, the
        # clean frame (a stale-sensor corruption delivers it again).
        self._last: tuple[str, int, SyncedFrame] | None = None
        self.checks_ms = 0.0  # of the frame being processed (warm-up of a resumed scene included)
        self.bev_dir = bev_dir
        self._bev = BevCapture(self.detector.model) if bev_dir is not None else None

    def process(self, planned: PlannedFrame) -> FrameResult:
        """Replay one keyframe; a frame whose files cannot be read at all gives no boxes and says why."""
        start = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            frame = self.log.frame(planned.sample_token, self.frame_options)
        except InputError as error:
            timings["read"] = (time.perf_counter() - start) * 1e3
            health = {"error": str(error), "missing": {}, "skew_us": {}, "lidar_points": 0, "cameras": 0}
            return FrameResult(
                planned.position, planned.scene_name, planned.sample_token, [], _complete(timings, start), health
            )
        self.checks_ms = 0.0
        frame, found = self._delivered(planned, frame)
        timings["read"] = (time.perf_counter() - start) * 1e3 - self.checks_ms
        timings["checks"] = self.checks_ms
        if self._bev is not None:
            self._bev.clear()
        detections = self.detector.detect(frame, drop=self.request.drop)
        stage = detections.timings_ms
        timings["voxelize"] = stage.get("voxelize", 0.0)
        timings["collate"] = stage.get("prepare", 0.0) - timings["voxelize"]
        timings["network"] = stage.get("network", 0.0)
        timings["decode"] = stage.get("decode", 0.0)
        write_start = time.perf_counter()
        records = detection_records(planned.sample_token, detections.boxes_global)
        heatmap = self._bev.heatmap() if self._bev is not None else None
        if self.bev_dir is not None and self._bev is not None and heatmap is not None:
            try:
                save_bev_heatmap(
                    self.bev_dir,
                    planned.sample_token,
                    heatmap,
                    self.detector.config.grid,
                    gate=self._bev.gate(),
                    gate_branches=self._bev.gate_branches,
                )
            except OSError as error:
                raise InputError(
                    f"--out: cannot write {self.bev_dir} ({error.strerror or error}); fix it and continue with --resume"
                ) from None
        timings["write"] = (time.perf_counter() - write_start) * 1e3
        health = {
            "missing": dict(frame.missing),
            "skew_us": dict(frame.skew_us),
            "lidar_points": len(frame.lidar) if frame.lidar is not None else 0,
            "cameras": len(frame.cameras),
            **found,
        }
        return FrameResult(
            planned.position, planned.scene_name, planned.sample_token, records, _complete(timings, start), health
        )

    def _delivered(self, planned: PlannedFrame, clean: SyncedFrame) -> tuple[SyncedFrame, dict[str, Any]]:
        """The frame as the (corrupted) sensors deliver it and the online checks hand it on, and
        the health fields of both. The checks and a stale-sensor corruption need the scene's
        earlier keyframes: a processor that starts inside a scene (a resumed run) first runs
        them over the keyframes before, so every run sees the same frames."""
        found: dict[str, Any] = {}
        if self.corruption is None and self.checks is None:
            return clean, found
        tokens = self.log.sample_tokens(planned.scene_name)
        index = tokens.index(planned.sample_token)
        last = self._last
        resume_from = last[1] + 1 if last is not None and last[0] == planned.scene_name and last[1] < index else 0
        previous = last[2] if resume_from > 0 and last is not None else None
        for earlier in range(resume_from, index):
            frame = self.log.frame(tokens[earlier], self.frame_options)
            self._deliver(frame, previous)
            previous = frame
        delivered, found = self._deliver(clean, previous)
        self._last = (planned.scene_name, index, clean)
        return delivered, found

    def _deliver(self, clean: SyncedFrame, previous: SyncedFrame | None) -> tuple[SyncedFrame, dict[str, Any]]:
        found: dict[str, Any] = {}
        frame = clean
        if self.corruption is not None:
            frame = corrupt_frame(clean, self.corruption, self.request.corrupt_seed, previous)
            found["corruption"] = str(self.corruption)
        if self.checks is not None:
            result = self.checks.check(frame)
            frame = result.frame
            found.update(result.health())
            self.checks_ms += result.elapsed_ms
        return frame, found


# `CameraConfig.decode_scale` is relative to nuScenes' 1600-pixel-wide images.
NUSCENES_IMAGE_WIDTH_PX = 1600


def reader_image_scale(log: Any, width_px: float) -> float:
    """The reader scale that reads the log's camera images about `width_px` wide (at most full
    size), whatever size the log stores them at (synthetic logs may be written below 1600 px)."""
    index = log.index
    camera_widths = index.sd_width[index.sd_channel != CHANNELS.index(LIDAR_NAME)]
    widest = int(camera_widths.max()) if len(camera_widths) else NUSCENES_IMAGE_WIDTH_PX
    return min(1.0, width_px / max(widest, 1))


def _complete(timings: dict[str, float], start: float) -> dict[str, float]:
    full = {name: float(timings.get(name, 0.0)) for name in STAGES}
    full.update({name: float(value) for name, value in timings.items() if name not in STAGES})
    full["total"] = (time.perf_counter() - start) * 1e3
    return full


def load_detector(checkpoint: Path | None, device: str) -> Detector:
    """`Detector.load`, with weights that do not fit their config reported as a bad checkpoint."""
    try:
        return Detector.load(checkpoint, device=device)
    except RuntimeError as error:  # load_state_dict: missing / unexpected keys, shape mismatches
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileFormatError(
            checkpoint if checkpoint is not None else "default weights",
            f"its weights do not fit the network its config describes ({first_line})",
        ) from error


def heatmap_of(outputs: Any) -> np.ndarray:
    """The fused BEV heatmap of the first sample of `HeadOutputs`: sigmoid, max over classes,
    (H, W) float32 (row = ego y ascending, column = ego x ascending, as the network's grid)."""
    return outputs.heatmap_logits[0].detach().float().sigmoid().amax(dim=0).cpu().numpy()


class BevCapture:
    """What the network computed on the BEV grid in its latest forward pass, kept for `--save-bev`
    and the live viewer: the main trunk's head outputs (-> the heatmap) and, when the main trunk's
    fuser is a `GatedFuser`, its gate. Forward hooks on the main trunk's modules see only the
    forwards that trunk runs: a frame that a mode trunk takes instead (a model with a lidar-free
    trunk given a frame without lidar) leaves both empty.

    Call `clear()` before each `Detector.detect`; then `heatmap()` and `gate()` are the first
    sample's, or None when the main trunk did not run.
    """

    def __init__(self, model: Any) -> None:
        self._outputs: list[Any] = []
        self._gates: list[torch.Tensor | None] = []
        model.head.register_forward_hook(lambda _m, _i, outputs: self._outputs.append(outputs))
        fuser = model.fuser
        # The gate's branches, in the order of its channels: e.g. ("lidar", "camera", "map").
        self.gate_branches: tuple[str, ...] = ()
        if isinstance(fuser, GatedFuser):
            self.gate_branches = tuple(fuser.branch_names)
            fuser.register_forward_hook(lambda module, _i, _o: self._gates.append(module.last_gate))

    def clear(self) -> None:
        self._outputs.clear()
        self._gates.clear()

    def heatmap(self) -> np.ndarray | None:
        """`heatmap_of` the latest head outputs: (H, W) float32 in [0, 1], or None."""
        return heatmap_of(self._outputs[-1]) if self._outputs else None

    def gate(self) -> np.ndarray | None:
        """The latest gate's first sample: (K, H, W) float32 in [0, 1], channel k the weight of
        branch `gate_branches[k]` per BEV cell (row = ego y ascending, column = ego x ascending);
        None for an ungated model or when the main trunk did not run."""
        if not self._gates or self._gates[-1] is None:
            return None
        return self._gates[-1][0].detach().float().cpu().numpy()


def save_bev_heatmap(
    bev_dir: Path,
    sample_token: str,
    heatmap: np.ndarray,
    grid: Any,
    gate: np.ndarray | None = None,
    gate_branches: Sequence[str] = (),
) -> None:
    """Keep the fused BEV of one frame: `<token>.npz` with `heatmap` (H, W) float16 (from
    `heatmap_of`), `x_range_m`, `y_range_m`, and for a gated model `gate` (K, H', W') float16 and
    `gate_branches` (K,) unicode branch names (read back by `tools.viz.viewer.read_bev_heatmap` and
    `read_bev_gate`; all loadable with allow_pickle=False). Without a gate the file holds exactly
    the first three arrays."""
    arrays: dict[str, np.ndarray] = {
        "heatmap": np.asarray(heatmap).astype(np.float16),
        "x_range_m": np.asarray(grid.x_range_m, dtype=np.float64),
        "y_range_m": np.asarray(grid.y_range_m, dtype=np.float64),
    }
    if gate is not None:
        if gate.ndim != 3 or gate.shape[0] != len(gate_branches):
            raise ValueError(f"gate must be (K, H, W) with K = {len(gate_branches)} branches, got {gate.shape}")
        arrays["gate"] = gate.astype(np.float16)
        arrays["gate_branches"] = np.array(list(gate_branches), dtype=np.str_)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(bev_dir / f"{sample_token}.npz", buffer.getvalue())
