"""Nearest-in-time matching with tolerance, pose interpolation, and sweep accumulation by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avfusion.calibration.se3 import SE3
from avfusion.errors import InputError
from avfusion.sensors.errors import MissingSensorFile
from avfusion.sensors.sweeps import SweepSource, accumulate_sweeps
from avfusion.sensors.sync import PoseTrack, SyncConfig, match_nearest, synchronize


def test_match_nearest_hand_worked() -> None:
    stamps = np.array([0, 100, 200, 300])
    assert match_nearest(140, stamps, 50).index == 1
    assert match_nearest(140, stamps, 50).skew_us == -40
    assert match_nearest(150, stamps, 60).index == 1  # a tie goes to the earlier sample
    assert match_nearest(-10, stamps, 50).index == 0
    too_far = match_nearest(500, stamps, 50)
    assert too_far.index is None and too_far.skew_us == -200
    assert too_far.reason == "skew too large: nearest sample is -0.2 ms away (tolerance 0.1 ms)"
    assert match_nearest(5, np.array([], dtype=np.int64), 50).reason == "no samples in the stream"


def test_synchronize_reports_each_stream() -> None:
    result = synchronize(
        1_000_000,
        {"CAM_FRONT": np.array([960_000, 1_040_000]), "CAM_BACK": np.array([900_000]), "GNSS": np.array([920_000])},
        SyncConfig(camera_tolerance_us=50_000),
    )
    assert dict(result.indices) == {"CAM_FRONT": 0, "GNSS": 0}
    assert dict(result.skew_us) == {"CAM_FRONT": -40_000, "GNSS": -80_000}
    assert result.missing["CAM_BACK"].startswith("skew too large: nearest sample is -100.0 ms")


def test_pose_track_interpolates_and_rejects_disorder() -> None:
    track = PoseTrack.from_poses([0, 1_000_000], [SE3.from_yaw(0.0, [0, 0, 0]), SE3.from_yaw(0.5, [10, 4, 0])])
    middle = track.pose_at(250_000)
    np.testing.assert_allclose(middle.translation, [2.5, 1.0, 0.0], atol=1e-12)
    assert middle.yaw_rad == pytest.approx(0.125)
    assert track.pose_at(1_000_000).yaw_rad == pytest.approx(0.5)
    assert track.pose_at(1_010_000, max_extrapolation_us=20_000).yaw_rad == pytest.approx(0.5)
    with pytest.raises(InputError, match="no ego pose at 2000000 us"):
        track.pose_at(2_000_000)
    with pytest.raises(InputError, match="ego pose track: timestamps out of order at entries 0 and 1"):
        PoseTrack.from_poses([5, 5], [SE3.identity(), SE3.identity()])


def test_accumulate_hand_worked(tmp_path: Path) -> None:
    # keyframe at t = 1 s, ego at x = 10; a past sweep at t = 0.9 s, ego at x = 9, identity calibration
    key_points = np.array([[5.0, 0.0, 0.0, 7.0, 3.0], [0.5, 0.5, 0.0, 1.0, 0.0]], np.float32)  # 2nd: on the roof
    past_points = np.array([[5.0, 0.0, 0.0, 9.0, 1.0]], np.float32)
    key_points.tofile(tmp_path / "key.bin")
    past_points.tofile(tmp_path / "past.bin")
    sources = [
        SweepSource(tmp_path / "key.bin", 1_000_000, SE3.identity(), SE3.from_yaw(0.0, [10, 0, 0])),
        SweepSource(tmp_path / "past.bin", 900_000, SE3.identity(), SE3.from_yaw(0.0, [9, 0, 0])),
        SweepSource(tmp_path / "gone.bin", 850_000, SE3.identity(), SE3.from_yaw(0.0, [8.5, 0, 0])),
    ]
    result = accumulate_sweeps(sources)
    # the past point was 5 m ahead of an ego 1 m further back: 4 m ahead now; lag 0.1 s
    np.testing.assert_allclose(result.sweep.points, [[5, 0, 0, 7, 0], [4, 0, 0, 9, 0.1]], atol=1e-6)
    assert result.skipped_paths == (str(tmp_path / "gone.bin"),)
    assert result.sweep.num_sweeps == 2
    with pytest.raises(MissingSensorFile):
        accumulate_sweeps(sources[2:])
