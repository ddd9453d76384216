"""`avfusion replay` with bad input, faults and interruptions: a bad sensor file costs one sensor,
--out problems and damaged progress logs are one-line errors, a run killed anywhere resumes to
the same bytes, and runs repeat to the bit.

The network is a small configuration with seeded random weights (a real forward pass and decode).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avfusion.errors import FileFormatError, InputError
from avfusion.tools.cli import main
from avfusion.tools.replay.engine import ProgressLog, run_replay
from avfusion.tools.replay.types import FrameResult, PlannedFrame, ReplayPlan

VERSION = "v1.0-mini"
OUTPUTS = ("submission.json", "sensor_health.jsonl")


def _same_outputs(out: Path, reference: Path) -> None:
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), (
            f"{name} differs from the uninterrupted run"
        )


# --- sensor files ------------------------------------------------------------------------------


def test_bad_sensor_files_cost_one_sensor_not_the_frame(
    replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    root = Path(shutil.copytree(replay_log, tmp_path / "log"))
    lidar = sorted((root / "samples" / "LIDAR_TOP").iterdir())[0]
    lidar.write_bytes(b"")  # a zero-byte keyframe sweep: not an empty scene
    image = sorted((root / "samples" / "CAM_FRONT").iterdir())[1]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    outcome = run_replay(replay_request(root, tmp_path / "run", small_checkpoint), progress=False)
    health = [json.loads(line) for line in outcome.health_path.read_text().splitlines()]
    by_lidar = next(h for h in health if "LIDAR_TOP" in h["missing"])
    assert by_lidar["missing"]["LIDAR_TOP"].startswith(f"unreadable (empty lidar file): {lidar}")
    assert by_lidar["lidar_points"] == 0 and by_lidar["cameras"] == 6
    by_camera = next(h for h in health if "CAM_FRONT" in h["missing"])
    assert by_camera["missing"]["CAM_FRONT"].startswith(f"unreadable (truncated JPEG): {image}")
    assert by_camera["cameras"] == 5 and by_camera["lidar_points"] > 1000
    counts = json.loads(outcome.summary_path.read_text())["sensor_health"]
    assert counts["frames_unreadable"] == 0
    assert counts["missing"]["LIDAR_TOP: unreadable (empty lidar file)"] == 1
    assert counts["missing"]["CAM_FRONT: unreadable (truncated JPEG)"] == 1
    assert counts["frames_with_missing_sensors"] >= 2


# --- progress log ------------------------------------------------------------------------------


def _plan(n: int) -> ReplayPlan:
    return ReplayPlan(("s",), tuple(PlannedFrame(i, "s", f"t{i}") for i in range(n)))


def _line(position: int) -> str:
    return FrameResult(position, "s", f"t{position}", [], {"total": 1.0}, {"missing": {}}).to_json() + "\n"


def test_a_torn_last_line_is_dropped_a_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    for torn in ('{"position": 2, "scene', '{"position": 2}\n', "\x00\x00\x00"):
        path.write_text(_line(0) + _line(1) + torn)
        assert sorted(ProgressLog(path).read(_plan(4))) == [0, 1]
        assert path.read_text() == _line(0) + _line(1)  # cut off, so appends start on a fresh line
    path.write_text(_line(0) + '{"position": 1, "sce\n' + _line(2) + _line(3))
    with pytest.raises(
        FileFormatError, match=r"progress.jsonl: line 2 of 4 is not a frame record .*only the last line can be torn"
    ):
        ProgressLog(path).read(_plan(4))
    path.write_text(_line(0) + _line(7))
    with pytest.raises(FileFormatError, match="frame t7 at position 7 is not in this replay's plan"):
        ProgressLog(path).read(_plan(4))


# --- the run folder ----------------------------------------------------------------------------


def test_out_problems_are_one_line_errors(
    replay_log: Path, small_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    base = [
        "replay",
        "--dataroot",
        str(replay_log),
        "--version",
        VERSION,
        "--checkpoint",
        str(small_checkpoint),
        "--no-progress",
    ]
    (tmp_path / "a_file").write_text("x")
    assert main([*base, "--out", str(tmp_path / "a_file")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "a_file: is a file, not a run folder" in err
    assert main([*base, "--out", str(tmp_path / "a_file" / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "cannot write the run folder" in err

    # A full disk while a frame is saved: one line naming --out and --resume.
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("avfusion.tools.replay.engine.os.fsync", full)
    assert main([*base, "--out", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "--resume" in err


def test_resume_refuses_another_device(
    replay_full_run, replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    out = tmp_path / "run"
    shutil.copytree(replay_full_run.out_dir, out)
    with pytest.raises(InputError, match=r"--resume: .* different device: \['cpu'\]"):
        run_replay(replay_request(replay_log, out, small_checkpoint, resume=True, device="meta"), progress=False)


def test_kill_at_several_points_resumes_to_the_same_bytes(
    replay_full_run, replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    """Interrupted after each frame in turn, with what a kill leaves behind (a torn progress line,
    a half-written temporary file), then resumed: the same bytes as the uninterrupted run."""
    for stop_after in range(1, replay_full_run.num_frames):
        out = tmp_path / f"stop{stop_after}"
        seen: list[str] = []

        def interrupt(result, stop_after=stop_after, seen=seen) -> None:
            seen.append(result.sample_token)
            if len(seen) == stop_after:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_replay(replay_request(replay_log, out, small_checkpoint), progress=False, on_frame=interrupt)
        with (out / "progress.jsonl").open("a") as handle:
            handle.write('{"position": 3, "scene_name": "sce')
        (out / ".submission.json.k1ll3d.tmp").write_text('{"meta": {}, "resu')
        resumed = run_replay(replay_request(replay_log, out, small_checkpoint, resume=True), progress=False)
        assert resumed.frames_replayed_now == replay_full_run.num_frames - stop_after
        _same_outputs(out, replay_full_run.out_dir)
        assert not list(out.glob(".*.tmp"))


def test_outputs_get_ordinary_file_modes(replay_full_run) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    for name in (*OUTPUTS, "summary.json", "latency.csv", "replay.json"):
        assert stat.S_IMODE((replay_full_run.out_dir / name).stat().st_mode) == 0o666 & ~umask, name


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.heavy
def test_three_plain_runs_are_byte_identical(
    replay_full_run, replay_log: Path, small_checkpoint: Path, tmp_path: Path, replay_request
) -> None:
    for attempt in range(2):
        out = tmp_path / f"again{attempt}"
        run_replay(replay_request(replay_log, out, small_checkpoint), progress=False)
        _same_outputs(out, replay_full_run.out_dir)


@pytest.mark.heavy
def test_sigkill_at_several_points_resumes_to_the_same_bytes(
    replay_log: Path, small_checkpoint: Path, tmp_path: Path
) -> None:
    """A real kill (SIGKILL of an `avfusion replay` process) once 0, 1, 2 frames are saved, resumed
    by another process: the same bytes as an uninterrupted process. Every run is a fresh process
    of the same environment: the network's last bits depend on how torch's thread pool was set up
    (a pool started with 2 threads and cut to 1 computes otherwise than one started with 1)."""
    argv = [
        sys.executable,
        "-m",
        "avfusion.tools.cli",
        "replay",
        "--dataroot",
        str(replay_log),
        "--version",
        VERSION,
        "--checkpoint",
        str(small_checkpoint),
        "--no-progress",
    ]

    def replay(out: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([*argv, "--out", str(out), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    reference = tmp_path / "uninterrupted"
    assert replay(reference).wait() == 0
    frames = len(json.loads((reference / "submission.json").read_text())["results"])
    for saved in range(frames - 1):
        out = tmp_path / f"killed{saved}"
        process = replay(out)
        progress = out / "progress.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            lines = progress.read_bytes().count(b"\n") if progress.is_file() else -1
            if lines >= saved and (out / "replay.json").is_file():
                break
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (out / "submission.json").exists()
        resumed = replay(out, "--resume")
        assert resumed.wait() == 0, resumed.stderr.read().decode()
        _same_outputs(out, reference)


# --- Ray ---------------------------------------------------------------------------------------


def _kill_one_replay_worker() -> bool:
    """SIGKILL one Ray replay worker among this test's own child processes; whether one was found."""
    psutil = pytest.importorskip("psutil")
    for child in psutil.Process().children(recursive=True):
        try:
            if "_ReplayWorker" in " ".join(child.cmdline()):
                child.send_signal(signal.SIGKILL)
                return True
        except psutil.Error:
            continue
    return False


