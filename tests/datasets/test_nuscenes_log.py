"""The log reader against nuscenes-devkit on the tiny hand-built log (tests/datasets/conftest.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import transform_matrix, view_points
from pyquaternion import Quaternion

from avfusion.calibration.errors import InputError
from avfusion.calibration.labels import ATTRIBUTES, DETECTION_CLASSES
from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.sensors.sync import SyncConfig

VERSION = "v1.0-tiny"
SCENE = "scene-tiny-0001"


@pytest.fixture(scope="module")
def nusc(tiny_log: Path) -> NuScenes:
    return NuScenes(version=VERSION, dataroot=str(tiny_log), verbose=False)


@pytest.fixture(scope="module")
def log(tiny_log: Path) -> NuScenesLog:
    return NuScenesLog.open(tiny_log, VERSION)


def test_structure(log: NuScenesLog) -> None:
    assert log.scene_names == (SCENE,)
    assert len(log) == 3
    assert log.sample_tokens()[0].startswith("sample_0")
    assert log.scene_location(SCENE) == "singapore-onenorth"


def test_multisweep_equals_devkit(log: NuScenesLog, nusc: NuScenes) -> None:
    for sample_token in log.sample_tokens():
        for nsweeps in (1, 5, 10):
            frame = log.frame(sample_token, FrameOptions(num_sweeps=nsweeps, load_images=False, load_map=False))
            reference, times = LidarPointCloud.from_file_multisweep(
                nusc, nusc.get("sample", sample_token), "LIDAR_TOP", "LIDAR_TOP", nsweeps=nsweeps)
            ours = frame.lidar.points
            assert ours.shape == (reference.points.shape[1], 5)
            np.testing.assert_allclose(ours[:, :4], reference.points.T, atol=1e-4)
            np.testing.assert_allclose(ours[:, 4], times[0], atol=1e-6)
    # the first keyframe has only 6 earlier sweeps: 7 in all even when 10 are asked for
    first = log.frame(log.sample_tokens()[0], FrameOptions(load_images=False, load_map=False))
    assert first.lidar.num_sweeps == 7


def test_gt_boxes_equal_devkit_annotations(log: NuScenesLog, nusc: NuScenes) -> None:
    for sample_token in log.sample_tokens():
        boxes_global = log.gt_boxes_global(sample_token)
        # the frame's ego-frame boxes, moved back: upright boxes lose the ego's roll/pitch (0.01 rad
        # here) on the way, so the yaw comes back to ~3e-4 rad and the centre exactly
        frame = log.frame(sample_token, FrameOptions(load_lidar=False, load_images=False, load_map=False))
        round_trip = frame.gt_boxes.transform(frame.global_from_ego)
        np.testing.assert_allclose(round_trip.center, boxes_global.center, atol=1e-9)
        assert np.abs(np.angle(np.exp(1j * (round_trip.yaw_rad - boxes_global.yaw_rad)))).max() < 1e-3
        records = [nusc.get("sample_annotation", t) for t in nusc.get("sample", sample_token)["anns"]]
        detected = [r for r in records if r["category_name"] != "static_object.bicycle_rack"]
        assert sorted(boxes_global.token) == sorted(r["token"] for r in detected)
        for n, ann_token in enumerate(boxes_global.token):
            record = nusc.get("sample_annotation", ann_token)
            np.testing.assert_allclose(boxes_global.center[n], record["translation"], atol=1e-9)
            np.testing.assert_allclose(boxes_global.size_wlh[n], record["size"], atol=0)
            yaw = np.arctan2(*(Quaternion(record["rotation"]).rotation_matrix @ [1, 0, 0])[[1, 0]])
            assert abs(np.angle(np.exp(1j * (boxes_global.yaw_rad[n] - yaw)))) < 1e-9
            np.testing.assert_allclose(boxes_global.velocity_xy[n], nusc.box_velocity(ann_token)[:2], atol=1e-9,
                                       equal_nan=True)
            assert boxes_global.num_lidar_pts[n] == record["num_lidar_pts"]
            names = [nusc.get("attribute", t)["name"] for t in record["attribute_tokens"]]
            assert ATTRIBUTES[boxes_global.attribute[n]] == names[0]
            assert boxes_global.instance_token[n] == record["instance_token"]
        # the car moves north at 5 m/s: hand-worked
        car = boxes_global[boxes_global.label == DETECTION_CLASSES.index("car")]
        np.testing.assert_allclose(car.velocity_xy, [[0.0, 5.0]], atol=1e-9)
    # a single-annotation instance has no velocity
    middle = log.gt_boxes_global(log.sample_tokens()[1])
    assert np.isnan(middle.velocity_xy[middle.label == DETECTION_CLASSES.index("pedestrian")]).all()


def test_gt_boxes_in_ego_frame_match_devkit_get_sample_data(log: NuScenesLog, nusc: NuScenes) -> None:
    sample_token = log.sample_tokens()[2]
    frame = log.frame(sample_token, FrameOptions(load_images=False, load_map=False, num_sweeps=1))
    # the devkit gives boxes in the lidar sensor frame with full 3D orientation; moved to the ego
    # frame they must equal ours (whose yaw is the heading projected on the ego's xy plane)
    lidar_sd = nusc.get("sample_data", nusc.get("sample", sample_token)["data"]["LIDAR_TOP"])
    calibration = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    _, devkit_boxes, _ = nusc.get_sample_data(lidar_sd["token"])
    ours = frame.gt_boxes
    assert len(ours) == len([b for b in devkit_boxes if b.name != "static_object.bicycle_rack"])
    for box in devkit_boxes:
        if box.name == "static_object.bicycle_rack":
            continue
        box.rotate(Quaternion(calibration["rotation"]))
        box.translate(np.array(calibration["translation"]))
        n = ours.token.index(box.token)
        np.testing.assert_allclose(ours.center[n], box.center, atol=1e-9)
        devkit_yaw = np.arctan2(*(box.orientation.rotation_matrix @ [1, 0, 0])[[1, 0]])
        assert abs(np.angle(np.exp(1j * (ours.yaw_rad[n] - devkit_yaw)))) < 1e-9
        np.testing.assert_allclose(ours.size_wlh[n], box.wlh, atol=0)


def test_camera_chain_and_projection_equal_devkit(log: NuScenesLog, nusc: NuScenes) -> None:
    sample_token = log.sample_tokens()[1]
    frame = log.frame(sample_token, FrameOptions(num_sweeps=1, load_map=False))
    sample = nusc.get("sample", sample_token)
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    points_lidar = frame.lidar.points[:, :3].astype(np.float64)
    rig = frame.camera_rig()
    for k, name in enumerate(rig.names):
        camera = frame.cameras[name]
        camera_sd = nusc.get("sample_data", camera.token)
        # the devkit's chain (as in map_pointcloud_to_image): lidar -> ego(t_lidar) -> global -> ego(t_cam) -> cam
        chain = [
            transform_matrix(nusc.get("calibrated_sensor", camera_sd["calibrated_sensor_token"])["translation"],
                             Quaternion(nusc.get("calibrated_sensor", camera_sd["calibrated_sensor_token"])["rotation"]),
                             inverse=True),
            transform_matrix(nusc.get("ego_pose", camera_sd["ego_pose_token"])["translation"],
                             Quaternion(nusc.get("ego_pose", camera_sd["ego_pose_token"])["rotation"]), inverse=True),
            transform_matrix(nusc.get("ego_pose", lidar_sd["ego_pose_token"])["translation"],
                             Quaternion(nusc.get("ego_pose", lidar_sd["ego_pose_token"])["rotation"])),
            transform_matrix(nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])["translation"],
                             Quaternion(nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])["rotation"])),
        ]
        devkit_cam_from_lidar = np.linalg.multi_dot(chain)
        ours = rig.camera_from_ego[k] @ frame.lidar.ego_from_lidar.matrix
        np.testing.assert_allclose(ours, devkit_cam_from_lidar, atol=1e-6)
        # pixels: the devkit's view_points with the sample_data's intrinsic
        points_cam = points_lidar @ devkit_cam_from_lidar[:3, :3].T + devkit_cam_from_lidar[:3, 3]
        in_front = points_cam[:, 2] > 0.1
        intrinsic = np.array(nusc.get("calibrated_sensor", camera_sd["calibrated_sensor_token"])["camera_intrinsic"])
        devkit_uv = view_points(points_cam[in_front].T, intrinsic, normalize=True)[:2].T
        projection = rig.project_ego(frame.lidar.points_ego)
        np.testing.assert_allclose(projection.uv[k][in_front], devkit_uv, atol=1e-6)
        assert camera.image.shape == (90, 160, 3)


def test_camera_without_keyframe_uses_nearest_image(log: NuScenesLog) -> None:
    frame = log.frame(log.sample_tokens()[1], FrameOptions(load_lidar=False, load_map=False))
    assert frame.skew_us["CAM_BACK_LEFT"] == 30_000
    tight = log.frame(log.sample_tokens()[1], FrameOptions(load_lidar=False, load_map=False,
                                                           sync=SyncConfig(camera_tolerance_us=25_000)))
    assert "CAM_BACK_LEFT" not in tight.cameras
    assert tight.missing["CAM_BACK_LEFT"].startswith("skew too large: nearest sample is +30.0 ms")
    # a keyframe image beyond the tolerance is refused too, with the reason
    assert tight.missing["CAM_FRONT_LEFT"].startswith("skew too large: keyframe image is -43.0 ms")


def test_gnss_matching_and_dropout(log: NuScenesLog) -> None:
    tokens = log.sample_tokens()
    first = log.frame(tokens[0], FrameOptions(load_lidar=False, load_images=False, load_map=False))
    assert first.skew_us["GNSS"] == 3_000 and first.gnss is not None
    assert first.gnss.speed_m_s == pytest.approx(10.2)
    dropout = log.frame(tokens[1], FrameOptions(load_lidar=False, load_images=False, load_map=False))
    assert dropout.gnss is None and dropout.missing["GNSS"].startswith("dropout: skew too large")


def test_image_scale_updates_intrinsics(log: NuScenesLog) -> None:
    token = log.sample_tokens()[0]
    full = log.frame(token, FrameOptions(load_lidar=False, load_map=False))
    eighth = log.frame(token, FrameOptions(load_lidar=False, load_map=False, image_scale=0.125))
    camera = eighth.cameras["CAM_FRONT"]
    assert camera.image.shape == (12, 20, 3)  # 90 / 8 rounds up to 12 rows
    assert camera.intrinsics.fx == pytest.approx(full.cameras["CAM_FRONT"].intrinsics.fx / 8)
    # the left half is red: the colour order is RGB
    assert camera.image[6, 2, 0] > 150 and full.cameras["CAM_FRONT"].image[45, 10, 0] > 150


def test_pose_interpolation_between_records(log: NuScenesLog) -> None:
    track = log.pose_track(SCENE)
    t_a, t_b = int(track.timestamps_us[3]), int(track.timestamps_us[4])
    middle = track.pose_at((t_a + t_b) // 2)
    a, b = track.pose_at(t_a), track.pose_at(t_b)
    np.testing.assert_allclose(middle.translation, 0.5 * (a.translation + b.translation), atol=1e-9)
    with pytest.raises(InputError, match="no ego pose at"):
        track.pose_at(int(track.timestamps_us[-1]) + 1_000_000)


def test_map_raster_is_read_once(log: NuScenesLog) -> None:
    token = log.sample_tokens()[0]
    a = log.frame(token, FrameOptions(load_lidar=False, load_images=False))
    b = log.frame(log.sample_tokens()[1], FrameOptions(load_lidar=False, load_images=False))
    assert a.map is not None and a.map is b.map
    assert a.map.drivable.shape == (120, 100) and a.map.drivable[0, 0] == 255 and a.map.drivable[-1, 0] == 0


def test_split_and_scene_selection(tiny_log: Path) -> None:
    assert NuScenesLog.open(tiny_log, VERSION, split="synth_val").scene_names == (SCENE,)
    with pytest.raises(InputError, match="split 'synth_train': none of its scenes"):
        NuScenesLog.open(tiny_log, VERSION, split="synth_train")
    with pytest.raises(InputError, match="unknown split 'nope'"):
        NuScenesLog.open(tiny_log, VERSION, split="nope")
    with pytest.raises(InputError, match=r"scene\(s\) \['scene-x'\] not in the log"):
        NuScenesLog.open(tiny_log, VERSION, scenes=["scene-x"])


def test_second_open_uses_cache_and_table_change_invalidates(tiny_log_copy) -> None:
    root = tiny_log_copy()
    first = NuScenesLog.open(root, VERSION)
    second = NuScenesLog.open(root, VERSION)
    assert not first.from_cache and second.from_cache
    assert second.sample_tokens() == first.sample_tokens()
    np.testing.assert_array_equal(second.index.sd_pose_rotation, first.index.sd_pose_rotation)
    # editing a table rebuilds the index
    path = root / VERSION / "scene.json"
    scenes = json.loads(path.read_text())
    scenes[0]["description"] = "changed"
    path.write_text(json.dumps(scenes))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    reopened = NuScenesLog.open(root, VERSION)
    assert not reopened.from_cache and reopened.index.stamps_json != first.index.stamps_json
