"""One scene's world: the ego's drive around a loop road and the agents of all 10 detection classes.

Everything moves along curves parallel to the loop's centre-line (lanes, parking strips, sidewalk
streams; see `roads.py`), so positions, headings and velocities follow from one arc-length
function per *track*: all agents sharing a track move with one speed profile and therefore never
run into each other; the ego shares its lane's profile with the cars ahead of and behind it.
Parked vehicles, work zones (construction vehicle, cones, barriers), bus stops, standing and
sitting pedestrians and parked cycles are static.

Frames and units: map frame (x east, y north, z up, m); times are seconds from the scene start;
yaw in radians counter-clockwise from +x; box sizes in nuScenes order (w, l, h).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avfusion.datasets.synthetic.layout import LocationLayout, stable_seed, traffic_side
from avfusion.datasets.synthetic.roads import LANE_CENTERS_M, PARKING_STRIP_M, LoopRoad
from avfusion.labels import CLASS_INDEX, DETECTION_CLASSES

# nuScenes-typical box sizes (w, l, h) mean and spread per category (v1.0-mini statistics).
CATEGORY_SIZES = {
    "vehicle.car": ((1.92, 4.62, 1.69), (0.16, 0.36, 0.21)),
    "vehicle.truck": ((2.35, 6.50, 2.62), (0.25, 1.00, 0.40)),
    "vehicle.bus.rigid": ((2.95, 11.46, 3.80), (0.10, 0.90, 0.20)),
    "vehicle.bus.bendy": ((2.83, 17.20, 3.32), (0.10, 0.80, 0.15)),
    "vehicle.trailer": ((2.28, 10.14, 3.71), (0.20, 1.60, 0.35)),
    "vehicle.construction": ((2.58, 5.57, 2.38), (0.35, 0.90, 0.45)),
    "human.pedestrian.adult": ((0.68, 0.73, 1.76), (0.08, 0.10, 0.09)),
    "human.pedestrian.child": ((0.52, 0.50, 1.30), (0.05, 0.06, 0.10)),
    "human.pedestrian.construction_worker": ((0.72, 0.76, 1.78), (0.08, 0.10, 0.08)),
    "vehicle.motorcycle": ((0.68, 1.95, 1.47), (0.08, 0.15, 0.12)),
    "vehicle.bicycle": ((0.64, 1.82, 1.39), (0.07, 0.12, 0.10)),
    "movable_object.trafficcone": ((0.47, 0.45, 0.78), (0.05, 0.05, 0.12)),
    "movable_object.barrier": ((2.32, 0.61, 1.06), (0.30, 0.08, 0.10)),
}

CATEGORY_CLASS = {
    "vehicle.car": "car",
    "vehicle.truck": "truck",
    "vehicle.bus.rigid": "bus",
    "vehicle.bus.bendy": "bus",
    "vehicle.trailer": "trailer",
    "vehicle.construction": "construction_vehicle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.bicycle": "bicycle",
    "movable_object.trafficcone": "traffic_cone",
    "movable_object.barrier": "barrier",
}

VEHICLE_CLASSES = frozenset({"car", "truck", "bus", "trailer", "construction_vehicle"})
# Below this speed (m/s) a vehicle in a lane is "stopped" and a pedestrian "standing".
STOPPED_SPEED_M_S = 0.3
PROFILE_STEP_S = 0.01
# Lateral offsets (m, magnitude) of the sidewalk tracks.
WALK_OFFSETS_M = (11.0, 11.75)
STAND_OFFSET_M = 12.8
CYCLE_TRACK_M = 13.8
CYCLE_PARKING_M = 15.3
# Gaps between agents along their tracks (m): a minimum plus an exponential of the given mean.
# Chosen against nuScenes' published class counts (v1.0-mini, per keyframe: car 18.9, adult
# 11.8, barrier 5.7, cone 3.4, truck 1.6, motorcycle 1.2, bus 0.9, bicycle 0.6): with sidewalk
# streams every 35 m and parked cycles every 36 m a keyframe held 29 pedestrians, 8.5 bicycles
# and 7.4 motorcycles within 75 m, teaching that anything small beside the road is a two-wheeler.
LANE_GAP_MIN_M, LANE_GAP_MEAN_M = 5.0, 28.0
PARKING_GAP_MIN_M, PARKING_GAP_MEAN_M = 1.0, 14.0
WALK_GAP_MEAN_M = 90.0
STAND_GAP_MEAN_M = 110.0
CYCLE_TRACK_GAP_MEAN_M = 400.0
CYCLE_PARKING_GAP_MIN_M, CYCLE_PARKING_GAP_MEAN_M = 8.0, 300.0

BODY_COLORS = np.array(
    [
        [200, 30, 30],
        [30, 60, 170],
        [230, 230, 230],
        [25, 25, 25],
        [140, 140, 145],
        [20, 110, 60],
        [210, 170, 30],
        [120, 30, 110],
        [60, 150, 200],
        [170, 90, 40],
    ],
    dtype=np.uint8,
)
CLOTHES_COLORS = np.array(
    [
        [180, 40, 40],
        [40, 80, 160],
        [230, 220, 60],
        [40, 140, 70],
        [220, 120, 30],
        [150, 60, 150],
        [245, 245, 245],
        [30, 30, 30],
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True, slots=True, eq=False)
class SpeedProfiles:
    """Arc-length functions of time, sampled every `PROFILE_STEP_S` from `start_s`.

    Attributes:
        start_s: time (s) of the first sample (a little before the scene start).
        distance_m: `(P, T)` distance travelled since time 0 (so 0 at t = 0), non-decreasing.
        speed_m_s: `(P, T)` speed, its derivative.
    """

    start_s: float
    distance_m: np.ndarray
    speed_m_s: np.ndarray

    def __post_init__(self) -> None:
        if self.distance_m.shape != self.speed_m_s.shape or self.distance_m.ndim != 2:
            raise ValueError(
                f"SpeedProfiles arrays must both be (P, T), got {self.distance_m.shape}, {self.speed_m_s.shape}"
            )

    def at(self, profile: np.ndarray, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """`(distance_m, speed_m_s)` of profiles `profile` (index array) at time `t_s` (linear interpolation)."""
        u = (t_s - self.start_s) / PROFILE_STEP_S
        i = int(np.clip(np.floor(u), 0, self.distance_m.shape[1] - 2))
        w = float(np.clip(u - i, 0.0, 1.0))
        distance = (1 - w) * self.distance_m[profile, i] + w * self.distance_m[profile, i + 1]
        speed = (1 - w) * self.speed_m_s[profile, i] + w * self.speed_m_s[profile, i + 1]
        return distance, speed


def _make_profile(rng: np.random.Generator, times_s: np.ndarray, cruise_m_s: float, stop_and_go: bool) -> np.ndarray:
    """A smooth speed curve (m/s) over `times_s`: cruising with gentle variation, or stop-and-go
    (clipped sinusoid: it waits at 0 m/s for part of each period, as at traffic lights)."""
    phase = rng.uniform(0, 2 * np.pi)
    if stop_and_go:
        period = rng.uniform(14.0, 24.0)
        wave = np.sin(2 * np.pi * times_s / period + phase)
        return cruise_m_s * np.clip((wave + 0.35) / 1.0, 0.0, 1.0) ** 1.5
    period = rng.uniform(8.0, 20.0)
    return cruise_m_s * (1.0 + 0.18 * np.sin(2 * np.pi * times_s / period + phase))


@dataclass(frozen=True, slots=True, eq=False)
class Agents:
    """The scene's agents (struct of arrays, N agents), each riding one track of the loop.

    Attributes:
        category: N nuScenes category names.
        label: `(N,)` int64 index into `DETECTION_CLASSES`.
        size_wlh: `(N, 3)` box size (m).
        offset_m: `(N,)` lateral offset of the agent's track (m, positive outward).
        s0_m: `(N,)` arc length on that track at t = 0.
        direction: `(N,)` +1 travelling (or, if static, facing) counter-clockwise, -1 clockwise.
        profile: `(N,)` index into the scene's `SpeedProfiles`, -1 for static agents.
        yaw_extra_rad: `(N,)` heading relative to the track (pi/2 for cycles parked across it).
        rider: `(N,)` whether a cycle carries a rider.
        sitting: `(N,)` whether a static pedestrian sits.
        static_attribute: N attribute names for static vehicles ("vehicle.parked" / "vehicle.stopped"), else "".
        color_rgb: `(N, 3)` uint8 main colour (body paint, clothes).
    """

    category: tuple[str, ...]
    label: np.ndarray
    size_wlh: np.ndarray
    offset_m: np.ndarray
    s0_m: np.ndarray
    direction: np.ndarray
    profile: np.ndarray
    yaw_extra_rad: np.ndarray
    rider: np.ndarray
    sitting: np.ndarray
    static_attribute: tuple[str, ...]
    color_rgb: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.category)
        for name in ("label", "offset_m", "s0_m", "direction", "profile", "yaw_extra_rad", "rider", "sitting"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"Agents.{name} must have shape ({n},), got {np.shape(getattr(self, name))}")
        for name in ("size_wlh", "color_rgb"):
            if np.shape(getattr(self, name)) != (n, 3):
                raise ValueError(f"Agents.{name} must have shape ({n}, 3), got {np.shape(getattr(self, name))}")

    def __len__(self) -> int:
        return len(self.category)


@dataclass(frozen=True, slots=True, eq=False)
class AgentStates:
    """All agents at one time (map frame).

    Attributes:
        center: `(N, 3)` box centres (m); z = h / 2 (standing on the ground).
        yaw_rad: `(N,)` box headings.
        velocity_xy: `(N, 2)` m/s.
        speed_m_s: `(N,)` |velocity|.
        attribute: N attribute names ("" for cones and barriers); empty when not asked for
            (`SceneWorld.agent_states(t, attributes=False)`, for the meshes of the sensors).
    """

    center: np.ndarray
    yaw_rad: np.ndarray
    velocity_xy: np.ndarray
    speed_m_s: np.ndarray
    attribute: tuple[str, ...]


@dataclass(frozen=True, slots=True, eq=False)
class SceneWorld:
    """Everything that moves in one scene, plus the static city it happens in.

    Attributes:
        layout: the location's static city.
        loop_index: which loop road of the layout the scene drives around.
        ego_offset_m, ego_s0_m, ego_direction: the ego's track (profile 0 of `profiles`).
        profiles: speed profiles; index 0 is the ego's (and its lane's).
        agents: the agents.
        duration_s: scene length (s).
    """

    layout: LocationLayout
    loop_index: int
    ego_offset_m: float
    ego_s0_m: float
    ego_direction: int
    profiles: SpeedProfiles
    agents: Agents
    duration_s: float

    @property
    def loop(self) -> LoopRoad:
        return self.layout.loops[self.loop_index]

    def ego_poses(self, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(xy (K, 2), yaw_rad (K,))` of the ego at the times `times_s` `(K,)` (vectorized `ego_pose`)."""
        times = np.asarray(times_s, dtype=np.float64)
        grid = self.profiles.start_s + PROFILE_STEP_S * np.arange(self.profiles.distance_m.shape[1])
        distance = np.interp(times, grid, self.profiles.distance_m[0])
        s = self.ego_s0_m + self.ego_direction * distance
        xy, heading = self.loop.pose_at(s, self.ego_offset_m)
        yaw = heading + (0.0 if self.ego_direction > 0 else np.pi)
        return xy, np.mod(yaw + np.pi, 2 * np.pi) - np.pi

    def ego_speeds(self, times_s: np.ndarray) -> np.ndarray:
        """Ego speed (m/s) at the times `times_s` `(K,)`."""
        grid = self.profiles.start_s + PROFILE_STEP_S * np.arange(self.profiles.speed_m_s.shape[1])
        return np.interp(np.asarray(times_s, dtype=np.float64), grid, self.profiles.speed_m_s[0])

    def ego_pose(self, t_s: float) -> tuple[np.ndarray, float, float]:
        """`(xy (2,), yaw_rad, speed_m_s)` of the ego (its rear-axle origin) at time `t_s`."""
        distance, speed = self.profiles.at(np.array([0]), t_s)
        s = self.ego_s0_m + self.ego_direction * distance[0]
        xy, heading = self.loop.pose_at(np.array([s]), self.ego_offset_m)
        yaw = float(heading[0]) + (0.0 if self.ego_direction > 0 else np.pi)
        return xy[0], float(np.mod(yaw + np.pi, 2 * np.pi) - np.pi), float(speed[0])

    def agent_states(self, t_s: float, attributes: bool = True) -> AgentStates:
        """All agents at time `t_s` (their attribute names only when `attributes`)."""
        agents = self.agents
        moving = agents.profile >= 0
        distance = np.zeros(len(agents))
        speed = np.zeros(len(agents))
        if moving.any():
            distance[moving], speed[moving] = self.profiles.at(agents.profile[moving], t_s)
        s = agents.s0_m + agents.direction * distance
        xy, heading = self.loop.pose_at(s, agents.offset_m)
        travel = heading + np.where(agents.direction > 0, 0.0, np.pi)
        yaw = np.mod(travel + agents.yaw_extra_rad + np.pi, 2 * np.pi) - np.pi
        velocity = speed[:, None] * np.stack([np.cos(travel), np.sin(travel)], axis=-1)
        center = np.concatenate([xy, agents.size_wlh[:, 2:3] / 2.0], axis=1)
        if not attributes:
            return AgentStates(center, yaw, velocity, speed, ())
        names = []
        for i, category in enumerate(agents.category):
            name = DETECTION_CLASSES[agents.label[i]]
            if name in VEHICLE_CLASSES:
                if not moving[i]:
                    names.append(agents.static_attribute[i])
                else:
                    names.append("vehicle.moving" if speed[i] >= STOPPED_SPEED_M_S else "vehicle.stopped")
            elif name == "pedestrian":
                if moving[i] and speed[i] >= STOPPED_SPEED_M_S:
                    names.append("pedestrian.moving")
                else:
                    names.append("pedestrian.sitting_lying_down" if agents.sitting[i] else "pedestrian.standing")
            elif name in ("bicycle", "motorcycle"):
                names.append("cycle.with_rider" if agents.rider[i] else "cycle.without_rider")
            else:
                names.append("")
            del category
        return AgentStates(center, yaw, velocity, speed, tuple(names))


