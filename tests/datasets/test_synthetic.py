"""The synthetic log generator: tables against nuScenes semantics and the devkit, maps, GNSS, splits,
determinism and bad input."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from avfusion.calibration.geodesy import map_from_geodetic, yaw_from_heading_deg
from avfusion.calibration.se3 import yaw_from_quaternion
from avfusion.datasets.synthetic import MARKER_NAME, make_synthetic_log, split_of
from avfusion.datasets.synthetic import generate as generate_module
from avfusion.datasets.synthetic.layout import build_location_layout, drivable_mask
from avfusion.datasets.synthetic.rig import CAMERAS, camera_offset_us
from avfusion.datasets.synthetic.roads import LoopRoad, perimeter, point_at
from avfusion.errors import InputError
from avfusion.labels import DETECTION_CLASSES, category_to_detection_class

VERSION = "v1.0-mini"
TABLES = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)


@pytest.fixture(scope="module")
def annotations_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 scenes x 4 s, tables only."""
    return make_synthetic_log(
        tmp_path_factory.mktemp("synthetic") / "log",
        num_scenes=2,
        seconds=4.0,
        seed=7,
        annotations_only=True,
        progress=False,
    )


def _tables(root: Path) -> dict[str, list[dict]]:
    return {name: json.loads((root / VERSION / f"{name}.json").read_text()) for name in TABLES}


# ---- hand-worked geometry ----------------------------------------------------------------------


def test_rounded_rectangle_perimeter_and_start_point_by_hand() -> None:
    # 4 (80 - 25) + 4 (60 - 25) + 2 pi 25 = 220 + 140 + 157.0796...
    assert perimeter(80.0, 60.0, 25.0) == pytest.approx(360.0 + 50.0 * np.pi)
    xy, heading = point_at(np.array([0.0, 110.0]), 80.0, 60.0, 25.0)
    np.testing.assert_allclose(xy[0], [-55.0, -60.0])  # start of the bottom straight, heading east
    np.testing.assert_allclose(xy[1], [55.0, -60.0])  # its end, 2 (a - r) = 110 m later
    np.testing.assert_allclose(heading, [0.0, 0.0], atol=1e-12)
    # a quarter circle later: the east end of the first corner, heading north
    xy, heading = point_at(np.array([110.0 + 12.5 * np.pi]), 80.0, 60.0, 25.0)
    np.testing.assert_allclose(xy[0], [80.0, -35.0], atol=1e-9)
    assert heading[0] == pytest.approx(np.pi / 2)


def test_loop_offsets_and_arcs_round_trip() -> None:
    loop = LoopRoad((100.0, 200.0), 80.0, 60.0, 25.0)
    for offset in (-12.0, 0.0, 8.5):
        s = np.linspace(0.0, float(loop.perimeter_at(offset)), 500, endpoint=False)
        xy, _ = loop.pose_at(s, offset)
        np.testing.assert_allclose(loop.offset_of(xy), offset, atol=1e-9)
        np.testing.assert_allclose(loop.arc_of(xy, offset), s, atol=1e-7)


def test_camera_fires_when_the_beam_crosses_it() -> None:
    # The sweep starts pointing at 108 deg and turns clockwise over 50 ms: CAM_FRONT (0 deg) is
    # reached after 108/360 of it, 15 ms, i.e. 35 ms before the lidar timestamp (as in nuScenes).
    offsets = {camera.channel: camera_offset_us(camera) for camera in CAMERAS}
    assert offsets["CAM_FRONT"] == -35_000
    assert offsets["CAM_BACK"] == -10_000  # (108 - 180) mod 360 = 288 deg -> 40 ms into the sweep
    assert all(-50_000 <= value <= 0 for value in offsets.values())


def test_split_rule() -> None:
    assert [split_of(i, 6) for i in range(6)] == [
        "synth_train",
        "synth_val",
        "synth_train",
        "synth_train",
        "synth_train",
        "synth_val",
    ]
    assert split_of(0, 1) == "synth_val"


# ---- the tables ----------------------------------------------------------------------------------


def test_all_tables_and_nuscenes_links(annotations_log: Path) -> None:
    tables = _tables(annotations_log)
    assert all(tables[name] for name in TABLES)
    assert len(tables["category"]) == 23 and len(tables["attribute"]) == 8 and len(tables["visibility"]) == 4
    tokens = {name: {r["token"] for r in rows} for name, rows in tables.items()}
    assert all(len(tokens[name]) == len(tables[name]) for name in TABLES)  # unique tokens
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens["sample"])
    # ego pose per sample_data, same token and timestamp
    poses = {r["token"]: r for r in tables["ego_pose"]}
    for record in tables["sample_data"]:
        assert record["ego_pose_token"] == record["token"]
        assert poses[record["token"]]["timestamp"] == record["timestamp"]
        assert record["calibrated_sensor_token"] in tokens["calibrated_sensor"]
    # every log is listed by a map record of its location
    listed = {log for record in tables["map"] for log in record["log_tokens"]}
    assert listed == tokens["log"]
    for record in tables["map"]:
        assert (annotations_log / record["filename"]).is_file()


