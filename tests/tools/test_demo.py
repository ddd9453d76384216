"""`avfusion demo`: from nothing to a scored run and pictures, with the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from avfusion.tools import demo_cmd
from avfusion.tools.cli import main


def _run_demo(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["demo", *argv])
    return code, capsys.readouterr().out


def test_demo_small_world_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # The same steps as the real demo on a smaller world (two 1-second scenes) to stay fast.
    monkeypatch.setenv("AVFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo_cmd, "DEMO_SECONDS", 1.0)
    monkeypatch.setattr(demo_cmd, "DEMO_IMAGE_SCALE", 0.125)
    code, out = _run_demo(["--pictures", "1"], capsys)
    assert code == 0, out
    demo_root = tmp_path / "cache" / "demo"
    assert f"Everything is under {demo_root}" in out
    (run_dir,) = (demo_root / "runs").iterdir()
    submission = json.loads((run_dir / "submission.json").read_text())
    assert len(submission["results"]) == 2  # the validation scene's two keyframes
    assert sum(len(boxes) for boxes in submission["results"].values()) > 0  # the shipped weights detect
    metrics = json.loads((run_dir / "metrics_summary.json").read_text())
    assert 0.0 <= metrics["nd_score"] <= 1.0 and "mean_ap" in metrics
    assert "evaluation: mAP" in out
    pictures = sorted((run_dir / "pictures").glob("*.png"))
    assert len(pictures) == 1 and cv2.imread(str(pictures[0])).shape[0] >= 800
    for shown in ("submission", "metrics", "pictures", "avfusion viz"):
        assert shown in out

    # The log is made once: a second call finds it.
    stamp = (demo_root / "log" / "v1.0-mini" / "sample.json").stat().st_mtime_ns
    assert demo_cmd.ensure_demo_log(demo_cmd.DemoPaths(demo_root)) == demo_root / "log"
    assert "already made" in capsys.readouterr().out
    assert (demo_root / "log" / "v1.0-mini" / "sample.json").stat().st_mtime_ns == stamp


def test_demo_rejects_bad_arguments(tmp_path: Path, capsys) -> None:
    code = main(["demo", "--cache", str(tmp_path), "--pictures", "-1"])
    assert code == 2 and "--pictures" in capsys.readouterr().err
    code = main(["demo", "--cache", str(tmp_path), "--checkpoint", str(tmp_path / "missing.pt")])
    assert code == 2 and "missing.pt" in capsys.readouterr().err


@pytest.mark.heavy
def test_demo_as_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The README's command with its real sizes (a couple of minutes on 2 cores)."""
    monkeypatch.setenv("AVFUSION_CACHE", str(tmp_path / "cache"))
    code, out = _run_demo([], capsys)
    assert code == 0, out
    (run_dir,) = (tmp_path / "cache" / "demo" / "runs").iterdir()
    assert len(sorted((run_dir / "pictures").glob("*.png"))) == demo_cmd.DEMO_PICTURES
    assert json.loads((run_dir / "metrics_summary.json").read_text())["mean_ap"] > 0.0
