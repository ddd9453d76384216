"""The log reader against nuscenes-devkit, on the tiny hand-built log and on a generated synthetic
log (tests/datasets/conftest.py): the devkit comparisons run on both; hand-worked cases on the tiny one."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.nuscenes import NuScenes
from nuscenes.scripts.export_poses import derive_latlon, get_poses
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import transform_matrix, view_points
from pyquaternion import Quaternion

from avfusion.calibration.geodesy import geodetic_from_map, map_from_geodetic, yaw_from_heading_deg
from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.datasets.synthetic import GnssNoise
from avfusion.errors import InputError
from avfusion.labels import ATTRIBUTES, DETECTION_CLASSES
from avfusion.sensors.gnss import gnss_path, read_gnss_json
from avfusion.sensors.sync import SyncConfig

VERSION = "v1.0-tiny"
SCENE = "scene-tiny-0001"
SYNTHETIC_VERSION = "v1.0-mini"
NO_IMAGES_NO_MAP = FrameOptions(load_images=False, load_map=False)


@dataclass(frozen=True)
class Subject:
    """A log opened both ways: through our reader and through the devkit."""

    name: str
    root: Path
    log: NuScenesLog
    nusc: NuScenes


@pytest.fixture(scope="module")
def nusc(tiny_log: Path) -> NuScenes:
    return NuScenes(version=VERSION, dataroot=str(tiny_log), verbose=False)


@pytest.fixture(scope="module")
def log(tiny_log: Path) -> NuScenesLog:
    return NuScenesLog.open(tiny_log, VERSION)


@pytest.fixture(scope="module")
def synthetic(synthetic_log: Path) -> Subject:
    return Subject(
        "synthetic",
        synthetic_log,
        NuScenesLog.open(synthetic_log, SYNTHETIC_VERSION),
        NuScenes(version=SYNTHETIC_VERSION, dataroot=str(synthetic_log), verbose=False),
    )


@pytest.fixture(scope="module", params=["tiny", "synthetic"])
def subject(request: pytest.FixtureRequest) -> Subject:
    """Each log in turn, for the comparisons that hold on any nuScenes-format log."""
    if request.param == "synthetic":
        return request.getfixturevalue("synthetic")
    return Subject(
        "tiny", request.getfixturevalue("tiny_log"), request.getfixturevalue("log"), request.getfixturevalue("nusc")
    )


def wrap_rad(angle: object) -> np.ndarray:
    return np.angle(np.exp(1j * np.asarray(angle, dtype=np.float64)))


def devkit_yaw(rotation: Quaternion) -> float:
    return float(np.arctan2(*(rotation.rotation_matrix @ [1, 0, 0])[[1, 0]]))


def is_detection_class(nusc: NuScenes, ann_token: str) -> bool:
    return category_to_detection_name(nusc.get("sample_annotation", ann_token)["category_name"]) is not None


def test_structure(log: NuScenesLog) -> None:
    assert log.scene_names == (SCENE,)
    assert len(log) == 3
    assert log.sample_tokens()[0].startswith("sample_0")
    assert log.scene_location(SCENE) == "singapore-onenorth"


def test_structure_equals_devkit(subject: Subject) -> None:
    nusc, log = subject.nusc, subject.log
    assert log.scene_names == tuple(scene["name"] for scene in nusc.scene)
    for scene in nusc.scene:
        tokens, token = [], scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
        assert log.sample_tokens(scene["name"]) == tuple(tokens)
        assert log.scene_location(scene["name"]) == nusc.get("log", scene["log_token"])["location"]


def test_multisweep_equals_devkit(subject: Subject) -> None:
    nusc, log = subject.nusc, subject.log
    most_sweeps = 0
    for sample_token in log.sample_tokens():
        for nsweeps in (1, 5, 10):
            frame = log.frame(
                sample_token,
                FrameOptions(num_sweeps=nsweeps, load_images=False, load_map=False, load_gnss=False, load_boxes=False),
            )
            reference, times = LidarPointCloud.from_file_multisweep(
                nusc, nusc.get("sample", sample_token), "LIDAR_TOP", "LIDAR_TOP", nsweeps=nsweeps
            )
            ours = frame.lidar.points
            assert ours.shape == (reference.points.shape[1], 5)
            np.testing.assert_allclose(ours[:, :4], reference.points.T, atol=1e-4)
            np.testing.assert_allclose(ours[:, 4], times[0], atol=1e-6)
            # the devkit walks `prev` as far as the log goes: count its sweeps independently
            walked, sd = 0, nusc.get("sample", sample_token)["data"]["LIDAR_TOP"]
            while sd and walked < nsweeps:
                walked, sd = walked + 1, nusc.get("sample_data", sd)["prev"]
            assert frame.lidar.num_sweeps == walked
            most_sweeps = max(most_sweeps, walked)
    assert most_sweeps == 10  # some keyframe has a complete 10-sweep history, so the check is not vacuous


def test_first_keyframe_has_only_its_earlier_sweeps(log: NuScenesLog) -> None:
    # the tiny log starts 6 sweeps before its first keyframe: 7 in all even when 10 are asked for
    first = log.frame(log.sample_tokens()[0], NO_IMAGES_NO_MAP)
    assert first.lidar.num_sweeps == 7


def test_gt_boxes_equal_devkit_annotations(subject: Subject) -> None:
    nusc, log = subject.nusc, subject.log
    for sample_token in log.sample_tokens():
        boxes_global = log.gt_boxes_global(sample_token)
        # the frame's ego-frame boxes, moved back: upright boxes lose the ego's roll/pitch (0.01 rad
        # in the tiny log) on the way, so the yaw comes back to ~3e-4 rad and the centre exactly
        frame = log.frame(sample_token, FrameOptions(load_lidar=False, load_images=False, load_map=False))
        round_trip = frame.gt_boxes.transform(frame.global_from_ego)
        np.testing.assert_allclose(round_trip.center, boxes_global.center, atol=1e-9)
        assert np.abs(wrap_rad(round_trip.yaw_rad - boxes_global.yaw_rad)).max() < 1e-3
        # the devkit's own category -> detection class mapping decides which annotations count
        detected = [t for t in nusc.get("sample", sample_token)["anns"] if is_detection_class(nusc, t)]
        assert sorted(boxes_global.token) == sorted(detected)
        for n, ann_token in enumerate(boxes_global.token):
            record = nusc.get("sample_annotation", ann_token)
            np.testing.assert_allclose(boxes_global.center[n], record["translation"], atol=1e-9)
            np.testing.assert_allclose(boxes_global.size_wlh[n], record["size"], atol=0)
            assert abs(wrap_rad(boxes_global.yaw_rad[n] - devkit_yaw(Quaternion(record["rotation"])))) < 1e-9
            np.testing.assert_allclose(
                boxes_global.velocity_xy[n], nusc.box_velocity(ann_token)[:2], atol=1e-9, equal_nan=True
            )
            assert boxes_global.num_lidar_pts[n] == record["num_lidar_pts"]
            assert DETECTION_CLASSES[boxes_global.label[n]] == category_to_detection_name(record["category_name"])
            names = [nusc.get("attribute", t)["name"] for t in record["attribute_tokens"]]
            assert boxes_global.attribute[n] == (ATTRIBUTES.index(names[0]) if names else -1)
            assert boxes_global.instance_token[n] == record["instance_token"]


def test_gt_box_velocities_by_hand(log: NuScenesLog) -> None:
    for sample_token in log.sample_tokens():
        boxes_global = log.gt_boxes_global(sample_token)
        car = boxes_global[boxes_global.label == DETECTION_CLASSES.index("car")]
        np.testing.assert_allclose(car.velocity_xy, [[0.0, 5.0]], atol=1e-9)  # the car moves north at 5 m/s
    # a single-annotation instance has no velocity
    middle = log.gt_boxes_global(log.sample_tokens()[1])
    assert np.isnan(middle.velocity_xy[middle.label == DETECTION_CLASSES.index("pedestrian")]).all()


def test_gt_boxes_in_ego_frame_match_devkit_get_sample_data(subject: Subject) -> None:
    nusc, log = subject.nusc, subject.log
    for sample_token in log.sample_tokens():
        frame = log.frame(
            sample_token, FrameOptions(load_lidar=False, load_images=False, load_map=False, load_gnss=False)
        )
        # the devkit gives boxes in the lidar sensor frame with full 3D orientation; moved to the ego
        # frame they must equal ours (whose yaw is the heading projected on the ego's xy plane)
        lidar_sd = nusc.get("sample_data", nusc.get("sample", sample_token)["data"]["LIDAR_TOP"])
        calibration = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
        _, devkit_boxes, _ = nusc.get_sample_data(lidar_sd["token"])
        devkit_boxes = [box for box in devkit_boxes if category_to_detection_name(box.name) is not None]
        ours = frame.gt_boxes
        assert len(ours) == len(devkit_boxes) > 0
        for box in devkit_boxes:
            box.rotate(Quaternion(calibration["rotation"]))
            box.translate(np.array(calibration["translation"]))
            n = ours.token.index(box.token)
            np.testing.assert_allclose(ours.center[n], box.center, atol=1e-9)
            assert abs(wrap_rad(ours.yaw_rad[n] - devkit_yaw(box.orientation))) < 1e-9
            np.testing.assert_allclose(ours.size_wlh[n], box.wlh, atol=0)


def test_camera_chain_and_projection_equal_devkit(subject: Subject) -> None:
    nusc, log = subject.nusc, subject.log
    sample_token = log.sample_tokens()[1]
    frame = log.frame(sample_token, FrameOptions(num_sweeps=1, load_map=False))
    sample = nusc.get("sample", sample_token)
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    points_lidar = frame.lidar.points[:, :3].astype(np.float64)
    rig = frame.camera_rig()
    assert len(rig.names) == 6
    projection = rig.project_ego(frame.lidar.points_ego)
    for k, name in enumerate(rig.names):
        camera = frame.cameras[name]
        camera_sd = nusc.get("sample_data", camera.token)
        camera_calibration = nusc.get("calibrated_sensor", camera_sd["calibrated_sensor_token"])
        lidar_calibration = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
        camera_pose = nusc.get("ego_pose", camera_sd["ego_pose_token"])
        lidar_pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
        # the devkit's chain (as in map_pointcloud_to_image): lidar -> ego(t_lidar) -> global -> ego(t_cam) -> cam
        chain = [
            transform_matrix(
                camera_calibration["translation"], Quaternion(camera_calibration["rotation"]), inverse=True
            ),
            transform_matrix(camera_pose["translation"], Quaternion(camera_pose["rotation"]), inverse=True),
            transform_matrix(lidar_pose["translation"], Quaternion(lidar_pose["rotation"])),
            transform_matrix(lidar_calibration["translation"], Quaternion(lidar_calibration["rotation"])),
        ]
        devkit_cam_from_lidar = np.linalg.multi_dot(chain)
        ours = rig.camera_from_ego[k] @ frame.lidar.ego_from_lidar.matrix
        np.testing.assert_allclose(ours, devkit_cam_from_lidar, atol=1e-6)
        # pixels: the devkit's view_points with the sample_data's intrinsic
        points_cam = points_lidar @ devkit_cam_from_lidar[:3, :3].T + devkit_cam_from_lidar[:3, 3]
        in_front = points_cam[:, 2] > 0.1
        assert in_front.sum() > 10
        devkit_uv = view_points(
            points_cam[in_front].T, np.array(camera_calibration["camera_intrinsic"]), normalize=True
        )[:2].T
        np.testing.assert_allclose(projection.uv[k][in_front], devkit_uv, atol=1e-6)
        assert camera.image.shape == (camera_sd["height"], camera_sd["width"], 3)


def test_points_in_gt_boxes_project_inside_the_projected_boxes(synthetic: Subject) -> None:
    """Generated lidar hits inside a ground-truth box, projected into each camera through the frame's
    rig, land inside the projection of that box's corners (both in the ego frame at the lidar time)."""
    log = synthetic.log
    frame = log.frame(log.sample_tokens()[-1], FrameOptions(num_sweeps=1, load_map=False, load_gnss=False))
    points_ego = frame.lidar.points_ego
    boxes = frame.gt_boxes
    inside = boxes.points_in_boxes(points_ego)  # (M, N)
    rig = frame.camera_rig()
    corners = rig.project_ego(boxes.corners().reshape(-1, 3))  # (K, 8 N) per camera
    checked = 0
    for k in range(len(rig.names)):
        corner_uv = corners.uv[k].reshape(len(boxes), 8, 2)
        corner_depth = corners.depth[k].reshape(len(boxes), 8)
        for n in np.flatnonzero(inside.any(axis=0)):
            if not (corner_depth[n] > 0.5).all():
                continue
            hits = rig.project_ego(points_ego[inside[:, n]])
            visible = hits.in_image[k]
            if not visible.any():
                continue
            low, high = corner_uv[n].min(axis=0), corner_uv[n].max(axis=0)
            uv = hits.uv[k][visible]
            assert ((uv >= low - 1e-6) & (uv <= high + 1e-6)).all(), f"{rig.names[k]} box {boxes.token[n]}"
            checked += 1
    assert checked >= 10


