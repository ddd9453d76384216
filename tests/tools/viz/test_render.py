"""Fused-BEV pictures: pixel mapping, box wireframes, colouring, ground rasters, files, and a real
offscreen render (in a subprocess: a renderer without a driver can abort the process)."""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from avfusion.calibration.boxes import Boxes3D
from avfusion.calibration.camera import CameraIntrinsics
from avfusion.calibration.se3 import SE3
from avfusion.labels import CLASS_INDEX
from avfusion.tools.viz import render

# ego (x forward, y left, z up) -> camera (x right, y down, z forward) for a camera looking along +x.
CAMERA_FROM_EGO_FORWARD = SE3.from_matrix(
    np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
)


def _boxes(centers, sizes_wlh, yaws, labels) -> Boxes3D:
    return Boxes3D(
        center=np.array(centers, dtype=np.float64),
        size_wlh=np.array(sizes_wlh, dtype=np.float64),
        yaw_rad=np.array(yaws, dtype=np.float64),
        label=np.array(labels, dtype=np.int64),
    )


def _half_red_half_green_camera(name: str = "CAM_FRONT") -> render.CameraView:
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, :100] = (255, 0, 0)
    image[:, 100:] = (0, 255, 0)
    intrinsics = CameraIntrinsics(np.array([[100.0, 0.0, 99.5], [0.0, 100.0, 49.5], [0.0, 0.0, 1.0]]), 200, 100)
    return render.CameraView(name, image, intrinsics, CAMERA_FROM_EGO_FORWARD)


def test_bev_pixel_from_ego_hand_worked() -> None:
    view = render.BevView(x_range_m=(-10.0, 10.0), y_range_m=(-20.0, 20.0), pixels_per_m=10.0)
    assert (view.width_px, view.height_px) == (400, 200)
    pixels = render.bev_pixel_from_ego(np.array([[10.0, 20.0], [0.0, 0.0], [-10.0, -20.0], [5.0, -1.0]]), view)
    # Ego x up the picture (row 0 = x_max), ego y to the left (column 0 = y_max).
    np.testing.assert_allclose(pixels, [[0.0, 0.0], [200.0, 100.0], [400.0, 200.0], [210.0, 50.0]])


