"""`bench fusion` pieces: the default-strategy rule, weights per strategy, parameter counts."""

from __future__ import annotations

import dataclasses

import pytest

from avfusion.errors import InputError
from avfusion.fusion.checkpoint import save_checkpoint
from avfusion.fusion.config import tiny_for_tests, with_strategy
from avfusion.fusion.model import BEVFusion
from avfusion.tools.bench.fusion import choose_default, parameter_count, strategy_weights


def _result(nds: float, mra: float) -> dict:
    return {"clean": {"NDS": nds}, "mRA_of_types_run": mra}


def test_the_default_is_the_best_clean_nds_among_strategies_as_robust_as_intermediate() -> None:
    results = {
        "early": _result(0.60, 0.80),  # best NDS, less robust than intermediate: not eligible
        "intermediate": _result(0.55, 0.85),
        "gated": _result(0.57, 0.86),
        "late": _result(0.50, 0.95),
    }
    assert choose_default(results) == "gated"
    results["gated"] = _result(0.57, 0.84)
    assert choose_default(results) == "intermediate"


def test_strategy_weights_refuse_a_checkpoint_of_another_strategy(tmp_path) -> None:
    config = with_strategy(tiny_for_tests(), "gated")
    save_checkpoint(tmp_path / "g.pt", config, {"model": BEVFusion.from_config(config).state_dict()})
    with pytest.raises(InputError, match="holds weights for gated fusion"):
        strategy_weights([f"early={tmp_path / 'g.pt'}"])
    with pytest.raises(InputError, match="expected STRATEGY=PATH"):
        strategy_weights([f"sideways={tmp_path / 'g.pt'}"])


def test_parameter_count_leaves_out_batch_norm_statistics(tmp_path) -> None:
    config = tiny_for_tests()
    model = BEVFusion.from_config(config)
    save_checkpoint(tmp_path / "w.pt", config, {"model": model.state_dict()})
    assert parameter_count(tmp_path / "w.pt") == sum(p.numel() for p in model.parameters())
    late = config.replace(fuser=dataclasses.replace(config.fuser, strategy="late", late_model=(2.0, 1.0, 0.5)))
    save_checkpoint(tmp_path / "late.pt", late, {"model": model.state_dict()})
    assert parameter_count(tmp_path / "late.pt") == sum(p.numel() for p in model.parameters()) + 3
