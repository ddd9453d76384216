"""`avfusion train`'s frame source: the log's keyframes as a sequence, optionally kept in memory."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.datasets.frames import open_frames
from avfusion.datasets.nuscenes_log import FrameOptions
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.fusion.config import tiny_for_tests


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    return make_synthetic_log(
        tmp_path_factory.mktemp("train") / "log", num_scenes=1, seconds=1.0, seed=31, progress=False
    )


def test_frames_kept_in_memory_are_read_once_and_equal_fresh_reads(tiny_log) -> None:
    config = tiny_for_tests()
    options = FrameOptions(num_sweeps=config.lidar.num_sweeps, image_scale=config.camera.decode_scale)
    kept = open_frames(str(tiny_log), "v1.0-mini", "all", None, options, keep_in_memory=True)
    fresh = open_frames(str(tiny_log), "v1.0-mini", "all", None, options)
    assert len(kept) == len(fresh) >= 2
    first = kept[1]
    assert kept[1] is first  # the second access is the kept frame, not a new read
    assert fresh[1] is not fresh[1]  # without the option every access reads the files again
    again = fresh[1]
    assert first.sample_token == again.sample_token
    np.testing.assert_array_equal(first.lidar.points, again.lidar.points)
    for name, camera in again.cameras.items():
        np.testing.assert_array_equal(first.cameras[name].image, camera.image)
    np.testing.assert_array_equal(first.gt_boxes.center, again.gt_boxes.center)
    assert [f.sample_token for f in kept[0:2]] == [f.sample_token for f in fresh[0:2]]
