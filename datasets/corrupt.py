"""A corrupted copy of a nuScenes-format dataroot: `write_corrupted_copy(dataroot, version, out, corruption)`.

The copy holds every file of the dataroot: the files a corruption changes are written anew, all
others are hard links to the originals (symbolic links where the copy is on another file
system), so a copy costs the corrupted files only. The devkit and every avfusion tool read it
as they read the original. What is changed, per keyframe of every scene (the draws are
`sensor_rng(seed, type, sample_token, sensor)` as in `corrupt_frame`, so a copy and an on-the-fly
replay hit the same keyframes and sensors):

- lidar types: the keyframe `.pcd.bin` and its past sweeps (those after the previous keyframe),
  each by the point-level function; spatial misalignment moves the keyframe and its sweeps alike
  when the keyframe is hit;
- temporal misalignment: a hit lidar keyframe gets the previous keyframe's file and its past
  sweeps the previous keyframe's past sweeps (newest to newest); a hit camera the previous
  keyframe's image file;
- camera types: each keyframe image, decoded at full size and written back in its format
  (JPEG quality 95);
- GNSS noise: every fix of every `gnss/<scene>.json`; map removal: each map raster file is left
  out with the severity's probability.

`corruption.json` in the copy records what was done.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avfusion.datasets.index import CHANNELS
from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.errors import InputError
from avfusion.fileio import write_bytes_atomic, write_json_atomic
from avfusion.sensors.corruptions import (
    FRAME_PROBABILITY,
    GNSS_SIGMA_HEADING_DEG,
    GNSS_SIGMA_M,
    MAP_REMOVAL_PROBABILITY,
    Corruption,
    corrupt_cloud,
    corrupt_image,
    noisy_gnss_fix,
    sensor_rng,
)
from avfusion.sensors.gnss import gnss_path, read_gnss_json
from avfusion.sensors.pcd import read_pcd_bin
from avfusion.sensors.types import CAMERA_NAMES, GNSS_NAME, LIDAR_NAME, MAP_NAME

RECORD_NAME = "corruption.json"
JPEG_QUALITY = 95
_LIDAR = CHANNELS.index(LIDAR_NAME)


@dataclass(frozen=True, slots=True)
class CorruptedCopy:
    """What `write_corrupted_copy` wrote: the copy's root, files written anew and files linked."""

    path: Path
    files_written: int
    files_linked: int


def write_corrupted_copy(
    dataroot: str | os.PathLike[str],
    version: str,
    out: str | os.PathLike[str],
    corruption: Corruption,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> CorruptedCopy:
    """Write the copy (see the module docstring). It is built in a folder beside `out` and moved
    into place at the end, so an interrupted run leaves no half-made copy at `out`.

    Raises:
        InputError: `dataroot` / `version` is not a dataroot, `out` exists without `overwrite`, or
            `out` is inside `dataroot` (or the reverse).
    """
    source, target = Path(dataroot).resolve(), Path(out).resolve()
    if not (source / version).is_dir():
        raise InputError(f"--dataroot {dataroot}: no table folder {version!r} (is --version right?)")
    if target == source or source in target.parents or target in source.parents:
        raise InputError(f"--out {out}: must lie outside --dataroot {dataroot}, and not contain it")
    if target.exists() and not overwrite:
        raise InputError(f"--out {out} already exists; pass --overwrite to replace it")
    log = NuScenesLog.open(source, version)
    changes = _planned_changes(log, source, corruption, seed)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        written, linked = _build(source, staging, changes, progress)
        write_json_atomic(
            staging / RECORD_NAME,
            {
                "corruption": str(corruption),
                "seed": seed,
                "source": str(source),
                "version": version,
                "files_written": written,
                "files_linked": linked,
            },
        )
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, trash / "old")
            shutil.rmtree(trash)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CorruptedCopy(target, written, linked)


# A change: the file's path relative to the dataroot -> a function giving its new bytes
# (None: leave the file out of the copy).
Change = Callable[[], bytes | None]


def _build(source: Path, staging: Path, changes: dict[str, Change], progress: bool) -> tuple[int, int]:
    from tqdm import tqdm

    written = linked = 0
    files = sorted(p for p in source.rglob("*") if p.is_file())
    for path in tqdm(files, desc="corrupt", unit="file", disable=not progress, smoothing=0.1):
        relative = path.relative_to(source).as_posix()
        destination = staging / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        change = changes.get(relative)
        if change is None:
            _link(path, destination)
            linked += 1
            continue
        data = change()
        if data is not None:
            write_bytes_atomic(destination, data)
            written += 1
    return written, linked