def test_timing_chains_and_keyframes(annotations_log: Path) -> None:
    tables = _tables(annotations_log)
    sensors = {r["token"]: r["channel"] for r in tables["sensor"]}
    channel_of = {r["token"]: sensors[r["sensor_token"]] for r in tables["calibrated_sensor"]}
    samples = {r["token"]: r for r in tables["sample"]}
    by_token = {r["token"]: r for r in tables["sample_data"]}
    heads = [r for r in tables["sample_data"] if r["prev"] == ""]
    assert len(heads) == 2 * 7  # one chain per sensor per scene
    for head in heads:
        channel = channel_of[head["calibrated_sensor_token"]]
        chain = [head]
        while chain[-1]["next"]:
            chain.append(by_token[chain[-1]["next"]])
        times = np.array([r["timestamp"] for r in chain])
        gaps = np.diff(times)
        if channel == "LIDAR_TOP":
            assert len(chain) == 71  # 8 keyframes, 10 sweeps apart
            assert np.all(np.abs(gaps - 50_000) <= 600)  # 20 Hz with trigger jitter
            keys = [r for r in chain if r["is_key_frame"]]
            assert len(keys) == 8 and all(samples[r["sample_token"]]["timestamp"] == r["timestamp"] for r in keys)
            for r in chain:  # sweeps belong to the next sample in time
                assert samples[r["sample_token"]]["timestamp"] >= r["timestamp"]
        else:
            assert len(chain) == 8 and all(r["is_key_frame"] for r in chain)
            for r in chain:
                skew = r["timestamp"] - samples[r["sample_token"]]["timestamp"]
                assert -50_500 <= skew <= 500
                assert (r["width"], r["height"]) == (1600, 900)


def test_instances_and_annotation_chains(annotations_log: Path) -> None:
    tables = _tables(annotations_log)
    annotations = {r["token"]: r for r in tables["sample_annotation"]}
    for instance in tables["instance"]:
        chain = [annotations[instance["first_annotation_token"]]]
        while chain[-1]["next"]:
            chain.append(annotations[chain[-1]["next"]])
        assert chain[-1]["token"] == instance["last_annotation_token"]
        assert len(chain) == instance["nbr_annotations"]
        assert all(r["instance_token"] == instance["token"] for r in chain)
    attributes = {r["token"]: r["name"] for r in tables["attribute"]}
    categories = {r["token"]: r["name"] for r in tables["category"]}
    instance_category = {r["token"]: categories[r["category_token"]] for r in tables["instance"]}
    for record in tables["sample_annotation"]:
        name = category_to_detection_class(instance_category[record["instance_token"]])
        assert len(record["attribute_tokens"]) == (0 if name in ("traffic_cone", "barrier") else 1)
        for token in record["attribute_tokens"]:
            assert attributes[token].split(".")[0] in ("vehicle", "pedestrian", "cycle")
        assert record["visibility_token"] in "1234"
        assert record["translation"][2] == pytest.approx(record["size"][2] / 2)  # standing on the ground
    levels = Counter(r["visibility_token"] for r in tables["sample_annotation"])
    assert set(levels) == set("1234"), levels  # occlusion happens


def test_every_class_with_lidar_points_in_every_scene(annotations_log: Path) -> None:
    tables = _tables(annotations_log)
    categories = {r["token"]: r["name"] for r in tables["category"]}
    instance_class = {
        r["token"]: category_to_detection_class(categories[r["category_token"]]) for r in tables["instance"]
    }
    scene_of_sample = {r["token"]: r["scene_token"] for r in tables["sample"]}
    seen: dict[str, set[str]] = defaultdict(set)
    for record in tables["sample_annotation"]:
        if record["num_lidar_pts"] > 0:
            seen[scene_of_sample[record["sample_token"]]].add(instance_class[record["instance_token"]])
    assert len(seen) == 2
    for classes in seen.values():
        assert classes >= set(DETECTION_CLASSES)


