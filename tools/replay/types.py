"""The replay's values: what is asked (`ReplayRequest`), the plan, one frame's result, the outcome,
and the names of the files a run folder holds."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROGRESS_NAME = "progress.jsonl"
REQUEST_NAME = "replay.json"
SUBMISSION_NAME = "submission.json"
LATENCY_NAME = "latency.csv"
HEALTH_NAME = "sensor_health.jsonl"
SUMMARY_NAME = "summary.json"
METRICS_NAME = "metrics_summary.json"
TRACKING_SUBMISSION_NAME = "tracking_submission.json"
TRACKING_METRICS_DIR_NAME = "tracking_metrics"
BEV_DIR_NAME = "bev"

# Stages of one frame, in order; together (plus bookkeeping) they make up `total`.
STAGES: tuple[str, ...] = ("read", "voxelize", "collate", "network", "decode", "write")


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay and where the run goes.

    Attributes:
        dataroot, version: the nuScenes-format log.
        split: a split name (its scenes, and evaluation), or None.
        scenes: scene names (with `split`: the intersection), or () for all of split / log.
        out_dir: the run folder.
        checkpoint: fusion weights, or None for the shipped default.
        drop: sensors to treat as missing ("lidar", "camera", a camera name, "map", "gnss").
        device: torch device for the network.
        resume: continue the run in `out_dir` instead of refusing to touch it.
        save_bev: keep each frame's BEV heatmap for the viewer.
        evaluate: score the run when the split has annotations.
        ray_address: None = in this process; "local" = a local Ray cluster; else a cluster address.
        ray_workers: workers for Ray (None = one per CPU of the cluster).
        track: "offline" (whole tracks smoothed), "online" (causal) or "off": tracking of the
            finished frames, scene by scene (it runs after the frames, so it is not part of the
            run's identity: a resumed run may track differently).
        torch_threads: CPU threads of every network pass (None = torch's default here). Float
            reductions in the network depend on it, so a run fixes it when it starts and a resumed
            run or a Ray worker uses the same: that is what makes their submissions byte-identical.
        corrupt: a corruption "TYPE:SEVERITY" applied to every frame as it is read
            (`avfusion.sensors.corruptions`), or None.
        corrupt_seed: the seed of the corruption's draws.
        checks: run the online sensor checks (frozen sensors, camera calibration) on every frame
            and let the frame handle what they find (`avfusion.sensors.checks`).
    """

    dataroot: Path
    version: str
    out_dir: Path
    split: str | None = None
    scenes: tuple[str, ...] = ()
    checkpoint: Path | None = None
    drop: frozenset[str] = frozenset()
    device: str = "cpu"
    resume: bool = False
    save_bev: bool = False
    evaluate: bool = True
    ray_address: str | None = None
    ray_workers: int | None = None
    track: str = "offline"
    torch_threads: int | None = None
    corrupt: str | None = None
    corrupt_seed: int = 0
    checks: bool = False

    def identity(self) -> dict[str, Any]:
        """The fields that decide the output; a resumed run must match them."""
        return {
            "dataroot": str(Path(self.dataroot).resolve()),
            "version": self.version,
            "split": self.split,
            "scenes": list(self.scenes),
            "checkpoint": str(Path(self.checkpoint).resolve()) if self.checkpoint is not None else None,
            "drop": sorted(self.drop),
            # Another device computes other last bits: one run's frames all come from one device.
            "device": self.device,
            "corrupt": self.corrupt,
            "corrupt_seed": self.corrupt_seed,
            "checks": self.checks,
        }


@dataclass(frozen=True, slots=True)
class PlannedFrame:
    """One keyframe to replay: its position in the plan, scene and sample token."""

    position: int
    scene_name: str
    sample_token: str


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """Every keyframe of the chosen scenes, scenes in log order, keyframes in time order."""

    scenes: tuple[str, ...]
    frames: tuple[PlannedFrame, ...]

    @property
    def sample_tokens(self) -> tuple[str, ...]:
        return tuple(frame.sample_token for frame in self.frames)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What replaying one keyframe gave: submission records (global frame), milliseconds by stage
    (`STAGES` and `total`), and the frame's sensor health."""

    position: int
    scene_name: str
    sample_token: str
    records: list[dict[str, Any]]
    timings_ms: dict[str, float]
    health: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> FrameResult:
        payload = json.loads(line)
        return FrameResult(**payload)


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What `run_replay` did and wrote."""

    out_dir: Path
    num_frames: int
    frames_replayed_now: int
    wall_s: float
    submission_path: Path
    latency_path: Path
    health_path: Path
    summary_path: Path
    metrics_path: Path | None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        return self.frames_replayed_now / self.wall_s if self.wall_s > 0 else float("nan")