class _Track:
    """Occupied arc intervals of one track (wrapping at its perimeter), for collision-free placement."""

    def __init__(self, perimeter_m: float) -> None:
        self.perimeter_m = perimeter_m
        self.intervals: list[tuple[float, float]] = []

    def free(self, lo: float, hi: float) -> bool:
        p = self.perimeter_m
        for a, b in self.intervals:
            for shift in (-p, 0.0, p):
                if lo < b + shift and hi > a + shift:
                    return False
        return True

    def occupy(self, lo: float, hi: float) -> None:
        self.intervals.append((lo, hi))


class _Builder:
    """Collects agents while a scene is populated."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rows: list[dict] = []

    def size(self, category: str, scale_h: float = 1.0) -> np.ndarray:
        mean, std = (np.array(v) for v in CATEGORY_SIZES[category])
        size = mean + np.clip(self.rng.normal(0, 1, 3), -2, 2) * std
        size[2] *= scale_h
        return np.maximum(size, 0.3 * mean)

    def add(
        self,
        category: str,
        size_wlh: np.ndarray,
        offset: float,
        s0: float,
        direction: int,
        profile: int,
        *,
        yaw_extra: float = 0.0,
        rider: bool = False,
        sitting: bool = False,
        static_attribute: str = "",
        color: np.ndarray | None = None,
    ) -> None:
        if color is None:
            palette = CLOTHES_COLORS if category.startswith("human") else BODY_COLORS
            color = palette[self.rng.integers(0, len(palette))]
        self.rows.append(
            dict(
                category=category,
                size=size_wlh,
                offset=offset,
                s0=s0,
                direction=direction,
                profile=profile,
                yaw_extra=yaw_extra,
                rider=rider,
                sitting=sitting,
                static_attribute=static_attribute,
                color=color,
            )
        )

    def build(self) -> Agents:
        rows = self.rows
        return Agents(
            category=tuple(r["category"] for r in rows),
            label=np.array([CLASS_INDEX[CATEGORY_CLASS[r["category"]]] for r in rows], dtype=np.int64),
            size_wlh=np.array([r["size"] for r in rows], dtype=np.float64).reshape(-1, 3),
            offset_m=np.array([r["offset"] for r in rows], dtype=np.float64),
            s0_m=np.array([r["s0"] for r in rows], dtype=np.float64),
            direction=np.array([r["direction"] for r in rows], dtype=np.int64),
            profile=np.array([r["profile"] for r in rows], dtype=np.int64),
            yaw_extra_rad=np.array([r["yaw_extra"] for r in rows], dtype=np.float64),
            rider=np.array([r["rider"] for r in rows], dtype=bool),
            sitting=np.array([r["sitting"] for r in rows], dtype=bool),
            static_attribute=tuple(r["static_attribute"] for r in rows),
            color_rgb=np.array([r["color"] for r in rows], dtype=np.uint8).reshape(-1, 3),
        )


def build_scene_world(seed: int, scene_index: int, layout: LocationLayout, duration_s: float) -> SceneWorld:
    """Populate one scene (deterministic in `seed`, `scene_index` and the layout).

    Every scene gets, ahead of the ego's start, a work zone (construction vehicle, cones, barriers)
    on the ego's side, a bus at a stop, a parked truck and a parked trailer across the road, parked
    cycles and pedestrians, so that all 10 detection classes appear within their evaluation ranges
    in the first keyframes; the rest of the loop is filled at random with traffic, parked vehicles,
    pedestrians, cyclists and more work zones.
    """
    rng = np.random.default_rng(stable_seed(seed, "scene", scene_index, layout.location))
    loop_index = int(rng.integers(0, len(layout.loops)))
    loop = layout.loops[loop_index]
    keep = traffic_side(layout.location)
    ego_direction = int(rng.choice([-1, 1]))
    ego_side = ego_direction * keep  # lanes of the ego's travel direction lie at offsets of this sign
    ego_offset = ego_side * LANE_CENTERS_M[0]

    times = np.arange(-1.0, duration_s + 1.0 + PROFILE_STEP_S, PROFILE_STEP_S)
    speeds: list[np.ndarray] = []

    def new_profile(cruise: float, stop_and_go: bool) -> int:
        speeds.append(_make_profile(rng, times, cruise, stop_and_go))
        return len(speeds) - 1

    ego_profile = new_profile(rng.uniform(5.0, 11.0), bool(rng.random() < 0.2))
    builder = _Builder(rng)

    def track(offset: float) -> _Track:
        return _Track(float(loop.perimeter_at(offset)))

    ego_length = 4.2
    ego_s0 = rng.uniform(0.0, float(loop.perimeter_at(ego_offset)))
    (ego_xy,), _ = loop.pose_at(np.array([ego_s0]), ego_offset)

    def arc_near_ego(offset: float, ahead_m: float) -> float:
        """Arc length on the track at `offset` beside the ego's start, moved `ahead_m` along its travel."""
        return float(loop.arc_of(ego_xy, offset)) + ego_direction * ahead_m

    tracks: dict[float, _Track] = {}

    def get_track(offset: float) -> _Track:
        if offset not in tracks:
            tracks[offset] = track(offset)
        return tracks[offset]

    def place(
        category: str,
        size: np.ndarray,
        offset: float,
        centre_s: float,
        direction: int,
        profile: int,
        extent_m: float | None = None,
        **kwargs,
    ) -> bool:
        extent = size[1] if extent_m is None else extent_m
        t = get_track(offset)
        lo, hi = centre_s - extent / 2 - 0.4, centre_s + extent / 2 + 0.4
        if not t.free(lo, hi):
            return False
        t.occupy(lo, hi)
        builder.add(category, size, offset, centre_s, direction, profile, **kwargs)
        return True

    # The ego's own footprint on its lane, with room ahead and behind.
    get_track(ego_offset).occupy(ego_s0 - ego_length / 2 - 8.0, ego_s0 + ego_length / 2 + 10.0)

    # ---- guaranteed cast near the start --------------------------------------------------------
    strip_ego = ego_side * PARKING_STRIP_M
    strip_far = -ego_side * PARKING_STRIP_M
    _work_zone(
        builder,
        place,
        rng,
        loop,
        strip_ego,
        arc_near_ego(strip_ego, rng.uniform(9.5, 14.0)),
        ego_direction,
        facing=ego_direction,
    )
    bus_category = "vehicle.bus.rigid" if rng.random() < 0.85 else "vehicle.bus.bendy"
    place(
        bus_category,
        builder.size(bus_category),
        strip_far,
        arc_near_ego(strip_far, rng.uniform(8, 20)),
        -ego_direction,
        -1,
        static_attribute="vehicle.stopped",
    )
    place(
        "vehicle.truck",
        builder.size("vehicle.truck"),
        strip_far,
        arc_near_ego(strip_far, rng.uniform(28, 34)),
        -ego_direction,
        -1,
        static_attribute="vehicle.parked",
    )
    place(
        "vehicle.trailer",
        builder.size("vehicle.trailer"),
        strip_far,
        arc_near_ego(strip_far, rng.uniform(-22, -14)),
        -ego_direction,
        -1,
        static_attribute="vehicle.parked",
    )
    for category, ahead in (("vehicle.bicycle", 5.0), ("vehicle.motorcycle", 9.0)):
        offset = ego_side * CYCLE_PARKING_M
        size = builder.size(category, scale_h=0.78)
        place(
            category,
            size,
            offset,
            arc_near_ego(offset, ahead + rng.uniform(0, 2)),
            ego_direction,
            -1,
            extent_m=size[0],
            yaw_extra=np.pi / 2,
            rider=False,
        )
    # Keep the ego's side of the road clear of parked vehicles up to the work zone, so the parked
    # cycles and the first cones stand in view.
    strip_arc = arc_near_ego(strip_ego, 0.0)
    get_track(strip_ego).occupy(strip_arc - 10.0, strip_arc + 9.0)
    offset = ego_side * STAND_OFFSET_M
    size = builder.size("human.pedestrian.adult")
    place("human.pedestrian.adult", size, offset, arc_near_ego(offset, rng.uniform(4, 12)), -ego_direction, -1)

    # ---- random fill over the whole loop ---------------------------------------------------------
    # Traffic lanes: each lane has one speed profile; the ego's lane shares the ego's.
    for offset in (LANE_CENTERS_M[0], LANE_CENTERS_M[1], -LANE_CENTERS_M[0], -LANE_CENTERS_M[1]):
        direction = int(np.sign(offset)) * keep
        if offset == ego_offset:
            profile = ego_profile
        else:
            profile = new_profile(rng.uniform(5.0, 12.5), bool(rng.random() < 0.3))
        _fill_lane(builder, place, rng, get_track(offset), offset, direction, profile)
    # Parking strips.
    for offset in (PARKING_STRIP_M, -PARKING_STRIP_M):
        direction = int(np.sign(offset)) * keep
        _fill_parking(builder, place, rng, loop, get_track(offset), offset, direction)
    # Sidewalks: walking streams, standing people, a cycle track, parked cycles.
    for side in (1.0, -1.0):
        for walk in WALK_OFFSETS_M:
            offset = side * walk
            profile = new_profile(rng.uniform(0.9, 1.6), False)
            direction = int(rng.choice([-1, 1]))
            _fill_stream(
                builder,
                place,
                rng,
                get_track(offset),
                offset,
                direction,
                profile,
                categories=("human.pedestrian.adult", "human.pedestrian.child"),
                weights=(0.9, 0.1),
                gap_mean_m=WALK_GAP_MEAN_M,
            )
        offset = side * STAND_OFFSET_M
        t = get_track(offset)
        s = rng.uniform(0, 10)
        while s < t.perimeter_m:
            size = builder.size("human.pedestrian.adult")
            sitting = bool(rng.random() < 0.2)
            if sitting:
                size[2] = rng.uniform(1.0, 1.3)
            place(
                "human.pedestrian.adult",
                size,
                offset,
                s,
                int(rng.choice([-1, 1])),
                -1,
                yaw_extra=float(rng.uniform(-np.pi, np.pi)),
                extent_m=1.2,
                sitting=sitting,
            )
            s += 3.0 + rng.exponential(STAND_GAP_MEAN_M)
        offset = side * CYCLE_TRACK_M
        profile = new_profile(rng.uniform(3.0, 6.5), False)
        _fill_stream(
            builder,
            place,
            rng,
            get_track(offset),
            offset,
            int(np.sign(offset)) * keep,
            profile,
            categories=("vehicle.bicycle",),
            weights=(1.0,),
            gap_mean_m=CYCLE_TRACK_GAP_MEAN_M,
            rider=True,
        )
        offset = side * CYCLE_PARKING_M
        t = get_track(offset)
        s = rng.uniform(0, 20)
        while s < t.perimeter_m:
            category = "vehicle.bicycle" if rng.random() < 0.6 else "vehicle.motorcycle"
            size = builder.size(category, scale_h=0.78)
            place(category, size, offset, s, int(rng.choice([-1, 1])), -1, extent_m=size[0] + 0.3, yaw_extra=np.pi / 2)
            s += CYCLE_PARKING_GAP_MIN_M + rng.exponential(CYCLE_PARKING_GAP_MEAN_M)

    distance = np.concatenate(
        [
            np.zeros((len(speeds), 1)),
            np.cumsum(0.5 * (np.stack(speeds)[:, 1:] + np.stack(speeds)[:, :-1]) * PROFILE_STEP_S, axis=1),
        ],
        axis=1,
    )
    zero_index = round((0.0 - times[0]) / PROFILE_STEP_S)
    distance -= distance[:, zero_index : zero_index + 1]
    profiles = SpeedProfiles(float(times[0]), distance, np.stack(speeds))
    return SceneWorld(
        layout,
        loop_index,
        float(ego_offset),
        float(ego_s0),
        ego_direction,
        profiles,
        builder.build(),
        float(duration_s),
    )


