"""Triangle meshes of the world at one instant, and one ray caster for lidar, cameras and visibility.

Every agent is a few frustums (boxes with a possibly smaller top) laid out per class inside its
annotation box, so that what the lidar hits and the cameras see of an agent lies inside its box and
the classes have distinct silhouettes (a car's cabin, a truck's cab and cargo box, a bus's window
band, a cone's taper...). Static structures are boxes; the ground is one large quad at z = 0.
All triangles of a scene go into one Open3D `RaycastingScene` (Embree), so a ray's primitive id
indexes the per-triangle material, colour and owning agent directly.

Frames: map frame (x east, y north, z up, metres). Box frame: x along the length, y along the
width, z up, origin at the box centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from avfusion.datasets.synthetic.layout import Material, StaticBoxes
from avfusion.datasets.synthetic.world import Agents, AgentStates
from avfusion.labels import DETECTION_CLASSES

M = Material
# A part: (x_centre, y_centre) in units of (l, w); z range (bottom, top) in units of h from the box
# floor; bottom size (x, y) and top size (x, y) in units of (l, w); material.
Part = tuple[float, float, float, float, float, float, float, float, Material]


def _box(x: float, y: float, z0: float, z1: float, sx: float, sy: float, material: Material) -> Part:
    return (x, y, z0, z1, sx, sy, sx, sy, material)


def _wheels(xs: tuple[float, ...], y: float, z1: float, sx: float, sy: float) -> list[Part]:
    return [_box(x, side * y, 0.0, z1, sx, sy, M.TYRE) for x in xs for side in (-1.0, 1.0)]


PARTS_CAR = [
    _box(0.0, 0.0, 0.18, 0.58, 1.0, 1.0, M.BODY),
    (-0.05, 0.0, 0.58, 1.0, 0.62, 0.94, 0.42, 0.80, M.GLASS),
    _box(-0.4975, 0.0, 0.30, 0.38, 0.005, 0.26, M.REFLECTOR),  # rear number plate
    *_wheels((-0.32, 0.32), 0.40, 0.30, 0.15, 0.20),
]
PARTS_TRUCK = [
    _box(0.37, 0.0, 0.15, 0.85, 0.24, 1.0, M.BODY),
    _box(0.49, 0.0, 0.50, 0.80, 0.02, 0.90, M.GLASS),
    _box(-0.12, 0.0, 0.20, 1.0, 0.74, 1.0, M.BUILDING),  # cargo box, coloured like a light facade
    _box(0.0, 0.0, 0.12, 0.20, 0.98, 0.80, M.TYRE),
    *_wheels((0.35, -0.10, -0.35), 0.42, 0.20, 0.10, 0.16),
]
PARTS_BUS = [
    _box(0.0, 0.0, 0.10, 1.0, 1.0, 0.97, M.BODY),
    _box(0.0, 0.0, 0.45, 0.85, 0.96, 1.0, M.GLASS),
    _box(0.4975, 0.0, 0.25, 0.85, 0.005, 0.90, M.GLASS),
    *_wheels((-0.30, 0.30), 0.43, 0.12, 0.08, 0.14),
]
PARTS_TRAILER = [
    _box(0.0, 0.0, 0.28, 1.0, 1.0, 1.0, M.BUILDING),
    _box(0.0, 0.0, 0.15, 0.28, 0.95, 0.80, M.TYRE),
    _box(-0.4975, 0.0, 0.30, 0.36, 0.005, 0.9, M.REFLECTOR),
    *_wheels((-0.30, -0.38), 0.42, 0.15, 0.06, 0.16),
]
PARTS_CONSTRUCTION = [
    _box(0.0, 0.38, 0.0, 0.22, 0.90, 0.24, M.TYRE),
    _box(0.0, -0.38, 0.0, 0.22, 0.90, 0.24, M.TYRE),
    _box(-0.15, 0.0, 0.22, 0.62, 0.70, 1.0, M.MACHINE),
    _box(-0.10, 0.0, 0.62, 1.0, 0.30, 0.60, M.GLASS),
    _box(0.30, 0.0, 0.35, 0.85, 0.40, 0.20, M.MACHINE),
    _box(0.45, 0.0, 0.05, 0.35, 0.10, 0.70, M.TYRE),
]
# Pedestrians: two legs, torso, two arms and a head; standing with the legs side by side and the
# arms down, walking mid-stride (legs apart along the box's length, arms swinging against them).
PARTS_PEDESTRIAN = [
    _box(0.0, -0.17, 0.0, 0.47, 0.30, 0.24, M.TROUSERS),
    _box(0.0, 0.17, 0.0, 0.47, 0.30, 0.24, M.TROUSERS),
    _box(0.0, 0.0, 0.47, 0.83, 0.45, 0.62, M.CLOTHES),
    _box(0.0, -0.40, 0.49, 0.80, 0.22, 0.14, M.CLOTHES),
    _box(0.0, 0.40, 0.49, 0.80, 0.22, 0.14, M.CLOTHES),
    _box(0.0, 0.0, 0.86, 1.0, 0.30, 0.32, M.SKIN),
]
PARTS_PEDESTRIAN_WALKING = [
    _box(0.20, -0.10, 0.0, 0.47, 0.26, 0.24, M.TROUSERS),
    _box(-0.20, 0.10, 0.0, 0.47, 0.26, 0.24, M.TROUSERS),
    _box(0.0, 0.0, 0.47, 0.83, 0.45, 0.62, M.CLOTHES),
    _box(-0.14, -0.40, 0.50, 0.80, 0.22, 0.14, M.CLOTHES),
    _box(0.14, 0.40, 0.50, 0.80, 0.22, 0.14, M.CLOTHES),
    _box(0.0, 0.0, 0.86, 1.0, 0.30, 0.32, M.SKIN),
]
_VEST = _box(0.0, 0.0, 0.62, 0.68, 0.47, 0.64, M.REFLECTOR)
PARTS_WORKER = [*PARTS_PEDESTRIAN, _VEST]
PARTS_WORKER_WALKING = [*PARTS_PEDESTRIAN_WALKING, _VEST]
PARTS_MOTORCYCLE_RIDER = [
    _box(0.33, 0.0, 0.0, 0.40, 0.30, 0.20, M.TYRE),
    _box(-0.33, 0.0, 0.0, 0.40, 0.30, 0.20, M.TYRE),
    _box(0.0, 0.0, 0.30, 0.60, 0.55, 0.70, M.BODY),
    _box(-0.08, 0.0, 0.55, 1.0, 0.30, 0.90, M.CLOTHES),
    _box(-0.4975, 0.0, 0.35, 0.42, 0.005, 0.3, M.REFLECTOR),
]
PARTS_MOTORCYCLE = [
    _box(0.33, 0.0, 0.0, 0.50, 0.30, 0.20, M.TYRE),
    _box(-0.33, 0.0, 0.0, 0.50, 0.30, 0.20, M.TYRE),
    _box(0.0, 0.0, 0.35, 0.80, 0.55, 0.70, M.BODY),
    _box(0.30, 0.0, 0.80, 1.0, 0.10, 1.0, M.TYRE),
]
PARTS_BICYCLE_RIDER = [
    _box(0.30, 0.0, 0.0, 0.45, 0.38, 0.12, M.TYRE),
    _box(-0.30, 0.0, 0.0, 0.45, 0.38, 0.12, M.TYRE),
    _box(0.0, 0.0, 0.30, 0.55, 0.50, 0.12, M.BODY),
    _box(-0.05, 0.0, 0.50, 1.0, 0.30, 0.90, M.CLOTHES),
]
PARTS_BICYCLE = [
    _box(0.30, 0.0, 0.0, 0.60, 0.38, 0.12, M.TYRE),
    _box(-0.30, 0.0, 0.0, 0.60, 0.38, 0.12, M.TYRE),
    _box(0.0, 0.0, 0.35, 0.80, 0.50, 0.12, M.BODY),
    _box(0.30, 0.0, 0.80, 1.0, 0.10, 1.0, M.TYRE),
]
PARTS_CONE = [
    _box(0.0, 0.0, 0.0, 0.05, 1.0, 1.0, M.CONE),
    (0.0, 0.0, 0.05, 0.45, 0.75, 0.75, 0.45, 0.45, M.CONE),
    (0.0, 0.0, 0.45, 0.62, 0.45, 0.45, 0.32, 0.32, M.REFLECTOR),
    (0.0, 0.0, 0.62, 1.0, 0.32, 0.32, 0.04, 0.04, M.CONE),
]
PARTS_BARRIER = [
    _box(0.0, 0.0, 0.0, 0.35, 1.0, 1.0, M.BARRIER),
    (0.0, 0.0, 0.35, 1.0, 0.60, 1.0, 0.35, 1.0, M.BARRIER),
]


def agent_parts(category: str, label: int, rider: bool, moving: bool = False) -> list[Part]:
    """The part list of an agent's shape (`moving`: a pedestrian who walks, mid-stride)."""
    name = DETECTION_CLASSES[label]
    if name == "car":
        return PARTS_CAR
    if name == "truck":
        return PARTS_TRUCK
    if name == "bus":
        return PARTS_BUS
    if name == "trailer":
        return PARTS_TRAILER
    if name == "construction_vehicle":
        return PARTS_CONSTRUCTION
    if name == "pedestrian":
        if category.endswith("construction_worker"):
            return PARTS_WORKER_WALKING if moving else PARTS_WORKER
        return PARTS_PEDESTRIAN_WALKING if moving else PARTS_PEDESTRIAN
    if name == "motorcycle":
        return PARTS_MOTORCYCLE_RIDER if rider else PARTS_MOTORCYCLE
    if name == "bicycle":
        return PARTS_BICYCLE_RIDER if rider else PARTS_BICYCLE
    if name == "traffic_cone":
        return PARTS_CONE
    return PARTS_BARRIER


