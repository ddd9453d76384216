"""nuScenes logs as synchronized, calibrated frames: `NuScenesLog.open(dataroot, version, split)`.

For every keyframe (sample) it builds a `SyncedFrame`: the LIDAR_TOP keyframe with its past sweeps
moved into its frame, the six cameras matched to the lidar time (with their own ego poses), the
scene's GNSS fix nearest in time, the location's drivable-area raster and the ground-truth boxes in
the ego frame at the lidar time. A sensor whose file is missing, or whose nearest sample is too far
off in time, is left out of the frame and listed in `SyncedFrame.missing` with the reason.

Works for any nuScenes-schema dataroot (v1.0-mini / -trainval / -test, Lyft's v1.01 tables, and
avfusion's synthetic logs); the tables are read through nuscenes-devkit once and cached
(`avfusion.datasets.index`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3, libm_elementwise, quaternion_to_matrix
from avfusion.datasets.index import CHANNELS, LogIndex, open_index
from avfusion.datasets.maps import read_map_raster
from avfusion.datasets.splits import resolve_split
from avfusion.errors import FileFormatError, InputError
from avfusion.labels import CATEGORY_TO_CLASS, CLASS_INDEX
from avfusion.sensors.errors import MissingSensorFile, UnreadableSensorFile
from avfusion.sensors.gnss import GnssLog, gnss_path, read_gnss_json
from avfusion.sensors.images import read_camera_image
from avfusion.sensors.map_check import check_map
from avfusion.sensors.map_raster import MapRaster
from avfusion.sensors.sweeps import SweepSource, accumulate_sweeps
from avfusion.sensors.sync import PoseTrack, SyncConfig, match_nearest
from avfusion.sensors.types import CAMERA_NAMES, GNSS_NAME, LIDAR_NAME, MAP_NAME, CameraFrame, GnssFix, SyncedFrame

# Key in `SyncedFrame.missing` for past lidar sweeps whose files are absent (the cloud is built
# from the others; the lidar itself is present).
LIDAR_SWEEPS_KEY = f"{LIDAR_NAME}_SWEEPS"
_LIDAR = CHANNELS.index(LIDAR_NAME)
# How far outside the scene's good poses a frame whose own lidar pose is not finite may hold the
# nearest good one (a keyframe interval).
_POSE_GAP_HOLD_US = 500_000


@dataclass(frozen=True, slots=True)
class FrameOptions:
    """What `NuScenesLog.frame` loads.

    Attributes:
        num_sweeps: lidar sweeps accumulated, keyframe included (nuScenes-style 10 = keyframe + 9).
        min_distance_m: points with |x| and |y| below this (the ego's roof) are dropped per sweep.
        image_scale: camera images are decoded at this scale (1, 1/2, 1/4, 1/8 decode directly).
        cameras: which cameras to load.
        load_lidar, load_images, load_gnss, load_map, load_boxes: switch parts off.
        check_map: treat a map that `sensors.map_check.check_map` finds unbelievable at this pose
            (no drivable area around the ego, or at odds with the lidar's ground or walls) as
            missing, with the reason in `SyncedFrame.missing`.
        sync: matching tolerances.
    """

    num_sweeps: int = 10
    min_distance_m: float = 1.0
    image_scale: float = 1.0
    cameras: tuple[str, ...] = CAMERA_NAMES
    load_lidar: bool = True
    load_images: bool = True
    load_gnss: bool = True
    load_map: bool = True
    load_boxes: bool = True
    check_map: bool = True
    sync: SyncConfig = field(default_factory=SyncConfig)

    def __post_init__(self) -> None:
        if self.num_sweeps < 1:
            raise InputError(f"num_sweeps must be >= 1 (the keyframe), got {self.num_sweeps}")
        unknown = [c for c in self.cameras if c not in CAMERA_NAMES]
        if unknown:
            raise InputError(f"unknown camera(s) {unknown}; expected names from {list(CAMERA_NAMES)}")


class NuScenesLog:
    """A nuScenes-schema log: its scenes, keyframes and synchronized frames. Open with `open()`."""

    def __init__(self, index: LogIndex, scene_names: Sequence[str] | None = None, from_cache: bool = False) -> None:
        self.index = index
        self.dataroot = Path(index.dataroot)
        self.version = index.version
        self.from_cache = from_cache
        all_names = [str(n) for n in index.scene_name]
        if scene_names is None:
            chosen = list(range(len(all_names)))
        else:
            position = {name: i for i, name in enumerate(all_names)}
            absent = [name for name in scene_names if name not in position]
            if absent:
                raise InputError(f"{self.dataroot / self.version}: scene(s) {absent[:5]} not in the log")
            chosen = [position[name] for name in scene_names]
        self._scenes = tuple(chosen)
        self._sample_position = {str(token): i for i, token in enumerate(index.sample_token)}
        self._streams: dict[tuple[int, int], np.ndarray] = {}
        self._gnss: dict[int, GnssLog | str] = {}
        self._maps: dict[str, MapRaster | str] = {}

    @staticmethod
    def open(
        dataroot: str | os.PathLike[str],
        version: str = "v1.0-mini",
        split: str | None = None,
        scenes: Sequence[str] | None = None,
        use_cache: bool = True,
        verbose: bool = False,
    ) -> NuScenesLog:
        """Open a dataroot. `split` picks scenes by split name (`datasets.splits.resolve_split`);
        `scenes` by scene name (both: intersection)."""
        index, from_cache = open_index(dataroot, version, use_cache=use_cache, verbose=verbose)
        present = {str(n) for n in index.scene_name}
        names: list[str] | None = None
        if split is not None:
            names = [n for n in resolve_split(dataroot, version, split).scene_names if n in present]
            if not names:
                raise InputError(f"split {split!r}: none of its scenes is in {Path(dataroot) / version}")
        if scenes is not None:
            absent = [n for n in scenes if n not in present]
            if absent:
                raise InputError(f"{Path(dataroot) / version}: scene(s) {absent} not in the log")
            names = list(scenes) if names is None else [n for n in names if n in set(scenes)]
        return NuScenesLog(index, names, from_cache)

    # --- structure -------------------------------------------------------------------------
    @property
    def scene_names(self) -> tuple[str, ...]:
        return tuple(str(self.index.scene_name[i]) for i in self._scenes)

    def scene_location(self, scene_name: str) -> str:
        return str(self.index.scene_location[self._scene_index(scene_name)])

    def _scene_index(self, scene_name: str) -> int:
        for i in self._scenes:
            if self.index.scene_name[i] == scene_name:
                return i
        raise InputError(f"scene {scene_name!r} is not in this log/split (scenes: {list(self.scene_names)[:10]})")

    def _scene_samples(self, scene: int) -> range:
        start = int(self.index.scene_sample_start[scene])
        return range(start, start + int(self.index.scene_sample_count[scene]))

    def sample_tokens(self, scene_name: str | None = None) -> tuple[str, ...]:
        """Keyframe tokens in time order, of one scene or of all chosen scenes."""
        scenes = [self._scene_index(scene_name)] if scene_name is not None else self._scenes
        return tuple(str(self.index.sample_token[s]) for scene in scenes for s in self._scene_samples(scene))

    def __len__(self) -> int:
        return sum(int(self.index.scene_sample_count[i]) for i in self._scenes)

    def sample_timestamp_us(self, sample_token: str) -> int:
        """The keyframe time of a sample (integer microseconds)."""
        return int(self.index.sample_timestamp_us[self._sample(sample_token)])

    def _sample(self, sample_token: str) -> int:
        try:
            return self._sample_position[sample_token]
        except KeyError:
            raise InputError(f"sample token {sample_token!r} not found in {self.dataroot / self.version}") from None

    def _stream(self, scene: int, channel: int) -> np.ndarray:
        """sample_data indices of one channel in one scene, in time order."""
        key = (scene, channel)
        if key not in self._streams:
            rows = np.flatnonzero((self.index.sd_scene == scene) & (self.index.sd_channel == channel))
            self._streams[key] = rows[np.argsort(self.index.sd_timestamp_us[rows], kind="stable")]
        return self._streams[key]

    # --- calibration and poses -------------------------------------------------------------
    def _pose_is_finite(self, sd: int) -> bool:
        """Whether the ego pose of sample_data `sd` is usable (the index keeps non-finite ones as NaN)."""
        return bool(
            np.isfinite(self.index.sd_pose_translation[sd]).all() and np.isfinite(self.index.sd_pose_rotation[sd]).all()
        )

    def _bad_pose_reason(self, sd: int) -> str:
        return f"bad ego pose: the ego_pose of sample_data {self.index.sd_token[sd]} is not finite"

    def _record_usable(self, sd: int) -> bool:
        """Whether sample_data `sd` can be read: a finite ego pose and no faulty record field."""
        return self._pose_is_finite(sd) and not str(self.index.sd_problem[sd])

    def _unusable_reason(self, sd: int) -> str:
        return str(self.index.sd_problem[sd]) or self._bad_pose_reason(sd)

    def _pose(self, sd: int) -> SE3:
        return SE3(quaternion_to_matrix(self.index.sd_pose_rotation[sd]), self.index.sd_pose_translation[sd])

    def _calibration(self, sd: int) -> SE3:
        calib = int(self.index.sd_calib[sd])
        return SE3(quaternion_to_matrix(self.index.calib_rotation[calib]), self.index.calib_translation[calib])

    def _intrinsics(self, sd: int) -> CameraIntrinsics:
        calib = int(self.index.sd_calib[sd])
        matrix = self.index.calib_intrinsic[calib]
        if not np.all(np.isfinite(matrix)):
            raise InputError(f"calibrated_sensor {self.index.calib_token[calib]}: camera has no camera_intrinsic")
        width, height = int(self.index.sd_width[sd]), int(self.index.sd_height[sd])
        if width <= 0 or height <= 0:
            raise InputError(f"sample_data {self.index.sd_token[sd]}: camera record has no width/height")
        return CameraIntrinsics(matrix, width, height)

    def pose_track(self, scene_name: str) -> PoseTrack:
        """Ego poses of every kept sample_data of a scene (lidar and cameras), by time."""
        scene = self._scene_index(scene_name)
        good = np.isfinite(self.index.sd_pose_translation).all(axis=1) & np.isfinite(self.index.sd_pose_rotation).all(
            axis=1
        )
        rows = np.flatnonzero((self.index.sd_scene == scene) & good)
        if rows.size == 0:
            raise InputError(f"scene {scene_name!r}: no sample_data of it has a finite ego pose")
        stamps = self.index.sd_timestamp_us[rows]
        _, first = np.unique(stamps, return_index=True)  # records sharing a timestamp share the pose
        rows = rows[first]
        return PoseTrack(
            self.index.sd_timestamp_us[rows], self.index.sd_pose_translation[rows], self.index.sd_pose_rotation[rows]
        )

    def ego_pose_at(self, scene_name: str, timestamp_us: int) -> SE3:
        """`global_from_ego` at any time inside the scene (interpolated between recorded poses)."""
        return self.pose_track(scene_name).pose_at(timestamp_us)

    # --- ground truth ----------------------------------------------------------------------
    def gt_boxes_global(self, sample_token: str) -> Boxes3D | None:
        """Annotations of the 10 detection classes in the global frame; None if the log has none."""
        if not self.index.has_annotations:
            return None
        s = self._sample(sample_token)
        start = int(self.index.sample_ann_start[s])
        rows = np.arange(start, start + int(self.index.sample_ann_count[s]))
        labels = [CATEGORY_TO_CLASS.get(str(self.index.ann_category[r])) for r in rows]
        rows = np.array([r for r, label in zip(rows, labels, strict=True) if label is not None], dtype=np.int64)
        if rows.size == 0:
            return Boxes3D.empty()
        rotations = quaternion_to_matrix(self.index.ann_rotation[rows])
        return Boxes3D(
            center=self.index.ann_translation[rows],
            size_wlh=self.index.ann_size_wlh[rows],
            yaw_rad=libm_elementwise(math.atan2, rotations[:, 1, 0], rotations[:, 0, 0]),
            velocity_xy=self.index.ann_velocity[rows, :2],
            label=np.array(
                [CLASS_INDEX[CATEGORY_TO_CLASS[str(self.index.ann_category[r])]] for r in rows], dtype=np.int64
            ),
            attribute=self.index.ann_attribute[rows],
            num_lidar_pts=self.index.ann_num_lidar_pts[rows],
            instance_token=tuple(str(t) for t in self.index.ann_instance_token[rows]),
            token=tuple(str(t) for t in self.index.ann_token[rows]),
        )

    # --- optional streams --------------------------------------------------------------------
    def gnss_log(self, scene_name: str) -> GnssLog | None:
        """The scene's GNSS file, or None when it has none."""
        result = self._gnss_for(self._scene_index(scene_name))
        return result if isinstance(result, GnssLog) else None

    def _gnss_for(self, scene: int) -> GnssLog | str:
        if scene not in self._gnss:
            path = gnss_path(self.dataroot, str(self.index.scene_name[scene]))
            try:
                self._gnss[scene] = read_gnss_json(path)
            except MissingSensorFile:
                self._gnss[scene] = f"no GNSS file {path}"
            except InputError as error:  # malformed file or fixes out of order
                self._gnss[scene] = f"unreadable (bad GNSS file): {error}"
        return self._gnss[scene]

    def map_raster(self, location: str) -> MapRaster | None:
        """The location's drivable-area raster (read once per log), or None when unavailable."""
        result = self._map_for(location)
        return result if isinstance(result, MapRaster) else None

    def _map_for(self, location: str) -> MapRaster | str:
        if location not in self._maps:
            matches = np.flatnonzero(self.index.map_location == location)
            if matches.size == 0:
                self._maps[location] = f"no map record lists a log of {location}"
            else:
                path = self.dataroot / str(self.index.map_filename[matches[0]])
                try:
                    self._maps[location] = read_map_raster(path, location)
                except MissingSensorFile:
                    self._maps[location] = f"file missing: {path}"
                except FileFormatError as error:
                    self._maps[location] = f"unreadable (bad map file): {error}"
        return self._maps[location]

    # --- frames -------------------------------------------------------------------------------
    def lidar_sources(self, sample_token: str, num_sweeps: int) -> list[SweepSource]:
        """The keyframe and up to `num_sweeps - 1` earlier sweeps, newest first (the devkit's prev
        walk), passing over past sweeps whose ego pose is not finite."""
        return self._lidar_chain(sample_token, num_sweeps)[0]

    def _lidar_chain(self, sample_token: str, num_sweeps: int) -> tuple[list[SweepSource], list[str]]:
        """(`lidar_sources`, the reasons of the past sweeps passed over for a non-finite ego pose:
        they cannot be moved into the keyframe's frame). The keyframe's pose must be finite."""
        s = self._sample(sample_token)
        sd = int(self.index.sample_keyframe[s, _LIDAR])
        if sd < 0:
            raise InputError(f"sample {sample_token}: no {LIDAR_NAME} keyframe record")
        sources: list[SweepSource] = []
        passed_over: list[str] = []
        while sd >= 0 and len(sources) < num_sweeps:
            if self._record_usable(sd):
                sources.append(
                    SweepSource(
                        path=self.dataroot / str(self.index.sd_filename[sd]),
                        timestamp_us=int(self.index.sd_timestamp_us[sd]),
                        ego_from_lidar=self._calibration(sd),
                        global_from_ego=self._pose(sd),
                        token=str(self.index.sd_token[sd]),
                    )
                )
            elif not sources:
                raise InputError(self._unusable_reason(sd))
            else:
                passed_over.append(self._unusable_reason(sd))
            sd = int(self.index.sd_prev[sd])
        return sources, passed_over

    def _camera_record(
        self, s: int, scene: int, name: str, lidar_us: int, sync: SyncConfig
    ) -> tuple[int | None, int | None, str]:
        """(sample_data index, skew, reason): the sample's keyframe image, else the nearest in the stream."""
        channel = CHANNELS.index(name)
        sd = int(self.index.sample_keyframe[s, channel])
        if sd >= 0:
            skew = int(self.index.sd_timestamp_us[sd]) - lidar_us
            if abs(skew) > sync.camera_tolerance_us:
                return (
                    None,
                    skew,
                    (
                        f"skew too large: keyframe image is {skew / 1000:+.1f} ms from the lidar "
                        f"(tolerance {sync.camera_tolerance_us / 1000:.1f} ms)"
                    ),
                )
            return sd, skew, ""
        stream = self._stream(scene, channel)
        match = match_nearest(lidar_us, self.index.sd_timestamp_us[stream], sync.camera_tolerance_us)
        if match.index is None:
            reason = "not in log" if stream.size == 0 else match.reason
            return None, match.skew_us, reason
        return int(stream[match.index]), match.skew_us, ""

    def frame(self, sample_token: str, options: FrameOptions = FrameOptions()) -> SyncedFrame:
        """The synchronized frame of one keyframe (see the module docstring)."""
        s = self._sample(sample_token)
        scene = int(self.index.sample_scene[s])
        scene_name = str(self.index.scene_name[scene])
        location = str(self.index.scene_location[scene])
        lidar_sd = int(self.index.sample_keyframe[s, _LIDAR])
        if lidar_sd < 0:
            raise InputError(f"sample {sample_token}: no {LIDAR_NAME} keyframe record, so no reference time")
        lidar_us = int(self.index.sd_timestamp_us[lidar_sd])
        missing: dict[str, str] = {}
        skew: dict[str, int] = {LIDAR_NAME: 0}
        lidar_pose_ok = self._pose_is_finite(lidar_sd)
        if lidar_pose_ok:
            global_from_ego = self._pose(lidar_sd)
        else:
            # The frame still needs a reference pose (for the boxes and the map): the scene's good
            # poses interpolated at the lidar time.
            global_from_ego = self.pose_track(scene_name).pose_at(lidar_us, max_extrapolation_us=_POSE_GAP_HOLD_US)

        lidar = None
        if options.load_lidar and not self._record_usable(lidar_sd):
            missing[LIDAR_NAME] = self._unusable_reason(lidar_sd)
        elif options.load_lidar:
            try:
                sources, passed_over = self._lidar_chain(sample_token, options.num_sweeps)
                accumulated = accumulate_sweeps(sources, options.min_distance_m)
                lidar = accumulated.sweep
                left_out = [*passed_over, *accumulated.skipped_reasons]
                if left_out:
                    missing[LIDAR_SWEEPS_KEY] = (
                        f"past sweep {left_out[0].split(':')[0]}: {len(left_out)} past sweep(s) left out, e.g. {left_out[0]}"
                    )
            except (MissingSensorFile, UnreadableSensorFile) as error:
                missing[LIDAR_NAME] = error.reason

        cameras: dict[str, CameraFrame] = {}
        for name in options.cameras:
            sd, camera_skew, reason = self._camera_record(s, scene, name, lidar_us, options.sync)
            if sd is not None and not self._record_usable(sd):
                reason = self._unusable_reason(sd)
                sd = None
            if sd is None:
                missing[name] = reason
                continue
            assert camera_skew is not None, "a matched camera record always has a skew"
            skew[name] = int(camera_skew)
            if not options.load_images:
                continue
            try:
                image, intrinsics = read_camera_image(
                    self.dataroot / str(self.index.sd_filename[sd]), self._intrinsics(sd), options.image_scale
                )
            except (MissingSensorFile, UnreadableSensorFile) as error:
                missing[name] = error.reason
                del skew[name]
                continue
            except InputError as error:  # the record's calibration (intrinsics, image size) is unusable
                missing[name] = f"bad camera record: {error}"
                del skew[name]
                continue
            cameras[name] = CameraFrame(
                name=name,
                image=image,
                intrinsics=intrinsics,
                ego_from_camera=self._calibration(sd),
                global_from_ego=self._pose(sd),
                timestamp_us=int(self.index.sd_timestamp_us[sd]),
                token=str(self.index.sd_token[sd]),
            )

        gnss: GnssFix | None = None
        if options.load_gnss:
            gnss_log = self._gnss_for(scene)
            if isinstance(gnss_log, str):
                missing[GNSS_NAME] = gnss_log
            else:
                match = match_nearest(lidar_us, gnss_log.timestamps_us, options.sync.gnss_tolerance_us)
                if match.index is None:
                    missing[GNSS_NAME] = "dropout: " + match.reason if match.skew_us is not None else match.reason
                else:
                    assert match.skew_us is not None, "a matched stream always has a skew"
                    gnss = gnss_log.fixes[match.index]
                    skew[GNSS_NAME] = int(match.skew_us)

        map_raster = None
        if options.load_map:
            result = self._map_for(location)
            if isinstance(result, str):
                missing[MAP_NAME] = result
            else:
                map_raster = result
                map_reason = None
                if options.check_map:
                    # The keyframe sweep alone: past sweeps see the same ground and walls, and the
                    # check's cost grows with the points (five sweeps tripled the read stage).
                    keyframe_ego = None
                    if lidar is not None:
                        keyframe_ego = lidar.ego_from_lidar.apply(lidar.points[lidar.points[:, 4] == 0.0, :3])
                    map_reason = check_map(map_raster, global_from_ego, keyframe_ego)
                if map_reason is not None:
                    missing[MAP_NAME] = map_reason
                    map_raster = None

        gt_boxes = None
        if options.load_boxes:
            boxes_global = self.gt_boxes_global(sample_token)
            if boxes_global is not None:
                gt_boxes = boxes_global.transform(global_from_ego.inverse())

        return SyncedFrame(
            sample_token=sample_token,
            scene_name=scene_name,
            location=location,
            timestamp_us=lidar_us,
            global_from_ego=global_from_ego,
            lidar=lidar,
            cameras=cameras,
            gnss=gnss,
            skew_us=skew,
            missing=missing,
            gt_boxes=gt_boxes,
            map=map_raster,
            scene_token=str(self.index.scene_token[scene]),
        )

    def frames(self, options: FrameOptions = FrameOptions(), scene_name: str | None = None) -> Iterator[SyncedFrame]:
        """Frames of every keyframe of the chosen scenes (or of one scene), in time order."""
        for token in self.sample_tokens(scene_name):
            yield self.frame(token, options)
