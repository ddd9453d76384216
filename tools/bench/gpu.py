"""`avfusion bench gpu` (`make gpu-check`): every CUDA figure of the project in one run, one JSON.

On one CUDA GPU, within `--budget-s` (default 7.5 minutes), in this order:

1. a small synthetic log (one scene, images at a quarter of nuScenes' size, as `--preset gpu`
   reads them), the input of steps 3-5;
2. the GPU tests, `pytest -m gpu` (passed / failed / skipped counts, from its JUnit XML);
3. `bench voxelize` on the log's sweeps: our numba.cuda voxelizer against spconv's CUDA
   `PointToVoxel` (when spconv's CUDA build is installed) and torch.unique on the GPU;
4. `bench infer --device cuda`: the full detection loop, with spconv's CUDA voxelizer as the peer;
5. `train --amp --device cuda --preset gpu` for `--train-steps` steps (100): steps per second and
   the loss at the first and last step.

Each step runs as its own process under a time limit, the smaller of its own and what is left of
the budget: a step that fails or runs out of time is recorded with the end of its output, and the
next still runs. The JSON holds, per step, its exit code, seconds and figures (the benchmarks' own
JSON), and the GPU, torch and CUDA versions. Without a CUDA GPU it stops at once: one line on
stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avfusion.errors import InputError
from avfusion.fileio import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUDGET_S = 450.0
LOG_VERSION = "v1.0-mini"
LOG_SECONDS = 8.0  # 16 keyframes
LOG_IMAGE_SCALE = 0.25  # the GPU preset decodes images at 0.25
LOG_SEED = 2025
OUTPUT_TAIL_CHARS = 2000

# The most each step may take (seconds); the budget may give it less.
STEP_LIMITS_S = {
    "synthetic_log": 120.0,
    "gpu_tests": 90.0,
    "bench_voxelize": 60.0,
    "bench_infer": 80.0,
    "train_amp": 150.0,
}


def require_cuda() -> str:
    """The GPU's name; `InputError` when torch sees no CUDA device."""
    if not torch.cuda.is_available():
        raise InputError("no CUDA GPU visible to torch (torch.cuda.is_available() is False): run this on a GPU machine")
    return torch.cuda.get_device_name(0)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: exit code (None when it ran out of time), seconds, figures, and the end of its output."""

    returncode: int | None
    seconds: float
    figures: dict[str, Any]
    output_tail: str

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"returncode": self.returncode, "seconds": round(self.seconds, 2), **self.figures}
        if self.returncode != 0:
            result["timed_out"] = self.returncode is None
            result["output_tail"] = self.output_tail
        return result


class Budget:
    """Seconds left of the whole run's budget."""

    def __init__(self, total_s: float) -> None:
        self.deadline = time.monotonic() + total_s

    def limit(self, step: str) -> float:
        return max(0.0, min(STEP_LIMITS_S[step], self.deadline - time.monotonic()))


def run_step(command: list[str], limit_s: float, env: dict[str, str] | None = None) -> tuple[int | None, float, str]:
    """Run `command` from the repository root; (exit code or None on timeout, seconds, output tail)."""
    start = time.perf_counter()
    if limit_s <= 0:
        return None, 0.0, "no time left in the budget"
    try:
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=limit_s, check=False
        )
    except subprocess.TimeoutExpired as expired:
        # The partial output comes as bytes (or None), whatever `text` asked for.
        text = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else (part or "")
            for part in (expired.stdout, expired.stderr)
        )
        return None, time.perf_counter() - start, text[-OUTPUT_TAIL_CHARS:]
    return done.returncode, time.perf_counter() - start, (done.stdout + done.stderr)[-OUTPUT_TAIL_CHARS:]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "avfusion.tools.cli", *args]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def junit_counts(path: Path) -> dict[str, int]:
    """Test counts of a pytest JUnit XML report (tests, failures, errors, skipped, passed)."""
    if not path.is_file():
        return {}
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {
        key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors", "skipped")
    }
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def train_figures(run_dir: Path) -> dict[str, Any]:
    """Steps, and the total loss at the first and last step, from a run's `loss_log.jsonl`."""
    log = run_dir / "loss_log.jsonl"
    if not log.is_file():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not records:
        return {}
    return {"steps": len(records), "loss_first": records[0]["total"], "loss_last": records[-1]["total"]}


