"""The fixed nuScenes vocabulary tables (category, attribute, visibility, sensor) and token making.

Tokens are 32 hex digits, as nuScenes', derived from the generator seed and a record's identity
(an MD5 digest), so the same seed always gives the same tokens and two seeds never share one.
"""

from __future__ import annotations

import hashlib

from avfusion.datasets.synthetic.rig import CAMERA_CHANNELS, LIDAR_CHANNEL
from avfusion.labels import ATTRIBUTES

# The 23 nuScenes categories, with our own one-line descriptions.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("human.pedestrian.adult", "Adult walking, standing or sitting."),
    ("human.pedestrian.child", "Child walking or standing."),
    ("human.pedestrian.wheelchair", "Person in a wheelchair."),
    ("human.pedestrian.stroller", "Stroller or pram."),
    ("human.pedestrian.personal_mobility", "Scooter, skateboard, segway."),
    ("human.pedestrian.police_officer", "Police officer on foot."),
    ("human.pedestrian.construction_worker", "Worker in a work zone."),
    ("animal", "Any animal."),
    ("vehicle.car", "Passenger car, van, SUV."),
    ("vehicle.motorcycle", "Motorcycle or scooter with an engine."),
    ("vehicle.bicycle", "Human-powered bicycle."),
    ("vehicle.bus.bendy", "Articulated bus."),
    ("vehicle.bus.rigid", "Rigid bus."),
    ("vehicle.truck", "Truck or tractor unit."),
    ("vehicle.construction", "Construction machine: excavator, loader."),
    ("vehicle.emergency.ambulance", "Ambulance."),
    ("vehicle.emergency.police", "Police car or motorcycle."),
    ("vehicle.trailer", "Trailer towed by a vehicle or parked alone."),
    ("movable_object.barrier", "Temporary road barrier."),
    ("movable_object.trafficcone", "Traffic cone."),
    ("movable_object.pushable_pullable", "Cart, trolley, bin."),
    ("movable_object.debris", "Debris on the road."),
    ("static_object.bicycle_rack", "Rack of parked bicycles."),
)

ATTRIBUTE_DESCRIPTIONS = {
    "cycle.with_rider": "A bicycle or motorcycle carrying a rider.",
    "cycle.without_rider": "A bicycle or motorcycle without a rider.",
    "pedestrian.moving": "A pedestrian who is walking.",
    "pedestrian.sitting_lying_down": "A pedestrian who sits or lies.",
    "pedestrian.standing": "A pedestrian who stands still.",
    "vehicle.moving": "A vehicle in motion.",
    "vehicle.parked": "A vehicle parked, with no driver intent to move.",
    "vehicle.stopped": "A vehicle stopped in traffic or at a stop, about to move.",
}

# nuScenes' visibility levels: token, level, description.
VISIBILITY_LEVELS: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of the whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of the whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of the whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of the whole object is between 80 and 100%"),
)


def make_token(seed: int, *identity: object) -> str:
    """A 32-hex-digit token for the record named by `identity` in the log made with `seed`."""
    return hashlib.md5("/".join(["avfusion-synthetic", str(seed), *map(str, identity)]).encode()).hexdigest()


def vocabulary_tables(seed: int) -> dict[str, list[dict]]:
    """The category, attribute, visibility and sensor tables."""
    category = [
        {"token": make_token(seed, "category", name), "name": name, "description": description}
        for name, description in CATEGORIES
    ]
    attribute = [
        {"token": make_token(seed, "attribute", name), "name": name, "description": ATTRIBUTE_DESCRIPTIONS[name]}
        for name in ATTRIBUTES
    ]
    visibility = [{"token": token, "level": level, "description": text} for token, level, text in VISIBILITY_LEVELS]
    sensor = [{"token": make_token(seed, "sensor", LIDAR_CHANNEL), "channel": LIDAR_CHANNEL, "modality": "lidar"}]
    sensor += [
        {"token": make_token(seed, "sensor", channel), "channel": channel, "modality": "camera"}
        for channel in CAMERA_CHANNELS
    ]
    return {"category": category, "attribute": attribute, "visibility": visibility, "sensor": sensor}