def test_wireframe_heading_points_along_yaw() -> None:
    boxes = _boxes([[1.0, 2.0, 0.5], [0.0, 0.0, 1.0]], [[2.0, 4.0, 1.0], [2.0, 4.0, 2.0]], [0.0, np.pi / 2], [0, 1])
    segments = render.box_wireframe_segments(boxes)
    assert segments.shape == (2, 15, 2, 3)
    # Heading: top-face centre to the middle of the front top edge (half the length ahead).
    np.testing.assert_allclose(segments[0, -1], [[1.0, 2.0, 1.0], [3.0, 2.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(segments[1, -1], [[0.0, 0.0, 2.0], [0.0, 2.0, 2.0]], atol=1e-12)
    # Every end point is a corner or lies on the box surface: inside the axis-aligned extent.
    assert segments[0, :, :, 0].min() == pytest.approx(-1.0) and segments[0, :, :, 0].max() == pytest.approx(3.0)
    assert segments[0, :, :, 1].min() == pytest.approx(1.0) and segments[0, :, :, 1].max() == pytest.approx(3.0)
    assert segments[0, :, :, 2].min() == pytest.approx(0.0) and segments[0, :, :, 2].max() == pytest.approx(1.0)


def test_segment_prisms_enclose_segment() -> None:
    segments = np.array([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])
    colors = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    vertices, triangles, vertex_colors = render.segment_prisms(segments, colors, width_m=0.2)
    assert vertices.shape == (16, 3) and triangles.shape == (24, 3) and vertex_colors.shape == (16, 3)
    along_x = vertices[:8]
    np.testing.assert_allclose(along_x.min(axis=0), [0.0, -0.1, -0.1], atol=1e-12)
    np.testing.assert_allclose(along_x.max(axis=0), [2.0, 0.1, 0.1], atol=1e-12)
    vertical = vertices[8:]  # parallel to the helper axis z: must still get a proper cross-section
    np.testing.assert_allclose(vertical.min(axis=0), [-0.1, -0.1, 0.0], atol=1e-12)
    np.testing.assert_allclose(vertical.max(axis=0), [0.1, 0.1, 3.0], atol=1e-12)
    assert triangles[:12].max() == 7 and triangles[12:].min() == 8
    np.testing.assert_allclose(vertex_colors[:8], [[1.0, 0.0, 0.0]] * 8)


def test_colors_from_cameras_hand_worked() -> None:
    camera = _half_red_half_green_camera()
    points_ego = np.array(
        [
            [10.0, 1.0, 0.0],  # left of the optical axis: u = 99.5 - 10 -> red half
            [10.0, -1.0, 0.0],  # right: u = 109.5 -> green half
            [-10.0, 0.0, 0.0],  # behind the camera
            [10.0, 30.0, 0.0],  # in front but far outside the image (u = -200)
        ]
    )
    colors, seen = render.colors_from_cameras(points_ego, [camera])
    np.testing.assert_array_equal(seen, [True, True, False, False])
    np.testing.assert_array_equal(colors[0], [255, 0, 0])
    np.testing.assert_array_equal(colors[1], [0, 255, 0])
    np.testing.assert_array_equal(colors[2], render.UNSEEN_POINT_RGB)
    # The first camera that sees a point wins; a later camera only fills in what is unseen.
    back_from_ego = CAMERA_FROM_EGO_FORWARD @ SE3.from_yaw(np.pi, np.zeros(3)).inverse()  # looks along -x
    blue = render.CameraView(
        "CAM_BACK", np.full((100, 200, 3), (0, 0, 255), np.uint8), camera.intrinsics, back_from_ego
    )
    colors, seen = render.colors_from_cameras(points_ego, [camera, blue])
    np.testing.assert_array_equal(seen, [True, True, True, False])
    np.testing.assert_array_equal(colors[:3], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])


def test_height_and_intensity_colours_are_monotone_ramps() -> None:
    points = np.zeros((3, 3))
    points[:, 2] = [-5.0, 1.5, 10.0]  # clipped low, middle, clipped high
    colors = render.colors_by_height(points)
    assert colors.dtype == np.uint8 and colors.shape == (3, 3)
    assert colors[0, 2] > colors[0, 0]  # low = blue
    assert colors[2, 0] > colors[2, 2]  # high = red
    assert not np.array_equal(colors[0], colors[1])
    intensity = render.colors_by_intensity(np.array([0.0, 255.0]))
    assert intensity[0].sum() < intensity[1].sum()


def _lab(colors_rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 sRGB -> (N, 3) CIELAB (L in [0, 100])."""
    return cv2.cvtColor((colors_rgb.astype(np.float32) / 255.0)[None], cv2.COLOR_RGB2Lab)[0]


def test_class_colours_stay_apart_and_show_on_the_background() -> None:
    colors = np.concatenate([render.CLASS_COLORS_RGB, render.PREDICTION_COLORS_RGB])  # 10 truths, 10 predictions
    lab = _lab(colors)
    distance = np.linalg.norm(lab[:, None] - lab[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    first, second = np.unravel_index(np.argmin(distance), distance.shape)
    assert distance.min() >= 25.0, f"colours {first} and {second} are {distance.min():.1f} apart"
    background = _lab(np.array([render.BACKGROUND_RGB], np.uint8))[0]
    assert np.linalg.norm(lab - background, axis=1).min() >= 45.0
    # ground truth is the brighter of each pair
    assert np.all(lab[:10, 0] > lab[10:, 0] + 10.0)
    boxes = _boxes([[0.0, 0.0, 0.0]] * 10, [[1.0, 1.0, 1.0]] * 10, [0.0] * 10, list(range(10)))
    np.testing.assert_array_equal(render.box_colors(boxes, predicted=False), render.CLASS_COLORS_RGB)
    np.testing.assert_array_equal(render.box_colors(boxes, predicted=True), render.PREDICTION_COLORS_RGB)


def test_a_weak_heatmap_peak_shows() -> None:
    view = render.BevView(x_range_m=(-10.0, 10.0), y_range_m=(-10.0, 10.0), pixels_per_m=5.0)
    heat = np.zeros((10, 10), np.float32)
    heat[4, 9] = 0.3
    heat[4, 0] = 0.01
    texture = render.ground_texture(None, render.BevRaster(heat, (-10.0, 10.0), (-10.0, 10.0)), view, render.ALL_LAYERS)
    (col_peak, row_peak), (col_faint, row_faint) = render.bev_pixel_from_ego(
        np.array([[9.0, -1.0], [-9.0, -1.0]]), view
    ).astype(int)
    background = _lab(np.array([render.BACKGROUND_RGB], np.uint8))[0]
    peak, faint = _lab(texture[[row_peak, row_faint], [col_peak, col_faint]])
    assert np.linalg.norm(peak - background) >= 40.0  # a 0.3 peak reads clearly
    assert np.linalg.norm(faint - background) < np.linalg.norm(peak - background) / 2  # noise stays faint


def test_ground_texture_places_map_and_heatmap() -> None:
    view = render.BevView(x_range_m=(-10.0, 10.0), y_range_m=(-10.0, 10.0), pixels_per_m=5.0)
    drivable = np.zeros((20, 20), np.float32)
    drivable[:10] = 1.0  # rows = ego y ascending: the right half (y < 0) is drivable
    heat = np.zeros((10, 10), np.float32)
    heat[4, 9] = 1.0  # cell y in [-2, 0), x in [8, 10)
    map_bev = render.BevRaster(drivable, (-10.0, 10.0), (-10.0, 10.0))
    heat_bev = render.BevRaster(heat, (-10.0, 10.0), (-10.0, 10.0))
    texture = render.ground_texture(map_bev, heat_bev, view, render.ALL_LAYERS)
    assert texture.shape == (100, 100, 3)
    (col_right, row_mid), (col_left, _), (col_heat, row_heat) = render.bev_pixel_from_ego(
        np.array([[0.0, -5.0], [0.0, 5.0], [9.0, -1.0]]), view
    ).astype(int)
    np.testing.assert_array_equal(texture[row_mid, col_left], render.BACKGROUND_RGB)
    assert texture[row_mid, col_right].astype(int).sum() > np.sum(render.BACKGROUND_RGB) + 60
    assert texture[row_heat, col_heat, 0] == 255  # the hot peak on top of the drivable area
    assert render.ground_texture(map_bev, heat_bev, view, frozenset({render.Layer.POINTS})) is None
    only_map = render.ground_texture(map_bev, heat_bev, view, frozenset({render.Layer.MAP}))
    np.testing.assert_array_equal(only_map[row_heat, col_heat], only_map[row_mid, col_right])


def _hand_made_gate(branch_names=("lidar", "camera", "map")) -> render.BevGate:
    """A 2 x 2 gate over x, y in [-10, 10): rows = ego y ascending, columns = ego x ascending."""
    by_branch = {
        "lidar": [[1.0, 0.0], [1.0, 0.5]],
        "camera": [[0.0, 1.0], [1.0, 0.5]],
        "map": [[0.0, 0.0], [1.0, 0.25]],
    }
    values = np.array([by_branch[name] for name in branch_names], np.float32)
    return render.BevGate(values, tuple(branch_names), (-10.0, 10.0), (-10.0, 10.0))


def test_gate_composite_colours_a_hand_made_gate() -> None:
    # Cell (row 0, col 0): lidar alone -> red; (0, 1): camera alone -> green; (1, 0): all open -> white.
    np.testing.assert_allclose(
        render.gate_composite(_hand_made_gate()),
        [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[1.0, 1.0, 1.0], [0.5, 0.5, 0.25]]],
    )
    # A model without a camera branch: its two channels in their colours, green is 0 everywhere.
    np.testing.assert_allclose(
        render.gate_composite(_hand_made_gate(("map", "lidar"))),
        [[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[1.0, 0.0, 1.0], [0.5, 0.0, 0.25]]],
    )
    assert render.gate_key_text(("lidar", "map")) == "gate: lidar=red map=blue"
    assert render.gate_key_text(("map", "camera", "lidar")) == "gate: lidar=red camera=green map=blue"


def test_ground_texture_draws_the_gate_instead_of_the_heatmap() -> None:
    view = render.BevView(x_range_m=(-20.0, 20.0), y_range_m=(-20.0, 20.0), pixels_per_m=1.0)
    gate = _hand_made_gate()
    heat = render.BevRaster(np.ones((2, 2), np.float32), (-10.0, 10.0), (-10.0, 10.0))
    texture = render.ground_texture(None, heat, view, render.ALL_LAYERS, gate)
    background = np.array(render.BACKGROUND_RGB, np.float64)

    def expected(rgb):
        return np.round((1 - render.GATE_OPACITY) * background + render.GATE_OPACITY * 255.0 * np.array(rgb))

    # The cell centres (x, y) of the gate's cells, and off its grid.
    centres = np.array([[-5.0, -5.0], [5.0, -5.0], [-5.0, 5.0], [5.0, 5.0], [15.0, 15.0]])
    (c00, r00), (c01, r01), (c10, r10), (c11, r11), (c_out, r_out) = render.bev_pixel_from_ego(centres, view).astype(
        int
    )
    np.testing.assert_array_equal(texture[r00, c00], expected([1.0, 0.0, 0.0]))  # lidar: red
    np.testing.assert_array_equal(texture[r01, c01], expected([0.0, 1.0, 0.0]))  # camera: green
    np.testing.assert_array_equal(texture[r10, c10], expected([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(texture[r11, c11], expected([0.5, 0.5, 0.25]))
    np.testing.assert_array_equal(texture[r_out, c_out], render.BACKGROUND_RGB)  # off the grid: untouched
    # With the gate layer off, the heatmap comes back; a frame without a gate draws its heatmap.
    without_gate_layer = render.ground_texture(None, heat, view, render.ALL_LAYERS - {render.Layer.GATE}, gate)
    np.testing.assert_array_equal(without_gate_layer, render.ground_texture(None, heat, view, render.ALL_LAYERS))
    assert without_gate_layer[r00, c00, 0] == 255 and not np.array_equal(without_gate_layer, texture)
    only_gate = render.ground_texture(None, None, view, frozenset({render.Layer.GATE}), gate)
    np.testing.assert_array_equal(only_gate, texture)
    assert render.ground_texture(None, None, view, frozenset({render.Layer.HEATMAP}), gate) is None


def test_gate_key_is_written_under_the_title() -> None:
    bev = np.zeros((120, 400, 3), np.uint8)
    keyed = render.draw_gate_key(bev, ("lidar", "camera"))
    assert not bev.any()  # input not drawn on
    rows = np.nonzero(keyed.any(axis=(1, 2)))[0]
    assert rows.min() >= 28 and rows.max() <= 52  # one line, below the title's
    # Each branch name in its channel's colour: red-dominant and green-dominant pixels, no blue ones.
    red = (keyed[..., 0] > 200) & (keyed[..., 1] < 150)
    green = (keyed[..., 1] > 200) & (keyed[..., 0] < 150)
    blue = (keyed[..., 2] > 200) & (keyed[..., 0] < 150)
    assert red.sum() > 10 and green.sum() > 10 and not blue.any()
    assert np.nonzero(red)[1].max() < np.nonzero(green)[1].min()  # lidar, then camera


def test_bev_gate_checks_its_shape_and_names() -> None:
    values = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="2 gate channels but 3 branch names"):
        render.BevGate(values, ("lidar", "camera", "map"), (-1.0, 1.0), (-1.0, 1.0))
    with pytest.raises(ValueError, match="distinct names"):
        render.BevGate(values, ("lidar", "radar"), (-1.0, 1.0), (-1.0, 1.0))
    with pytest.raises(ValueError, match="distinct names"):
        render.BevGate(values, ("lidar", "lidar"), (-1.0, 1.0), (-1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        render.BevGate(values[0], ("lidar",), (-1.0, 1.0), (-1.0, 1.0))


def test_draw_boxes_on_camera_front_and_behind() -> None:
    camera = _half_red_half_green_camera()
    black = render.CameraView(camera.name, np.zeros_like(camera.image), camera.intrinsics, camera.camera_from_ego)
    car = CLASS_INDEX["car"]
    in_front = render.draw_boxes_on_camera(black, _boxes([[10.0, 0.0, 0.0]], [[2.0, 4.0, 1.5]], [0.0], [car]), False)
    car_rgb = render.CLASS_COLORS_RGB[car]
    mask = np.all(in_front == car_rgb, axis=2)
    rows, cols = np.nonzero(mask)
    assert mask.sum() > 50
    # The box (8..12 m ahead, 2 m wide, 1.5 m tall) spans u in 99.5 +- 100*1/8 and v 49.5 +- 100*0.75/8.
    assert cols.min() >= 80 and cols.max() <= 120 and rows.min() >= 35 and rows.max() <= 64
    behind = render.draw_boxes_on_camera(black, _boxes([[-10.0, 0.0, 0.0]], [[2.0, 4.0, 1.5]], [0.0], [car]), False)
    assert not behind.any()
    # A box reaching from behind the camera to in front of it would smear across the picture: skipped.
    straddling = render.draw_boxes_on_camera(black, _boxes([[0.5, 0.0, 0.0]], [[2.0, 4.0, 1.5]], [0.0], [car]), False)
    assert not straddling.any()
    assert not black.image.any()  # input not drawn on


def test_low_score_predictions_are_not_drawn() -> None:
    car = CLASS_INDEX["car"]
    predictions = Boxes3D(
        center=np.array([[10.0, 0.0, 0.0], [20.0, 0.0, 0.0]]),
        size_wlh=np.ones((2, 3)),
        yaw_rad=np.zeros(2),
        label=np.array([car, car]),
        score=np.array([0.9, 0.1]),
    )
    frame = render.SceneFrame("t", np.zeros((0, 3), np.float32), np.zeros(0, np.float32), None, predictions)
    shown = render.shown_predictions(frame, render.RenderOptions(min_pred_score=0.3))
    np.testing.assert_array_equal(shown.center[:, 0], [10.0])
    assert len(render.shown_predictions(frame, render.RenderOptions(min_pred_score=0.0))) == 2


def test_picture_files_round_trip(tmp_path: Path) -> None:
    frames = [np.full((64, 96, 3), (value, 255 - value, 40), np.uint8) for value in (0, 120, 240)]
    render.write_png(tmp_path / "a.png", frames[1])
    read = cv2.imread(str(tmp_path / "a.png"))[..., ::-1]
    np.testing.assert_array_equal(read, frames[1])
    render.write_gif(tmp_path / "a.gif", frames, fps=2.0)
    from PIL import Image

    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (96, 64)
    render.write_mp4(tmp_path / "a.mp4", frames, fps=2.0)
    capture = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    ok, first = capture.read()
    capture.release()
    assert ok and np.abs(first[..., ::-1].astype(int) - frames[0]).mean() < 12  # lossy codec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4", "a.png"]  # no temporaries left


def test_compose_picture_keeps_bev_pixels() -> None:
    view = render.BevView(x_range_m=(-10.0, 10.0), y_range_m=(-10.0, 10.0), pixels_per_m=10.0)
    bev = np.zeros((view.height_px, view.width_px, 3), np.uint8)
    bev[150:160, 20:30] = (1, 2, 3)
    panel = np.full((120, 300, 3), 7, np.uint8)
    picture = render.compose_picture(bev, view, panel, "title")
    assert picture.shape == (200, 500, 3)
    np.testing.assert_array_equal(picture[150:160, 20:30], bev[150:160, 20:30])
    ego_col, ego_row = render.bev_pixel_from_ego(np.array([[0.5, 0.0]]), view)[0].astype(int)
    np.testing.assert_array_equal(picture[ego_row, ego_col], (255, 255, 255))
    np.testing.assert_array_equal(picture[5, 200 + 150], (7, 7, 7))


_RENDER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from avfusion.calibration.boxes import Boxes3D
    from avfusion.tools.viz import render

    spec = json.loads(sys.argv[1])
    gt = Boxes3D(center=np.array(spec["centers"]), size_wlh=np.array(spec["sizes"]),
                 yaw_rad=np.array(spec["yaws"]), label=np.array(spec["labels"]))
    rng = np.random.default_rng(0)
    points = rng.uniform(-50.0, 50.0, (5000, 3)).astype(np.float32)
    points[:, 2] = rng.uniform(0.0, 0.2, 5000)
    drivable = np.zeros((54, 54), np.float32)
    drivable[:27] = 1.0
    # 300 confident predictions far from the ground truth (x < -30 m): a realistic load, which
    # once stalled Open3D's renderer for minutes on llvmpipe.
    count = 300
    predictions = Boxes3D(center=np.column_stack([rng.uniform(-50, -32, count), rng.uniform(-50, 50, count),
                                                  np.ones(count)]),
                          size_wlh=np.tile([0.6, 0.6, 1.0], (count, 1)), yaw_rad=rng.uniform(-3, 3, count),
                          label=np.full(count, 8), score=np.full(count, 0.9))
    frame = render.SceneFrame("test", points, np.full(5000, 10.0, np.float32), gt, predictions,
                              render.BevRaster(drivable, (-54.0, 54.0), (-54.0, 54.0)))
    options = render.RenderOptions()
    renderer = render.OffscreenBevRenderer(options.view)
    render.write_png(spec["out"], renderer.render(frame, options))
    hidden = render.RenderOptions(layers=render.ALL_LAYERS - {render.Layer.GT_BOXES, render.Layer.PRED_BOXES})
    render.write_png(spec["out_hidden"], renderer.render(frame, hidden))
    """
)


def _vulkan_or_egl_available() -> bool:
    return bool(glob.glob("/usr/share/vulkan/icd.d/*.json") or glob.glob("/usr/lib/*/libEGL_mesa.so*"))


def test_offscreen_render_draws_boxes_where_the_ground_truth_is(tmp_path: Path) -> None:
    if not _vulkan_or_egl_available():
        pytest.skip("no Vulkan ICD or Mesa EGL: install libvulkan1 mesa-vulkan-drivers (make system-deps)")
    car, pedestrian = CLASS_INDEX["car"], CLASS_INDEX["pedestrian"]
    spec = {
        "centers": [[20.0, 10.0, 1.0], [-15.0, -20.0, 0.9]],
        "sizes": [[2.0, 4.5, 1.7], [0.7, 0.7, 1.8]],
        "yaws": [0.3, 0.0],
        "labels": [car, pedestrian],
        "out": str(tmp_path / "bev.png"),
        "out_hidden": str(tmp_path / "hidden.png"),
    }
    result = subprocess.run(  # noqa: PLW1510 - the return code is asserted below with stderr shown
        [sys.executable, "-c", _RENDER_SCRIPT, json.dumps(spec)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    picture = cv2.imread(spec["out"])[..., ::-1]
    hidden = cv2.imread(spec["out_hidden"])[..., ::-1]
    view = render.BevView()
    assert picture.shape == (view.height_px, view.width_px, 3)
    boxes = _boxes(spec["centers"], spec["sizes"], spec["yaws"], spec["labels"])
    footprints_px = [render.bev_pixel_from_ego(corners, view) for corners in boxes.bev_corners()]
    for index, label in enumerate(spec["labels"]):
        mask = np.all(picture == render.CLASS_COLORS_RGB[label], axis=2)
        rows, cols = np.nonzero(mask)
        low, high = footprints_px[index].min(axis=0), footprints_px[index].max(axis=0)
        assert mask.sum() >= 20, f"class {label}: {mask.sum()} pixels of its colour"
        # All pixels of the class colour lie on the box's footprint (plus the line width).
        assert cols.min() >= low[0] - 3 and cols.max() <= high[0] + 3
        assert rows.min() >= low[1] - 3 and rows.max() <= high[1] + 3
        assert not np.all(hidden == render.CLASS_COLORS_RGB[label], axis=2).any()
    # The traffic-cone predictions, in the darker shade, all in the x < -30 m band.
    rows = np.nonzero(np.all(picture == render.PREDICTION_COLORS_RGB[8], axis=2))[0]
    assert len(rows) > 1000 and rows.min() >= render.bev_pixel_from_ego(np.array([[-30.0, 0.0]]), view)[0, 1]
    # The drivable half (ego y < 0) is on the right of the picture; the other half is background.
    (col_right, row), (col_left, _) = render.bev_pixel_from_ego(np.array([[-40.0, -30.0], [-40.0, 30.0]]), view)
    patch_right = picture[int(row) - 3 : int(row) + 3, int(col_right) - 3 : int(col_right) + 3].reshape(-1, 3)
    patch_left = picture[int(row) - 3 : int(row) + 3, int(col_left) - 3 : int(col_left) + 3].reshape(-1, 3)
    assert np.median(patch_right.sum(axis=1)) > np.median(patch_left.sum(axis=1)) + 60


def _two_tracks() -> render.TrackMarks:
    """Track 3 came from (0, 0) to (2, 0) and moves at 4 m/s along +x; track 4 stands at (-5, 5)."""
    return render.TrackMarks(
        track_id=("scene-3", "scene-4"),
        position_xy=np.array([[2.0, 0.0], [-5.0, 5.0]]),
        velocity_xy=np.array([[4.0, 0.0], [0.0, 0.0]]),
        trails=(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]), np.array([[-5.0, 5.0]])),
    )


def test_track_segments_trail_and_velocity_arrow() -> None:
    segments, colors = render.track_segments(_two_tracks())
    # Track 3: two trail segments, then the arrow's shaft (1 s ahead: to x = 6 m) and two barbs;
    # track 4 stands still and has a one-point trail: nothing to draw.
    assert segments.shape == (5, 2, 3) and colors.shape == (5, 3)
    np.testing.assert_allclose(segments[:2, :, :2], [[[0, 0], [1, 0]], [[1, 0], [2, 0]]])
    np.testing.assert_allclose(segments[2, :, :2], [[2.0, 0.0], [2.0 + 4.0 * render.ARROW_HORIZON_S, 0.0]])
    # The barbs start at the tip and point back.
    assert np.all(segments[3:, 0, 0] == segments[2, 1, 0]) and np.all(segments[3:, 1, 0] < segments[2, 1, 0])
    assert np.all(segments[..., 2] == render.TRACK_Z_M)
    assert np.all(colors == render.track_color("scene-3"))


def test_track_colours_are_stable_and_distinct() -> None:
    ids = [f"scene-{i}" for i in range(12)]
    colors = np.array([render.track_color(i) for i in ids], dtype=np.int64)
    np.testing.assert_array_equal(colors, np.array([render.track_color(i) for i in ids]))
    assert len({tuple(c) for c in colors.tolist()}) == len(ids)


def test_track_ids_are_written_beside_their_tracks() -> None:
    view = render.BevView(x_range_m=(-10.0, 10.0), y_range_m=(-10.0, 10.0), pixels_per_m=10.0)
    bev = np.zeros((view.height_px, view.width_px, 3), np.uint8)
    drawn = render.draw_track_ids(bev, _two_tracks(), view)
    assert not bev.any()  # the input is not changed
    for k, track_id in enumerate(("scene-3", "scene-4")):
        column, row = render.bev_pixel_from_ego(_two_tracks().position_xy[k : k + 1], view)[0].astype(int)
        patch = drawn[max(0, row - 20) : row, column : column + 30].astype(np.int64)
        # Anti-aliased text: some pixels close to the track's colour.
        near = np.abs(patch - render.track_color(track_id).astype(np.int64)).max(axis=2) < 40
        assert near.sum() >= 3, track_id
