"""`avfusion eval`: the report files, the devkit's JSON layout, and exit code 2 on bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from avfusion.eval.config import default_config
from avfusion.eval.detection import evaluate_results_file
from avfusion.eval.devkit_bridge import run_devkit_eval
from avfusion.tools.cli import main

VERSION = "v1.0-mini"
SPLIT = "synth_val"


@pytest.fixture(scope="module")
def results_file(minimal_log, predictions_for, tmp_path_factory):
    path = tmp_path_factory.mktemp("results") / "results.json"
    path.write_text(json.dumps(predictions_for(minimal_log, seed=21)))
    return path


def test_eval_command_writes_the_report(minimal_log, results_file, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "eval",
            "--results",
            str(results_file),
            "--dataroot",
            str(minimal_log),
            "--version",
            VERSION,
            "--split",
            SPLIT,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mAP:" in printed and "NDS:" in printed and "30+ m" in printed and "traffic_cone" in printed

    summary = json.loads((out / "metrics_summary.json").read_text())
    devkit = run_devkit_eval(minimal_log, VERSION, SPLIT, results_file, default_config(), tmp_path / "devkit")
    assert set(summary) == set(devkit.summary) | {"meta"}
    assert summary["label_aps"].keys() == devkit.summary["label_aps"].keys()
    assert summary["nd_score"] == pytest.approx(devkit.summary["nd_score"], abs=1e-9)
    assert f"{summary['nd_score']:.4f}" in printed
    details = json.loads((out / "metrics_details.json").read_text())
    assert set(details) == set(devkit.details)
    bands = json.loads((out / "metrics_distance_bands.json").read_text())
    assert list(bands) == ["0-20 m", "20-30 m", "30+ m"]
    # The bands partition the evaluated boxes: their ground-truth counts add up to the whole.

    whole = evaluate_results_file(results_file, minimal_log, VERSION, SPLIT).evaluation
    assert sum(sum(band["num_gt"].values()) for band in bands.values()) == sum(whole.num_gt.values()) > 0
    for name in ("summary", "car_pr", "car_tp", "barrier_tp", "dist_pr_2.0", "distance_bands"):
        with Image.open(out / "plots" / f"{name}.png") as image:
            assert image.width > 300 and image.height > 300
    assert not list(out.rglob("*.tmp"))


def test_eval_command_bad_results_exit_2_with_one_line(minimal_log, results_file, tmp_path, capsys):
    payload = json.loads(results_file.read_text())
    token = next(t for t, boxes in payload["results"].items() if boxes)
    payload["results"][token][0]["detection_name"] = "dragon"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(payload))
    code = main(
        [
            "eval",
            "--results",
            str(bad),
            "--dataroot",
            str(minimal_log),
            "--version",
            VERSION,
            "--split",
            SPLIT,
            "--out",
            str(tmp_path / "out"),
            "--no-plots",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"sample {token} box 0 field detection_name" in err and "dragon" in err
    assert not (tmp_path / "out").exists()


def test_eval_command_unknown_split_exit_2(minimal_log, results_file, tmp_path, capsys):
    code = main(
        [
            "eval",
            "--results",
            str(results_file),
            "--dataroot",
            str(minimal_log),
            "--version",
            VERSION,
            "--split",
            "nonexistent",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "unknown split 'nonexistent'" in capsys.readouterr().err
