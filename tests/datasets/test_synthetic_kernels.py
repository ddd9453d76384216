"""The synthetic sensors' compiled kernels against their NumPy twins and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.calibration.se3 import SE3
from avfusion.datasets.synthetic import cameras, shading
from avfusion.datasets.synthetic.geometry import AgentShapes, RayCaster, build_scene_mesh
from avfusion.datasets.synthetic.layout import LocationLayout, build_location_layout
from avfusion.datasets.synthetic.lidar import GROUND_CLASS_REFLECTIVITY, ground_reflectivity
from avfusion.datasets.synthetic.rig import CAMERAS
from avfusion.datasets.synthetic.roads import LoopRoad
from avfusion.datasets.synthetic.world import build_scene_world


@pytest.fixture(scope="module")
def scene():
    layout = build_location_layout(2, "singapore-onenorth")
    world = build_scene_world(2, 0, layout, 2.0)
    xy, yaw, _ = world.ego_pose(0.5)
    mesh = build_scene_mesh(layout.structures, AgentShapes.of(world.agents), world.agent_states(0.5), xy, 110.0)
    return layout, RayCaster(mesh), SE3.from_yaw(yaw, (xy[0], xy[1], 0.0))


def test_ground_classes_equal_the_numpy_colours_and_reflectivity(scene) -> None:
    layout, _caster, global_from_ego = scene
    # points around the ego and across a loop's dashed dividers (the arc-length branch)
    rng = np.random.default_rng(0)
    xy = global_from_ego.translation[:2] + rng.uniform(-80.0, 80.0, (60_000, 2))
    loop = layout.loops[0]
    s = rng.uniform(0.0, float(loop.perimeter_at(0.0)), 20_000)
    along, _ = loop.pose_at(s, rng.choice([-3.5, 3.5], s.size) + rng.uniform(-0.1, 0.1, s.size))
    xy = np.concatenate([xy, along])
    classes = shading.ground_classes(layout, xy)
    kerb = classes >= shading.GROUND_KERB_FLAG
    colours = np.where(kerb[:, None], shading.KERB_RGB, shading.GROUND_RGB[classes % shading.GROUND_KERB_FLAG])
    np.testing.assert_array_equal(colours, cameras.ground_colors(layout, xy))
    np.testing.assert_array_equal(
        GROUND_CLASS_REFLECTIVITY[classes % shading.GROUND_KERB_FLAG], ground_reflectivity(layout, xy)
    )
    # every class occurs, dashes included
    assert set(np.unique(classes % shading.GROUND_KERB_FLAG)) == {0, 1, 2, 3, 4} and kerb.any()


def test_ground_class_by_hand() -> None:
    # one loop centred at the origin with half extents 100 x 80 m, corner radius 20 m: the bottom
    # straight's centre line is y = -80, offsets grow outward (southward there)
    city = build_location_layout(0, "boston-seaport")
    layout = LocationLayout(city.location, (LoopRoad((0.0, 0.0), 100.0, 80.0, 20.0),), city.structures, city.size_m)
    x = 0.0
    # offset d below the bottom straight: 0.15 yellow centre line, 3 road, 7 edge line, 9.9
    # sidewalk on the kerb, 12 sidewalk, 30 verge
    cases = {-80.15: 4, -83.0: 2, -87.0: 3, -89.9: 1 + 8, -92.0: 1, -110.0: 0}
    ys = np.array(list(cases))
    np.testing.assert_array_equal(
        shading.ground_classes(layout, np.stack([np.full(ys.size, x), ys], 1)), list(cases.values())
    )
    # dashed divider 3.5 m out: the centre line's arc length starts at x = -80 on the bottom
    # straight (corner centres at +-80), paint for arc mod 9 < 3
    arcs = np.array([1.0, 4.0, 10.0, 13.0])
    points = np.stack([-80.0 + arcs, np.full(arcs.size, -83.5)], 1)
    np.testing.assert_array_equal(shading.ground_classes(layout, points), [3, 2, 3, 2])


def test_pinhole_rays_equal_camera_rays(scene) -> None:
    _, _, global_from_ego = scene
    for camera in CAMERAS[:2]:
        origins, directions, (h, w) = cameras.camera_rays(camera, 0.125, global_from_ego)
        rays, shape = cameras.camera_ray_bundle(camera, 0.125, global_from_ego)
        assert shape == (h, w) and rays.shape == (h * w, 6) and rays.dtype == np.float32
        np.testing.assert_allclose(rays[:, :3], origins, atol=1e-4)
        np.testing.assert_allclose(rays[:, 3:], directions, atol=1e-6)


def test_shading_kernel_equals_the_numpy_twin_at_the_cast_resolution(scene) -> None:
    layout, caster, global_from_ego = scene
    sun = np.array([0.4, -0.3, 0.8]) / np.linalg.norm([0.4, -0.3, 0.8])
    camera = CAMERAS[0]
    origins, directions, (h, w) = cameras.camera_rays(camera, 0.25, global_from_ego)
    hits = caster.cast(origins, directions)
    expected = cameras.shade_hits(
        caster.mesh,
        layout,
        origins,
        directions,
        hits.distance_m,
        hits.triangle,
        hits.normal,
        sun,
        np.random.default_rng(0),
    )
    expected = np.clip(np.round(expected), 0, 255).reshape(h, w, 3)
    cast = cameras.cast_camera(caster, camera, global_from_ego, 0.25)
    mesh = caster.mesh
    ours = shading.shade_image(
        cast.triangle,
        cast.distance_m,
        np.linalg.inv(camera.intrinsics(0.25).matrix),
        cast.global_from_camera.rotation,
        cast.global_from_camera.translation,
        shading.triangle_planes(mesh.vertices, mesh.triangles),
        mesh.material,
        mesh.agent,
        mesh.color_rgb,
        shading.loop_table(layout),
        sun,
        0,
        h,
        w,
        noise_std=0.0,
    )
    difference = np.abs(ours.astype(int) - expected.astype(int)).max(axis=2)
    # float32 (Open3D) vs float64 (plane) distances: rounding differs by a level at most, and a
    # point on a paint edge may fall on either side
    assert np.mean(difference <= 1) > 0.999
    # the triangle planes' normals are the ones Open3D reports
    hit = hits.triangle >= 0
    planes = shading.triangle_planes(mesh.vertices, mesh.triangles)
    np.testing.assert_allclose(planes[hits.triangle[hit], :3], hits.normal[hit], atol=1e-5)


def test_shading_noise_is_a_function_of_seed_and_pixel(scene) -> None:
    layout, caster, global_from_ego = scene
    camera = CAMERAS[3]
    cast = cameras.cast_camera(caster, camera, global_from_ego, 0.125)
    loops = shading.loop_table(layout)
    sun = np.array([0.0, 0.0, 1.0])
    first = cameras.shade_camera(cast, caster.mesh, loops, camera, 0.25, 0.25, sun, noise_seed=7)
    again = cameras.shade_camera(cast, caster.mesh, loops, camera, 0.25, 0.25, sun, noise_seed=7)
    other = cameras.shade_camera(cast, caster.mesh, loops, camera, 0.25, 0.25, sun, noise_seed=8)
    np.testing.assert_array_equal(first, again)
    noise = first.astype(float) - other.astype(float)  # two independent draws: std 2.5 * sqrt(2)
    assert first.shape == (225, 400, 3)
    assert 2.5 < noise.std() < 4.5 and abs(noise.mean()) < 0.1


def test_near_normal_draws_have_unit_variance() -> None:
    draws = np.array(
        [shading.irwin_hall_normal(np.uint64(shading.hash_bits(np.uint64(3), np.uint64(i)))) for i in range(20_000)]
    )
    assert abs(draws.mean()) < 0.03 and abs(draws.std() - 1.0) < 0.03 and np.abs(draws).max() <= 3.0


def test_box_ray_counts_equal_the_slab_test(scene) -> None:
    _, _caster, global_from_ego = scene
    rng = np.random.default_rng(4)
    camera = CAMERAS[0]
    rays, (h, w) = cameras.camera_ray_bundle(camera, 0.125, global_from_ego)
    forward = global_from_ego.apply(np.array([[12.0, 0.0, 0.8], [25.0, 3.0, 1.0], [8.0, -2.0, 0.5]]))
    sizes = np.array([[1.9, 4.6, 1.7], [2.4, 6.5, 2.6], [0.7, 0.7, 1.8]])
    yaws = rng.uniform(-np.pi, np.pi, 3)
    owner = rng.integers(-1, 3, h * w)
    distance = rng.uniform(1.0, 40.0, h * w)
    rects = np.array([[0, w, 0, h], [w // 4, w // 2, h // 3, h], [0, 5, 0, 5]])
    agents = np.array([0, 1, 2])
    visible, occluded = shading.count_box_rays(
        rays[:, :3], rays[:, 3:], owner, distance, w, rects, agents, forward, sizes, yaws
    )
    for k in range(3):
        rows, cols = np.arange(rects[k, 2], rects[k, 3]), np.arange(rects[k, 0], rects[k, 1])
        index = (rows[:, None] * w + cols[None, :]).reshape(-1)
        t_near, t_far = cameras.box_ray_interval(
            rays[index, :3].astype(np.float64), rays[index, 3:].astype(np.float64), forward[k], sizes[k], yaws[k]
        )
        enters = (t_near <= t_far) & (t_far > 0)
        assert visible[k] == np.count_nonzero(enters & (owner[index] == k))
        assert occluded[k] == np.count_nonzero(enters & (owner[index] != k) & (distance[index] < np.maximum(t_near, 0)))
    assert visible[0] > 0 and occluded[0] > 0
