"""The real Lyft Level 5 tables (nuScenes schema, an excerpt: 1 sample, dangling prev/next, no
sensor files) load through our reader and agree with nuscenes-devkit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.geometry_utils import transform_matrix
from PIL import Image
from pyquaternion import Quaternion

from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.labels import DETECTION_CLASSES
from avfusion.sensors.types import CAMERA_NAMES

pytestmark = pytest.mark.realdata
VERSION = "v1.01-train"


@pytest.fixture(scope="module")
def lyft_root(realdata_root: Path) -> Path:
    return realdata_root / "tests/data/lyft/v1.01-train"


def test_lyft_tables_load_and_frame_reports_missing_files(lyft_root: Path) -> None:
    log = NuScenesLog.open(lyft_root, VERSION)
    nusc = NuScenes(version=VERSION, dataroot=str(lyft_root), verbose=False)
    assert len(log) == 1 and log.sample_tokens() == (nusc.sample[0]["token"],)
    assert log.scene_location(log.scene_names[0]) == nusc.log[0]["location"]
    assert int(log.index.sample_ann_count[0]) == len(nusc.sample_annotation) == 4
    frame = log.frame(log.sample_tokens()[0], FrameOptions(load_map=True))
    # the excerpt has no sensor files: every sensor is reported, nothing is silently paired
    assert frame.lidar is None and frame.missing["LIDAR_TOP"].startswith("file missing")
    assert set(CAMERA_NAMES) <= set(frame.missing)
    # the excerpt's map crop does not reach the ego, and the map check says so instead of using it
    assert frame.missing["MAP"].startswith("no drivable area around the ego")
    # the lidar-time ego pose equals the devkit's record
    lidar_sd = nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])
    pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    np.testing.assert_allclose(
        frame.global_from_ego.matrix, transform_matrix(pose["translation"], Quaternion(pose["rotation"])), atol=1e-9
    )


def test_lyft_camera_calibration_matches_devkit(lyft_root: Path) -> None:
    log = NuScenesLog.open(lyft_root, VERSION)
    nusc = NuScenes(version=VERSION, dataroot=str(lyft_root), verbose=False)
    sample = nusc.sample[0]
    for name in CAMERA_NAMES:
        if name not in sample["data"]:
            continue
        record = nusc.get("sample_data", sample["data"][name])
        sd = int(np.flatnonzero(log.index.sd_token == record["token"])[0])
        calibration = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        np.testing.assert_allclose(
            log._calibration(sd).matrix,
            transform_matrix(calibration["translation"], Quaternion(calibration["rotation"])),
            atol=1e-9,
        )
        intrinsics = log._intrinsics(sd)
        np.testing.assert_allclose(intrinsics.matrix, calibration["camera_intrinsic"], atol=0)
        assert (intrinsics.width, intrinsics.height) == (record["width"], record["height"])


def test_lyft_ground_truth_and_rgba_map_are_read(lyft_root: Path) -> None:
    log = NuScenesLog.open(lyft_root, VERSION)
    nusc = NuScenes(version=VERSION, dataroot=str(lyft_root), verbose=False)
    # the raster as read, without the check that drops a map not covering the ego (this crop)
    frame = log.frame(log.sample_tokens()[0], FrameOptions(load_map=True, check_map=False))
    # the excerpt's four annotations are Lyft `car`s: all four become detection-class cars
    records = [nusc.get("sample_annotation", token) for token in nusc.sample[0]["anns"]]
    assert {nusc.get("instance", r["instance_token"])["category_token"] for r in records} == {
        c["token"] for c in nusc.category if c["name"] == "car"
    }
    boxes = log.gt_boxes_global(log.sample_tokens()[0])
    assert boxes is not None and len(boxes) == 4 and len(frame.gt_boxes) == 4
    assert [DETECTION_CLASSES[label] for label in boxes.label] == ["car"] * 4
    by_token = {r["token"]: r for r in records}
    for k, token in enumerate(boxes.token):
        np.testing.assert_allclose(boxes.center[k], by_token[token]["translation"], atol=1e-9)
        np.testing.assert_allclose(boxes.size_wlh[k], by_token[token]["size"], atol=1e-9)
    # the 173 x 174 RGBA crop of the Palo Alto raster: the prior is every pixel with no white
    # channel (Lyft SDK's MapMask), here the road drawn in greys on the white background
    assert frame.map is not None
    pixels = np.asarray(Image.open(lyft_root / nusc.map[0]["filename"]))
    assert pixels.shape == (174, 173, 4) and frame.map.drivable.shape == (174, 173)
    expected = np.all(pixels[:, :, :3] < 255, axis=2) & (pixels[:, :, 3] > 0)
    np.testing.assert_array_equal(frame.map.drivable == 255, expected)
    assert 0.1 < expected.mean() < 0.3
