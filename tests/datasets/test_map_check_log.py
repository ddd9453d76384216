"""The map check where frames are built: quiet on the synthetic log's true map, firing on a blank one."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from avfusion.datasets.nuscenes_log import FrameOptions, NuScenesLog
from avfusion.sensors.types import MAP_NAME

OPTIONS = FrameOptions(num_sweeps=3, load_images=False, load_gnss=False)


def test_true_map_passes_and_blank_map_is_missing(synthetic_log: Path, tmp_path: Path) -> None:
    log = NuScenesLog.open(synthetic_log, "v1.0-mini", use_cache=False)
    for token in log.sample_tokens():
        frame = log.frame(token, OPTIONS)
        assert frame.map is not None and MAP_NAME not in frame.missing, frame.missing.get(MAP_NAME)

    blank = tmp_path / "log"
    shutil.copytree(synthetic_log, blank)
    for png in (blank / "maps").glob("*.png"):
        height, width = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).shape
        cv2.imwrite(str(png), np.zeros((height, width), np.uint8))
    log = NuScenesLog.open(blank, "v1.0-mini", use_cache=False)
    for token in log.sample_tokens():
        frame = log.frame(token, OPTIONS)
        assert frame.map is None and frame.missing[MAP_NAME].startswith("no drivable area")
        unchecked = log.frame(token, FrameOptions(num_sweeps=3, load_images=False, load_gnss=False, check_map=False))
        assert unchecked.map is not None
