"""`avfusion dataset info` / `dataset frame` on the tiny log and on a generated log, and their
one-line errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from avfusion.tools.cli import main

VERSION = "v1.0-tiny"


def test_info_prints_and_writes_json(tiny_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "info.json"
    assert main(["dataset", "info", "--dataroot", str(tiny_log), "--version", VERSION, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scenes     1   samples 3   annotations 5" in text
    summary = json.loads(out.read_text())
    back_left = next(s for s in summary["camera_sync"] if s["camera"] == "CAM_BACK_LEFT")
    assert back_left == {
        "camera": "CAM_BACK_LEFT",
        "keyframes": 2,
        "without_keyframe_image": 1,
        "median_abs_skew_ms": 0.0,
        "max_abs_skew_ms": 0.0,
        "over_tolerance": 0,
    }
    front_left = next(s for s in summary["camera_sync"] if s["camera"] == "CAM_FRONT_LEFT")
    assert front_left["max_abs_skew_ms"] == 43.0
    assert summary["sample_data_per_channel"]["LIDAR_TOP"] == 27


def test_frame_prints_summary(tiny_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = "sample_1-" + "x" * 23
    assert (
        main(
            [
                "dataset",
                "frame",
                "--dataroot",
                str(tiny_log),
                "--version",
                VERSION,
                "--sample",
                token,
                "--image-scale",
                "0.5",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "LIDAR_TOP       2798 points from 10 sweep(s)" in text
    assert "CAM_BACK_LEFT   80x45  skew +30.0 ms" in text
    assert "GNSS            MISSING: dropout" in text


def test_errors_are_one_line_exit_2(tiny_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "frame", "--dataroot", str(tiny_log), "--version", VERSION, "--sample", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "sample token 'nope' not found" in err
    assert main(["dataset", "info", "--dataroot", str(tmp_path / "none")]) == 2
    assert "dataroot not found" in capsys.readouterr().err


# ---- on a generated log: every printed number against the JSON tables ---------------------------

SYNTHETIC_VERSION = "v1.0-mini"


def load_tables(root: Path) -> dict[str, list[dict]]:
    names = (
        "scene",
        "sample",
        "sample_data",
        "sample_annotation",
        "calibrated_sensor",
        "sensor",
        "instance",
        "category",
        "log",
    )
    return {name: json.loads((root / SYNTHETIC_VERSION / f"{name}.json").read_text()) for name in names}


def channel_of(tables: dict[str, list[dict]]) -> dict[str, str]:
    """sample_data token -> channel name."""
    sensor = {r["token"]: r["channel"] for r in tables["sensor"]}
    calibration = {r["token"]: sensor[r["sensor_token"]] for r in tables["calibrated_sensor"]}
    return {r["token"]: calibration[r["calibrated_sensor_token"]] for r in tables["sample_data"]}


def keyframes_by_sample(tables: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """sample token -> channel -> its keyframe sample_data record."""
    channels = channel_of(tables)
    result: dict[str, dict[str, dict]] = {r["token"]: {} for r in tables["sample"]}
    for record in tables["sample_data"]:
        if record["is_key_frame"]:
            result[record["sample_token"]][channels[record["token"]]] = record
    return result


def test_info_on_a_generated_log_matches_its_tables(
    synthetic_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "info.json"
    assert (
        main(["dataset", "info", "--dataroot", str(synthetic_log), "--version", SYNTHETIC_VERSION, "--json", str(out)])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    tables = load_tables(synthetic_log)
    samples = tables["sample"]
    assert (
        f"scenes     {len(tables['scene'])}   samples {len(samples)}   "
        f"annotations {len(tables['sample_annotation'])}" in lines
    )
    stamps = [r["timestamp"] for r in samples]
    span_s = (max(stamps) - min(stamps)) * 1e-6
    assert f"time       {min(stamps)} .. {max(stamps)} us, {span_s:.1f} s of scenes" in lines
    assert f"locations  {', '.join(sorted({r['location'] for r in tables['log']}))}" in lines
    counts = Counter(channel_of(tables).values())
    sensors_line = next(line for line in lines if line.startswith("sensors"))
    assert {name: int(n) for name, n in (part.split() for part in sensors_line[len("sensors") :].split(","))} == counts
    # camera sync: |camera keyframe timestamp - lidar keyframe timestamp| per sample, from the tables
    keyframes = keyframes_by_sample(tables)
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  CAM_")}
    summary = {s["camera"]: s for s in json.loads(out.read_text())["camera_sync"]}
    assert sorted(rows) == sorted(summary) == sorted(c for c in counts if c.startswith("CAM_"))
    for camera, row in rows.items():
        skew_ms = np.array(
            [
                abs(k[camera]["timestamp"] - k["LIDAR_TOP"]["timestamp"]) / 1000.0
                for k in keyframes.values()
                if camera in k
            ]
        )
        assert row[1:] == [
            str(len(skew_ms)),
            str(len(samples) - len(skew_ms)),
            f"{np.median(skew_ms):.1f}",
            f"{skew_ms.max():.1f}",
            str(int((skew_ms > 75.0).sum())),
        ]
        assert summary[camera]["median_abs_skew_ms"] == pytest.approx(np.median(skew_ms), abs=1e-9)
        assert summary[camera]["max_abs_skew_ms"] == pytest.approx(skew_ms.max(), abs=1e-9)
        assert 0.0 <= skew_ms.max() <= 50.5  # cameras fire while the lidar sweeps them


def test_frame_on_a_generated_log_matches_its_tables(synthetic_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.data_classes import LidarPointCloud

    tables = load_tables(synthetic_log)
    sample = tables["sample"][-1]
    assert (
        main(
            [
                "dataset",
                "frame",
                "--dataroot",
                str(synthetic_log),
                "--version",
                SYNTHETIC_VERSION,
                "--sample",
                sample["token"],
                "--image-scale",
                "0.5",
            ]
        )
        == 0
    )
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    keyframe = keyframes_by_sample(tables)[sample["token"]]
    lidar_us = keyframe["LIDAR_TOP"]["timestamp"]
    # the devkit's 10-sweep cloud has as many points as ours
    nusc = NuScenes(version=SYNTHETIC_VERSION, dataroot=str(synthetic_log), verbose=False)
    cloud, times = LidarPointCloud.from_file_multisweep(
        nusc, nusc.get("sample", sample["token"]), "LIDAR_TOP", "LIDAR_TOP", nsweeps=10
    )
    assert lines["LIDAR_TOP"].startswith(
        f"LIDAR_TOP       {cloud.nbr_points()} points from {len(np.unique(times))} sweep(s)"
    )
    for camera, record in keyframe.items():
        if camera == "LIDAR_TOP":
            continue
        # half-scale decoding rounds odd sizes up (225 rows -> 113)
        size = f"{(record['width'] + 1) // 2}x{(record['height'] + 1) // 2}"
        assert lines[camera].startswith(f"{camera:<16}{size}  skew {(record['timestamp'] - lidar_us) / 1000:+.1f} ms")
    fixes = json.loads((synthetic_log / "gnss" / f"{tables['scene'][0]['name']}.json").read_text())["fixes"]
    nearest = min(fixes, key=lambda f: abs(f["timestamp"] - lidar_us))
    if abs(nearest["timestamp"] - lidar_us) <= 100_000:
        assert lines["GNSS"].startswith(f"GNSS            {nearest['latitude']:.7f}, {nearest['longitude']:.7f}")
        assert lines["GNSS"].endswith(f"skew {(nearest['timestamp'] - lidar_us) / 1000:+.1f} ms")
    else:
        assert lines["GNSS"].startswith("GNSS            MISSING: dropout")
    category = {r["token"]: r["name"] for r in tables["category"]}
    instance_category = {r["token"]: category[r["category_token"]] for r in tables["instance"]}
    detected = [
        a
        for a in tables["sample_annotation"]
        if a["sample_token"] == sample["token"]
        and category_to_detection_name(instance_category[a["instance_token"]]) is not None
    ]
    assert lines["GT"].startswith(f"GT boxes        {len(detected)}: ")
