"""A log's keyframes as a sequence for training, benchmarks and the ablation.

`open_frames` is the library entry every command uses to read a split's keyframes with the reader
options a `FusionConfig` asks for.
"""

from __future__ import annotations

from collections.abc import Sequence

from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.datasets.splits import resolve_split
from avfusion.errors import InputError
from avfusion.sensors.types import SyncedFrame


class LogFrames(Sequence[SyncedFrame]):
    """The keyframes of a log as a sequence, read on access with the given reader options.

    `keep_in_memory`: keep every frame once read (training reads each frame once an epoch; a
    frame of the CPU preset is about 3 MB: 5 sweeps of points and six 1/8-scale images; the
    location's map raster is one object shared by all frames). Frames are immutable values, so
    sharing them between epochs is safe. Loader processes (`train(workers=...)`) each keep
    their own copies.
    """

    def __init__(self, log: NuScenesLog, options: FrameOptions, keep_in_memory: bool = False) -> None:
        self.log = log
        self.tokens = log.sample_tokens()
        self.options = options
        self._kept: dict[int, SyncedFrame] | None = {} if keep_in_memory else None

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._kept is None:
            return self.log.frame(self.tokens[index], self.options)
        frame = self._kept.get(index)
        if frame is None:
            frame = self._kept[index] = self.log.frame(self.tokens[index], self.options)
        return frame


def open_frames(
    dataroot: str,
    version: str,
    split: str | None,
    scenes: Sequence[str] | None,
    options: FrameOptions,
    keep_in_memory: bool = False,
) -> LogFrames:
    """The keyframes of `split` (None or "all": every scene), optionally only `scenes`, read with `options`.

    A network's reader options: `FrameOptions(num_sweeps=config.lidar.num_sweeps,
    image_scale=config.camera.decode_scale)`.
    """
    resolved = None if split in (None, "all") else resolve_split(dataroot, version, split).name
    log = NuScenesLog.open(dataroot, version, split=resolved, scenes=scenes)
    frames = LogFrames(log, options, keep_in_memory=keep_in_memory)
    if len(frames) == 0:
        raise InputError(f"{dataroot} {version} split {resolved}: no samples")
    return frames