def step_commands(work: Path, train_steps: int) -> dict[str, list[str]]:
    """The command of each step that runs `avfusion` or pytest, writing into `work`."""
    log = str(work / "log")
    return {
        "synthetic_log": _cli(
            "dataset",
            "make-synthetic",
            "--out",
            log,
            "--scenes",
            "1",
            "--seconds",
            f"{LOG_SECONDS:g}",
            "--seed",
            str(LOG_SEED),
            "--version",
            LOG_VERSION,
            "--image-scale",
            f"{LOG_IMAGE_SCALE:g}",
            "--no-progress",
        ),
        "gpu_tests": [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={work / 'gpu_tests.xml'}",
            "tests",
        ],
        "bench_voxelize": _cli(
            "bench",
            "voxelize",
            "--source",
            "synthetic",
            "--dataroot",
            log,
            "--no-jit-timing",
            "--json",
            str(work / "bench_voxelize.json"),
        ),
        "bench_infer": _cli(
            "bench",
            "infer",
            "--dataroot",
            log,
            "--version",
            LOG_VERSION,
            "--device",
            "cuda",
            "--frames",
            "15",
            "--json",
            str(work / "bench_infer.json"),
        ),
        "train_amp": _cli(
            "train",
            "--dataroot",
            log,
            "--version",
            LOG_VERSION,
            "--split",
            "all",
            "--preset",
            "gpu",
            "--amp",
            "--device",
            "cuda",
            "--max-steps",
            str(train_steps),
            "--checkpoint-every",
            str(train_steps),
            "--out",
            str(work / "train_amp"),
        ),
    }


def gpu_check(work: Path, budget: Budget, train_steps: int) -> dict[str, dict[str, Any]]:
    """Run the five steps in `work`; their results by name."""
    commands = step_commands(work, train_steps)
    steps: dict[str, dict[str, Any]] = {}
    code, seconds, tail = run_step(commands["synthetic_log"], budget.limit("synthetic_log"))
    steps["synthetic_log"] = StepResult(code, seconds, {}, tail).as_dict()

    if (REPO_ROOT / "tests").is_dir():
        code, seconds, tail = run_step(commands["gpu_tests"], budget.limit("gpu_tests"))
        steps["gpu_tests"] = StepResult(code, seconds, junit_counts(work / "gpu_tests.xml"), tail).as_dict()
    else:
        steps["gpu_tests"] = {"skipped": f"no tests/ folder at {REPO_ROOT} (an installed, not a checked-out, package)"}

    if steps["synthetic_log"]["returncode"] != 0:
        for name in ("bench_voxelize", "bench_infer", "train_amp"):
            steps[name] = {"skipped": "the synthetic log could not be made"}
        return steps
    for name in ("bench_voxelize", "bench_infer"):
        code, seconds, tail = run_step(commands[name], budget.limit(name))
        steps[name] = StepResult(code, seconds, {"report": _read_json(work / f"{name}.json")}, tail).as_dict()

    code, seconds, tail = run_step(commands["train_amp"], budget.limit("train_amp"))
    figures = train_figures(work / "train_amp")
    if figures and seconds > 0:
        figures["steps_per_s_including_start"] = round(figures["steps"] / seconds, 3)
    steps["train_amp"] = StepResult(code, seconds, figures, tail).as_dict()
    return steps


def run(args: argparse.Namespace) -> int:
    if args.budget_s <= 0 or args.train_steps < 1:
        raise InputError(f"--budget-s must be > 0 and --train-steps >= 1, got {args.budget_s} and {args.train_steps}")
    device_name = require_cuda()
    budget = Budget(args.budget_s)
    started = time.perf_counter()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory(prefix="avfusion-gpu-check-") as folder:
        steps = gpu_check(Path(folder), budget, args.train_steps)
    payload = {
        "gpu": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "budget_s": args.budget_s,
        "total_s": round(time.perf_counter() - started, 2),
        "load_average_1_5_15_min": [round(v, 2) for v in os.getloadavg()],
        "steps": steps,
        "all_ok": all(step.get("returncode") == 0 for step in steps.values() if "skipped" not in step),
    }
    write_json_atomic(args.json, payload)
    for name, step in steps.items():
        state = "skipped" if "skipped" in step else ("ok" if step["returncode"] == 0 else "FAILED")
        print(f"{name:<16}{state:<9}{step.get('seconds', 0.0):8.1f} s")
    print(f"wrote {args.json} ({payload['total_s']:.0f} s on {device_name})")
    return 0 if payload["all_ok"] else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gpu", help="on a CUDA GPU: the GPU tests, bench voxelize / infer on CUDA and 100 AMP train steps, one JSON"
    )
    parser.add_argument("--json", default="gpu-check.json", help="where to write the figures (gpu-check.json)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        help=f"seconds for all steps together ({DEFAULT_BUDGET_S:g})",
    )
    parser.add_argument("--train-steps", type=int, default=100, help="AMP training steps (100)")
    parser.set_defaults(func=run)
