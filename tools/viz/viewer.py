"""The interactive Open3D window on the fused BEV, with playback through a scene.

One window shows the 3D scene of `render.scene_geometries` (points, ground-truth and predicted boxes,
the map raster and the heatmap or a gated model's gate map as a textured ground plane), starting from
straight above; a second window shows the six camera images with the boxes projected into them. Keys:

    N / Right   next frame            P / Left   previous frame
    Space       play / pause          R          back to the top-down view
    H / I / C   colour points by height / intensity / camera colour
    1 2 3 4 5 6 toggle points / ground-truth boxes / predictions / map / heatmap / tracks
    7           toggle the gate map (a gated model's trust per cell: lidar red, camera green, map
                blue; shown instead of the heatmap)
    Q / Esc     quit

It uses Open3D's classic OpenGL visualizer (GLFW), which runs on any X display, including Xvfb with
Mesa's software OpenGL. The frames come from a sequence that may load lazily: a frame is asked for
only when it is shown.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.se3 import SE3, yaw_from_quaternion
from avfusion.errors import FileFormatError, InputError
from avfusion.eval.submission import validate_results
from avfusion.eval.tracking import read_tracking_results
from avfusion.tools.replay.types import BEV_DIR_NAME
from avfusion.tools.viz.render import (
    BACKGROUND_RGB,
    BevGate,
    BevRaster,
    BevView,
    Layer,
    PointColoring,
    RenderOptions,
    SceneFrame,
    TrackMarks,
    camera_panel,
    gate_key_text,
    ground_plane,
    scene_frame_from_synced,
    scene_geometries,
    shown_gate,
)

if TYPE_CHECKING:
    import open3d as o3d

    from avfusion.sensors.types import SyncedFrame


@dataclass(frozen=True, slots=True)
class Predictions:
    """What the network said about one frame, each part None when there is none: boxes in the
    frame's ego frame, the fused BEV heatmap, and a gated model's gate map."""

    boxes_ego: Boxes3D | None = None
    heatmap: BevRaster | None = None
    gate: BevGate | None = None


LAYER_KEYS: dict[str, Layer] = {
    "1": Layer.POINTS,
    "2": Layer.GT_BOXES,
    "3": Layer.PRED_BOXES,
    "4": Layer.MAP,
    "5": Layer.HEATMAP,
    "6": Layer.TRACKS,
    "7": Layer.GATE,
}
COLORING_KEYS: dict[str, PointColoring] = {
    "H": PointColoring.HEIGHT,
    "I": PointColoring.INTENSITY,
    "C": PointColoring.CAMERA,
}
_GLFW_KEY_RIGHT, _GLFW_KEY_LEFT, _GLFW_KEY_SPACE = 262, 263, 32


class BevViewer:
    """Windows on a sequence of `SceneFrame`s; drive it with `run()` or, step by step, `step()`."""

    def __init__(
        self,
        frames: Sequence[SceneFrame],
        options: RenderOptions | None = None,
        show_cameras: bool = True,
        play_interval_s: float = 0.5,
        window_size_px: tuple[int, int] = (1000, 1000),
    ) -> None:
        if len(frames) == 0:
            raise InputError("the viewer needs at least one frame; the scene has none")
        self._frames = frames
        self.options = options if options is not None else RenderOptions()
        self.index = 0
        self.playing = False
        self._show_cameras = show_cameras
        self._play_interval_s = play_interval_s
        self._window_size_px = window_size_px
        self._last_advance_s = 0.0
        self._frame: SceneFrame | None = None
        self._vis: o3d.visualization.VisualizerWithKeyCallback | None = None
        self._camera_vis: o3d.visualization.VisualizerWithKeyCallback | None = None
        self._needs_redraw = True
        self._keep_view = False
        self._close_requested = False

    # --- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the windows and draw the first frame. Raises InputError without a display."""
        import open3d as o3d

        no_display_hint = "set DISPLAY, run under xvfb-run, or use --headless --out DIR"
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            # Without a display Open3D falls back to an invisible headless window: refuse instead.
            raise InputError(f"cannot open a window: no display ({no_display_hint})")
        vis = o3d.visualization.VisualizerWithKeyCallback()
        width, height = self._window_size_px
        if not vis.create_window("avfusion: fused BEV", width, height, visible=True):
            raise InputError(f"cannot open a window on display {os.environ.get('DISPLAY')!r} ({no_display_hint})")
        render_option = vis.get_render_option()
        render_option.light_on = False  # class colours as given, not shaded
        render_option.background_color = np.array(BACKGROUND_RGB, dtype=np.float64) / 255.0
        render_option.point_size = self.options.point_size_px
        self._vis = vis
        self._register_keys(vis)
        if self._show_cameras:
            camera_vis = o3d.visualization.VisualizerWithKeyCallback()
            if camera_vis.create_window("avfusion: cameras", 1200, 520, left=width + 20, visible=True):
                self._camera_vis = camera_vis
                self._register_keys(camera_vis)  # the keys work in whichever window has the focus
        self._draw()

    def close(self) -> None:
        for vis in (self._camera_vis, self._vis):
            if vis is not None:
                vis.destroy_window()
        self._vis = self._camera_vis = None

    def __enter__(self) -> BevViewer:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self) -> None:
        """Show the windows until the user closes them (Q, Esc or the window's close button)."""
        if self._vis is None:
            self.open()
        try:
            while self.step():
                time.sleep(0.01)
        finally:
            self.close()

    def step(self) -> bool:
        """Handle pending window events once, advance when playing; False once the window is closed."""
        if self._vis is None:
            raise RuntimeError("BevViewer.step() before open()")
        if self.playing and time.monotonic() - self._last_advance_s >= self._play_interval_s:
            if self.index + 1 < len(self._frames):
                self.show(self.index + 1)
            else:
                self.playing = False
        if self._needs_redraw:
            self._draw()
        alive = bool(self._vis.poll_events()) and not self._close_requested
        self._vis.update_renderer()
        if self._camera_vis is not None:
            self._camera_vis.poll_events()
            self._camera_vis.update_renderer()
        return alive

    # --- actions (what the keys do; callable directly) -------------------------------------

    def show(self, index: int) -> None:
        """Make frame `index` (clamped to the sequence) the shown one."""
        index = int(np.clip(index, 0, len(self._frames) - 1))
        if index != self.index or self._frame is None:
            self.index = index
            self._frame = None
            self._needs_redraw = True
        self._last_advance_s = time.monotonic()

    def next_frame(self) -> None:
        self.show(self.index + 1)

    def previous_frame(self) -> None:
        self.show(self.index - 1)

    def toggle_play(self) -> None:
        self.playing = not self.playing
        self._last_advance_s = time.monotonic()

    def toggle_layer(self, layer: Layer) -> None:
        self.options = replace(self.options, layers=self.options.layers ^ {layer})
        self._needs_redraw = True

    def set_coloring(self, coloring: PointColoring) -> None:
        self.options = replace(self.options, point_coloring=coloring)
        self._needs_redraw = True

    def _request_close(self) -> None:
        # Q in the camera window must close both windows, as Q / Esc in the main one does.
        self._close_requested = True

    def reset_view(self) -> None:
        """Look straight down on the ego vehicle, forward (+x) up the window."""
        view = self.options.view
        center = [(view.x_range_m[0] + view.x_range_m[1]) / 2.0, (view.y_range_m[0] + view.y_range_m[1]) / 2.0, 0.0]
        control = self._window().get_view_control()
        control.set_lookat(center)
        control.set_front([0.0, 0.0, 1.0])
        control.set_up([1.0, 0.0, 0.0])
        control.set_zoom(0.5)

    def capture(self) -> np.ndarray:
        """The main window's current picture, (H, W, 3) uint8 RGB."""
        buffer = np.asarray(self._window().capture_screen_float_buffer(do_render=True))
        return np.clip(np.round(buffer * 255.0), 0, 255).astype(np.uint8)

    def capture_cameras(self) -> np.ndarray | None:
        """The camera window's current picture, or None when there is none."""
        if self._camera_vis is None:
            return None
        buffer = np.asarray(self._camera_vis.capture_screen_float_buffer(do_render=True))
        return np.clip(np.round(buffer * 255.0), 0, 255).astype(np.uint8)

    @property
    def frame(self) -> SceneFrame:
        """The frame being shown (loaded on first use)."""
        if self._frame is None:
            self._frame = self._frames[self.index]
        return self._frame

    # --- internals -------------------------------------------------------------------------

    def _window(self) -> o3d.visualization.VisualizerWithKeyCallback:
        """The main window; RuntimeError before `open()` or after `close()`."""
        if self._vis is None:
            raise RuntimeError("BevViewer has no window: call open() first")
        return self._vis

    def _register_keys(self, vis: o3d.visualization.VisualizerWithKeyCallback) -> None:
        # Each callback returns True so Open3D redraws the window after it.
        def key(action: Callable[[], None]) -> Callable[[o3d.visualization.Visualizer], bool]:
            def callback(_vis: o3d.visualization.Visualizer) -> bool:
                action()
                return True

            return callback

        vis.register_key_callback(ord("N"), key(self.next_frame))
        vis.register_key_callback(_GLFW_KEY_RIGHT, key(self.next_frame))
        vis.register_key_callback(ord("P"), key(self.previous_frame))
        vis.register_key_callback(_GLFW_KEY_LEFT, key(self.previous_frame))
        vis.register_key_callback(_GLFW_KEY_SPACE, key(self.toggle_play))
        vis.register_key_callback(ord("R"), key(self.reset_view))
        vis.register_key_callback(ord("Q"), key(self._request_close))
        for name, layer in LAYER_KEYS.items():
            vis.register_key_callback(ord(name), key(partial(self.toggle_layer, layer)))
        for name, coloring in COLORING_KEYS.items():
            vis.register_key_callback(ord(name), key(partial(self.set_coloring, coloring)))

    def _draw(self) -> None:
        import open3d as o3d

        vis = self._window()
        control = vis.get_view_control()
        saved_view = control.convert_to_pinhole_camera_parameters() if self._keep_view else None
        vis.clear_geometries()
        frame = self.frame
        geometries = scene_geometries(frame, self.options)
        # The ground plane goes first, always (blank when no raster is shown): its fixed extent is
        # the scene's bounding box, so later geometries never move the view.
        ground = next((item for item in geometries if item.name == "ground"), None)
        if ground is None:
            ground_geometry = _blank_ground(self.options)
        else:
            # `scene_geometries` makes the ground a TriangleMesh, and only with a texture.
            assert isinstance(ground.geometry, o3d.geometry.TriangleMesh) and ground.texture_rgb is not None
            ground_geometry = ground.geometry
            # The classic renderer reads texture rows bottom-up compared with Filament. Open3D's
            # stubs list only its Image and buffer types; the runtime takes numpy arrays.
            texture = np.ascontiguousarray(ground.texture_rgb[::-1])
            ground_geometry.textures = [o3d.geometry.Image(texture)]  # type: ignore[call-overload]
        vis.add_geometry(ground_geometry, reset_bounding_box=True)
        for item in geometries:
            if item.name != "ground":
                vis.add_geometry(item.geometry, reset_bounding_box=False)
        if saved_view is not None:
            control.convert_from_pinhole_camera_parameters(saved_view, allow_arbitrary=True)
        else:
            self.reset_view()
            self._keep_view = True
        vis.get_render_option().point_size = self.options.point_size_px
        if self._camera_vis is not None:
            panel = camera_panel(frame, self.options)
            self._camera_vis.clear_geometries()
            if panel is not None:
                # Open3D's stubs list only its Image and buffer types; the runtime takes numpy arrays.
                image = o3d.geometry.Image(np.ascontiguousarray(panel))  # type: ignore[call-overload]
                self._camera_vis.add_geometry(image)
        gate = shown_gate(frame, self.options)
        key = f"  {gate_key_text(gate.branch_names)}" if gate is not None else ""
        print(f"[{self.index + 1}/{len(self._frames)}] {frame.title}{key}", flush=True)
        self._needs_redraw = False


