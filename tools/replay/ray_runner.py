"""Scale-out of `replay` on a Ray cluster: scenes are sharded across workers, each of which opens
the log and loads the model once, and the driver merges the frames into the same run folder.

Each worker is a Ray actor holding one `FrameProcessor`. Whole scenes go to one worker (its caches
of the scene's poses, GNSS log and map then serve every frame of the scene); scenes are handed out
longest first to the worker with the least work so far. Frames come back one at a time, so the
driver's per-frame checkpoint (`progress.jsonl`) and progress bar advance as on a single machine,
and the merged submission is written in plan order: byte-identical to a single-process run.

`address="local"` starts a Ray cluster inside this machine (`ray.init(num_cpus=...)`); any other
address is passed to `ray.init(address=...)`. The dataroot and the checkpoint must be readable
at the same paths on every node.

A worker that dies (killed, out of memory, its node lost) takes its unfinished frames with it: they
go to a fresh worker, up to `MAX_WORKER_RESTARTS` times per shard, after which the replay stops
with a one-line `ReplayWorkerLost` naming the scenes; the finished frames are in progress.jsonl,
so `--resume` continues from there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from avfusion.errors import InputError
from avfusion.tools.replay.frames import FrameProcessor
from avfusion.tools.replay.types import FrameResult, PlannedFrame, ReplayRequest

LOCAL_ADDRESS = "local"
MAX_WORKER_RESTARTS = 2


class ReplayWorkerLost(InputError):
    """A shard's Ray worker died more than `MAX_WORKER_RESTARTS` times."""


def shard_scenes(pending: Sequence[PlannedFrame], num_workers: int) -> list[list[PlannedFrame]]:
    """Frames grouped by scene, the scenes spread over `num_workers` shards: longest scene first,
    each to the shard with the fewest frames so far (ties: the lower shard). Frames keep plan order
    within a shard."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    scenes: dict[str, list[PlannedFrame]] = {}
    for planned in pending:
        scenes.setdefault(planned.scene_name, []).append(planned)
    shards: list[list[PlannedFrame]] = [[] for _ in range(num_workers)]
    for frames in sorted(scenes.values(), key=lambda f: (-len(f), f[0].position)):
        target = min(range(num_workers), key=lambda i: (len(shards[i]), i))
        shards[target].extend(frames)
    return [sorted(shard, key=lambda p: p.position) for shard in shards if shard]


def _connect(address: str, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address == LOCAL_ADDRESS:
        # A private single-machine cluster: no token authentication, no dashboard.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    else:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as error:
            raise InputError(f"--ray {address}: cannot connect to a Ray cluster there ({error})") from None


def replay_on_ray(
    request: ReplayRequest,
    pending: Sequence[PlannedFrame],
    bev_dir: Path | None,
    record: Callable[[FrameResult], None],
) -> None:
    """Process `pending` frames on the Ray cluster at `request.ray_address`, calling `record` for
    each finished frame in completion order (the caller sorts by plan position)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    address = request.ray_address or LOCAL_ADDRESS
    started_here = not ray.is_initialized()
    _connect(address, request.ray_workers)
    try:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        num_workers = max(1, min(request.ray_workers or cluster_cpus, cluster_cpus, len(pending)))
        worker_class = ray.remote(num_cpus=1)(_ReplayWorker)
        shards = shard_scenes(pending, num_workers)
        unfinished = [list(shard) for shard in shards]
        restarts = [0] * len(shards)
        in_flight: dict = {}

        def start(shard: int) -> None:
            worker = worker_class.remote(request, bev_dir)
            # An actor runs its calls in submission order, so each worker walks its scenes in time order.
            for planned in unfinished[shard]:
                # Ray's annotations type an actor handle's method as the plain function; it has .remote.
                in_flight[worker.process.remote(planned)] = (shard, planned)  # type: ignore[union-attr]

        for shard in range(len(shards)):
            start(shard)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                if ref not in in_flight:
                    continue  # a call of a worker that died, already handed to its successor
                shard, planned = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as error:
                    if isinstance(error.cause, InputError):  # raised inside `process`: a user error stays one line
                        raise error.cause from None
                    raise
                except RayActorError as error:
                    for other in [r for r, (s, _) in in_flight.items() if s == shard]:
                        del in_flight[other]
                    restarts[shard] += 1
                    if restarts[shard] > MAX_WORKER_RESTARTS:
                        scenes = sorted({p.scene_name for p in unfinished[shard]})
                        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                        raise ReplayWorkerLost(
                            f"replay: the Ray worker of scene(s) {', '.join(scenes)} died {restarts[shard]} time(s) "
                            f"({type(error).__name__}: {reason[:120]}); the finished frames are kept in {request.out_dir}: "
                            f"continue with --resume"
                        ) from None
                    start(shard)
                    continue
                unfinished[shard].remove(planned)
                record(result)
    finally:
        if started_here:
            ray.shutdown()


class _ReplayWorker:
    """A Ray actor: the log and the model, loaded once, then frame after frame."""

    def __init__(self, request: ReplayRequest, bev_dir: Path | None) -> None:
        # `FrameProcessor` sets torch to the run's thread count, not Ray's one CPU per worker: the
        # network's float sums depend on the thread count, and the merged submission must equal a
        # single-process run's byte for byte (nodes with another CPU instruction set can still differ).
        self._processor = FrameProcessor(request, bev_dir)

    def process(self, planned: PlannedFrame) -> FrameResult:
        return self._processor.process(planned)
