"""The synthetic lidar and cameras: statistics against the real nuScenes sweep, lidar/camera agreement,
and the files of a full (small-image) log."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avfusion.calibration.se3 import SE3
from avfusion.datasets.nuscenes_log import NuScenesLog
from avfusion.datasets.synthetic import make_synthetic_log
from avfusion.datasets.synthetic.cameras import render_camera
from avfusion.datasets.synthetic.geometry import AgentShapes, RayCaster, build_scene_mesh
from avfusion.datasets.synthetic.layout import build_location_layout
from avfusion.datasets.synthetic.lidar import simulate_sweep
from avfusion.datasets.synthetic.rig import CAMERAS, EGO_FROM_LIDAR
from avfusion.datasets.synthetic.world import build_scene_world

REAL_SWEEP = "demo/data/nuscenes/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"


@pytest.fixture(scope="module")
def scene():
    """A world, the mesh at t = 1 s and the sweep ending then."""
    layout = build_location_layout(11, "boston-seaport")
    world = build_scene_world(11, 0, layout, 3.0)
    states = world.agent_states(1.0)
    xy, yaw, _ = world.ego_pose(1.0)
    caster = RayCaster(build_scene_mesh(layout.structures, AgentShapes.of(world.agents), states, xy, 110.0))
    sweep = simulate_sweep(caster, layout, world.ego_poses, 1.0, np.random.default_rng(0))
    return layout, world, states, caster, sweep, SE3.from_yaw(yaw, (xy[0], xy[1], 0.0))


def _range_histogram(points: np.ndarray) -> np.ndarray:
    ranges = np.linalg.norm(points[:, :3], axis=1)
    counts, _ = np.histogram(ranges, bins=[0.0, 1.0, 3.0, 10.0, 20.0, 40.0, 70.0, 120.0])
    return counts / len(points)


def test_sweep_shape_rings_and_ranges_like_the_real_sweep(scene, realdata_root: Path) -> None:
    real = np.fromfile(realdata_root / REAL_SWEEP, dtype=np.float32).reshape(-1, 5)
    ours = scene[4].points
    assert ours.dtype == np.float32 and ours.shape[1] == 5
    assert abs(len(ours) - len(real)) <= 0.15 * len(real)
    np.testing.assert_array_equal(np.unique(ours[:, 4]), np.arange(32))
    np.testing.assert_array_equal(np.bincount(ours[:, 4].astype(int)), np.bincount(real[:, 4].astype(int)))

    # per-ring elevation (median over returns beyond the car) within 0.5 deg of the real sensor's
    # (whose beams are not exactly evenly spaced); the lowest rings mostly see the car's own roof
    def ring_elevations(points: np.ndarray) -> np.ndarray:
        far = np.linalg.norm(points[:, :3], axis=1) > 2.0
        elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
        return np.array([np.median(elevation[far & (points[:, 4] == ring)]) for ring in range(4, 32)])

    np.testing.assert_allclose(ring_elevations(ours), ring_elevations(real), atol=0.5)
    # range distribution: total variation distance over coarse bins
    assert 0.5 * np.abs(_range_histogram(ours) - _range_histogram(real)).sum() < 0.2
    # intensities are integers 0..255 with a dim median like the real one
    assert np.all(ours[:, 3] == np.round(ours[:, 3])) and ours[:, 3].max() <= 255
    assert 5 <= np.median(ours[:, 3]) <= 25


def test_sweep_points_are_in_the_lidar_frame_on_the_ground(scene) -> None:
    *_, sweep, _global_from_ego = scene
    points = sweep.points
    ground = (sweep.agent < 0) & (np.abs(points[:, 2] + EGO_FROM_LIDAR.translation[2]) < 0.1)
    # most far returns lie on the flat ground 1.84 m below the sensor
    far = np.linalg.norm(points[:, :2], axis=1) > 5.0
    assert ground.sum() > 0.4 * far.sum()


def test_lidar_hits_on_agents_lie_in_their_boxes(scene) -> None:
    _layout, world, states, _caster, sweep, global_from_ego = scene
    global_from_lidar = global_from_ego @ EGO_FROM_LIDAR
    points_map = global_from_lidar.apply(sweep.points[:, :3].astype(np.float64))
    hit = sweep.agent >= 0
    assert hit.sum() > 500
    agents = sweep.agent[hit]
    local = points_map[hit] - states.center[agents]
    c, s = np.cos(states.yaw_rad[agents]), np.sin(states.yaw_rad[agents])
    along = c * local[:, 0] + s * local[:, 1]
    across = -s * local[:, 0] + c * local[:, 1]
    size = world.agents.size_wlh[agents]
    # inside the box up to the range noise (2 cm, 4 sigma) and the ego's motion during the sweep
    # (compensated exactly, so only rounding remains)
    margin = 0.1
    inside = (
        (np.abs(along) <= size[:, 1] / 2 + margin)
        & (np.abs(across) <= size[:, 0] / 2 + margin)
        & (np.abs(local[:, 2]) <= size[:, 2] / 2 + margin)
    )
    assert inside.mean() > 0.99


def test_projected_lidar_points_fall_on_their_agent_in_the_image(scene) -> None:
    layout, _world, _states, caster, sweep, global_from_ego = scene
    camera = CAMERAS[0]
    rendered = render_camera(
        caster, layout, camera, global_from_ego, 0.5, 1.0, np.array([0.0, 0.0, 1.0]), np.random.default_rng(0)
    )
    intrinsics = camera.intrinsics(0.5)
    camera_from_lidar = (global_from_ego @ camera.ego_from_camera()).inverse() @ global_from_ego @ EGO_FROM_LIDAR
    hit = sweep.agent >= 0
    projection = intrinsics.project(camera_from_lidar.apply(sweep.points[hit, :3].astype(np.float64)))
    seen = projection.in_image
    assert seen.sum() > 100
    uv = np.round(projection.uv[seen]).astype(int)
    ids_at_points = rendered.agent_internal[uv[:, 1], uv[:, 0]]
    # a point on an agent's surface projects onto that agent, unless a thin nearer part (or the
    # pixel grid at an edge) covers it: require a large majority
    assert np.mean(ids_at_points == sweep.agent[hit][seen]) > 0.9
    assert rendered.image.shape == (450, 800, 3)


@pytest.fixture(scope="module")
def full_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_log(
        tmp_path_factory.mktemp("synthetic-full") / "log",
        num_scenes=1,
        seconds=1.0,
        seed=5,
        image_scale=0.25,
        progress=False,
    )


def test_full_log_files(full_log: Path) -> None:
    records = json.loads((full_log / "v1.0-mini" / "sample_data.json").read_text())
    lidar = [r for r in records if r["fileformat"] == "pcd"]
    images = [r for r in records if r["fileformat"] == "jpg"]
    assert len(lidar) == 11 and len(images) == 12
    for record in lidar:
        points = np.fromfile(full_log / record["filename"], dtype=np.float32).reshape(-1, 5)
        assert len(points) == 34_688
        assert record["filename"].startswith("samples/" if record["is_key_frame"] else "sweeps/")
    for record in images:
        image = cv2.imread(str(full_log / record["filename"]))
        assert image.shape == (record["height"], record["width"], 3) == (225, 400, 3)
        assert image.std() > 10  # not blank
    calibrated = json.loads((full_log / "v1.0-mini" / "calibrated_sensor.json").read_text())
    front = next(r for r in calibrated if r["camera_intrinsic"])
    assert front["camera_intrinsic"][0][0] == pytest.approx(1266.0 * 0.25)


def test_avfusion_log_reader_reads_the_full_log(full_log: Path) -> None:
    log = NuScenesLog.open(full_log, "v1.0-mini", split="synth_val")
    tokens = log.sample_tokens()
    frame = log.frame(tokens[-1])
    assert not frame.missing
    assert len(frame.cameras) == 6 and frame.gnss is not None and frame.map is not None
    assert frame.lidar.points.shape[0] > 100_000  # keyframe + 9 sweeps, minus the roof
    assert len(frame.gt_boxes) > 20
    assert all(abs(skew) <= 50_500 for skew in frame.skew_us.values())


@pytest.mark.heavy
def test_demo_size_log_at_full_resolution(tmp_path: Path) -> None:
    root = make_synthetic_log(tmp_path / "demo", num_scenes=2, seconds=10.0, seed=0, progress=False)
    records = json.loads((root / "v1.0-mini" / "sample_data.json").read_text())
    assert sum(r["fileformat"] == "pcd" for r in records) == 2 * 191
    assert sum(r["fileformat"] == "jpg" for r in records) == 2 * 20 * 6
    for record in records:
        assert (root / record["filename"]).is_file()
    image = cv2.imread(str(root / next(r["filename"] for r in records if r["fileformat"] == "jpg")))
    assert image.shape == (900, 1600, 3)
    log = NuScenesLog.open(root, "v1.0-mini")
    for token in log.sample_tokens():
        frame = log.frame(token)
        # GNSS dropouts are simulated on purpose (gnss.py); every other sensor must be there
        assert set(frame.missing) <= {"GNSS"} and len(frame.cameras) == 6 and frame.lidar is not None