# Frustum triangles over its 8 vertices (bottom 0-3, top 4-7, counter-clockwise from above),
# wound so that normals point outward.
_FRUSTUM_TRIANGLES = np.array(
    [
        [0, 2, 1],
        [0, 3, 2],
        [4, 5, 6],
        [4, 6, 7],
        [0, 1, 5],
        [0, 5, 4],
        [1, 2, 6],
        [1, 6, 5],
        [2, 3, 7],
        [2, 7, 6],
        [3, 0, 4],
        [3, 4, 7],
    ],
    dtype=np.int64,
)
_SQUARE = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def frustum_vertices(
    center_xy: np.ndarray,
    z0: np.ndarray,
    z1: np.ndarray,
    bottom_xy: np.ndarray,
    top_xy: np.ndarray,
    yaw_rad: np.ndarray,
) -> np.ndarray:
    """`(N, 8, 3)` vertices of N upright frustums: rectangles of sizes `bottom_xy`/`top_xy` `(N, 2)`
    at heights `z0`/`z1` `(N,)`, centred on `center_xy` `(N, 2)`, rotated by `yaw_rad` `(N,)`."""
    local = np.concatenate([_SQUARE[None] * bottom_xy[:, None, :], _SQUARE[None] * top_xy[:, None, :]], axis=1)
    c, s = np.cos(yaw_rad)[:, None], np.sin(yaw_rad)[:, None]
    x = c * local[..., 0] - s * local[..., 1] + center_xy[:, 0:1]
    y = s * local[..., 0] + c * local[..., 1] + center_xy[:, 1:2]
    z = np.concatenate([np.repeat(z0[:, None], 4, axis=1), np.repeat(z1[:, None], 4, axis=1)], axis=1)
    return np.stack([x, y, z], axis=-1)


