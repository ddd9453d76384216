"""`avfusion bench eval` on a small log: both sides timed, metrics checked equal, figures in JSON."""

from __future__ import annotations

import argparse
import json

from avfusion.tools.bench import eval as bench_eval


def test_bench_eval_times_both_sides_and_checks_the_metrics(minimal_log, tmp_path):
    parser = argparse.ArgumentParser()
    bench_eval.add_parser(parser.add_subparsers())
    out = tmp_path / "bench.json"
    args = parser.parse_args(
        [
            "eval",
            "--dataroot",
            str(minimal_log),
            "--split",
            "synth_val",
            "--boxes-per-sample",
            "20",
            "--our-repeats",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json",
            str(out),
        ]
    )
    assert args.func(args) == 0
    figures = json.loads(out.read_text())
    assert figures["methods"]["avfusion_eval"]["repeats"] == 2
    assert figures["peers"]["devkit"]["repeats"] == 1
    assert figures["ratio_vs_devkit"] > 0
    assert figures["facts"]["max_abs_metric_difference_vs_devkit"] <= 1e-9
    assert figures["facts"]["predictions"] == 20 * figures["facts"]["samples"]
    assert len(figures["facts"]["load_average_1min_before_after"]) == 2