def _blank_ground(options: RenderOptions) -> o3d.geometry.TriangleMesh:
    """The ground plane in the background colour, for frames with no raster shown."""
    import open3d as o3d

    mesh = ground_plane(options.view)
    mesh.triangle_uvs = o3d.utility.Vector2dVector()
    mesh.triangle_material_ids = o3d.utility.IntVector()
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.tile(np.array(BACKGROUND_RGB) / 255.0, (4, 1)))
    return mesh


# ---------------------------------------------------------------------------------------------
# Frame sources


class SceneFrames(Sequence[SceneFrame]):
    """The keyframes of a scene as `SceneFrame`s, loaded when asked for (the viewer and the
    headless renderer take any sequence).

    Args:
        load_frame: sample token -> `SyncedFrame` (e.g. `NuScenesLog.frame` with reader options bound).
        sample_tokens: the frames, in playback order.
        predictions: frame -> its `Predictions`, or None to show sensors and ground truth only.
        view: the BEV extent (the map raster is cropped to it).
        tracks: frame -> its tracks (ego frame), or None to draw none.
    """

    def __init__(
        self,
        load_frame: Callable[[str], SyncedFrame],
        sample_tokens: Sequence[str],
        predictions: Callable[[SyncedFrame], Predictions] | None = None,
        view: BevView | None = None,
        tracks: Callable[[SyncedFrame], TrackMarks | None] | None = None,
    ) -> None:
        self._load_frame = load_frame
        self._tokens = tuple(sample_tokens)
        self._predictions = predictions
        self._view = view if view is not None else BevView()
        self._tracks = tracks

    def __len__(self) -> int:
        return len(self._tokens)

    @overload
    def __getitem__(self, index: int) -> SceneFrame: ...

    @overload
    def __getitem__(self, index: slice) -> SceneFrames: ...

    def __getitem__(self, index: int | slice) -> SceneFrame | SceneFrames:
        if isinstance(index, slice):  # still lazy: the frames of the slice, loaded when asked for
            return SceneFrames(self._load_frame, self._tokens[index], self._predictions, self._view, self._tracks)
        frame = self._load_frame(self._tokens[index])
        predictions = self._predictions(frame) if self._predictions is not None else Predictions()
        tracks = self._tracks(frame) if self._tracks is not None else None
        return scene_frame_from_synced(
            frame, predictions.boxes_ego, predictions.heatmap, self._view, tracks=tracks, gate_bev=predictions.gate
        )