def _work_zone(
    builder: _Builder,
    place,
    rng: np.random.Generator,
    loop: LoopRoad,
    offset: float,
    start_s: float,
    along: int,
    facing: int,
) -> float:
    """A work zone in a parking strip, laid out along `along` (+1/-1 in arc length) from `start_s`:
    a taper of cones, a row of barriers across the strip, the construction vehicle, a worker."""
    s = start_s
    for _ in range(int(rng.integers(3, 6))):
        size = builder.size("movable_object.trafficcone")
        place(
            "movable_object.trafficcone",
            size,
            offset,
            s,
            facing,
            -1,
            extent_m=0.7,
            yaw_extra=float(rng.uniform(0, np.pi)),
        )
        s += along * rng.uniform(2.5, 3.5)
    for _ in range(int(rng.integers(2, 4))):
        size = builder.size("movable_object.barrier")
        # Barriers are wider than long (w across the strip); they stand in line along it.
        place("movable_object.barrier", size, offset, s, facing, -1, extent_m=size[1] + 0.3)
        s += along * (size[1] + rng.uniform(0.8, 2.0))
    size = builder.size("vehicle.construction")
    s += along * (size[1] / 2 + 1.0)
    place(
        "vehicle.construction",
        size,
        offset,
        s,
        facing,
        -1,
        static_attribute="vehicle.parked",
        color=np.array([235, 180, 20], dtype=np.uint8),
    )
    end_s = s + along * (size[1] / 2 + 1.0)
    worker_offset = float(np.sign(offset) * STAND_OFFSET_M)
    size = builder.size("human.pedestrian.construction_worker")
    worker_s = float(loop.transfer_arc(s, offset, worker_offset))
    place(
        "human.pedestrian.construction_worker",
        size,
        worker_offset,
        worker_s,
        facing,
        -1,
        extent_m=1.2,
        yaw_extra=float(rng.uniform(-np.pi, np.pi)),
        color=np.array([250, 120, 20], dtype=np.uint8),
    )
    return end_s