def test_gnss_fixes_follow_the_ego_poses(subject: Subject) -> None:
    """Each fix, moved to the map frame, lies near the ego pose interpolated at its own timestamp: by
    the tiny log's construction within 3 ms of motion (3 cm); in the synthetic log within the
    generator's stated noise (white noise + a constant bias + a random-walk bias, 5 sigma)."""
    log = subject.log
    for scene_name in log.scene_names:
        gnss = log.gnss_log(scene_name)
        assert gnss is not None and gnss.location == log.scene_location(scene_name)
        track = log.pose_track(scene_name)
        fixes = [f for f in gnss.fixes if track.timestamps_us[0] <= f.timestamp_us <= track.timestamps_us[-1]]
        assert len(fixes) >= 5
        lla = np.array([[f.latitude_deg, f.longitude_deg, f.altitude_m] for f in fixes])
        xy_map = map_from_geodetic(gnss.location, lla)[:, :2]
        poses = [track.pose_at(f.timestamp_us) for f in fixes]
        errors_m = np.linalg.norm(xy_map - np.array([p.translation[:2] for p in poses]), axis=1)
        heading_errors = np.abs(
            wrap_rad(
                yaw_from_heading_deg(np.array([f.heading_deg for f in fixes])) - np.array([p.yaw_rad for p in poses])
            )
        )
        if subject.name == "tiny":
            assert errors_m.max() < 0.05 and heading_errors.max() < 0.01
        else:
            noise = GnssNoise()
            # the bias random walk has taken at most one step per 100 ms since the stream began
            first_us = min(int(gnss.timestamps_us[0]), int(track.timestamps_us[0]))
            steps = int(np.ceil((int(track.timestamps_us[-1]) - first_us) / 100_000)) + 1
            sigma_axis_m = np.sqrt(2 * noise.position_sigma_m**2 + steps * noise.bias_step_m**2)
            assert errors_m.max() < 5 * sigma_axis_m
            # heading noise grows as the car slows; the measured speed is itself noisy, so take it
            # 0.5 m/s (6 sigma of the speed noise) slower than measured
            speeds = np.array([f.speed_m_s for f in fixes])
            heading_sigma_rad = np.radians(noise.heading_sigma_deg * (1 + 6 / (1 + 4 * np.maximum(speeds - 0.5, 0))))
            assert (heading_errors < 5 * heading_sigma_rad).all()


