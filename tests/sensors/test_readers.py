"""Sensor file readers: .pcd.bin validation, image decoding at reduced scales, GNSS files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avfusion.calibration.camera import CameraIntrinsics
from avfusion.errors import FileFormatError, InputError
from avfusion.sensors.errors import MissingSensorFile, UnreadableSensorFile
from avfusion.sensors.gnss import read_gnss_json
from avfusion.sensors.images import read_camera_image
from avfusion.sensors.pcd import read_pcd_bin


def test_pcd_round_trip_and_empty(tmp_path: Path) -> None:
    points = np.arange(35, dtype=np.float32).reshape(7, 5)
    path = tmp_path / "a.pcd.bin"
    points.tofile(path)
    read = read_pcd_bin(path)
    assert read.dtype == np.float32 and read.shape == (7, 5)
    np.testing.assert_array_equal(read, points)
    (tmp_path / "empty.pcd.bin").write_bytes(b"")
    with pytest.raises(UnreadableSensorFile, match=r"empty\.pcd\.bin: empty lidar file") as caught:
        read_pcd_bin(tmp_path / "empty.pcd.bin")
    assert caught.value.kind == "empty lidar file"
    assert caught.value.reason.startswith("unreadable (empty lidar file): ")


@pytest.mark.parametrize("size", [19, 21, 4, 2])
def test_pcd_truncated(tmp_path: Path, size: int) -> None:
    path = tmp_path / "bad.pcd.bin"
    path.write_bytes(b"\0" * size)
    with pytest.raises(
        FileFormatError, match=f"bad.pcd.bin: truncated lidar file: size {size} bytes is not a multiple of 20"
    ):
        read_pcd_bin(path)


def test_pcd_nan_and_missing(tmp_path: Path) -> None:
    points = np.zeros((4, 5), np.float32)
    points[2, 3] = np.nan
    points[3, 0] = -np.inf
    path = tmp_path / "nan.pcd.bin"
    points.tofile(path)
    with pytest.raises(FileFormatError, match="2 of 4 points have NaN or infinite values \\(first at point 2\\)"):
        read_pcd_bin(path)
    with pytest.raises(MissingSensorFile, match=r"gone\.pcd\.bin: lidar file not found"):
        read_pcd_bin(tmp_path / "gone.pcd.bin")


def test_real_truncated_fixture_reads(realdata_root: Path) -> None:
    path = (
        realdata_root
        / "tests/data/nuscenes/samples/LIDAR_TOP/n015-2018-08-02-17-16-37+0800__LIDAR_TOP__1533201470948018.pcd.bin"
    )
    points = read_pcd_bin(path)
    assert points.shape == (100, 5)
    assert set(np.unique(points[:, 4])).issubset(set(range(32)))  # the ring index column


def make_image(tmp_path: Path, width: int = 64, height: int = 36) -> Path:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 2] = 255  # red in BGR order
    image[:, width // 2 :, 0] = 255
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image)
    return path


def test_image_reading_scales_and_rgb(tmp_path: Path) -> None:
    path = make_image(tmp_path)
    intrinsics = CameraIntrinsics(np.array([[50.0, 0, 31.5], [0, 50.0, 17.5], [0, 0, 1]]), 64, 36)
    image, same = read_camera_image(path, intrinsics)
    assert image.shape == (36, 64, 3) and image[0, 0].tolist() == [255, 0, 0]  # RGB
    assert same is intrinsics
    half, k_half = read_camera_image(path, intrinsics, 0.5)
    assert half.shape == (18, 32, 3) and k_half.fx == pytest.approx(25.0)
    # the principal point at the image centre stays at the centre
    assert (k_half.cx, k_half.cy) == pytest.approx((15.5, 8.5))
    other, k_other = read_camera_image(path, intrinsics, 0.3)
    assert other.shape == (11, 19, 3) and (k_other.width, k_other.height) == (19, 11)


def test_image_errors(tmp_path: Path) -> None:
    intrinsics = CameraIntrinsics(np.eye(3), 64, 36)
    with pytest.raises(MissingSensorFile, match="camera image not found"):
        read_camera_image(tmp_path / "none.jpg", intrinsics)
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FileFormatError, match="not a decodable image"):
        read_camera_image(tmp_path / "junk.jpg", intrinsics)
    with pytest.raises(FileFormatError, match="calibration says 100x36"):
        read_camera_image(make_image(tmp_path), CameraIntrinsics(np.eye(3), 100, 36), 0.3)
    with pytest.raises(InputError, match="scale must be in"):
        read_camera_image(make_image(tmp_path), intrinsics, 2.0)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.3])
def test_empty_and_truncated_images_are_unreadable_not_half_grey(tmp_path: Path, scale: float) -> None:
    intrinsics = CameraIntrinsics(np.eye(3), 64, 36)
    noise = np.random.default_rng(0).integers(0, 256, (36, 64, 3), dtype=np.uint8)
    complete = cv2.imencode(".jpg", noise)[1].tobytes()
    (tmp_path / "whole.jpg").write_bytes(complete)
    read_camera_image(tmp_path / "whole.jpg", intrinsics, scale)  # the whole file reads
    cases = {
        "empty.jpg": (b"", "empty image file"),
        # Cut inside the scan: the decoder alone would fill the rest with grey and only warn.
        "cut.jpg": (complete[: len(complete) * 2 // 3], "truncated JPEG"),
        "no_eoi.jpg": (complete[:-2], "truncated JPEG"),
    }
    _, png = cv2.imencode(".png", np.zeros((36, 64, 3), np.uint8))
    cases["cut.png"] = (png.tobytes()[:-20], "truncated PNG")
    for name, (data, kind) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnreadableSensorFile, match=f"{name}: {kind}") as caught:
            read_camera_image(tmp_path / name, intrinsics, scale)
        assert caught.value.kind == kind
    # Bytes after the end-of-image marker (some encoders pad) are not a truncation.
    (tmp_path / "padded.jpg").write_bytes(complete + b"\0" * 7)
    assert read_camera_image(tmp_path / "padded.jpg", intrinsics, scale)[0].shape[2] == 3


def write_gnss(path: Path, fixes: list[dict]) -> Path:
    path.write_text(
        json.dumps(
            {"scene_token": "t", "scene_name": "scene-1", "location": "boston-seaport", "rate_hz": 10, "fixes": fixes}
        )
    )
    return path


def fix(timestamp: int) -> dict:
    return {
        "timestamp": timestamp,
        "latitude": 42.34,
        "longitude": -71.05,
        "altitude": 3.0,
        "heading": 45.0,
        "speed": 2.0,
    }


def test_gnss_reader(tmp_path: Path) -> None:
    log = read_gnss_json(write_gnss(tmp_path / "g.json", [fix(100), fix(200)]))
    assert len(log) == 2 and log.timestamps_us.tolist() == [100, 200] and log.fixes[1].heading_deg == 45.0
    with pytest.raises(InputError, match="timestamps out of order at entries 0 and 1: 200 then 100"):
        read_gnss_json(write_gnss(tmp_path / "g.json", [fix(200), fix(100)]))
    bad = fix(300)
    del bad["speed"]
    with pytest.raises(FileFormatError, match="fix 1 must have the fields"):
        read_gnss_json(write_gnss(tmp_path / "g.json", [fix(200), bad]))
    with pytest.raises(MissingSensorFile):
        read_gnss_json(tmp_path / "none.json")
