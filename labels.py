"""The nuScenes detection classes and attributes, and how nuScenes and Lyft categories map onto them.

The class order is nuscenes-devkit's `DETECTION_NAMES`; a `Boxes3D.label` is an index into
`DETECTION_CLASSES`, and `Boxes3D.attribute` an index into `ATTRIBUTES` (-1 = none).
"""

from __future__ import annotations

from types import MappingProxyType

DETECTION_CLASSES: tuple[str, ...] = (
    "car",
    "truck",
    "bus",
    "trailer",
    "construction_vehicle",
    "pedestrian",
    "motorcycle",
    "bicycle",
    "traffic_cone",
    "barrier",
)

# The nuScenes tracking classes, in the order of the devkit's tracking config (`tracking_names`).
TRACKING_CLASSES: tuple[str, ...] = ("bicycle", "bus", "car", "motorcycle", "pedestrian", "trailer", "truck")

# The eight names of the nuScenes `attribute` table, sorted.
ATTRIBUTES: tuple[str, ...] = (
    "cycle.with_rider",
    "cycle.without_rider",
    "pedestrian.moving",
    "pedestrian.sitting_lying_down",
    "pedestrian.standing",
    "vehicle.moving",
    "vehicle.parked",
    "vehicle.stopped",
)

CLASS_INDEX = MappingProxyType({name: index for index, name in enumerate(DETECTION_CLASSES)})
ATTRIBUTE_INDEX = MappingProxyType({name: index for index, name in enumerate(ATTRIBUTES)})

# nuScenes category name -> detection class, as the devkit's `category_to_detection_name`.
# Categories not listed (animal, stroller, wheelchair, bicycle_rack, debris, ...) are not detected.
NUSCENES_CATEGORY_TO_CLASS = MappingProxyType(
    {
        "movable_object.barrier": "barrier",
        "vehicle.bicycle": "bicycle",
        "vehicle.bus.bendy": "bus",
        "vehicle.bus.rigid": "bus",
        "vehicle.car": "car",
        "vehicle.construction": "construction_vehicle",
        "vehicle.motorcycle": "motorcycle",
        "human.pedestrian.adult": "pedestrian",
        "human.pedestrian.child": "pedestrian",
        "human.pedestrian.construction_worker": "pedestrian",
        "human.pedestrian.police_officer": "pedestrian",
        "movable_object.trafficcone": "traffic_cone",
        "vehicle.trailer": "trailer",
        "vehicle.truck": "truck",
    }
)

# Lyft Level 5 category name (its nuScenes-schema `category` table) -> detection class. Lyft's
# names are flat. Not detected, as their nuScenes counterparts are not: `animal`,
# `emergency_vehicle` (nuScenes' vehicle.emergency.* are no detection class) and `other_vehicle`
# (trailers, construction and utility vehicles together: no one class fits).
LYFT_CATEGORY_TO_CLASS = MappingProxyType(
    {
        "bicycle": "bicycle",
        "bus": "bus",
        "car": "car",
        "motorcycle": "motorcycle",
        "pedestrian": "pedestrian",
        "truck": "truck",
    }
)

# Every category name a log may use -> detection class (the two vocabularies share no name).
CATEGORY_TO_CLASS = MappingProxyType({**NUSCENES_CATEGORY_TO_CLASS, **LYFT_CATEGORY_TO_CLASS})
assert len(CATEGORY_TO_CLASS) == len(NUSCENES_CATEGORY_TO_CLASS) + len(LYFT_CATEGORY_TO_CLASS)

# The attributes the metric scores per class (devkit `detection_name_to_rel_attributes`).
CLASS_ATTRIBUTES = MappingProxyType(
    {
        "car": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
        "truck": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
        "bus": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
        "trailer": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
        "construction_vehicle": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
        "pedestrian": ("pedestrian.moving", "pedestrian.sitting_lying_down", "pedestrian.standing"),
        "motorcycle": ("cycle.with_rider", "cycle.without_rider"),
        "bicycle": ("cycle.with_rider", "cycle.without_rider"),
        "traffic_cone": (),
        "barrier": (),
    }
)

# The attribute to submit for a class when nothing better is known (the most frequent one in
# nuScenes' training annotations); "" for the classes that have none.
DEFAULT_ATTRIBUTE = MappingProxyType(
    {
        "car": "vehicle.parked",
        "truck": "vehicle.parked",
        "bus": "vehicle.moving",
        "trailer": "vehicle.parked",
        "construction_vehicle": "vehicle.parked",
        "pedestrian": "pedestrian.moving",
        "motorcycle": "cycle.without_rider",
        "bicycle": "cycle.without_rider",
        "traffic_cone": "",
        "barrier": "",
    }
)


def category_to_detection_class(category_name: str) -> str | None:
    """The detection class of a nuScenes or Lyft category name, or None when it is not detected."""
    return CATEGORY_TO_CLASS.get(category_name)


def attribute_name(attribute_index: int) -> str:
    """The attribute name of an index into `ATTRIBUTES`; -1 gives "" (no attribute)."""
    if attribute_index == -1:
        return ""
    return ATTRIBUTES[attribute_index]
