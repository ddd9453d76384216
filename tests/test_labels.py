"""Class and attribute tables agree with the devkit's."""

from __future__ import annotations

from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES, DETECTION_NAMES
from nuscenes.eval.detection.utils import category_to_detection_name, detection_name_to_rel_attributes

from avfusion.labels import (
    ATTRIBUTES,
    CLASS_ATTRIBUTES,
    DEFAULT_ATTRIBUTE,
    DETECTION_CLASSES,
    category_to_detection_class,
)


def test_tables_match_devkit() -> None:
    assert tuple(DETECTION_NAMES) == DETECTION_CLASSES
    assert set(ATTRIBUTES) == set(ATTRIBUTE_NAMES) and len(ATTRIBUTES) == 8
    for name in DETECTION_CLASSES:
        assert set(CLASS_ATTRIBUTES[name]) == set(detection_name_to_rel_attributes(name))
        assert DEFAULT_ATTRIBUTE[name] in CLASS_ATTRIBUTES[name] or (
            DEFAULT_ATTRIBUTE[name] == "" and not CLASS_ATTRIBUTES[name]
        )
    for category in (
        "vehicle.car",
        "vehicle.bus.bendy",
        "human.pedestrian.police_officer",
        "movable_object.trafficcone",
        "static_object.bicycle_rack",
        "animal",
        "human.pedestrian.stroller",
    ):
        assert category_to_detection_class(category) == category_to_detection_name(category)
