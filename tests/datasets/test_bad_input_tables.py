"""Bad table rows: a one-line error naming the table file, the record's token and the field, raised
when the index is built; a non-finite ego pose, or a sensor record whose file or image size is
unusable, makes its sensors missing instead."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.datasets.tables import check_table
from avfusion.errors import FileFormatError

VERSION = "v1.0-tiny"
NO_MAP = FrameOptions(load_map=False)


def edit_table(root: Path, name: str, edit) -> None:
    path = root / VERSION / f"{name}.json"
    records = json.loads(path.read_text())
    edit(records)
    path.write_text(json.dumps(records))


@pytest.mark.parametrize(
    ("table", "field", "value", "expected"),
    [
        # A field the devkit reads while indexing: it would fail with a bare KeyError.
        ("sample_data", "calibrated_sensor_token", None, "field 'calibrated_sensor_token' is missing"),
        ("instance", "category_token", None, "field 'category_token' is missing"),
        # Fields only avfusion reads.
        (
            "sample_annotation",
            "size",
            ["1.5", 4.0, 1.6],
            r"field 'size' must be a list of 3 finite numbers > 0, found \['1.5'",
        ),
        ("sample_annotation", "size", [1.5, -4.0, 1.6], "field 'size' must be a list of 3 finite numbers > 0"),
        (
            "sample_annotation",
            "translation",
            [1.0, math.nan, 0.0],
            "field 'translation' must be a list of 3 finite numbers",
        ),
        ("sample_annotation", "attribute_tokens", "attr", "field 'attribute_tokens' must be a list of strings"),
        ("calibrated_sensor", "rotation", [1.0, 0.0, 0.0], "field 'rotation' must be a list of 4 finite numbers"),
        ("sample", "timestamp", "1600000000000000", "field 'timestamp' must be a finite number of microseconds"),
        ("map", "log_tokens", None, "field 'log_tokens' is missing"),
    ],
)
def test_bad_row_is_one_line_error_naming_table_token_field(tiny_log_copy, table, field, value, expected) -> None:
    root = tiny_log_copy()
    names: list[str] = []

    def spoil(records: list[dict]) -> None:
        record = records[-1]
        names.append(record["token"])
        if value is None:
            del record[field]
        else:
            record[field] = value

    edit_table(root, table, spoil)
    with pytest.raises(FileFormatError) as caught:
        NuScenesLog.open(root, VERSION)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{table}.json: token {names[0]}: " in message
    assert re.search(expected, message), message


def test_check_table_names_the_record_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match=r"scene.json: record 1: field 'token' is missing"):
        check_table(
            tmp_path / "scene.json",
            "scene",
            [{"token": "a", "name": "n", "log_token": "l", "first_sample_token": "s"}, {}],
        )
    with pytest.raises(FileFormatError, match=r"scene.json: record 0: expected an object, found list"):
        check_table(tmp_path / "scene.json", "scene", [[]])
    with pytest.raises(FileFormatError, match=r"expected a JSON list of scene records, found dict"):
        check_table(tmp_path / "scene.json", "scene", {})


def test_non_finite_ego_pose_makes_its_sensors_missing(tiny_log_copy, tiny_log: Path) -> None:
    root = tiny_log_copy()
    log = NuScenesLog.open(root, VERSION)
    token = log.sample_tokens()[1]
    frame = log.frame(token, NO_MAP)
    lidar_token, front_token = frame.lidar.token, frame.cameras["CAM_FRONT"].token
    sample_data = {r["token"]: r for r in json.loads((root / VERSION / "sample_data.json").read_text())}
    bad_poses = {sample_data[lidar_token]["ego_pose_token"], sample_data[front_token]["ego_pose_token"]}

    def spoil(records: list[dict]) -> None:
        for record in records:
            if record["token"] in bad_poses:
                record["translation"][0] = math.nan if len(bad_poses) > 1 else math.inf
                record["rotation"] = [math.inf, 0.0, 0.0, 0.0]

    edit_table(root, "ego_pose", spoil)
    log = NuScenesLog.open(root, VERSION)  # no error: the tables are well formed
    spoilt = log.frame(token, NO_MAP)
    if sample_data[lidar_token]["ego_pose_token"] == sample_data[front_token]["ego_pose_token"]:
        pytest.fail("the fixture's lidar and camera share an ego pose")
    assert spoilt.lidar is None and spoilt.missing["LIDAR_TOP"].startswith(
        f"bad ego pose: the ego_pose of sample_data {lidar_token}"
    )
    assert "CAM_FRONT" not in spoilt.cameras and spoilt.missing["CAM_FRONT"].startswith("bad ego pose")
    assert len(spoilt.cameras) == 5
    # The frame's pose comes from its neighbours; the ground truth is still in the ego frame.
    assert spoilt.global_from_ego.allclose(frame.global_from_ego, atol=0.5)
    assert spoilt.gt_boxes is not None and len(spoilt.gt_boxes) == len(frame.gt_boxes)
    # Every other frame reads as before, and the pose track skips the bad poses.
    later = log.sample_tokens()[2]
    long_chain = FrameOptions(load_map=False, num_sweeps=40)  # reaches back past the spoilt keyframe
    assert (
        log.frame(later, long_chain)
        .missing["LIDAR_TOP_SWEEPS"]
        .startswith("past sweep bad ego pose: 1 past sweep(s) left out")
    )
    for other in log.sample_tokens():
        if other != token:
            assert "LIDAR_TOP" not in log.frame(other, NO_MAP).missing
    assert (
        len(log.pose_track(spoilt.scene_name))
        == len(NuScenesLog.open(tiny_log, VERSION).pose_track(spoilt.scene_name)) - 2
    )


def test_bad_sensor_record_makes_its_sensor_missing(tiny_log_copy) -> None:
    root = tiny_log_copy()
    log = NuScenesLog.open(root, VERSION)
    token = log.sample_tokens()[1]
    frame = log.frame(token, NO_MAP)
    lidar_token, front_token = frame.lidar.token, frame.cameras["CAM_FRONT"].token

    def spoil(records: list[dict]) -> None:
        for record in records:
            if record["token"] == lidar_token:
                record["filename"] = 12
            elif record["token"] == front_token:
                record["width"] = "1600"

    edit_table(root, "sample_data", spoil)
    log = NuScenesLog.open(root, VERSION)  # no error: the records still link
    spoilt = log.frame(token, NO_MAP)
    assert spoilt.lidar is None
    assert spoilt.missing["LIDAR_TOP"] == (
        f"bad record: sample_data {lidar_token} field 'filename' must be a string, found 12"
    )
    assert "CAM_FRONT" not in spoilt.cameras
    assert spoilt.missing["CAM_FRONT"].startswith(f"bad record: sample_data {front_token} field 'width'")
    assert len(spoilt.cameras) == 5
    assert spoilt.global_from_ego.allclose(frame.global_from_ego, atol=1e-12)  # the pose is still good
    for other in log.sample_tokens():
        if other != token:
            assert "LIDAR_TOP" not in log.frame(other, NO_MAP).missing
