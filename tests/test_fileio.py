"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avfusion.fileio import atomic_open, write_json_atomic


def test_write_json_atomic_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "out" / "result.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_failure_keeps_previous_content_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("new, half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