def _fill_lane(builder: _Builder, place, rng, track: _Track, offset: float, direction: int, profile: int) -> None:
    """Moving traffic in one lane: cars mostly, some trucks (a few towing trailers), buses, motorcycles."""
    s = rng.uniform(0.0, 20.0)
    while s < track.perimeter_m:
        u = rng.random()
        if u < 0.70:
            category = "vehicle.car"
        elif u < 0.78:
            category = "vehicle.truck"
        elif u < 0.83:
            category = "vehicle.bus.rigid"
        elif u < 0.87:
            category = "vehicle.construction"
        elif u < 0.92:
            category = "vehicle.motorcycle"
        else:
            category = "truck+trailer"
        if category == "truck+trailer":
            truck = builder.size("vehicle.truck")
            trailer = builder.size("vehicle.trailer")
            total = truck[1] + 0.6 + trailer[1]
            lo = s
            if track.free(lo - 0.4, lo + total + 0.4):
                # The truck leads in the travel direction; arc length grows with it when direction = +1.
                front_s = lo + (total - truck[1] / 2 if direction > 0 else truck[1] / 2)
                back_s = lo + (trailer[1] / 2 if direction > 0 else total - trailer[1] / 2)
                place("vehicle.truck", truck, offset, front_s, direction, profile)
                place("vehicle.trailer", trailer, offset, back_s, direction, profile)
            s += total
        else:
            size = builder.size(category)
            place(category, size, offset, s + size[1] / 2, direction, profile, rider=category == "vehicle.motorcycle")
            s += size[1]
        s += LANE_GAP_MIN_M + rng.exponential(LANE_GAP_MEAN_M)


