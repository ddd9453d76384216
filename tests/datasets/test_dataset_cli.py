"""`avfusion dataset info` / `dataset frame` on the tiny log, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avfusion.tools.cli import main

VERSION = "v1.0-tiny"


def test_info_prints_and_writes_json(tiny_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "info.json"
    assert main(["dataset", "info", "--dataroot", str(tiny_log), "--version", VERSION, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "scenes     1   samples 3   annotations 5" in text
    summary = json.loads(out.read_text())
    back_left = [s for s in summary["camera_sync"] if s["camera"] == "CAM_BACK_LEFT"][0]
    assert back_left == {"camera": "CAM_BACK_LEFT", "keyframes": 2, "without_keyframe_image": 1,
                         "median_abs_skew_ms": 0.0, "max_abs_skew_ms": 0.0, "over_tolerance": 0}
    front_left = [s for s in summary["camera_sync"] if s["camera"] == "CAM_FRONT_LEFT"][0]
    assert front_left["max_abs_skew_ms"] == 43.0
    assert summary["sample_data_per_channel"]["LIDAR_TOP"] == 27


def test_frame_prints_summary(tiny_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = "sample_1-" + "x" * 23
    assert main(["dataset", "frame", "--dataroot", str(tiny_log), "--version", VERSION, "--sample", token,
                 "--image-scale", "0.5"]) == 0
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
