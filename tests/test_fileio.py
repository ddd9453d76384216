"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from avfusion.fileio import atomic_open, remove_stale_temporaries, write_json_atomic


def test_write_json_atomic_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "out" / "result.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_failure_keeps_previous_content_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("new, half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_mode_not_owner_only(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "r.json", {})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what an ordinary open() gives
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".submission.json.abc123.tmp").write_text("half")
    (tmp_path / "submission.json").write_text("{}")
    (tmp_path / ".hidden").write_text("not ours")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".submission.json.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "submission.json"]
