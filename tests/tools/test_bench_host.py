"""The host state every speed benchmark records beside its timings (`tools/bench/common.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from avfusion.tools.bench.common import HostCpuTimes, host_state_facts, steal_percent


def _stat(tmp_path: Path, name: str, line: str) -> str:
    path = tmp_path / name
    path.write_text(line + "\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 12345\n")
    return str(path)


def test_reads_the_aggregate_cpu_line_and_its_steal_field(tmp_path: Path) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    times = HostCpuTimes.read(_stat(tmp_path, "a", "cpu  100 5 20 800 10 1 4 60 30 0"))
    assert times == HostCpuTimes(total=100 + 5 + 20 + 800 + 10 + 1 + 4 + 60, steal=60)


def test_steal_percent_is_the_share_of_the_interval(tmp_path: Path) -> None:
    before = HostCpuTimes.read(_stat(tmp_path, "a", "cpu  100 0 0 800 0 0 0 100 0 0"))
    after = HostCpuTimes.read(_stat(tmp_path, "b", "cpu  400 0 0 900 0 0 0 200 0 0"))
    # 500 ticks passed, 100 of them stolen.
    assert steal_percent(before, after) == pytest.approx(20.0)
    assert steal_percent(after, before) is None  # counters never run backwards: no answer
    assert steal_percent(None, after) is None


@pytest.mark.parametrize("content", ["", "intr 1 2 3\n", "cpu 1 2 3\n"])
def test_an_unreadable_or_short_stat_file_gives_none(tmp_path: Path, content: str) -> None:
    path = tmp_path / "stat"
    path.write_text(content)
    assert HostCpuTimes.read(str(path)) is None
    assert HostCpuTimes.read(str(tmp_path / "absent")) is None


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="no /proc/stat on this system (not Linux)")
def test_the_facts_hold_the_load_and_a_steal_share_on_linux() -> None:
    facts = host_state_facts(HostCpuTimes.read())
    assert len(facts["load_average_1_5_15_min"]) == 3
    # Between two immediate readings the counters may not have moved: then no share is claimed.
    if "host_steal_percent" in facts:
        assert 0.0 <= facts["host_steal_percent"] <= 100.0


def test_a_steal_above_the_threshold_brings_a_warning_and_one_below_does_not() -> None:
    before = HostCpuTimes(total=1000, steal=0)
    stolen = host_state_facts(before, HostCpuTimes(total=2000, steal=250))
    assert stolen["host_steal_percent"] == pytest.approx(25.0)
    assert "stole 25%" in stolen["host_warning"]
    quiet = host_state_facts(before, HostCpuTimes(total=2000, steal=20))
    assert quiet["host_steal_percent"] == pytest.approx(2.0)
    assert "host_warning" not in quiet