class RunPredictions:
    """The predictions a replay run folder holds: `submission.json` (global frame) and, when the run
    kept them, the BEV heatmaps (and a gated model's gate maps) `bev/<sample_token>.npz`. Call it
    with a frame for its predictions."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / "submission.json"
        try:
            payload = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise InputError(
                f"--run {self.run_dir}: no submission.json (is it a finished `avfusion replay` run?)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise FileFormatError(path, f"not valid JSON ({error})") from None
        tokens = list(payload.get("results", {})) if isinstance(payload, dict) else []
        columns = validate_results(payload, tokens, source=str(path))
        self._boxes_global: dict[str, Boxes3D] = {}
        for index, token in enumerate(columns.sample_tokens):
            rows = columns.sample_index == index
            self._boxes_global[token] = Boxes3D(
                center=columns.translation[rows],
                size_wlh=columns.size_wlh[rows],
                yaw_rad=np.asarray(yaw_from_quaternion(columns.rotation_wxyz[rows]), dtype=np.float64).reshape(-1),
                velocity_xy=columns.velocity_xy[rows],
                label=columns.label[rows],
                score=columns.score[rows],
                attribute=columns.attribute[rows],
            )
        tracking_path = self.run_dir / "tracking_submission.json"
        self._tracks = RunTracks.read(tracking_path, list(columns.sample_tokens)) if tracking_path.is_file() else None

    @property
    def sample_tokens(self) -> tuple[str, ...]:
        return tuple(self._boxes_global)

    def tracks_at(self, frame: SyncedFrame) -> TrackMarks | None:
        """The run's tracks present in `frame` (from `tracking_submission.json`, None when the run
        has none), in its ego frame, with trails over the last `TRAIL_KEYFRAMES` keyframes."""
        if self._tracks is None:
            return None
        return self._tracks.marks_at(frame.sample_token, frame.global_from_ego.inverse())

    def __call__(self, frame: SyncedFrame) -> Predictions:
        boxes_global = self._boxes_global.get(frame.sample_token)
        boxes = boxes_global.transform(frame.global_from_ego.inverse()) if boxes_global is not None else None
        bev_path = self.run_dir / BEV_DIR_NAME / f"{frame.sample_token}.npz"
        if not bev_path.is_file():
            return Predictions(boxes, None, None)
        return Predictions(boxes, read_bev_heatmap(bev_path), read_bev_gate(bev_path))


# Trails reach this many keyframes back (3 s at nuScenes' 2 Hz).
TRAIL_KEYFRAMES = 6


class RunTracks:
    """A tracking submission as track histories: per sample (in the file's order, which is the
    replay's plan order), each track's centre and velocity (global frame)."""

    def __init__(
        self, sample_tokens: Sequence[str], boxes: dict[str, list[tuple[str, np.ndarray, np.ndarray]]]
    ) -> None:
        self._position = {token: i for i, token in enumerate(sample_tokens)}
        self._tokens = tuple(sample_tokens)
        self._boxes = boxes

    @staticmethod
    def read(path: Path, sample_tokens: Sequence[str]) -> RunTracks:

        payload = read_tracking_results(path, sample_tokens)
        boxes = {
            token: [
                (r["tracking_id"], np.array(r["translation"][:2], np.float64), np.array(r["velocity"], np.float64))
                for r in records
            ]
            for token, records in payload["results"].items()
        }
        return RunTracks(sample_tokens, boxes)

    def marks_at(self, sample_token: str, ego_from_global: SE3) -> TrackMarks | None:
        position = self._position.get(sample_token)
        if position is None:
            return None
        history: dict[str, list[np.ndarray]] = {}
        for token in self._tokens[max(0, position - TRAIL_KEYFRAMES) : position + 1]:
            for track_id, xy, _ in self._boxes.get(token, []):
                history.setdefault(track_id, []).append(xy)
        present = self._boxes.get(sample_token, [])
        if not present:
            return None

        def to_ego(xy: np.ndarray) -> np.ndarray:
            points = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)
            return ego_from_global.apply(points)[:, :2]

        velocity = np.array([v for _, _, v in present])
        velocity_ego = ego_from_global.apply_vectors(np.concatenate([velocity, np.zeros((len(velocity), 1))], axis=1))[
            :, :2
        ]
        return TrackMarks(
            track_id=tuple(track_id for track_id, _, _ in present),
            position_xy=to_ego(np.array([xy for _, xy, _ in present])),
            velocity_xy=velocity_ego,
            trails=tuple(to_ego(np.array(history[track_id])) for track_id, _, _ in present),
        )


def read_bev_heatmap(path: str | Path) -> BevRaster:
    """A heatmap kept by `avfusion replay --save-bev`: `heatmap` (H, W) (row = ego y ascending,
    column = ego x ascending), `x_range_m`, `y_range_m`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            values = np.asarray(data["heatmap"], dtype=np.float32)
            x_low, x_high = (float(v) for v in data["x_range_m"])
            y_low, y_high = (float(v) for v in data["y_range_m"])
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise FileFormatError(path, f"not a BEV heatmap file ({error})") from None
    try:
        return BevRaster(np.clip(values, 0.0, 1.0), (x_low, x_high), (y_low, y_high))
    except ValueError as error:
        raise FileFormatError(path, str(error)) from None


def read_bev_gate(path: str | Path) -> BevGate | None:
    """The gate map kept with a heatmap by `avfusion replay --save-bev` for a gated model: `gate`
    (K, H, W) (row = ego y ascending, column = ego x ascending), `gate_branches` (K,) branch names,
    on the extent `x_range_m`, `y_range_m`. None when the file holds no gate (an ungated model)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            present = {"gate", "gate_branches"} & set(data.files)
            if len(present) == 2:
                values = np.asarray(data["gate"], dtype=np.float32)
                branches = data["gate_branches"]
                x_low, x_high = (float(v) for v in data["x_range_m"])
                y_low, y_high = (float(v) for v in data["y_range_m"])
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise FileFormatError(path, f"not a BEV gate file ({error})") from None
    if not present:
        return None
    if len(present) == 1:
        raise FileFormatError(path, f"has `{present.pop()}` without its pair: a gate needs `gate` and `gate_branches`")
    if branches.dtype.kind != "U" or branches.ndim != 1:
        raise FileFormatError(path, f"`gate_branches` must be (K,) names, got {branches.dtype} {branches.shape}")
    try:
        return BevGate(
            np.clip(values, 0.0, 1.0), tuple(str(name) for name in branches), (x_low, x_high), (y_low, y_high)
        )
    except ValueError as error:
        raise FileFormatError(path, str(error)) from None
