"""`avfusion dataset corrupt` and `replay --corrupt` on a tiny synthetic log: linked and written
files, the devkit reading the copy, refusal to overwrite, and frozen sensors found by the replay's
checks exactly where files repeat the previous keyframe's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from avfusion.datasets.index import CHANNELS
from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.sensors.types import CAMERA_NAMES, LIDAR_NAME
from avfusion.tools.cli import main
from avfusion.tools.replay.engine import run_replay
from avfusion.tools.replay.types import ReplayRequest

VERSION = "v1.0-mini"


@pytest.fixture(scope="module")
def log_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One scene of four keyframes.
    return make_synthetic_log(
        tmp_path_factory.mktemp("log") / "log", num_scenes=1, seconds=2.0, seed=5, image_scale=0.125, progress=False
    )


def keyframe_files(root: Path) -> list[dict[str, str]]:
    """Per keyframe in time order: channel -> file name relative to the dataroot."""
    log = NuScenesLog.open(root, VERSION)
    index = log.index
    position = {str(t): i for i, t in enumerate(index.sample_token)}
    out = []
    for token in log.sample_tokens():
        row = index.sample_keyframe[position[token]]
        out.append({name: str(index.sd_filename[row[CHANNELS.index(name)]]) for name in (LIDAR_NAME, *CAMERA_NAMES)})
    return out


def corrupt(log_root: Path, out: Path, kind: str, severity: int, *extra: str) -> int:
    return main(
        [
            "dataset",
            "corrupt",
            "--dataroot",
            str(log_root),
            "--version",
            VERSION,
            "--type",
            kind,
            "--severity",
            str(severity),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
    )


def test_beam_reduction_copy_links_the_rest_and_loads_in_the_devkit(log_root: Path, tmp_path: Path) -> None:
    from nuscenes.nuscenes import NuScenes

    out = tmp_path / "beams"
    assert corrupt(log_root, out, "beams_reducing", 2) == 0
    for files in keyframe_files(log_root):
        points = np.fromfile(out / files[LIDAR_NAME], dtype="<f4").reshape(-1, 5)
        assert len(points) and set(np.unique(points[:, 4]).astype(int)) <= {0, 4, 8, 12, 16, 20, 24, 28}
        image = out / files["CAM_FRONT"]
        assert os.stat(image).st_ino == os.stat(log_root / files["CAM_FRONT"]).st_ino  # linked, not copied
    table = out / VERSION / "sample.json"
    assert os.stat(table).st_ino == os.stat(log_root / VERSION / "sample.json").st_ino
    record = json.loads((out / "corruption.json").read_text())
    assert record["corruption"] == "beams_reducing:2" and record["files_written"] > 0
    nusc = NuScenes(version=VERSION, dataroot=str(out), verbose=False)
    assert len(nusc.sample) == len(keyframe_files(log_root))
    # Refused over an existing folder, replaced with --overwrite; same input, same bytes.
    before = (out / keyframe_files(log_root)[1][LIDAR_NAME]).read_bytes()
    assert corrupt(log_root, out, "beams_reducing", 2) == 2
    assert corrupt(log_root, out, "beams_reducing", 2, "--overwrite") == 0
    assert (out / keyframe_files(log_root)[1][LIDAR_NAME]).read_bytes() == before


def test_bad_corruption_arguments_are_one_line_errors(log_root: Path, tmp_path: Path, capsys) -> None:
    assert corrupt(log_root, tmp_path / "x", "rain", 1) == 2
    assert "unknown corruption type 'rain'" in capsys.readouterr().err
    assert corrupt(log_root, tmp_path / "x", "fog", 4) == 2
    assert "severity 4 is not one of [1, 2, 3]" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_replay_finds_every_repeated_file_and_nothing_else(
    log_root: Path, small_checkpoint: Path, tmp_path: Path
) -> None:
    stale = tmp_path / "stale"
    assert corrupt(log_root, stale, "temporal_misalignment", 3) == 0
    files = keyframe_files(log_root)
    # A sensor repeats when it delivers what it delivered at one of its last four keyframes (a
    # keyframe that got the previous one's data after that one got its own predecessor's is late,
    # not a repeat: nothing delivered before equals it).
    delivered = [{name: (stale / path).read_bytes() for name, path in keyframe.items()} for keyframe in files]
    repeated = [
        {name for name, data in now.items() if any(data == old[name] for old in delivered[max(0, k - 4) : k])}
        for k, now in enumerate(delivered)
    ]
    assert any(repeated), "severity 3 should repeat some sensor of three keyframes"

    def health(root: Path, out: Path) -> list[dict]:
        request = ReplayRequest(
            dataroot=root, version=VERSION, out_dir=out, checkpoint=small_checkpoint, evaluate=False, checks=True
        )
        outcome = run_replay(request, progress=False)
        return [json.loads(line) for line in outcome.health_path.read_text().splitlines()]

    for record, expected in zip(health(stale, tmp_path / "run_stale"), repeated, strict=False):
        assert set(record["frozen"]) == expected
        for name in expected - {LIDAR_NAME}:
            assert record["missing"][name].startswith("frozen")  # a frozen camera is dropped
        if LIDAR_NAME in expected:
            assert record["lidar_points"] > 0  # the lidar gave way to the fresh cloud before it
    assert all(record["frozen"] == {} for record in health(log_root, tmp_path / "run_clean"))


def test_replay_corrupt_enters_the_resume_identity(
    log_root: Path, small_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    args = [
        "replay",
        "--dataroot",
        str(log_root),
        "--version",
        VERSION,
        "--checkpoint",
        str(small_checkpoint),
        "--out",
        str(tmp_path / "run"),
        "--no-eval",
        "--no-progress",
    ]
    assert main([*args, "--corrupt", "points_reducing:2"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["corrupt"] == "points_reducing:2"
    assert main([*args, "--corrupt", "points_reducing:3", "--resume"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main([*args, "--corrupt", "hail:1"]) == 2
    assert "unknown corruption type 'hail'" in capsys.readouterr().err
