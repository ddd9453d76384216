"""The fields and types every nuScenes table record must have, checked once when a log is indexed.

`check_tables` walks the records of the 13 tables (as parsed from JSON: lists of dicts) and raises
one `FileFormatError` naming the table file, the record's token and the field for the first
problem: a field that is absent, of another type (a number written as a string, a list of the
wrong length), or a number that is not finite where nothing can stand in for it. Ego poses are the
exception: a non-finite ego pose only makes the sensors recorded at that pose missing for their
frames (`NuScenesLog.frame`), so `ego_pose` translations and rotations may hold NaN or infinity.

Only the fields avfusion or nuscenes-devkit read are required; other fields are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from avfusion.errors import FileFormatError

# A field check returns None when the value is acceptable, else what was expected.
FieldCheck = Callable[[Any], "str | None"]


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "a string"


def _integer(value: Any) -> str | None:
    return None if type(value) is int else "an integer"


def _timestamp(value: Any) -> str | None:
    """Microseconds; Lyft's tables write them as floats, which the index rounds down to integers."""
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return None
    return "a finite number of microseconds"


def _flag(value: Any) -> str | None:
    return None if type(value) is bool or (type(value) is int and value in (0, 1)) else "true or false"


def _strings(value: Any) -> str | None:
    return None if isinstance(value, list) and all(isinstance(x, str) for x in value) else "a list of strings"


def _numbers(width: int, finite: bool = True, positive: bool = False) -> FieldCheck:
    what = f"a list of {width} {'finite ' if finite else ''}numbers" + (" > 0" if positive else "")

    def check(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) != width or not all(type(x) in (int, float) for x in value):
            return what
        if finite and not all(math.isfinite(x) for x in value):
            return what
        if positive and not all(x > 0 for x in value):
            return what
        return None

    return check


def _intrinsic(value: Any) -> str | None:
    """`[]` for sensors without one, else a 3 x 3 matrix of finite numbers."""
    if value == []:
        return None
    if isinstance(value, list) and len(value) == 3 and all(_numbers(3)(row) is None for row in value):
        return None
    return "[] or a 3 x 3 list of finite numbers"


# Per table: (field, check, required). Optional fields are checked only when present.
TABLE_FIELDS: dict[str, tuple[tuple[str, FieldCheck, bool], ...]] = {
    "category": (("token", _string, True), ("name", _string, True)),
    "attribute": (("token", _string, True), ("name", _string, True)),
    "visibility": (("token", _string, True),),
    "instance": (("token", _string, True), ("category_token", _string, True)),
    "sensor": (("token", _string, True), ("channel", _string, True), ("modality", _string, True)),
    "calibrated_sensor": (
        ("token", _string, True),
        ("sensor_token", _string, True),
        ("translation", _numbers(3), True),
        ("rotation", _numbers(4), True),
        ("camera_intrinsic", _intrinsic, False),
    ),
    "ego_pose": (
        ("token", _string, True),
        ("timestamp", _timestamp, False),
        ("translation", _numbers(3, finite=False), True),
        ("rotation", _numbers(4, finite=False), True),
    ),
    "log": (("token", _string, True), ("location", _string, True)),
    "scene": (
        ("token", _string, True),
        ("name", _string, True),
        ("log_token", _string, True),
        ("first_sample_token", _string, True),
    ),
    "sample": (
        ("token", _string, True),
        ("timestamp", _timestamp, True),
        ("scene_token", _string, True),
        ("prev", _string, True),
        ("next", _string, True),
    ),
    "sample_data": (
        ("token", _string, True),
        ("sample_token", _string, True),
        ("ego_pose_token", _string, True),
        ("calibrated_sensor_token", _string, True),
        ("timestamp", _timestamp, True),
        ("is_key_frame", _flag, True),
        ("filename", _string, True),
        ("prev", _string, True),
        ("next", _string, True),
        ("width", _integer, False),
        ("height", _integer, False),
    ),
    "sample_annotation": (
        ("token", _string, True),
        ("sample_token", _string, True),
        ("instance_token", _string, True),
        ("attribute_tokens", _strings, True),
        ("translation", _numbers(3), True),
        ("size", _numbers(3, positive=True), True),
        ("rotation", _numbers(4), True),
        ("prev", _string, True),
        ("next", _string, True),
        ("num_lidar_pts", _integer, False),
        ("num_radar_pts", _integer, False),
    ),
    "map": (("token", _string, True), ("filename", _string, True), ("log_tokens", _strings, True)),
}


# Fields of a sensor record whose fault costs that sensor, not the run: the record still links to
# its sample, sensor, pose and neighbours, but its file or image size cannot be used. A bad value
# makes the sensor missing for the frames that need the record (`sensor_record_problem`).
SENSOR_RECORD_FIELDS: Mapping[str, frozenset[str]] = {"sample_data": frozenset({"filename", "width", "height"})}


def sensor_record_problem(record: dict[str, Any]) -> str:
    """What is wrong with a sample_data record's `SENSOR_RECORD_FIELDS` ("" when nothing)."""
    for name, check, required in TABLE_FIELDS["sample_data"]:
        if name not in SENSOR_RECORD_FIELDS["sample_data"]:
            continue
        if name not in record:
            if required:
                return f"bad record: sample_data {record.get('token')} has no field {name!r}"
            continue
        expected = check(record[name])
        if expected is not None:
            return (
                f"bad record: sample_data {record.get('token')} field {name!r} must be {expected}, "
                f"found {_shown(record[name])}"
            )
    return ""


def check_table(path: Path, table: str, records: Any, fields: Sequence[str] | None = None) -> None:
    """Check the records of one table (`TABLE_FIELDS[table]`, or only `fields` of it), except the
    `SENSOR_RECORD_FIELDS`, whose faults cost a sensor (`sensor_record_problem`).

    Raises:
        FileFormatError: `<path>: record <i> (token <t>): field <f> ...` for the first bad record.
    """
    if not isinstance(records, list):
        raise FileFormatError(path, f"expected a JSON list of {table} records, found {type(records).__name__}")
    soft = SENSOR_RECORD_FIELDS.get(table, frozenset())
    checks = [c for c in TABLE_FIELDS[table] if (fields is None or c[0] in fields) and c[0] not in soft]
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise FileFormatError(path, f"record {position}: expected an object, found {type(record).__name__}")
        for name, check, required in checks:
            if name not in record:
                if required:
                    raise FileFormatError(path, f"{_where(record, position)}: field {name!r} is missing")
                continue
            expected = check(record[name])
            if expected is not None:
                raise FileFormatError(
                    path, f"{_where(record, position)}: field {name!r} must be {expected}, found {_shown(record[name])}"
                )


def check_tables(table_dir: Path, tables: Mapping[str, Any]) -> None:
    """`check_table` on every table of `tables` (name -> records) read from `table_dir`."""
    for table, records in tables.items():
        check_table(table_dir / f"{table}.json", table, records)


def _where(record: dict, position: int) -> str:
    token = record.get("token")
    return f"token {token}" if isinstance(token, str) else f"record {position}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
