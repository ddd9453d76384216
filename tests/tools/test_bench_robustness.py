"""`bench robustness` pieces: RA and mRA arithmetic, the ground-truth subset, models, the heatmap,
the cameras-dropped reference run."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.calibration.boxes import Boxes3D
from avfusion.errors import InputError
from avfusion.eval.boxset import EvalBoxSet
from avfusion.eval.data import BikeRacks, GroundTruth
from avfusion.fusion.config import cpu_default
from avfusion.sensors.corruptions import MULTICORRUPT_TYPES
from avfusion.tools.bench.robustness import (
    CAMERA_DROPPED,
    CLEAN,
    chosen_runs,
    detect_runs,
    ground_truth_subset,
    heatmap_png,
    parse_models,
    resistance,
)


def test_ra_is_the_mean_ratio_over_severities_and_mra_the_mean_over_the_ten_types() -> None:
    runs = {"clean": {"clean": {"NDS": 0.5, "mAP": 0.4}}}
    for k, name in enumerate(MULTICORRUPT_TYPES):
        runs[name] = {str(s): {"NDS": 0.5 * (1.0 - 0.01 * k * s), "mAP": 0.0} for s in (1, 2, 3)}
    runs["map_removal"] = {"3": {"NDS": 0.25, "mAP": 0.0}}
    result = resistance(runs)
    for k, name in enumerate(MULTICORRUPT_TYPES):
        assert result["RA"][name] == pytest.approx(1.0 - 0.02 * k)
    assert result["mRA"] == pytest.approx(np.mean([1.0 - 0.02 * k for k in range(10)]))
    assert result["RA"]["map_removal"] == pytest.approx(0.5)  # reported, not in the mRA
    assert result["worst_type"] == list(MULTICORRUPT_TYPES)[-1]
    partial = resistance({"clean": runs["clean"], "fog": runs["fog"]})
    assert partial["mRA"] is None and partial["mRA_of_types_run"] == pytest.approx(partial["RA"]["fog"])


def _boxes(tokens: tuple[str, ...], sample_index: list[int]) -> EvalBoxSet:
    n = len(sample_index)
    return EvalBoxSet(
        tokens,
        np.array(sample_index, np.int64),
        np.arange(3 * n, dtype=float).reshape(n, 3),
        np.ones((n, 3)),
        np.tile([1.0, 0, 0, 0], (n, 1)),
        np.zeros((n, 2)),
        np.zeros(n, np.int64),
        np.full(n, -1.0),
        np.full(n, -1, np.int64),
        np.ones(n, np.int64),
    )


def test_ground_truth_subset_keeps_the_chosen_samples_boxes() -> None:
    tokens = ("a", "b", "c")
    racks = BikeRacks(np.array([0, 2], np.int64), np.zeros((2, 3)), np.ones((2, 3)), np.tile([1.0, 0, 0, 0], (2, 1)))
    truth = GroundTruth("root", "v", "split", False, _boxes(tokens, [0, 1, 1, 2]), np.arange(9.0).reshape(3, 3), racks)
    subset = ground_truth_subset(truth, ["c", "b"])
    assert subset.sample_tokens == ("b", "c")
    np.testing.assert_array_equal(subset.boxes.sample_index, [0, 0, 1])
    np.testing.assert_array_equal(subset.boxes.translation, truth.boxes.translation[1:])
    np.testing.assert_array_equal(subset.ego_translation, truth.ego_translation[1:])
    np.testing.assert_array_equal(subset.bike_racks.sample_index, [1])
    with pytest.raises(InputError, match="not in split"):
        ground_truth_subset(truth, ["z"])


def test_models_and_runs_bad_input(tmp_path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert parse_models([f"other={weights}"]) == {"default": None, "other": weights}
    with pytest.raises(InputError, match="expected NAME=PATH"):
        parse_models(["nonsense"])
    with pytest.raises(InputError, match="not found"):
        parse_models([f"x={tmp_path / 'missing.pt'}"])
    with pytest.raises(InputError, match="twice"):
        parse_models([f"default={weights}"])
    assert len(chosen_runs(None, None)) == 12 * 3
    assert [str(c) for c in chosen_runs(["fog"], [2])] == ["fog:2"]


def test_heatmap_is_a_png() -> None:
    data = heatmap_png({"default": {"fog": 0.9, "snow": 0.8}, "other": {"fog": 0.7}}, ["fog", "snow"], "t")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


class _RecordingDetector:
    """Stands in for `Detector`: remembers which sensors each call dropped, finds nothing."""

    def __init__(self, model=None, config=None, device="cpu", voxel_backend="numba") -> None:
        self.model, self.config, self.device, self.voxel_backend = model, config or cpu_default(), device, voxel_backend
        self.drops: list[frozenset[str]] = []

    def detect(self, frame, drop=frozenset()):
        self.drops.append(frozenset(drop))
        return type("Detections", (), {"boxes_global": Boxes3D.empty()})()


def test_every_frame_is_also_detected_with_the_cameras_dropped() -> None:
    frames = [type("Frame", (), {"sample_token": f"s{i}", "scene_name": "scene-0"})() for i in range(3)]
    detector = _RecordingDetector()
    runs = detect_runs({"default": detector}, frames, 3, [], seed=0)
    assert set(runs.records["default"]) == {CLEAN, CAMERA_DROPPED}
    assert list(runs.records["default"][CAMERA_DROPPED]) == ["s0", "s1", "s2"]
    assert detector.drops.count(frozenset({"camera"})) == 3 and detector.drops.count(frozenset()) == 3
