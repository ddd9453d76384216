"""Atomic file output: write beside the target, then rename, so nothing half-written is ever left.

It sits in the lowest package because every layer writes files (logs, indexes, results, reports).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on success it replaces `path` atomically."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only, mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], payload: Any, indent: int | None = 2) -> None:
    """Serialize `payload` as JSON into `path` atomically."""
    with atomic_open(path, "w") as handle:
        json.dump(payload, handle, indent=indent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` into `path` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
