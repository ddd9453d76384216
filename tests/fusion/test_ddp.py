"""DDP through torchrun: two CPU processes on the gloo backend train one step of a tiny fused model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from avfusion.fusion.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import dataclasses, importlib.util, json, os, sys
    import torch, torch.distributed as dist
    spec = importlib.util.spec_from_file_location("fusion_frames", sys.argv[1])
    frames_module = importlib.util.module_from_spec(spec); spec.loader.exec_module(frames_module)
    from avfusion.fusion.config import tiny_for_tests
    from avfusion.fusion.train import train
    config = tiny_for_tests()  # with lidar-free and camera-free trunks: each rank's step runs all three
    config = config.replace(train=dataclasses.replace(config.train, lidar_free_trunk=True, camera_free_trunk=True))
    frames = [frames_module.make_frame(seed) for seed in range(4)]
    result = train(config, frames, sys.argv[2], max_steps=1, progress=False)
    rank = dist.get_rank()
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as handle:
        json.dump({"rank": rank, "world": dist.get_world_size(), "steps": result.steps}, handle)
    dist.destroy_process_group()
    """
)


def test_two_process_gloo_training_step(tmp_path: Path) -> None:
    script = tmp_path / "ddp_step.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(HERE / "conftest.py"),
        str(out),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for rank in (0, 1):
        record = json.loads((out / f"rank{rank}.json").read_text())
        assert record == {"rank": rank, "world": 2, "steps": 1}
    config, payload = load_checkpoint(out / "weights.pt")
    assert payload["step"] == 1
    assert config.train.builds_lidar_free_trunk and any(name.startswith("lidar_free.") for name in payload["model"])
    assert config.train.builds_camera_free_trunk and any(name.startswith("camera_free.") for name in payload["model"])
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and all(torch.isfinite(torch.tensor(v)) for v in log[0]["losses"].values())
    assert (out / "loss.png").stat().st_size > 1000
