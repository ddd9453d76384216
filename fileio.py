"""Atomic file output: write beside the target, then rename, so nothing half-written is ever left.

It sits in the lowest package because every layer writes files (logs, indexes, results, reports).
The temporary file is `.<name>.<random>.tmp` beside the target (`TEMPORARY_GLOB`), so a process
killed while writing leaves only such names behind, which `remove_stale_temporaries` clears. The
final file gets the mode an ordinary `open(path, "w")` would give (0666 less the umask), not the
owner-only 0600 of `tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMPORARY_GLOB = ".*.tmp"


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status), else by setting
    and restoring it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files `atomic_open` left in `folder` when a process was killed while
    writing (call it where no other process writes into `folder`); returns what was removed."""
    removed = []
    for path in sorted(Path(folder).glob(TEMPORARY_GLOB)):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on success it replaces `path` atomically."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only, mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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