@pytest.mark.heavy
def test_a_dead_ray_worker_is_replaced_then_named_with_resume(
    replay_log: Path, small_checkpoint: Path, tmp_path: Path, monkeypatch, replay_request
) -> None:
    pytest.importorskip("ray")
    import avfusion.tools.replay.ray_runner as ray_runner

    reference = run_replay(
        replay_request(replay_log, tmp_path / "plain", small_checkpoint, torch_threads=2), progress=False
    )
    killed: list[bool] = []

    def kill_once(_result) -> None:
        if not killed:
            killed.append(_kill_one_replay_worker())

    ray_request = replay_request(
        replay_log, tmp_path / "ray", small_checkpoint, torch_threads=2, ray_address="local", ray_workers=2
    )
    outcome = run_replay(ray_request, progress=False, on_frame=kill_once)
    assert killed == [True]
    _same_outputs(outcome.out_dir, reference.out_dir)

    # With no restarts left, the death is one line naming --resume, and --resume finishes the run.
    monkeypatch.setattr(ray_runner, "MAX_WORKER_RESTARTS", 0)
    killed.clear()
    out = tmp_path / "ray_lost"
    with pytest.raises(
        ray_runner.ReplayWorkerLost,
        match=r"replay: the Ray worker of scene\(s\) .* died 1 time\(s\) .*continue with --resume",
    ):
        run_replay(
            replay_request(replay_log, out, small_checkpoint, torch_threads=2, ray_address="local", ray_workers=2),
            progress=False,
            on_frame=kill_once,
        )
    run_replay(replay_request(replay_log, out, small_checkpoint, torch_threads=2, resume=True), progress=False)
    _same_outputs(out, reference.out_dir)
