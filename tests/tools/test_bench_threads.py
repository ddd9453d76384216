"""`set_threads` of the benchmarks: torch and Numba together, and a clear error past Numba's cap."""

from __future__ import annotations

import numba
import pytest
import torch

from avfusion.errors import InputError
from avfusion.tools.bench.common import set_threads


def test_set_threads_sets_both_and_refuses_more_than_numba_may_use() -> None:
    torch_before, numba_before = torch.get_num_threads(), numba.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
        cap = numba.config.NUMBA_NUM_THREADS
        with pytest.raises(InputError, match=f"--threads {cap + 1} is more than NUMBA_NUM_THREADS={cap}"):
            set_threads(cap + 1)
        assert numba.get_num_threads() == 1  # nothing changed by the refused call
    finally:
        torch.set_num_threads(torch_before)
        numba.set_num_threads(numba_before)
