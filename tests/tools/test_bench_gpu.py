"""`avfusion bench gpu`: without a CUDA GPU it stops at once with one line; its readers and limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avfusion.tools import cli
from avfusion.tools.bench import gpu


def test_without_cuda_one_line_and_exit_2(tmp_path: Path) -> None:
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this is the no-GPU path on every machine.
    result = subprocess.run(
        [sys.executable, "-m", "avfusion.tools.cli", "bench", "gpu", "--json", str(tmp_path / "out.json")],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and lines[0].startswith("avfusion bench: error:")
    assert not (tmp_path / "out.json").exists()


def test_bad_arguments_name_the_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "gpu", "--train-steps", "0"]) == 2
    assert "--train-steps" in capsys.readouterr().err


def test_junit_counts(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest" tests="5" failures="1" errors="0" skipped="2"></testsuite></testsuites>'
    )
    assert gpu.junit_counts(report) == {"tests": 5, "failures": 1, "errors": 0, "skipped": 2, "passed": 2}
    assert gpu.junit_counts(tmp_path / "absent.xml") == {}


def test_train_figures_from_the_loss_log(tmp_path: Path) -> None:
    (tmp_path / "loss_log.jsonl").write_text('{"step": 0, "total": 3.5}\n{"step": 1, "total": 2.25}\n')
    assert gpu.train_figures(tmp_path) == {"steps": 2, "loss_first": 3.5, "loss_last": 2.25}
    assert gpu.train_figures(tmp_path / "none") == {}


def test_a_step_that_runs_out_of_time_is_recorded() -> None:
    code, seconds, tail = gpu.run_step(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"], 2.0
    )
    assert code is None and seconds < 20 and "started" in tail
    result = gpu.StepResult(code, seconds, {}, tail).as_dict()
    assert result["timed_out"] is True and result["returncode"] is None
    assert gpu.run_step([sys.executable, "-c", "pass"], 0.0) == (None, 0.0, "no time left in the budget")
    budget = gpu.Budget(1000.0)
    assert budget.limit("bench_voxelize") == gpu.STEP_LIMITS_S["bench_voxelize"]


def test_step_commands_parse_with_the_cli(tmp_path: Path) -> None:
    commands = gpu.step_commands(tmp_path, train_steps=100)
    parser = cli.build_parser()
    for name, command in commands.items():
        if name == "gpu_tests":
            assert command[1:4] == ["-m", "pytest", "-m"] and command[4] == "gpu"
            continue
        assert command[1:3] == ["-m", "avfusion.tools.cli"]
        args = parser.parse_args(command[3:])  # a typo in a flag exits here
        assert callable(args.func), name
    train = parser.parse_args(commands["train_amp"][3:])
    assert train.amp and train.device == "cuda" and train.max_steps == 100
