"""The real keyframe as a nuScenes-format dataroot, and finding ../shared/realdata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.datasets.real_fixture import (
    FIXTURE_SUBDIR,
    INFO_NAME,
    REAL_SPLIT,
    REALDATA_ENV,
    find_realdata,
    write_fixture_dataroot,
)
from avfusion.errors import InputError
from avfusion.sensors.types import MAP_NAME

pytestmark = pytest.mark.realdata


def test_dataroot_loads_in_the_devkit_and_keeps_the_published_truck(realdata_root: Path, tmp_path: Path) -> None:
    from nuscenes.nuscenes import NuScenes

    dataroot = write_fixture_dataroot(realdata_root.parents[1], tmp_path / "real")
    nusc = NuScenes(version="v1.0-mini", dataroot=str(dataroot), verbose=False)
    assert len(nusc.sample) == 1 and len(nusc.scene) == 1 and nusc.scene[0]["name"] == "scene-0061"
    assert len(nusc.sample_annotation) == 68
    # v1.0-mini annotation 83d881a6b3d94ef3a3bc3b585cc514f8 (the truck of the fixture's MANIFEST).
    trucks = [a for a in nusc.sample_annotation if a["category_name"] == "vehicle.truck"]
    truck = min(trucks, key=lambda a: np.hypot(a["translation"][0] - 409.989, a["translation"][1] - 1164.099))
    np.testing.assert_allclose(truck["translation"], [409.989, 1164.099, 1.623], atol=0.07)
    np.testing.assert_allclose(truck["size"], [2.877, 10.201, 3.595], atol=1e-3)
    assert truck["num_lidar_pts"] == 495
    # Every sensor file the tables name is there, and our reader builds the frame from them.
    for record in nusc.sample_data:
        assert (dataroot / record["filename"]).is_file()
    log = NuScenesLog.open(dataroot, "v1.0-mini", split=REAL_SPLIT, use_cache=False)
    frame = log.frame(log.sample_tokens()[0], FrameOptions(num_sweeps=1, image_scale=0.125, load_gnss=False))
    raw = np.fromfile(next((dataroot / "samples" / "LIDAR_TOP").iterdir()), np.float32).reshape(-1, 5)
    beyond_roof = ~((np.abs(raw[:, 0]) < 1.0) & (np.abs(raw[:, 1]) < 1.0))  # the reader's min_distance_m
    assert len(raw) == 34_688 and len(frame.lidar) == beyond_roof.sum()
    assert len(frame.cameras) == 6 and len(frame.gt_boxes) == 68
    assert frame.map is None and frame.missing[MAP_NAME].startswith("no drivable area")  # the 1 x 1 placeholder


def test_dataroot_is_deterministic_and_refuses_a_full_folder(realdata_root: Path, tmp_path: Path) -> None:
    a = write_fixture_dataroot(realdata_root.parents[1], tmp_path / "a")
    b = write_fixture_dataroot(realdata_root.parents[1], tmp_path / "b")
    for path in sorted((a / "v1.0-mini").iterdir()):
        assert path.read_bytes() == (b / "v1.0-mini" / path.name).read_bytes(), path.name
    with pytest.raises(InputError, match="not an empty directory"):
        write_fixture_dataroot(realdata_root.parents[1], a)


def test_find_realdata_from_a_working_directory_below_the_shared_folder(
    realdata_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REALDATA_ENV, raising=False)
    shared = tmp_path / "shared" / "realdata"
    (shared / FIXTURE_SUBDIR).mkdir(parents=True)
    (shared / FIXTURE_SUBDIR / INFO_NAME).write_text("{}")
    clone = tmp_path / "clone" / "sub"
    clone.mkdir(parents=True)
    assert find_realdata(start=clone) == shared  # a fresh clone beside shared/: ../shared/realdata
    monkeypatch.setenv(REALDATA_ENV, str(realdata_root.parents[1]))
    assert find_realdata(start=clone) == realdata_root.parents[1]  # the environment wins
    with pytest.raises(InputError, match="--realdata"):
        find_realdata(tmp_path / "nowhere")
    monkeypatch.setenv(REALDATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match=REALDATA_ENV):
        find_realdata(start=clone)
