"""`avfusion replay` on a tiny synthetic log: outputs, evaluation, resume, drop, bad input, missing files.

The network is a small configuration with seeded random weights (a real forward pass, decode and
submission; only the weights are untrained), so the tests stay fast and do not depend on the
shipped weights.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.errors import InputError
from avfusion.eval.detection import evaluate_results_file
from avfusion.eval.submission import detection_records, validate_results
from avfusion.fusion.checkpoint import save_checkpoint
from avfusion.fusion.config import FusionConfig
from avfusion.fusion.model import BEVFusion
from avfusion.tools.cli import main
from avfusion.tools.replay.engine import run_replay
from avfusion.tools.replay.frames import FrameProcessor, parse_drop
from avfusion.tools.replay.ray_runner import shard_scenes
from avfusion.tools.replay.types import STAGES, PlannedFrame

VERSION = "v1.0-mini"
SPLIT = "synth_val"


def test_replay_split_writes_everything_and_scores(
    replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    outcome = run_replay(
        replay_request(replay_log, tmp_path / "run", small_checkpoint, split=SPLIT, save_bev=True, track="off"),
        progress=False,
    )
    log = NuScenesLog.open(replay_log, VERSION, split=SPLIT)
    tokens = log.sample_tokens()
    assert outcome.num_frames == len(tokens) == 2

    payload = json.loads(outcome.submission_path.read_text())
    validate_results(payload, tokens)  # every sample of the split, well-formed boxes
    assert list(payload["results"]) == list(tokens)  # plan (time) order
    assert payload["meta"]["use_lidar"] and payload["meta"]["use_camera"]

    # The records are exactly what the detector gives on the frames the reader builds.
    processor = FrameProcessor(replay_request(replay_log, tmp_path / "unused", small_checkpoint))
    frame = log.frame(tokens[1], processor.frame_options)
    expected = detection_records(tokens[1], processor.detector.detect(frame).boxes_global)
    assert payload["results"][tokens[1]] == json.loads(json.dumps(expected))

    with outcome.latency_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["sample_token"] for row in rows] == list(tokens)
    for row in rows:
        stages = [float(row[f"{name}_ms"]) for name in STAGES]
        assert all(value >= 0 for value in stages) and float(row["read_ms"]) > 0 and float(row["network_ms"]) > 0
        assert sum(stages) <= float(row["total_ms"]) + 1e-3  # the total is the whole loop, stages inside it

    health = [json.loads(line) for line in outcome.health_path.read_text().splitlines()]
    assert [h["sample_token"] for h in health] == list(tokens)
    assert all(h["lidar_points"] > 1000 and h["cameras"] == 6 and h["skew_us"]["LIDAR_TOP"] == 0 for h in health)

    summary = json.loads(outcome.summary_path.read_text())
    metrics = evaluate_results_file(outcome.submission_path, replay_log, VERSION, SPLIT).evaluation.metrics
    assert summary["evaluation"]["mAP"] == pytest.approx(metrics.mean_ap)
    assert summary["evaluation"]["NDS"] == pytest.approx(metrics.nd_score)
    assert json.loads(outcome.metrics_path.read_text())["nd_score"] == pytest.approx(metrics.nd_score)
    assert sorted(p.name for p in (tmp_path / "run" / "bev").iterdir()) == sorted(f"{t}.npz" for t in tokens)
    # An ungated model's BEV files hold the heatmap and its extent only (no gate map).
    with np.load(tmp_path / "run" / "bev" / f"{tokens[0]}.npz", allow_pickle=False) as kept:
        assert kept.files == ["heatmap", "x_range_m", "y_range_m"] and kept["heatmap"].dtype == np.float16
    assert not (tmp_path / "run" / "tracking_submission.json").exists()


def test_replay_tracks_by_default(replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request) -> None:
    from avfusion.eval.tracking import check_tracking_results
    from avfusion.tools.replay.tracking import track_results
    from avfusion.tools.replay.types import FrameResult

    outcome = run_replay(replay_request(replay_log, tmp_path / "run", small_checkpoint, split=SPLIT), progress=False)
    log = NuScenesLog.open(replay_log, VERSION, split=SPLIT)
    tokens = log.sample_tokens()
    tracking = json.loads((tmp_path / "run" / "tracking_submission.json").read_text())
    check_tracking_results(tracking, tokens)
    # The submissions are the offline tracker's output on the replayed frames' detections.
    results = [FrameResult.from_json(line) for line in (tmp_path / "run" / "progress.jsonl").read_text().splitlines()]
    tracked = track_results(results, [log.sample_timestamp_us(t) for t in tokens], "offline")
    assert json.loads(outcome.submission_path.read_text())["results"] == json.loads(
        json.dumps(dict(zip(tokens, tracked.detection_records, strict=False)))
    )
    assert tracking["results"] == json.loads(json.dumps(dict(zip(tokens, tracked.tracking_records, strict=False))))
    summary = json.loads(outcome.summary_path.read_text())
    assert summary["tracking"]["mode"] == "offline" and summary["tracking"]["cuts"] == []
    assert summary["tracking"]["tracks"] == tracked.num_tracks
    if any(tracking["results"].values()):
        assert 0.0 <= summary["evaluation"]["AMOTA"] <= 1.0 and summary["evaluation"]["IDS"] >= 0
        assert (tmp_path / "run" / "tracking_metrics" / "metrics_summary.json").is_file()
    else:  # the untrained test network may find nothing confident enough to track
        assert "no tracked boxes" in summary["evaluation"]["tracking_skipped"]


@pytest.mark.parametrize("fault", ["gap", "out_of_order"])
def test_keyframes_far_apart_or_out_of_order_cut_the_tracks_and_the_health_log_says_so(
    fault: str, replay_full_run, replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    from avfusion.tools.replay.engine import finish_run
    from avfusion.tools.replay.frames import open_log, plan_replay
    from avfusion.tools.replay.types import FrameResult

    req = replay_request(replay_log, tmp_path / "gap", small_checkpoint, evaluate=False)
    log = open_log(req)
    plan = plan_replay(log)
    done = {}
    for line in (replay_full_run.out_dir / "progress.jsonl").read_text().splitlines():
        result = FrameResult.from_json(line)
        done[result.position] = result
    first, second = plan.frames[0].sample_token, plan.frames[1].sample_token  # of the first scene
    # A gap: the second keyframe 5 s later than recorded. Out of order: it carries the first
    # keyframe's timestamp (not after it), and the third follows it within the tracker's gate.
    shifted_us = log.sample_timestamp_us(second) + 5_000_000 if fault == "gap" else log.sample_timestamp_us(first)

    class FaultyLog:
        def sample_timestamp_us(self, token: str) -> int:
            return shifted_us if token == second else log.sample_timestamp_us(token)

    (tmp_path / "gap").mkdir()
    outcome = finish_run(req, plan, done, 0, 1.0, FaultyLog())
    health = {h["sample_token"]: h for h in map(json.loads, outcome.health_path.read_text().splitlines())}
    assert health[second]["track_cut"].startswith("gap of " if fault == "gap" else "out of order: ")
    assert [h for t, h in health.items() if t != second and "track_cut" in h] == []
    cuts = outcome.summary["tracking"]["cuts"]
    assert [c["sample_token"] for c in cuts] == [second]


def test_resume_after_interrupt_gives_identical_submission(
    replay_full_run, replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    out = tmp_path / "interrupted"
    seen = []

    def interrupt_after_first(result) -> None:
        seen.append(result.sample_token)
        if len(seen) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_replay(replay_request(replay_log, out, small_checkpoint), progress=False, on_frame=interrupt_after_first)
    assert not (out / "submission.json").exists()
    # A crash in the middle of writing the next checkpoint line leaves a torn line behind.
    with (out / "progress.jsonl").open("a") as handle:
        handle.write('{"position": 1, "scene_name": "sce')
    with pytest.raises(InputError, match="--resume"):
        run_replay(replay_request(replay_log, out, small_checkpoint), progress=False)

    resumed = run_replay(replay_request(replay_log, out, small_checkpoint, resume=True), progress=False)
    assert resumed.frames_replayed_now == replay_full_run.num_frames - 1
    assert resumed.submission_path.read_bytes() == replay_full_run.submission_path.read_bytes()
    assert (out / "tracking_submission.json").read_bytes() == (
        replay_full_run.out_dir / "tracking_submission.json"
    ).read_bytes()
    assert resumed.health_path.read_bytes() == replay_full_run.health_path.read_bytes()
    assert len((out / "progress.jsonl").read_text().splitlines()) == replay_full_run.num_frames

    # Resuming a finished run changes nothing; resuming with other settings is refused.
    again = run_replay(replay_request(replay_log, out, small_checkpoint, resume=True), progress=False)
    assert again.frames_replayed_now == 0
    assert again.submission_path.read_bytes() == replay_full_run.submission_path.read_bytes()
    with pytest.raises(InputError, match="drop"):
        run_replay(
            replay_request(replay_log, out, small_checkpoint, resume=True, drop=frozenset({"map"})), progress=False
        )


def test_drop_cameras_reads_no_images_and_says_so(
    replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    outcome = run_replay(
        replay_request(
            replay_log, tmp_path / "run", small_checkpoint, split=SPLIT, drop=parse_drop("camera"), evaluate=False
        ),
        progress=False,
    )
    payload = json.loads(outcome.submission_path.read_text())
    assert payload["meta"]["use_camera"] is False and payload["meta"]["use_lidar"] is True
    health = [json.loads(line) for line in outcome.health_path.read_text().splitlines()]
    assert all(h["cameras"] == 0 and not h["missing"] for h in health)  # dropped on request is not "missing"
    assert parse_drop("CAM_FRONT, CAM_BACK") == frozenset({"CAM_FRONT", "CAM_BACK"})
    with pytest.raises(InputError, match="unknown sensor"):
        parse_drop("radar")


def test_missing_sensor_files_are_marked_and_replay_goes_on(
    replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(replay_log, broken)
    log = NuScenesLog.open(broken, VERSION, split=SPLIT)
    first, second = log.sample_tokens()
    tables = broken / VERSION
    sample_data = json.loads((tables / "sample_data.json").read_text())
    removed = {}
    for record in sample_data:
        if record["is_key_frame"] and record["sample_token"] == first and "CAM_FRONT/" in record["filename"]:
            removed["camera"] = record["filename"]
        if record["is_key_frame"] and record["sample_token"] == second and "LIDAR_TOP" in record["filename"]:
            removed["lidar"] = record["filename"]
    for filename in removed.values():
        (broken / filename).unlink()

    outcome = run_replay(replay_request(broken, tmp_path / "run", small_checkpoint, split=SPLIT), progress=False)
    health = {h["sample_token"]: h for h in map(json.loads, outcome.health_path.read_text().splitlines())}
    assert "file missing" in health[first]["missing"]["CAM_FRONT"] and health[first]["cameras"] == 5
    assert "file missing" in health[second]["missing"]["LIDAR_TOP"] and health[second]["lidar_points"] == 0
    counts = outcome.summary["sensor_health"]
    assert counts["frames_with_missing_sensors"] == 2
    assert counts["missing"]["CAM_FRONT: file missing"] == 1 and counts["missing"]["LIDAR_TOP: file missing"] == 1
    assert set(json.loads(outcome.submission_path.read_text())["results"]) == {first, second}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_replay_and_bad_input(
    replay_log: Path, small_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], small_fusion_config
) -> None:
    base = [
        "replay",
        "--dataroot",
        str(replay_log),
        "--version",
        VERSION,
        "--checkpoint",
        str(small_checkpoint),
        "--no-progress",
    ]
    code, out, _ = _cli([*base, "--split", SPLIT, "--out", str(tmp_path / "ok")], capsys)
    assert code == 0
    assert "evaluation: mAP" in out and "network" in out and "submission:" in out

    not_nuscenes = tmp_path / "not_nuscenes"
    not_nuscenes.mkdir()
    (not_nuscenes / "readme.txt").write_text("hello")
    cases = {
        "not a nuScenes-format dataroot": ["replay", "--dataroot", str(not_nuscenes), "--version", VERSION],
        "v9.9-none": ["replay", "--dataroot", str(replay_log), "--version", "v9.9-none"],
        "no_such_split": ["replay", "--dataroot", str(replay_log), "--version", VERSION, "--split", "no_such_split"],
        "scene-nope": ["replay", "--dataroot", str(replay_log), "--version", VERSION, "--scenes", "scene-nope"],
        "unknown sensor": [*base[:5], "--drop", "radar"],
    }
    for index, (expected, argv) in enumerate(cases.items()):
        code, _, err = _cli([*argv, "--no-progress", "--out", str(tmp_path / f"bad{index}")], capsys)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (expected, err)

    # A checkpoint whose weights belong to another configuration.
    other = tmp_path / "other.pt"
    torch.manual_seed(1)
    save_checkpoint(other, small_fusion_config, {"model": BEVFusion.from_config(FusionConfig()).state_dict()})
    code, _, err = _cli(
        [*base[:5], "--checkpoint", str(other), "--out", str(tmp_path / "bad_ckpt"), "--no-progress"], capsys
    )
    assert code == 2 and "do not fit" in err and str(other) in err


def test_shard_scenes_balances_whole_scenes() -> None:
    sizes = {"a": 5, "b": 3, "c": 3, "d": 2}
    frames, position = [], 0
    for scene, count in sizes.items():
        for _ in range(count):
            frames.append(PlannedFrame(position, scene, f"t{position}"))
            position += 1
    shards = shard_scenes(frames, 2)
    scenes_of = [sorted({f.scene_name for f in shard}) for shard in shards]
    assert scenes_of == [["a", "d"], ["b", "c"]]  # longest first to the emptiest: a | b, c, then d -> 7 vs 6
    assert all([f.position for f in shard] == sorted(f.position for f in shard) for shard in shards)
    assert sorted(f.position for shard in shards for f in shard) == list(range(len(frames)))
    assert len(shard_scenes(frames, 8)) == 4  # never more shards than scenes


@pytest.mark.heavy
def test_ray_local_cluster_gives_identical_submission(
    replay_full_run, replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    outcome = run_replay(
        replay_request(replay_log, tmp_path / "ray", small_checkpoint, ray_address="local", ray_workers=2),
        progress=False,
    )
    assert outcome.submission_path.read_bytes() == replay_full_run.submission_path.read_bytes()
    assert (tmp_path / "ray" / "tracking_submission.json").read_bytes() == (
        replay_full_run.out_dir / "tracking_submission.json"
    ).read_bytes()
    assert outcome.health_path.read_bytes() == replay_full_run.health_path.read_bytes()
    with outcome.latency_path.open() as handle:
        assert [row["sample_token"] for row in csv.DictReader(handle)] == list(
            json.loads(replay_full_run.submission_path.read_text())["results"]
        )
    assert np.isfinite(outcome.frames_per_s)


def test_a_frame_over_the_box_limit_keeps_boxes_and_track_ids_together(monkeypatch) -> None:
    """Bridged boxes can push a frame over the submission's limit; the least confident boxes go,
    and their track ids with them."""
    from avfusion.calibration.boxes import Boxes3D
    from avfusion.eval.submission import detection_records
    from avfusion.tools.replay import tracking as replay_tracking
    from avfusion.tools.replay.types import FrameResult

    monkeypatch.setattr(replay_tracking, "MAX_BOXES_PER_SAMPLE", 2)
    results, timestamps = [], []
    for k in range(4):
        # Car A moves along x and is missed in keyframe 2 (bridged there); B and C stand still.
        centers = [[10.0 + 2.0 * k, 0.0, 1.0], [0.0, 30.0, 1.0], [0.0, -30.0, 1.0]]
        scores = [0.5, 0.9, 0.8]
        keep = [0, 1, 2] if k != 2 else [1, 2]
        boxes = Boxes3D(
            center=np.array(centers)[keep],
            size_wlh=np.tile([1.9, 4.5, 1.6], (len(keep), 1)),
            yaw_rad=np.zeros(len(keep)),
            label=np.zeros(len(keep), dtype=np.int64),
            score=np.array(scores)[keep],
        )
        token = f"sample{k}"
        results.append(FrameResult(k, "scene-a", token, detection_records(token, boxes), {}, {}))
        timestamps.append(1_000_000 + 500_000 * k)
    tracked = replay_tracking.track_results(results, timestamps, "offline")
    for detections, tracks in zip(tracked.detection_records, tracked.tracking_records, strict=True):
        assert len(detections) <= 2 and len(tracks) <= len(detections)
        kept = {tuple(round(v, 6) for v in d["translation"]) for d in detections}
        assert all(tuple(round(v, 6) for v in t["translation"]) in kept for t in tracks)
