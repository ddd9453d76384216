"""The same input gives the same bits: box angles through libm's scalar routines whatever the
memory layout, and the detector on one frame, many times over, with the heap in other states."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import SE3, libm_elementwise, quaternion_from_yaw, yaw_from_quaternion
from avfusion.eval.submission import detection_records
from avfusion.fusion.checkpoint import save_checkpoint
from avfusion.fusion.config import tiny_for_tests
from avfusion.fusion.inference import Detector
from avfusion.fusion.model import BEVFusion


def test_libm_elementwise_is_the_scalar_routine_on_any_layout() -> None:
    rng = np.random.default_rng(3)
    matrices = rng.normal(size=(257, 3, 3))
    y, x = matrices[:, 1, 0], matrices[:, 0, 0]  # strided views, as taken from rotation matrices
    expected = np.array([math.atan2(a, b) for a, b in zip(y.tolist(), x.tolist(), strict=True)])
    for offset in range(8):  # the same values at other alignments, contiguous and strided
        buffer = np.zeros(2 * 257 + offset + 2)
        shifted_y, shifted_x = buffer[offset : offset + 2 * 257 : 2], buffer[offset + 1 : offset + 2 * 257 + 1 : 2]
        shifted_y[:], shifted_x[:] = y, x
        for a, b in ((shifted_y, shifted_x), (np.ascontiguousarray(shifted_y), np.ascontiguousarray(shifted_x))):
            assert libm_elementwise(math.atan2, a, b).tobytes() == expected.tobytes()
    assert libm_elementwise(math.atan2, 1.0, np.array([1.0, -1.0])).shape == (2,)
    assert isinstance(yaw_from_quaternion([1.0, 0.0, 0.0, 0.0]), float)
    np.testing.assert_allclose(yaw_from_quaternion(quaternion_from_yaw(np.array([0.3, -2.0]))), [0.3, -2.0])


def test_box_transform_is_bit_stable_across_layouts() -> None:
    rng = np.random.default_rng(5)
    n = 300
    pose = SE3.from_quaternion([0.9, 0.01, -0.02, 0.43] / np.linalg.norm([0.9, 0.01, -0.02, 0.43]), [100.0, -50.0, 1.0])
    base = dict(
        center=rng.normal(size=(n, 3)) * 30,
        size_wlh=rng.uniform(0.5, 4, (n, 3)),
        velocity_xy=rng.normal(size=(n, 2)),
        label=rng.integers(0, 10, n),
    )
    yaw_columns = rng.uniform(-np.pi, np.pi, (n, 3))
    reference = Boxes3D(yaw_rad=yaw_columns[:, 1].copy(), **base).transform(pose)
    strided = Boxes3D(yaw_rad=yaw_columns[:, 1], **base).transform(pose)
    for name in ("center", "yaw_rad", "velocity_xy"):
        assert getattr(strided, name).tobytes() == getattr(reference, name).tobytes(), name


def test_detecting_the_same_frame_many_times_gives_the_same_bits(frame_factory, tmp_path) -> None:
    torch.manual_seed(0)
    config = tiny_for_tests()
    save_checkpoint(tmp_path / "w.pt", config, {"model": BEVFusion.from_config(config).state_dict()})
    detector = Detector.load(tmp_path / "w.pt")
    frame = frame_factory(2, num_boxes=8)
    first = json.dumps(detection_records(frame.sample_token, detector.detect(frame).boxes_global))
    assert len(json.loads(first)) > 0
    rng = np.random.default_rng(0)
    kept = []
    for repeat in range(10):
        # Other heap states between the calls: arrays of odd sizes shift where the next ones land.
        kept.append(rng.normal(size=int(rng.integers(1, 5000))))
        again = json.dumps(detection_records(frame.sample_token, detector.detect(frame).boxes_global))
        assert again == first, f"detection {repeat + 2} differs from the first"
