"""Errors of the sensor readers that callers handle specifically."""

from __future__ import annotations

from avfusion.errors import InputError


class MissingSensorFile(InputError):
    """A sensor file named by the log is not on disk. Loaders mark that sensor missing in the frame."""

    def __init__(self, path: object, what: str = "sensor file") -> None:
        super().__init__(f"{path}: {what} not found")
        self.path = str(path)