@dataclass(frozen=True, slots=True, eq=False)
class SceneMesh:
    """All triangles of the world at one instant (map frame).

    Attributes:
        vertices: `(V, 3)` float32.
        triangles: `(T, 3)` int64 vertex indices.
        material: `(T,)` int64 `Material`.
        color_rgb: `(T, 3)` uint8 base colour.
        agent: `(T,)` int64 index of the agent the triangle belongs to, -1 for the world.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    material: np.ndarray
    color_rgb: np.ndarray
    agent: np.ndarray

    def __post_init__(self) -> None:
        t = len(self.triangles)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or self.triangles.shape != (t, 3):
            raise ValueError(
                f"SceneMesh needs vertices (V, 3) and triangles (T, 3), got {self.vertices.shape}, "
                f"{self.triangles.shape}"
            )
        for name, shape in (("material", (t,)), ("color_rgb", (t, 3)), ("agent", (t,))):
            if getattr(self, name).shape != shape:
                raise ValueError(f"SceneMesh.{name} must have shape {shape}, got {getattr(self, name).shape}")


MATERIAL_COLORS = {
    M.GLASS: (40, 55, 70),
    M.TYRE: (30, 30, 32),
    M.TROUSERS: (45, 45, 60),
    M.SKIN: (205, 160, 130),
    M.CONE: (245, 110, 20),
    M.REFLECTOR: (240, 240, 235),
    M.BARRIER: (215, 60, 50),
    M.MACHINE: (235, 180, 20),
    M.BUILDING: (225, 225, 220),
    M.LIGHT: (220, 30, 30),
}


@dataclass(frozen=True, slots=True, eq=False)
class AgentShapes:
    """The parts of every agent's shape, in metres in its box frame (built once per scene).

    Attributes:
        owner: `(P,)` int64 agent index of each part.
        table: `(P, 8)` float64 part centre x, y (m, box frame), bottom and top z (m above the box
            floor), bottom size x, y and top size x, y (m).
        material: `(P,)` int64 `Material`.
        color_rgb: `(P, 3)` uint8.
    """

    owner: np.ndarray
    table: np.ndarray
    material: np.ndarray
    color_rgb: np.ndarray

    @staticmethod
    def of(agents: Agents) -> AgentShapes:
        owners, rows, materials, colors = [], [], [], []
        for index in range(len(agents)):
            parts = agent_parts(
                agents.category[index],
                int(agents.label[index]),
                bool(agents.rider[index]),
                moving=bool(agents.profile[index] >= 0),
            )
            width, length, height = agents.size_wlh[index]
            for part in parts:
                owners.append(index)
                rows.append(np.array(part[:8]) * (length, width, height, height, length, width, length, width))
                materials.append(int(part[8]))
                if part[8] in (M.BODY, M.CLOTHES):
                    colors.append(agents.color_rgb[index])
                else:
                    colors.append(MATERIAL_COLORS.get(part[8], (128, 128, 128)))
        return AgentShapes(
            np.array(owners, np.int64),
            np.array(rows, np.float64).reshape(-1, 8),
            np.array(materials, np.int64),
            np.array(colors, np.uint8).reshape(-1, 3),
        )


def agent_mesh(shapes: AgentShapes, states: AgentStates, which: np.ndarray) -> tuple[np.ndarray, ...]:
    """Frustum vertices `(K, 8, 3)`, materials `(K,)`, colours `(K, 3)` and owners `(K,)` of the
    parts of the agents flagged in `which` (`(N,)` bool) in their states."""
    keep = which[shapes.owner]
    owner = shapes.owner[keep]
    table = shapes.table[keep]
    yaw = states.yaw_rad[owner]
    c, s = np.cos(yaw), np.sin(yaw)
    center_xy = states.center[owner, :2] + np.stack(
        [c * table[:, 0] - s * table[:, 1], s * table[:, 0] + c * table[:, 1]], -1
    )
    floor = np.zeros(len(owner))  # agents stand on the ground (z = 0): their box floor
    vertices = frustum_vertices(center_xy, floor + table[:, 2], floor + table[:, 3], table[:, 4:6], table[:, 6:8], yaw)
    return vertices, shapes.material[keep], shapes.color_rgb[keep], owner


def build_scene_mesh(
    structures: StaticBoxes, shapes: AgentShapes, states: AgentStates, center_xy: np.ndarray, radius_m: float
) -> SceneMesh:
    """The mesh of everything within `radius_m` (m, xy) of `center_xy`, plus the ground quad."""
    reach = np.hypot(structures.size_xyz[:, 0], structures.size_xyz[:, 1]) / 2
    near_static = np.hypot(*(structures.center[:, :2] - center_xy).T) < radius_m + reach
    static = structures.select(near_static)
    static_vertices = frustum_vertices(
        static.center[:, :2],
        static.center[:, 2] - static.size_xyz[:, 2] / 2,
        static.center[:, 2] + static.size_xyz[:, 2] / 2,
        static.size_xyz[:, :2],
        static.size_xyz[:, :2],
        static.yaw_rad,
    )
    near_agents = np.hypot(*(states.center[:, :2] - center_xy).T) < radius_m
    agent_vertices, agent_materials, agent_colors, agent_owners = agent_mesh(shapes, states, near_agents)

    frustums = np.concatenate([static_vertices, agent_vertices])  # (F, 8, 3)
    count = frustums.shape[0]
    triangles = (_FRUSTUM_TRIANGLES[None] + 8 * np.arange(count)[:, None, None]).reshape(-1, 3)
    per_frustum = lambda values: np.repeat(values, 12, axis=0)  # noqa: E731 - twelve triangles a frustum
    materials = per_frustum(np.concatenate([static.material, agent_materials]))
    colors = per_frustum(np.concatenate([static.color_rgb, agent_colors]))
    owners = per_frustum(np.concatenate([np.full(len(static), -1, np.int64), agent_owners]))

    # Ground: one quad of +-(radius + 200) m around the centre.
    half = radius_m + 200.0
    gx, gy = float(center_xy[0]), float(center_xy[1])
    ground = np.array(
        [[gx - half, gy - half, 0], [gx + half, gy - half, 0], [gx + half, gy + half, 0], [gx - half, gy + half, 0]]
    )
    base = count * 8
    vertices = np.concatenate([frustums.reshape(-1, 3), ground]).astype(np.float32)
    triangles = np.concatenate([triangles, np.array([[base, base + 1, base + 2], [base, base + 2, base + 3]])])
    materials = np.concatenate([materials, [int(M.GROUND)] * 2])
    colors = np.concatenate([colors, np.zeros((2, 3), np.uint8)])
    owners = np.concatenate([owners, [-1, -1]])
    return SceneMesh(
        vertices,
        triangles.astype(np.int64),
        materials.astype(np.int64),
        colors.astype(np.uint8),
        owners.astype(np.int64),
    )


@dataclass(frozen=True, slots=True, eq=False)
class RayHits:
    """First hits of N rays.

    Attributes:
        distance_m: `(N,)` float64 distance along the (unit) ray; inf where nothing is hit.
        triangle: `(N,)` int64 triangle index into the mesh, -1 where nothing is hit.
        normal: `(N, 3)` float32 unit normal of the hit triangle (zero where nothing is hit).
    """

    distance_m: np.ndarray
    triangle: np.ndarray
    normal: np.ndarray


class RayCaster:
    """First-hit ray casting against a `SceneMesh` (Open3D RaycastingScene / Embree)."""

    def __init__(self, mesh: SceneMesh) -> None:
        self.mesh = mesh
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(mesh.vertices, np.float32)),
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(mesh.triangles, np.uint32)),
        )

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> RayHits:
        """Cast rays from `origins` `(N, 3)` along unit `directions` `(N, 3)` (map frame)."""
        return self.cast_packed(np.concatenate([origins, directions], axis=1).astype(np.float32))

    def cast_packed(self, rays: np.ndarray) -> RayHits:
        """Cast `(N, 6)` float32 rays `(origin, unit direction)` (map frame)."""
        result = self._scene.cast_rays(o3d.core.Tensor.from_numpy(np.ascontiguousarray(rays, np.float32)))
        distance = result["t_hit"].numpy().astype(np.float64)
        hit = np.isfinite(distance)
        triangle = np.where(hit, result["primitive_ids"].numpy().astype(np.int64), -1)
        return RayHits(distance, triangle, result["primitive_normals"].numpy())