def _link(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not allowed there
        os.symlink(source, destination)


def _planned_changes(log: NuScenesLog, root: Path, corruption: Corruption, seed: int) -> dict[str, Change]:
    index = log.index
    kind, level = corruption.type, corruption.index
    changes: dict[str, Change] = {}

    def rng(sample_token: str, sensor: str) -> np.random.Generator:
        return sensor_rng(seed, kind, sample_token, sensor)

    if kind == "gnss_noise":
        for scene in log.scene_names:
            path = gnss_path(root, scene)
            if path.is_file():
                changes[path.relative_to(root).as_posix()] = _noisy_gnss_file(
                    path, log.scene_location(scene), level, seed
                )
        return changes
    if kind == "map_removal":
        for filename in sorted({str(f) for f in index.map_filename}):
            if sensor_rng(seed, kind, filename, MAP_NAME).random() < MAP_REMOVAL_PROBABILITY[level]:
                changes[filename] = lambda: None
        return changes

    sample_position = {str(token): i for i, token in enumerate(index.sample_token)}
    for scene in log.scene_names:
        previous: tuple[int, list[int], dict[str, int]] | None = None  # lidar sd, its sweeps, camera sds
        for token in log.sample_tokens(scene):
            s = sample_position[token]
            lidar_sd = int(index.sample_keyframe[s, _LIDAR])
            sweeps = _past_sweeps(index, lidar_sd)
            cameras = {name: int(index.sample_keyframe[s, CHANNELS.index(name)]) for name in CAMERA_NAMES}
            cameras = {name: sd for name, sd in cameras.items() if sd >= 0}
            if kind == "temporal_misalignment":
                if previous is not None:
                    old_lidar, old_sweeps, old_cameras = previous
                    if lidar_sd >= 0 and old_lidar >= 0 and rng(token, LIDAR_NAME).random() < FRAME_PROBABILITY[level]:
                        for new, old in zip([lidar_sd, *sweeps], [old_lidar, *old_sweeps], strict=False):
                            changes[str(index.sd_filename[new])] = _copy_of(root / str(index.sd_filename[old]))
                    for name, sd in cameras.items():
                        if name in old_cameras and rng(token, name).random() < FRAME_PROBABILITY[level]:
                            changes[str(index.sd_filename[sd])] = _copy_of(
                                root / str(index.sd_filename[old_cameras[name]])
                            )
            else:
                if corruption.touches_lidar and lidar_sd >= 0:
                    frame_rng = rng(token, LIDAR_NAME)
                    if kind != "spatial_misalignment" or frame_rng.random() < FRAME_PROBABILITY[level]:
                        for sd in [lidar_sd, *sweeps]:
                            # Spatial misalignment: the keyframe and its sweeps get one transform.
                            file_rng = (
                                _copy_rng(frame_rng)
                                if kind == "spatial_misalignment"
                                else rng(token, f"{LIDAR_NAME}/{index.sd_token[sd]}")
                            )
                            changes[str(index.sd_filename[sd])] = _corrupted_cloud(
                                root / str(index.sd_filename[sd]), corruption, file_rng
                            )
                if corruption.touches_cameras:
                    for name, sd in cameras.items():
                        camera_rng = rng(token, name)
                        if kind == "missing_camera" and camera_rng.random() >= FRAME_PROBABILITY[level]:
                            continue
                        changes[str(index.sd_filename[sd])] = _corrupted_image(
                            root / str(index.sd_filename[sd]), corruption, camera_rng
                        )
            previous = (lidar_sd, sweeps, cameras)
    return changes


def _copy_rng(rng: np.random.Generator) -> np.random.Generator:
    """A generator in `rng`'s state (the same draws from here on)."""
    copy = np.random.Generator(type(rng.bit_generator)())
    copy.bit_generator.state = rng.bit_generator.state
    return copy


def _past_sweeps(index, keyframe_sd: int) -> list[int]:
    """The lidar sweeps before a keyframe back to (not including) the previous keyframe, newest first."""
    sweeps = []
    sd = int(index.sd_prev[keyframe_sd]) if keyframe_sd >= 0 else -1
    while sd >= 0 and not bool(index.sd_is_key_frame[sd]):
        sweeps.append(sd)
        sd = int(index.sd_prev[sd])
    return sweeps


def _copy_of(path: Path) -> Change:
    return path.read_bytes


def _corrupted_cloud(path: Path, corruption: Corruption, rng: np.random.Generator) -> Change:
    def make() -> bytes:
        points = read_pcd_bin(path)
        corrupted, _ = corrupt_cloud(points, points[:, 4], corruption, rng)
        return np.ascontiguousarray(corrupted, dtype="<f4").tobytes()

    return make


def _corrupted_image(path: Path, corruption: Corruption, rng: np.random.Generator) -> Change:
    def make() -> bytes:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{path}: not a decodable image")
        rgb = corrupt_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), corruption, rng)
        suffix = path.suffix.lower()
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
        ok, encoded = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise InputError(f"{path}: cannot encode the corrupted image as {suffix}")
        return encoded.tobytes()

    return make


def _noisy_gnss_file(path: Path, location: str, level: int, seed: int) -> Change:
    def make() -> bytes:
        payload = json.loads(path.read_text())
        log = read_gnss_json(path)
        for record, fix in zip(payload["fixes"], log.fixes, strict=False):
            noisy = noisy_gnss_fix(
                fix,
                location,
                GNSS_SIGMA_M[level],
                GNSS_SIGMA_HEADING_DEG[level],
                sensor_rng(seed, "gnss_noise", f"{log.scene_name}/{fix.timestamp_us}", GNSS_NAME),
            )
            record.update(
                latitude=noisy.latitude_deg,
                longitude=noisy.longitude_deg,
                altitude=noisy.altitude_m,
                heading=noisy.heading_deg,
            )
        return json.dumps(payload, indent=1).encode()

    return make