def test_devkit_loads_and_scores_ground_truth_perfectly(annotations_log: Path) -> None:
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=VERSION, dataroot=str(annotations_log), verbose=False)
    splits = json.loads((annotations_log / VERSION / "splits.json").read_text())
    assert sorted(splits) == ["synth_all", "synth_train", "synth_val"]
    assert len(splits["synth_train"]) == 1 and len(splits["synth_val"]) == 1
    assert splits["synth_all"] == splits["synth_train"] + splits["synth_val"]  # scene 0 trains, scene 1 validates
    val = set(splits["synth_val"])
    results = {}
    for sample in nusc.sample:
        if nusc.get("scene", sample["scene_token"])["name"] not in val:
            continue
        boxes = []
        for token in sample["anns"]:
            record = nusc.get("sample_annotation", token)
            name = category_to_detection_class(record["category_name"])
            if name is None or record["num_lidar_pts"] == 0:  # the devkit drops such GT, not predictions
                continue
            velocity = nusc.box_velocity(token)[:2]
            attribute = (
                nusc.get("attribute", record["attribute_tokens"][0])["name"] if record["attribute_tokens"] else ""
            )
            boxes.append(
                {
                    "sample_token": sample["token"],
                    "translation": record["translation"],
                    "size": record["size"],
                    "rotation": record["rotation"],
                    "velocity": [0.0, 0.0] if np.any(np.isnan(velocity)) else velocity.tolist(),
                    "detection_name": name,
                    "detection_score": 1.0,
                    "attribute_name": attribute,
                }
            )
        results[sample["token"]] = boxes
    result_path = annotations_log.parent / "gt_results.json"
    result_path.write_text(
        json.dumps(
            {
                "meta": {
                    "use_camera": False,
                    "use_lidar": True,
                    "use_radar": False,
                    "use_map": False,
                    "use_external": False,
                },
                "results": results,
            }
        )
    )
    evaluation = DetectionEval(
        nusc,
        config_factory("detection_cvpr_2019"),
        str(result_path),
        "synth_val",
        str(annotations_log.parent / "eval"),
        verbose=False,
    )
    metrics, _ = evaluation.evaluate()
    summary = metrics.serialize()
    assert summary["mean_ap"] == pytest.approx(1.0)
    assert summary["nd_score"] > 0.99
    assert all(value == pytest.approx(1.0) for value in summary["mean_dist_aps"].values())


def test_moving_and_parked_agree_with_devkit_velocities(annotations_log: Path) -> None:
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=VERSION, dataroot=str(annotations_log), verbose=False)
    speeds: dict[str, list[float]] = defaultdict(list)
    for record in nusc.sample_annotation:
        if not record["attribute_tokens"] or not (record["prev"] and record["next"]):
            continue
        attribute = nusc.get("attribute", record["attribute_tokens"][0])["name"]
        speeds[attribute].append(float(np.linalg.norm(nusc.box_velocity(record["token"])[:2])))
    assert max(speeds["vehicle.parked"]) < 1e-6
    assert np.median(speeds["vehicle.moving"]) > 2.0
    assert np.median(speeds["pedestrian.moving"]) == pytest.approx(1.25, abs=0.5)
    assert max(speeds["pedestrian.standing"] + speeds["pedestrian.sitting_lying_down"]) < 0.35


def test_ego_and_traffic_on_the_drivable_map(annotations_log: Path) -> None:
    tables = _tables(annotations_log)
    logs = {r["token"]: r for r in tables["log"]}
    import cv2

    for record in tables["map"]:
        mask = cv2.imread(str(annotations_log / record["filename"]), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}
        location = logs[record["log_tokens"][0]]["location"]
        np.testing.assert_array_equal(mask, drivable_mask(build_location_layout(7, location)))
    # every ego pose lies on the drivable area (nuScenes convention: row 0 = north edge)
    map_of_log = {log: r["filename"] for r in tables["map"] for log in r["log_tokens"]}
    scene_log = {r["token"]: r["log_token"] for r in tables["scene"]}
    sample_scene = {r["token"]: r["scene_token"] for r in tables["sample"]}
    poses = {r["token"]: r for r in tables["ego_pose"]}
    masks = {name: cv2.imread(str(annotations_log / name), cv2.IMREAD_UNCHANGED) for name in set(map_of_log.values())}
    for record in tables["sample_data"]:
        mask = masks[map_of_log[scene_log[sample_scene[record["sample_token"]]]]]
        x, y, _ = poses[record["token"]]["translation"]
        assert mask[mask.shape[0] - 1 - int(y / 0.1), int(x / 0.1)] == 255


