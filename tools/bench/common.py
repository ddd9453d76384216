"""Timing and reporting shared by every `avfusion bench` (DESIGN.md section 8).

A benchmark times each method with `time_call`, collects them in a `BenchReport` and calls
`report.emit(json_path)`: a table on stdout and, when asked, JSON with for each method its median,
min and max in milliseconds, and for each peer `ratio_vs_<peer>` (how many times faster ours is).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from avfusion.errors import InputError
from avfusion.fileio import write_json_atomic


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock times of repeated calls of one method, in milliseconds."""

    name: str
    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "repeats": len(self.times_ms),
        }


@dataclass(frozen=True, slots=True)
class HostCpuTimes:
    """The machine's CPU time counters summed over all CPUs (`/proc/stat`'s `cpu` line, in clock
    ticks): everything, and the part a hypervisor gave to other guests while this one wanted to
    run (steal). On a shared virtual machine steal slows every method of a benchmark, and not all
    alike, so each speed benchmark records it beside its timings (`host_state_facts`)."""

    total: int
    steal: int

    @staticmethod
    def read(path: str = "/proc/stat") -> HostCpuTimes | None:
        """The counters now, or None where the file is absent or has no steal field (not Linux)."""
        try:
            with open(path) as handle:
                fields = handle.readline().split()
        except OSError:
            return None
        if len(fields) < 9 or fields[0] != "cpu":
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice, already inside user/nice]
        ticks = [int(value) for value in fields[1:9]]
        return HostCpuTimes(total=sum(ticks), steal=ticks[7])


def steal_percent(before: HostCpuTimes | None, after: HostCpuTimes | None) -> float | None:
    """Percent of the CPU time between two readings that the host stole (None: not measurable)."""
    if before is None or after is None or after.total <= before.total:
        return None
    return 100.0 * (after.steal - before.steal) / (after.total - before.total)


# Above this share of stolen CPU time a benchmark's JSON and printout carry `host_warning`.
STEAL_WARNING_PERCENT = 5.0


def host_state_facts(before: HostCpuTimes | None, after: HostCpuTimes | None = None) -> dict[str, Any]:
    """Facts for a benchmark that started at `before` (and ended at `after`, by default now): the
    host's steal percent between them, the load averages now, and above STEAL_WARNING_PERCENT a
    warning that says what the steal does to the timings."""
    facts: dict[str, Any] = {"load_average_1_5_15_min": [round(v, 2) for v in os.getloadavg()]}
    steal = steal_percent(before, HostCpuTimes.read() if after is None else after)
    if steal is not None:
        facts["host_steal_percent"] = round(steal, 1)
        if steal > STEAL_WARNING_PERCENT:
            facts["host_warning"] = (
                f"the host stole {steal:.0f}% of this machine's CPU time during the timed calls: every method "
                "ran slower, and the multi-threaded ones most (a thread whose core is taken holds up the others "
                f"at each join); compare runs whose host_steal_percent is below {STEAL_WARNING_PERCENT:.0f}"
            )
    return facts


def set_threads(threads: int) -> None:
    """Run torch and Numba on `threads` threads (both: Numba's OpenMP kernels reset the process's
    OpenMP thread count that torch reads). Raises `InputError` when the environment's
    NUMBA_NUM_THREADS caps Numba below that, instead of Numba's bare range error."""
    import numba
    import torch

    if threads > numba.config.NUMBA_NUM_THREADS:
        raise InputError(
            f"--threads {threads} is more than NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} "
            "allows in this environment; unset it or pass fewer threads"
        )
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)


def time_call(name: str, fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times timed with `perf_counter`."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times_ms.append((time.perf_counter() - start) * 1e3)
    return Timing(name, tuple(times_ms))


@dataclass(slots=True)
class BenchReport:
    """Timings of our methods and the peers', plus free-form facts about the run."""

    title: str
    ours: list[Timing] = field(default_factory=list)
    peers: list[Timing] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def ratios(self, ours_name: str | None = None) -> dict[str, float]:
        """`ratio_vs_<peer>`: peer median / our median (how many times faster ours is)."""
        if not self.ours:
            return {}
        reference = self.ours[0] if ours_name is None else next(t for t in self.ours if t.name == ours_name)
        return {f"ratio_vs_{peer.name}": peer.median_ms / reference.median_ms for peer in self.peers}

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "methods": {t.name: t.as_dict() for t in self.ours},
            "peers": {t.name: t.as_dict() for t in self.peers},
            **self.ratios(),
            "skipped": dict(self.skipped),
            "facts": dict(self.facts),
        }

    def table(self) -> str:
        lines = [self.title, f"{'method':<34}{'median ms':>12}{'min ms':>12}{'max ms':>12}{'vs ours':>10}"]
        reference = self.ours[0].median_ms if self.ours else None
        for timing in [*self.ours, *self.peers]:
            ratio = f"{timing.median_ms / reference:9.2f}x" if reference else ""
            lines.append(
                f"{timing.name:<34}{timing.median_ms:12.3f}{timing.min_ms:12.3f}{timing.max_ms:12.3f}{ratio:>10}"
            )
        for key, value in self.ratios().items():
            lines.append(f"{key}: {value:.2f} (ours is {value:.2f}x as fast)")
        for name, reason in self.skipped.items():
            lines.append(f"skipped {name}: {reason}")
        for key, value in self.facts.items():
            lines.append(f"{key}: {value}")
        return "\n".join(lines)

    def emit(self, json_path: str | os.PathLike[str] | None) -> None:
        print(self.table())
        if json_path is not None:
            write_json_atomic(json_path, self.as_dict())
            print(f"wrote {json_path}")