def test_frame_gnss_is_the_nearest_fix(subject: Subject) -> None:
    log = subject.log
    for sample_token in log.sample_tokens():
        frame = log.frame(
            sample_token, FrameOptions(load_lidar=False, load_images=False, load_map=False, load_boxes=False)
        )
        fixes = read_gnss_json(gnss_path(subject.root, frame.scene_name)).fixes
        nearest = min(fixes, key=lambda f: abs(f.timestamp_us - frame.timestamp_us))
        skew_us = nearest.timestamp_us - frame.timestamp_us
        if abs(skew_us) <= SyncConfig().gnss_tolerance_us:
            assert frame.gnss == nearest and frame.skew_us["GNSS"] == skew_us
        else:
            assert frame.gnss is None and frame.missing["GNSS"].startswith("dropout")


def test_ego_poses_round_trip_through_lat_lon_and_match_devkit_export_poses(subject: Subject) -> None:
    nusc, log = subject.nusc, subject.log
    for scene in nusc.scene:
        location = log.scene_location(scene["name"])
        poses = get_poses(nusc, scene["token"])  # the devkit's: every LIDAR_TOP pose of the scene
        points_map = np.array([p["translation"] for p in poses])
        lla = geodetic_from_map(location, points_map)
        assert np.abs(map_from_geodetic(location, lla) - points_map).max() < 1e-3
        devkit = derive_latlon(location, poses)
        # metres on a local tangent plane are enough at this scale (a few km from the origin)
        dlat_m = np.radians(lla[:, 0] - [c["latitude"] for c in devkit]) * 6.378137e6
        dlon_m = np.radians(lla[:, 1] - [c["longitude"] for c in devkit]) * 6.378137e6 * np.cos(np.radians(lla[:, 0]))
        assert np.hypot(dlat_m, dlon_m).max() < 1.0