def test_gnss_follows_the_ego_path(annotations_log: Path) -> None:
    tables = _tables(annotations_log)
    logs = {r["token"]: r for r in tables["log"]}
    lidar_poses = sorted(
        (poses["timestamp"], poses)
        for poses in tables["ego_pose"]
        if poses["token"] in {r["token"] for r in tables["sample_data"] if r["fileformat"] == "pcd"}
    )
    for scene in tables["scene"]:
        gnss = json.loads((annotations_log / "gnss" / f"{scene['name']}.json").read_text())
        assert gnss["scene_token"] == scene["token"] and gnss["rate_hz"] == 10
        assert gnss["location"] == logs[scene["log_token"]]["location"]
        fixes = gnss["fixes"]
        times = np.array([f["timestamp"] for f in fixes])
        assert np.all(np.diff(times) % 100_000 == 0) and len(fixes) >= 20  # 10 Hz grid, some dropouts allowed
        lla = np.array([[f["latitude"], f["longitude"], f["altitude"]] for f in fixes])
        xy = map_from_geodetic(gnss["location"], lla)[:, :2]
        pose_times = np.array([t for t, _ in lidar_poses])
        pose_xy = np.array([p["translation"][:2] for _, p in lidar_poses])
        pose_yaw = np.array([yaw_from_quaternion(p["rotation"]) for _, p in lidar_poses])
        inside = (times >= pose_times.min()) & (times <= pose_times.max())
        scene_times = times[inside]
        nearest = np.abs(pose_times[None, :] - scene_times[:, None]).argmin(axis=1)
        close = np.abs(pose_times[nearest] - scene_times) < 30_000
        errors = np.linalg.norm(xy[inside][close] - pose_xy[nearest[close]], axis=1)
        assert np.median(errors) < 3.0 and errors.max() < 8.0
        heading_error = np.angle(
            np.exp(
                1j
                * (
                    yaw_from_heading_deg(np.array([f["heading"] for f in fixes]))[inside][close]
                    - pose_yaw[nearest[close]]
                )
            )
        )
        assert np.median(np.abs(heading_error)) < np.radians(5)


# ---- determinism and bad input ----------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_world(tmp_path: Path) -> None:
    options = dict(num_scenes=1, seconds=0.5, image_scale=0.1, render_scale=0.5, progress=False)
    first = _tree(make_synthetic_log(tmp_path / "a", seed=3, **options))
    second = _tree(make_synthetic_log(tmp_path / "b", seed=3, **options))
    assert first.keys() == second.keys()
    assert any(name.endswith(".jpg") for name in first) and any(name.endswith(".pcd.bin") for name in first)
    assert all(first[name] == second[name] for name in first)
    third = _tree(make_synthetic_log(tmp_path / "c", seed=4, **options))
    sample_tokens = lambda tree: {r["token"] for r in json.loads(tree[f"{VERSION}/sample.json"])}  # noqa: E731
    assert not sample_tokens(first) & sample_tokens(third)
    boxes = lambda tree: [r["translation"] for r in json.loads(tree[f"{VERSION}/sample_annotation.json"])]  # noqa: E731
    assert boxes(first) != boxes(third)


def test_rerun_replaces_a_previous_log(tmp_path: Path) -> None:
    out = tmp_path / "log"
    make_synthetic_log(out, num_scenes=1, seconds=0.5, seed=1, annotations_only=True, progress=False)
    make_synthetic_log(out, num_scenes=2, seconds=0.5, seed=2, annotations_only=True, progress=False)
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["seed"] == 2 and marker["num_scenes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(num_scenes=0, seconds=2.0), "number of scenes"),
        (dict(num_scenes=1, seconds=-1.0), "seconds"),
        (dict(num_scenes=1, seconds=0.0), "seconds"),
        (dict(num_scenes=1, seconds=2.0, image_scale=0.0), "image scale"),
    ],
)
def test_bad_arguments(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_synthetic_log(tmp_path / "log", seed=0, progress=False, **options)
    assert not (tmp_path / "log").exists()


def test_refuses_a_directory_that_is_not_a_synthetic_log(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a previous synthetic log"):
        make_synthetic_log(tmp_path / "data", num_scenes=1, seconds=1.0, seed=0, progress=False)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "simulate_fixes", interrupt)  # the last step of each scene
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_log(tmp_path / "log", num_scenes=1, seconds=0.5, seed=0, annotations_only=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_annotations_only_writes_the_same_tables_without_sensor_files(tmp_path: Path) -> None:
    options = dict(num_scenes=1, seconds=1.0, seed=9, image_scale=0.1, progress=False)
    full = _tree(make_synthetic_log(tmp_path / "full", **options))
    light = _tree(make_synthetic_log(tmp_path / "light", annotations_only=True, **options))
    tables = [name for name in full if name.startswith(VERSION)]
    assert len(tables) == 14  # 13 tables + splits.json
    assert all(full[name] == light[name] for name in tables)
    assert not any(name.endswith((".jpg", ".pcd.bin")) for name in light)
    assert {name for name in full if name.endswith((".png", ".json"))} - {MARKER_NAME} == set(light) - {MARKER_NAME}
