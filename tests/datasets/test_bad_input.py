"""Bad logs raise InputError naming the file/token and the problem; missing optional files are
reported in the frame instead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avfusion.datasets.nuscenes_log import LIDAR_SWEEPS_KEY, FrameOptions, NuScenesLog
from avfusion.errors import FileFormatError, InputError

VERSION = "v1.0-tiny"
NO_MAP = FrameOptions(load_map=False)


def edit_table(root: Path, name: str, edit) -> None:
    path = root / VERSION / f"{name}.json"
    records = json.loads(path.read_text())
    edit(records)
    path.write_text(json.dumps(records))


def first_file(root: Path, channel: str, folder: str = "samples") -> Path:
    return sorted((root / folder / channel).iterdir())[0]


def test_missing_table(tiny_log_copy) -> None:
    root = tiny_log_copy()
    (root / VERSION / "ego_pose.json").unlink()
    with pytest.raises(InputError, match=r"missing table file\(s\) ego_pose.json"):
        NuScenesLog.open(root, VERSION)
    with pytest.raises(InputError, match="version folder not found"):
        NuScenesLog.open(root, "v1.0-trainval")
    with pytest.raises(InputError, match="dataroot not found"):
        NuScenesLog.open(root / "nope", VERSION)


def test_table_not_json(tiny_log_copy) -> None:
    root = tiny_log_copy()
    (root / VERSION / "instance.json").write_text("[{")
    with pytest.raises(FileFormatError, match=r"instance\.json: not valid JSON"):
        NuScenesLog.open(root, VERSION)


def test_non_unit_calibration_quaternion(tiny_log_copy) -> None:
    root = tiny_log_copy()

    def scale_first(records: list[dict]) -> None:
        records[0]["rotation"] = [2.0 * v for v in records[0]["rotation"]]

    edit_table(root, "calibrated_sensor", scale_first)
    with pytest.raises(
        InputError, match=r"calibrated_sensor.json token calib_LIDAR_TOP.*not a unit quaternion \(norm 2"
    ):
        NuScenesLog.open(root, VERSION)


def test_timestamps_out_of_order(tiny_log_copy) -> None:
    root = tiny_log_copy()

    def swap(records: list[dict]) -> None:
        records[1]["timestamp"], records[2]["timestamp"] = records[2]["timestamp"], records[1]["timestamp"]

    edit_table(root, "sample", swap)
    with pytest.raises(
        InputError,
        match=r"sample.json: samples of scene scene-tiny-0001: timestamps out of order at entries 1 and 2 \(sample_1",
    ):
        NuScenesLog.open(root, VERSION)


def test_sweep_timestamps_out_of_order(tiny_log_copy) -> None:
    root = tiny_log_copy()

    def make_sweep_older(records: list[dict]) -> None:
        lidar = next(r for r in records if r["token"].startswith("sd_lidartop_3-"))
        lidar["timestamp"] -= 200_000

    edit_table(root, "sample_data", make_sweep_older)
    with pytest.raises(
        InputError, match=r"timestamps out of order: LIDAR_TOP record sd_lidartop_3-.* is not after its prev"
    ):
        NuScenesLog.open(root, VERSION)


def test_missing_files_are_reported_in_the_frame(tiny_log_copy) -> None:
    root = tiny_log_copy()
    log = NuScenesLog.open(root, VERSION)
    tokens = log.sample_tokens()
    first_file(root, "CAM_FRONT").unlink()
    first_file(root, "LIDAR_TOP", "sweeps").unlink()  # the oldest sweep, used by the first keyframe
    frame = log.frame(tokens[0], NO_MAP)
    assert "CAM_FRONT" not in frame.cameras and frame.missing["CAM_FRONT"].startswith("file missing: ")
    assert "CAM_FRONT" not in frame.skew_us
    assert frame.missing[LIDAR_SWEEPS_KEY].startswith("past sweep file missing: 1 past sweep(s) left out")
    assert frame.lidar is not None and frame.lidar.num_sweeps == 6
    first_file(root, "LIDAR_TOP").unlink()  # keyframe of the first sample
    frame = log.frame(tokens[0], NO_MAP)
    assert frame.lidar is None and frame.missing["LIDAR_TOP"].startswith("file missing: ")
    (root / "gnss" / "scene-tiny-0001.json").unlink()
    fresh = NuScenesLog.open(root, VERSION)
    frame = fresh.frame(tokens[2], NO_MAP)
    assert frame.gnss is None and frame.missing["GNSS"].startswith("no GNSS file")
    for png in (root / "maps").glob("*.png"):
        png.unlink()
    assert (
        fresh.frame(tokens[2], FrameOptions(load_lidar=False, load_images=False))
        .missing["MAP"]
        .startswith("file missing")
    )


def test_bad_lidar_files_make_the_lidar_missing(tiny_log_copy) -> None:
    """Empty, truncated or non-finite lidar files: the sensor is missing with the reason, the
    cameras of the frame are still read."""
    root = tiny_log_copy()
    log = NuScenesLog.open(root, VERSION)
    token = log.sample_tokens()[0]
    path = first_file(root, "LIDAR_TOP")
    whole = path.read_bytes()
    points = np.zeros((10, 5), np.float32)
    points[4, 1] = np.inf
    for data, reason in (
        (b"", "unreadable (empty lidar file): "),
        (whole[:-3], "unreadable (truncated lidar file): "),
        (points.tobytes(), "unreadable (non-finite lidar points): "),
    ):
        path.write_bytes(data)
        frame = log.frame(token, NO_MAP)
        assert frame.lidar is None and frame.missing["LIDAR_TOP"].startswith(reason), frame.missing
        assert path.name in frame.missing["LIDAR_TOP"]
        assert len(frame.cameras) == 6
    path.write_bytes(whole)
    past = first_file(root, "LIDAR_TOP", "sweeps")
    past.write_bytes(b"")
    frame = log.frame(token, NO_MAP)
    assert frame.lidar is not None and frame.lidar.num_sweeps == 6
    assert frame.missing[LIDAR_SWEEPS_KEY].startswith("past sweep unreadable (empty lidar file): 1 past sweep(s)")


def test_bad_images_make_their_camera_missing(tiny_log_copy) -> None:
    root = tiny_log_copy()
    log = NuScenesLog.open(root, VERSION)
    token = log.sample_tokens()[0]
    front, back = first_file(root, "CAM_FRONT"), first_file(root, "CAM_BACK")
    data = front.read_bytes()
    front.write_bytes(data[: len(data) // 2])
    back.write_bytes(b"\xff\xd8 not a jpeg at all \xff\xda\xff\xd9")
    frame = log.frame(token, NO_MAP)
    assert frame.missing["CAM_FRONT"].startswith("unreadable (truncated JPEG): ")
    assert frame.missing["CAM_BACK"].startswith("unreadable (undecodable image): ")
    assert set(frame.cameras) == {"CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"}
    assert "CAM_FRONT" not in frame.skew_us and frame.lidar is not None


def test_bad_gnss_file_makes_gnss_missing(tiny_log_copy) -> None:
    root = tiny_log_copy()
    path = root / "gnss" / "scene-tiny-0001.json"
    payload = json.loads(path.read_text())
    payload["fixes"][2]["timestamp"] = payload["fixes"][0]["timestamp"]
    path.write_text(json.dumps(payload))
    log = NuScenesLog.open(root, VERSION)
    frame = log.frame(log.sample_tokens()[0], NO_MAP)
    assert frame.gnss is None
    assert frame.missing["GNSS"].startswith("unreadable (bad GNSS file): ")
    assert "timestamps out of order at entries 1 and 2" in frame.missing["GNSS"]
    path.write_text("{")
    frame = NuScenesLog.open(root, VERSION).frame(log.sample_tokens()[0], NO_MAP)
    assert "not valid JSON" in frame.missing["GNSS"] and frame.lidar is not None


def test_unknown_sample_and_options() -> None:
    with pytest.raises(InputError, match="num_sweeps must be >= 1"):
        FrameOptions(num_sweeps=0)
    with pytest.raises(InputError, match="unknown camera"):
        FrameOptions(cameras=("CAM_TOP",))


def test_unknown_sample_token(tiny_log: Path) -> None:
    with pytest.raises(InputError, match="sample token 'abc' not found"):
        NuScenesLog.open(tiny_log, VERSION).frame("abc")
