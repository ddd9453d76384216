"""`avfusion bench ablation` end to end on a tiny log: staged training of the three models, every row
scored with the nuScenes metrics, the table written as JSON."""

from __future__ import annotations

import json
import math

import pytest

from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.fusion.config import tiny_for_tests
from avfusion.tools.cli import main


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    return make_synthetic_log(
        tmp_path_factory.mktemp("ablation") / "log", num_scenes=1, seconds=1.5, seed=47, progress=False
    )


def test_staged_ablation_trains_warm_started_models_and_scores_every_row(tiny_log, tmp_path) -> None:
    config_path = tmp_path / "tiny.json"
    config_path.write_text(json.dumps(tiny_for_tests().to_dict()))
    out = tmp_path / "runs"
    report = tmp_path / "ablation.json"
    code = main(
        [
            "bench",
            "ablation",
            "--dataroot",
            str(tiny_log),
            "--train-split",
            "all",
            "--val-split",
            "all",
            "--out",
            str(out),
            "--config",
            str(config_path),
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--staged",
            "--threads",
            "1",
            "--json",
            str(report),
        ]
    )
    assert code == 0
    # Stage one: the single-modality models from scratch; stage two: the three from warm starts.
    for name in ("lidar_only_stage1", "camera_only_stage1"):
        assert (out / name / "weights.pt").is_file() and not (out / name / "warm_start.json").exists()
    starts = {
        name: json.loads((out / name / "warm_start.json").read_text())
        for name in ("fused", "lidar_only", "camera_only")
    }
    assert starts["fused"]["trunk"] == str(out / "lidar_only_stage1" / "weights.pt")
    assert starts["fused"]["branches"]["camera"] == str(out / "camera_only_stage1" / "weights.pt")
    assert starts["fused"]["zeroed_fuser_inputs"] == ["camera"]
    assert starts["camera_only"]["trunk"] == str(out / "camera_only_stage1" / "weights.pt")

    facts = json.loads(report.read_text())["facts"]
    assert len(facts["load_average_1_5_15_min"]) == 3  # the host state beside the per-frame timings
    table = facts["table"]
    assert set(table) == {
        "fused",
        "lidar_only",
        "camera_only",
        "fused -camera",
        "fused -lidar",
        "fused -CAM_FRONT",
        "fused -map",
        "fused gnss_noise",
    }
    for name, row in table.items():
        assert 0.0 <= row["NDS"] <= 1.0 and 0.0 <= row["mAP"] <= 1.0, name
        assert all(math.isfinite(row[k]) for k in ("mATE", "mASE", "mAOE", "mAVE", "mAAE")), name