def _fill_parking(builder: _Builder, place, rng, loop: LoopRoad, track: _Track, offset: float, direction: int) -> None:
    """Parked vehicles, bus stops and work zones along a parking strip."""
    s = rng.uniform(0.0, 10.0)
    while s < track.perimeter_m:
        u = rng.random()
        if u < 0.06:
            s = _work_zone(builder, place, rng, loop, offset, s, +1, facing=direction)
        else:
            if u < 0.72:
                category, attribute = "vehicle.car", "vehicle.parked"
            elif u < 0.80:
                category, attribute = "vehicle.truck", "vehicle.parked"
            elif u < 0.85:
                category, attribute = "vehicle.trailer", "vehicle.parked"
            elif u < 0.89:
                category, attribute = "vehicle.construction", "vehicle.parked"
            elif u < 0.93:
                category, attribute = "vehicle.bus.rigid", "vehicle.stopped"
            else:
                category, attribute = "vehicle.motorcycle", "vehicle.parked"
            size = builder.size(category, scale_h=0.78 if category == "vehicle.motorcycle" else 1.0)
            place(category, size, offset, s + size[1] / 2, direction, -1, static_attribute=attribute)
            s += size[1]
        s += PARKING_GAP_MIN_M + rng.exponential(PARKING_GAP_MEAN_M)


def _fill_stream(
    builder: _Builder,
    place,
    rng,
    track: _Track,
    offset: float,
    direction: int,
    profile: int,
    categories: tuple[str, ...],
    weights: tuple[float, ...],
    gap_mean_m: float,
    rider: bool = False,
) -> None:
    """Agents moving along a sidewalk or cycle track at the stream's common speed."""
    s = rng.uniform(0.0, gap_mean_m)
    while s < track.perimeter_m:
        category = categories[int(rng.choice(len(categories), p=np.array(weights) / sum(weights)))]
        size = builder.size(category)
        place(category, size, offset, s + size[1] / 2, direction, profile, rider=rider)
        s += size[1] + 1.5 + rng.exponential(gap_mean_m)
