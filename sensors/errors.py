"""Errors of the sensor readers that callers handle specifically.

The one rule for sensor data: a file that is missing (`MissingSensorFile`), or empty, truncated or
undecodable (`UnreadableSensorFile`), makes that sensor missing for the frame; the loaders catch
both and record `reason` in the frame's `missing` map, and the frame goes on with what is left.
"""

from __future__ import annotations

from avfusion.errors import FileFormatError, InputError


class MissingSensorFile(InputError):
    """A sensor file named by the log is not on disk. Loaders mark that sensor missing in the frame."""

    def __init__(self, path: object, what: str = "sensor file") -> None:
        super().__init__(f"{path}: {what} not found")
        self.path = str(path)

    @property
    def reason(self) -> str:
        """The frame's `missing` entry: `file missing: <path>`."""
        return f"file missing: {self.path}"


class UnreadableSensorFile(FileFormatError):
    """A sensor file is on disk but empty, truncated or undecodable.

    `kind` is a short fixed phrase ("empty lidar file", "truncated JPEG", ...) that summaries count
    by; the message adds the path and the details. Loaders mark that sensor missing in the frame.
    """

    def __init__(self, path: object, kind: str, detail: str = "") -> None:
        super().__init__(path, f"{kind}: {detail}" if detail else kind)
        self.kind = kind

    @property
    def reason(self) -> str:
        """The frame's `missing` entry: `unreadable (<kind>): <path>: <details>`."""
        return f"unreadable ({self.kind}): {self}"
