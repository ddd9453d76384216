"""The frames of one scene for the viewer: from a replay's run folder, or with the detector live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avfusion.datasets.nuscenes_log import FrameOptions
from avfusion.errors import InputError
from avfusion.tools.replay.frames import (
    NUSCENES_IMAGE_WIDTH_PX,
    BevCapture,
    load_detector,
    open_log,
    reader_image_scale,
)
from avfusion.tools.replay.types import ReplayRequest
from avfusion.tools.viz.render import BevGate, BevRaster
from avfusion.tools.viz.viewer import Predictions, RunPredictions, SceneFrames

if TYPE_CHECKING:
    from avfusion.sensors.types import SyncedFrame


class DetectorPredictions:
    """Predictions made on the spot: the detector's boxes (ego frame), fused BEV heatmap and, for a
    gated model, its gate map (both None for a frame its main trunk did not run, see `BevCapture`)."""

    def __init__(self, detector: Any, drop: frozenset[str] = frozenset()) -> None:
        self.detector = detector
        self.drop = drop
        self._bev = BevCapture(detector.model)

    def __call__(self, frame: Any) -> Predictions:
        self._bev.clear()
        detections = self.detector.detect(frame, drop=self.drop)
        grid = self.detector.config.grid
        heat, gate = self._bev.heatmap(), self._bev.gate()
        return Predictions(
            detections.boxes_ego,
            BevRaster(heat, grid.x_range_m, grid.y_range_m) if heat is not None else None,
            BevGate(gate, self._bev.gate_branches, grid.x_range_m, grid.y_range_m) if gate is not None else None,
        )


# The viewer shows camera tiles 400 px wide: images are read at about that width.
VIEWER_IMAGE_WIDTH_PX = 400


def scene_frames_for_viewing(
    dataroot: Path,
    version: str,
    scene: str | None,
    run_dir: Path | None,
    checkpoint: Path | None = None,
    device: str = "cpu",
    with_predictions: bool = True,
    num_sweeps: int = 1,
) -> tuple[SceneFrames, str]:
    """The frames of one scene for the viewer, and the scene's name.

    With `run_dir`, predictions are the run's (its submission and kept heatmaps) and the scene
    defaults to the run's first; otherwise, with `with_predictions`, the detector runs on each frame
    (reading frames as the network was trained to: its sweeps and image scale), and the scene
    defaults to the log's first.
    """
    probe = ReplayRequest(dataroot=Path(dataroot), version=version, out_dir=Path("."))
    log = open_log(probe)
    predictions: Callable[[SyncedFrame], Predictions] | None = None
    tracks = None
    options = FrameOptions(num_sweeps=num_sweeps, image_scale=reader_image_scale(log, VIEWER_IMAGE_WIDTH_PX))
    if run_dir is not None:
        run_predictions = RunPredictions(run_dir)
        predictions = run_predictions
        tracks = run_predictions.tracks_at
        predicted = set(run_predictions.sample_tokens)
        if scene is None:
            scene = next((name for name in log.scene_names if predicted & set(log.sample_tokens(name))), None)
            if scene is None:
                raise InputError(f"--run {run_dir}: none of its samples is in {Path(dataroot) / version}")
        elif not set(log.sample_tokens(scene)) & predicted:
            raise InputError(f"--run {run_dir} has no predictions for scene {scene!r}")
    elif with_predictions:
        detector = load_detector(checkpoint, device)
        predictions = DetectorPredictions(detector)
        config = detector.config
        options = FrameOptions(
            num_sweeps=config.lidar.num_sweeps,
            image_scale=reader_image_scale(log, config.camera.decode_scale * NUSCENES_IMAGE_WIDTH_PX),
        )
    if scene is None:
        scene = log.scene_names[0]
    tokens = log.sample_tokens(scene)
    if not tokens:
        raise InputError(f"scene {scene!r} has no keyframes")
    return SceneFrames(lambda token: log.frame(token, options), tokens, predictions, tracks=tracks), scene
