"""`avfusion bench realism` on a tiny synthetic log, and bench realdata's per-class figures by hand."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from avfusion.calibration.boxes import Boxes3D
from avfusion.tools.bench.realdata import mode_figures
from avfusion.tools.cli import main


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from avfusion.datasets.synthetic import make_synthetic_log

    return make_synthetic_log(
        tmp_path_factory.mktemp("realism") / "log",
        num_scenes=1,
        seconds=1.0,
        seed=21,
        image_scale=0.1,
        render_scale=0.5,
        progress=False,
    )


@pytest.mark.realdata
def test_bench_realism_writes_table_json_and_png(
    realdata_root: Path, tiny_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(
        [
            "bench",
            "realism",
            "--dataroot",
            str(tiny_log),
            "--max-frames",
            "2",
            "--realdata",
            str(realdata_root.parents[1]),
            "--json",
            str(out_json),
            "--png",
            str(out_png),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "intensity" in printed and "box points distance" in printed
    figures = json.loads(out_json.read_text())["facts"]["figures"]
    assert figures["real"]["sweeps"] == 1 and figures["synthetic"]["sweeps"] == 2
    assert figures["real"]["returns_per_sweep"] == 29492.0  # 34,688 firings, 5,196 without a return
    for name in ("ring", "range", "height", "intensity", "share"):
        assert 0.0 < figures["distances"][name]["jensen_shannon"] < 1.0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_realism_names_a_folder_without_the_fixture(
    tiny_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["bench", "realism", "--dataroot", str(tiny_log), "--max-frames", "2", "--realdata", str(tmp_path)]) == 2
    )
    assert "--realdata" in capsys.readouterr().err


def test_realdata_figures_by_hand() -> None:
    gt = Boxes3D(
        center=[[10, 0, 0], [20, 0, 0], [30, 0, 0]],
        size_wlh=[[1, 1, 1]] * 3,
        yaw_rad=[0, 0, 0],
        label=[0, 5, 5],
        num_lidar_pts=[40, 6, 0],
    )
    predicted = Boxes3D(
        center=[[11, 0, 0], [20.5, 0, 0], [25, 0, 0], [30.2, 0, 0], [5, 5, 0]],
        size_wlh=[[1, 1, 1]] * 5,
        yaw_rad=[0] * 5,
        label=[0, 5, 5, 5, 8],
        score=[0.5, 0.2, 0.9, 0.35, 0.4],
    )
    metrics = SimpleNamespace(
        mean_ap=0.25, nd_score=0.3, mean_dist_aps={"car": 0.5, "pedestrian": 0.1, "traffic_cone": 0.0}
    )
    figures = mode_figures(predicted, gt, metrics)
    total, car, pedestrian = (figures["classes"][n] for n in ("total", "car", "pedestrian"))
    # The car is found at 1 m. At >= 0.3 the pedestrian at 20 m is not (the 0.9 box is 5 m off);
    # the 0.35 box takes the pedestrian at 30 m, which has no lidar points (not counted as found
    # among GT with points, but a correct prediction); at any score the 0.2 box finds the one at 20 m.
    assert (total["gt_with_points"], total["matched_at_0.3"], total["matched_any_score"]) == (2, 1, 2)
    assert total["predictions_at_0.3"] == 4 and total["precision_at_0.3"] == 0.5
    assert car == {
        "gt_with_points": 1,
        "matched_at_0.3": 1,
        "matched_any_score": 1,
        "predictions_at_0.3": 1,
        "precision_at_0.3": 1.0,
        "ap": 0.5,
    }
    assert pedestrian["predictions_at_0.3"] == 2 and pedestrian["precision_at_0.3"] == 0.5
    assert figures["mAP"] == 0.25 and figures["NDS"] == 0.3 and figures["max_score"] == 0.9