def test_map_crop_under_the_ego_is_drivable_and_agrees_with_devkit_mask(synthetic: Subject) -> None:
    nusc, log = synthetic.nusc, synthetic.log
    for sample_token in log.sample_tokens():
        frame = log.frame(
            sample_token, FrameOptions(load_lidar=False, load_images=False, load_gnss=False, load_boxes=False)
        )
        assert frame.map is not None and frame.map.location == frame.location
        under_ego = frame.map.crop_bev(frame.global_from_ego, (-1.0, 1.0), (-1.0, 1.0), 0.25)
        assert under_ego.shape == (8, 8) and under_ego.min() > 0.99
        # a 60 m x 40 m patch: cells fully inside/outside (bilinear 1 or 0) must agree with the devkit's
        # MapMask at the cell centre (its nearest pixel is one of the four we interpolate between)
        patch = frame.map.crop_bev(frame.global_from_ego, (-30.0, 30.0), (-20.0, 20.0), 0.5)
        x_ego = -30.0 + (np.arange(patch.shape[1]) + 0.5) * 0.5
        y_ego = -20.0 + (np.arange(patch.shape[0]) + 0.5) * 0.5
        xs, ys = np.meshgrid(x_ego, y_ego)  # (rows along y, columns along x), as the patch
        centres_map = frame.global_from_ego.apply(np.column_stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)]))
        scene = nusc.get("scene", nusc.get("sample", sample_token)["scene_token"])
        map_record = next(m for m in nusc.map if scene["log_token"] in m["log_tokens"])
        devkit = map_record["mask"].is_on_mask(centres_map[:, 0], centres_map[:, 1]).reshape(patch.shape)
        decided = (patch == 0.0) | (patch == 1.0)
        assert decided.mean() > 0.8 and 0.05 < devkit.mean() < 0.95  # both road and off-road in view
        assert ((patch[decided] == 1.0) == devkit[decided]).mean() > 0.995


def test_camera_without_keyframe_uses_nearest_image(log: NuScenesLog) -> None:
    frame = log.frame(log.sample_tokens()[1], FrameOptions(load_lidar=False, load_map=False))
    assert frame.skew_us["CAM_BACK_LEFT"] == 30_000
    tight = log.frame(
        log.sample_tokens()[1],
        FrameOptions(load_lidar=False, load_map=False, sync=SyncConfig(camera_tolerance_us=25_000)),
    )
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
    a = log.frame(token, FrameOptions(load_lidar=False, load_images=False, check_map=False))
    b = log.frame(log.sample_tokens()[1], FrameOptions(load_lidar=False, load_images=False, check_map=False))
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
