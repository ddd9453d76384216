"""The BEV files `avfusion replay --save-bev` keeps (`bev/<token>.npz`) and the viewer reads back:
the heatmap alone for an ungated model, with the gate map for a gated one; bad files named."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from avfusion.errors import FileFormatError
from avfusion.tools.replay.frames import save_bev_heatmap
from avfusion.tools.viz.viewer import read_bev_gate, read_bev_heatmap

GRID = SimpleNamespace(x_range_m=(-25.6, 25.6), y_range_m=(-12.8, 12.8))


def _heatmap() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 1.0, (16, 32)).astype(np.float32)


def _gate() -> np.ndarray:
    return np.random.default_rng(1).uniform(0.0, 1.0, (3, 16, 32)).astype(np.float32)


def test_without_a_gate_the_file_is_the_heatmap_alone(tmp_path: Path) -> None:
    heat = _heatmap()
    save_bev_heatmap(tmp_path, "token", heat, GRID)
    path = tmp_path / "token.npz"
    # Byte for byte the file an ungated model has always written: these three arrays, in this order.
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        heatmap=heat.astype(np.float16),
        x_range_m=np.asarray(GRID.x_range_m, dtype=np.float64),
        y_range_m=np.asarray(GRID.y_range_m, dtype=np.float64),
    )
    assert path.read_bytes() == buffer.getvalue()
    raster = read_bev_heatmap(path)
    np.testing.assert_allclose(raster.values, heat, atol=1e-3)  # float16 storage
    assert raster.x_range_m == GRID.x_range_m and raster.y_range_m == GRID.y_range_m
    assert read_bev_gate(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.npz"]  # no temporaries left


def test_a_gate_round_trips_with_its_branch_names(tmp_path: Path) -> None:
    heat, gate = _heatmap(), _gate()
    save_bev_heatmap(tmp_path, "token", heat, GRID, gate=gate, gate_branches=("lidar", "camera", "map"))
    path = tmp_path / "token.npz"
    with np.load(path, allow_pickle=False) as kept:
        assert kept.files == ["heatmap", "x_range_m", "y_range_m", "gate", "gate_branches"]
        assert kept["gate"].dtype == np.float16 and kept["gate_branches"].dtype.kind == "U"
    back = read_bev_gate(path)
    assert back is not None and back.branch_names == ("lidar", "camera", "map")
    np.testing.assert_allclose(back.values, gate, atol=1e-3)
    assert back.values.dtype == np.float32
    assert back.x_range_m == GRID.x_range_m and back.y_range_m == GRID.y_range_m
    np.testing.assert_allclose(read_bev_heatmap(path).values, heat, atol=1e-3)  # the heatmap is unchanged
    # Same input, same bytes.
    first = path.read_bytes()
    save_bev_heatmap(tmp_path, "token", heat, GRID, gate=gate, gate_branches=("lidar", "camera", "map"))
    assert path.read_bytes() == first
    with pytest.raises(ValueError, match="K = 2 branches"):
        save_bev_heatmap(tmp_path, "other", heat, GRID, gate=gate, gate_branches=("lidar", "camera"))


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, x_range_m=np.array([-1.0, 1.0]), y_range_m=np.array([-1.0, 1.0]), **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"gate": np.zeros((1, 2, 2), np.float16)}, "`gate` without its pair"),
        ({"gate_branches": np.array(["lidar"])}, "`gate_branches` without its pair"),
        ({"gate": np.zeros((2, 2, 2)), "gate_branches": np.array(["lidar"])}, "2 gate channels but 1 branch"),
        ({"gate": np.zeros((1, 2, 2)), "gate_branches": np.array(["radar"])}, "distinct names"),
        ({"gate": np.zeros((1, 2, 2)), "gate_branches": np.array([1.0])}, "`gate_branches` must be"),
        ({"gate": np.zeros((2, 2)), "gate_branches": np.array(["lidar"])}, r"\(K, H, W\)"),
    ],
)
def test_a_malformed_gate_names_the_file(tmp_path: Path, arrays: dict, problem: str) -> None:
    path = _npz(tmp_path / "bad.npz", heatmap=np.zeros((2, 2)), **arrays)
    with pytest.raises(FileFormatError, match=problem) as caught:
        read_bev_gate(path)
    assert caught.value.path == str(path)


def test_a_file_that_is_not_an_npz_names_the_file(tmp_path: Path) -> None:
    text = tmp_path / "not.npz"
    text.write_text("hello")
    truncated = tmp_path / "truncated.npz"
    save_bev_heatmap(tmp_path, "full", _heatmap(), GRID, gate=_gate(), gate_branches=("lidar", "camera", "map"))
    truncated.write_bytes((tmp_path / "full.npz").read_bytes()[:200])
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(pickled, "w") as archive:
        with archive.open("gate.npy", "w") as member:
            np.save(member, np.array([{"lidar": 1}], dtype=object), allow_pickle=True)
        with archive.open("gate_branches.npy", "w") as member:
            np.save(member, np.array(["lidar"]))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for path in (text, truncated, pickled, empty, tmp_path / "missing.npz"):
        for read in (read_bev_gate, read_bev_heatmap):
            with pytest.raises(FileFormatError) as caught:
                read(path)
            assert str(path) in str(caught.value) and "\n" not in str(caught.value)
